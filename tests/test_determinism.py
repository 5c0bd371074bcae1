"""The same commit gives the same numbers (issue 16): the first stages of a recipe run twice,
in fresh processes with different thread counts and working folders, write byte-identical
datasets and weights; and every r1forge process pins torch's CPU kernels to one instruction
set, so a machine with AVX512 computes what one with only AVX2 does."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from r1forge import CPU_KERNEL_PINS
from r1forge.io import sha256_file

from .conftest import ROOT, child_env

X86 = platform.machine().lower() in ("x86_64", "amd64")


def unpinned_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a user who set none of the pins themselves."""
    env = {k: v for k, v in child_env().items() if k not in CPU_KERNEL_PINS}
    return {**env, **(extra or {})}


@pytest.mark.skipif(not X86, reason="the pins are for x86 kernels")
def test_r1forge_pins_torch_cpu_kernels_before_torch_picks_them() -> None:
    probe = "import r1forge, torch; print(torch.backends.cpu.get_cpu_capability())"
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=unpinned_env()
    )
    assert proc.stdout.strip() == "AVX2", proc.stderr
    # an explicit choice of the user wins (here the slowest, portable kernels)
    mine = unpinned_env({"ATEN_CPU_CAPABILITY": "default"})
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=mine)
    assert proc.stdout.strip() == "DEFAULT", proc.stderr


def first_stages(out: Path, threads: int) -> dict[str, str]:
    """data -> base -> cold-start SFT of the ci recipe in fresh processes; sha256 of each output."""
    recipe = str(ROOT / "recipes/ci.yaml")
    env_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    common = ["--recipe", recipe]
    steps = [
        ["data", *common, "--output", str(out / "data")],
        [
            "base",
            *common,
            "--data",
            str(out / "data"),
            "--output",
            str(out / "base"),
            "--set",
            f"base.threads={threads}",
        ],
        [
            "sft",
            *common,
            "--stage",
            "sft_cold_start",
            "--data",
            str(out / "data"),
            "--model",
            str(out / "base"),
            "--output",
            str(out / "sft"),
            "--set",
            f"sft_cold_start.threads={threads}",
        ],
    ]
    for args in steps:
        proc = subprocess.run(
            [sys.executable, "-m", "r1forge.cli", *args],
            cwd=out,
            capture_output=True,
            text=True,
            timeout=900,
            env=unpinned_env(env_threads),
        )
        assert proc.returncode == 0, f"{args[0]} failed\n{proc.stdout}\n{proc.stderr}"
    files = sorted((out / "data").rglob("*.jsonl"))
    hashes = {str(f.relative_to(out)): sha256_file(f) for f in files}
    for model in ("base", "sft"):
        hashes[model] = sha256_file(out / model / "model.safetensors")
    return hashes


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_two_runs_of_the_first_stages_are_byte_identical(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = first_stages(tmp_path / "a", threads=2)
    second = first_stages(tmp_path / "b", threads=1)
    assert len(first) >= 5 and first == second

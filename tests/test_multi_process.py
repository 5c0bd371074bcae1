"""Several processes under torchrun on CPU (gloo): what multi-GPU runs rely on, checked here.

DeepSpeed ZeRO-2/ZeRO-3 SFT and ZeRO-3 GRPO on 2 processes train what one process with the
same global batch trains, and a run SIGKILLed on every rank resumes to the weights of the
uninterrupted run. The same on H200s over NCCL: `benchmarks/multi_gpu_scaling.py`.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from .test_grpo_stage import grpo
from .test_sft_stage import max_diff, sft, weights

pytestmark = pytest.mark.slow
KILL = "R1FORGE_KILL_AFTER_STEP"


def torchrun(processes: int) -> list[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(processes),
        "--master_port",
        str(port),
    ]


def rows(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_sft_on_two_processes_matches_one(
    ci_data: Path, ci_base: Path, tmp_path: Path, zero_stage: int
) -> None:
    common = (
        "sft_cold_start.max_steps=4",
        "sft_cold_start.micro_batch_size=2",
        f"sft_cold_start.zero_stage={zero_stage}",
        "sft_cold_start.zero3_persistence_threshold=0",  # shard even the ci model's tiny weights
    )
    sft(ci_data, ci_base, tmp_path / "one", *common, "sft_cold_start.gradient_accumulation=2")
    two = tmp_path / "two"
    sft(ci_data, ci_base, two, *common, launcher=torchrun(2))
    assert max_diff(weights(tmp_path / "one"), weights(two)) < 1e-5
    assert max_diff(weights(ci_base), weights(two)) > 1e-3  # it trained
    assert [r["loss"] for r in rows(tmp_path / "one")] == pytest.approx(
        [r["loss"] for r in rows(two)], abs=1e-5
    )
    check = json.loads((two / "r1forge.json").read_text())["metrics"]["rank_check"]
    assert check["ranks"] == 2 and check["step"] == 4  # it raises when ranks disagree


def test_zero3_sft_sigkilled_on_every_rank_resumes(
    ci_data: Path, ci_base: Path, tmp_path: Path
) -> None:
    settings = (
        "sft_cold_start.max_steps=4",
        "sft_cold_start.save_every=2",
        "sft_cold_start.micro_batch_size=2",
        "sft_cold_start.zero_stage=3",
        "sft_cold_start.zero3_persistence_threshold=0",
    )
    sft(ci_data, ci_base, tmp_path / "straight", *settings, launcher=torchrun(2))
    out = tmp_path / "resumed"
    killed = sft(
        ci_data, ci_base, out, *settings, launcher=torchrun(2), env={KILL: "2"}, check=False
    )
    assert killed.returncode != 0 and not out.exists()
    checkpoint = out.with_suffix(".run") / "checkpoints"
    assert (checkpoint / "latest").read_text() == "step-0000002"
    assert len(list((checkpoint / "step-0000002").glob("rng-rank*.pt"))) == 2
    sft(ci_data, ci_base, out, *settings, launcher=torchrun(2), extra=("--resume",))
    assert max_diff(weights(tmp_path / "straight"), weights(out)) <= 1e-6
    assert [r["step"] for r in rows(out)] == [1, 2, 3, 4]


# the ci model earns no accuracy yet; a length penalty varies within groups, so GRPO updates
GRPO_ZERO3 = (
    "grpo_reasoning.zero_stage=3",
    "grpo_reasoning.zero3_persistence_threshold=0",
    "grpo_reasoning.rollout_engine=static",
    "grpo_reasoning.max_steps=4",
    "grpo_reasoning.save_every=2",
    "grpo_reasoning.rewards={length: 1.0}",
    "grpo_reasoning.reward_params={length: {max_length: 20, cache_length: 16}}",
    "grpo_reasoning.lr=1e-2",
)


def test_zero3_grpo_on_two_processes_matches_one(
    ci_data: Path, ci_base: Path, tmp_path: Path
) -> None:
    """Per-prompt sampling seeds: 2 ranks draw the very completions 1 process draws."""
    grpo(ci_data, ci_base, tmp_path / "one", *GRPO_ZERO3)
    grpo(ci_data, ci_base, tmp_path / "two", *GRPO_ZERO3, launcher=torchrun(2))
    one, two = rows(tmp_path / "one"), rows(tmp_path / "two")
    for key in ("reward", "completion_length", "entropy", "clip_fraction"):
        assert [r.get(key) for r in one] == pytest.approx([r.get(key) for r in two], abs=1e-5)
    a, b = (
        load_file(tmp_path / "one/model.safetensors"),
        load_file(tmp_path / "two/model.safetensors"),
    )
    assert max_diff(a, b) < 1e-5
    assert max_diff(a, weights(ci_base)) > 1e-3


def test_zero3_grpo_sigkilled_on_every_rank_resumes(
    ci_data: Path, ci_base: Path, tmp_path: Path
) -> None:
    grpo(ci_data, ci_base, tmp_path / "straight", *GRPO_ZERO3, launcher=torchrun(2))
    out = tmp_path / "resumed"
    killed = grpo(
        ci_data, ci_base, out, *GRPO_ZERO3, launcher=torchrun(2), env={KILL: "3"}, check=False
    )
    assert killed.returncode != 0 and not out.exists()
    grpo(ci_data, ci_base, out, *GRPO_ZERO3, launcher=torchrun(2), extra=("--resume",))
    assert max_diff(weights(tmp_path / "straight"), weights(out)) <= 1e-6
    assert [r["step"] for r in rows(out)][-2:] == [3, 4]

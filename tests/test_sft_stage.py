"""`r1forge sft` end to end on the ci recipe: loss falls, exact resume after SIGKILL,
LoRA exports a plain model, W&B offline keeps no secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import ROOT, child_env, run_cli

pytestmark = pytest.mark.slow
RECIPE = str(ROOT / "recipes/ci.yaml")


def sft(
    ci_data: Path,
    ci_base: Path,
    out: Path,
    *overrides: str,
    env: dict[str, str] | None = None,
    launcher: list[str] | None = None,
    check: bool = True,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    args = [
        "sft",
        "--recipe",
        RECIPE,
        "--data",
        str(ci_data),
        "--model",
        str(ci_base),
        "--output",
        str(out),
        *extra,
    ]
    for item in overrides:
        args += ["--set", item]
    if launcher is None:
        if env is None:
            return run_cli(*args, check=check)
        cmd = [sys.executable, "-m", "r1forge.cli", *args]
    else:
        cmd = [*launcher, "-m", "r1forge.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=child_env(env))
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
        )
    return proc


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_loss_falls_and_outputs_are_complete(ci_data: Path, ci_base: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    sft(
        ci_data,
        ci_base,
        out,
        "sft_cold_start.max_steps=24",
        "sft_cold_start.log_every=4",
        "sft_cold_start.eval_every=12",
        extra=("--metrics", str(tmp_path / "m.json")),
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows]
    assert losses[-1] < losses[0] * 0.8, losses
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(evals) == 2 and evals[-1] < evals[0]
    for name in (
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "config.yaml",
        "r1forge.json",
        "curves.png",
    ):
        assert (out / name).is_file(), name
    meta = json.loads((out / "r1forge.json").read_text())
    manifest = json.loads((ci_data / "cold_start.manifest.json").read_text())
    assert meta["lineage"]["datasets"] == {"cold_start.jsonl": manifest["sha256"]}
    assert meta["lineage"]["base_model"] == "r1forge-tiny" and meta["lineage"]["code_revision"]
    assert json.loads((tmp_path / "m.json").read_text())["sft_cold_start"]["steps"] == 24


def test_sigkill_then_resume_matches_uninterrupted(
    ci_data: Path, ci_base: Path, tmp_path: Path
) -> None:
    settings = ("sft_cold_start.max_steps=6", "sft_cold_start.save_every=2")
    sft(ci_data, ci_base, tmp_path / "straight", *settings)
    killed = sft(
        ci_data,
        ci_base,
        tmp_path / "resumed",
        *settings,
        env={"R1FORGE_KILL_AFTER_STEP": "5"},
        check=False,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "resumed").exists()
    assert (tmp_path / "resumed.run/checkpoints/latest").read_text() == "step-0000004"
    sft(ci_data, ci_base, tmp_path / "resumed", *settings, extra=("--resume",))
    assert max_diff(weights(tmp_path / "straight"), weights(tmp_path / "resumed")) <= 1e-6
    summary = json.loads((tmp_path / "resumed/r1forge.json").read_text())["metrics"]
    assert summary["resumed_from_step"] == 4
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_lora_exports_a_plain_model(ci_data: Path, ci_base: Path, tmp_path: Path) -> None:
    sft(
        ci_data,
        ci_base,
        tmp_path / "lora",
        "sft_cold_start.max_steps=3",
        "sft_cold_start.lora={r: 4, alpha: 8}",
    )
    merged, original = weights(tmp_path / "lora"), weights(ci_base)
    assert merged.keys() == original.keys()  # no adapter keys left: LoRA merged into the base
    assert max_diff(merged, original) > 0


def test_wandb_offline_inside_output_and_no_secrets(
    ci_data: Path, ci_base: Path, tmp_path: Path
) -> None:
    secrets = {
        "WANDB_API_KEY": "sekrit-wandb-0123456789abcdef0123456789abcdef01234567",
        "HF_TOKEN": "hf_sekrit_token_42",
    }
    out = tmp_path / "tracked"
    sft(
        ci_data,
        ci_base,
        out,
        "sft_cold_start.max_steps=2",
        "sft_cold_start.tracking.wandb=true",
        env={**secrets, "WANDB_MODE": "offline", "HOME": str(tmp_path / "home")},
    )
    runs = list((out / "wandb").rglob("*.wandb"))
    assert runs, "no offline W&B run in the output folder"
    assert not (tmp_path / "home" / ".config" / "wandb").exists()
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            blob = path.read_bytes()
            for value in secrets.values():
                assert value.encode() not in blob, f"secret written to {path}"


def test_bad_settings_are_clear_errors(ci_data: Path, ci_base: Path, tmp_path: Path) -> None:
    proc = sft(
        ci_data, ci_base, tmp_path / "x", "sft_cold_start.micro_batch_size=4096", check=False
    )
    assert proc.returncode == 2 and "lower micro_batch_size" in proc.stderr
    proc = sft(
        ci_data, ci_base, tmp_path / "x", "sft_cold_start.datasets=[nope.jsonl]", check=False
    )
    assert proc.returncode == 2 and "nope.jsonl: file not found" in proc.stderr
    proc = sft(ci_data, ci_base, tmp_path / "x", "sft_cold_start.max_seq_len=100000", check=False)
    assert proc.returncode == 2 and "max_position_embeddings" in proc.stderr
    proc = sft(ci_data, tmp_path / "no-model", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "not a model folder" in proc.stderr
    assert not (tmp_path / "x").exists()

"""Issue 18, training faults: a diverged run never publishes (the previous model stays), a
fresh rerun keeps the old run folder until its own first checkpoint, and the temp folders
of killed writers are removed by the next write."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from r1forge.errors import TrainingError
from r1forge.io import atomic_dir, folder_sha256, write_text_atomic
from r1forge.train.guards import require_finite_metrics, require_finite_weights

from .test_sft_stage import sft


def test_non_finite_metrics_stop_the_run() -> None:
    require_finite_metrics({"step": 3, "loss": 1.5, "grad_norm": 0.2, "lr": 1e-4}, "SFT")
    require_finite_metrics({"step": 3, "loss": 1.5, "grad_norm": None}, "SFT")  # not measured
    for key, value in (("loss", math.nan), ("grad_norm", math.inf), ("kl", -math.inf)):
        with pytest.raises(TrainingError, match=rf"step 3 \({key} {value}; lr 10.0\)"):
            require_finite_metrics({"step": 3, "lr": 10.0, key: value}, "GRPO")


def test_non_finite_weights_are_never_published() -> None:
    good = {"a": torch.ones(2), "b": torch.zeros(3), "steps": torch.tensor([1, 2])}
    require_finite_weights(good, "out")
    for bad in (
        torch.tensor([1.0, math.nan]),
        torch.tensor([math.inf]),
        torch.full((2,), -math.inf),
    ):
        with pytest.raises(TrainingError, match=r"refusing to publish out: 1 weight tensor.*\(w\)"):
            require_finite_weights({**good, "w": bad}, "out")
    many = {f"w{i}": torch.tensor([math.nan]) for i in range(5)}
    with pytest.raises(TrainingError, match="w0, w1, w2 and 2 more"):
        require_finite_weights(many.items(), "out")


def test_temp_folders_of_dead_writers_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "model"
    dead = tmp_path / ".model.999999999.k3j.tmp"  # no such pid
    old_style = tmp_path / ".model.ab_cd12.tmp"  # before pids were in the name
    live = tmp_path / f".model.{os.getpid()}.zz.tmp"  # a writer still at work
    stray_file = tmp_path / ".model.999999998.x.tmp"
    other = tmp_path / ".other.999999999.k.tmp"  # another output's temp
    for folder in (dead, old_style, live, other):
        folder.mkdir()
        (folder / "weights.bin").write_bytes(b"x" * 10)
    stray_file.write_text("half")
    with atomic_dir(target) as out:
        (out / "done").write_text("ok")
    assert (target / "done").read_text() == "ok"
    assert not dead.exists() and not old_style.exists() and not stray_file.exists()
    assert live.is_dir() and other.is_dir()
    config = tmp_path / "config.json"
    (tmp_path / ".config.json.999999999.a.tmp").write_text("{")
    write_text_atomic(config, "{}")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".config")) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_outputs_get_the_umasks_permissions(tmp_path: Path, umask: int) -> None:
    """Outputs are read by other users and containers (a shared disk, a PVC): an atomic
    write leaves what a plain write would, not its temp file's private 0600 / 0700."""
    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "metrics.json", "{}")
        with atomic_dir(tmp_path / "model") as out:
            (out / "config.json").write_text("{}")
        plain = tmp_path / "plain"
        plain.mkdir()
        (plain / "file").write_text("x")
    finally:
        os.umask(previous)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(tmp_path / "metrics.json") == mode(plain / "file") == 0o666 & ~umask
    assert mode(tmp_path / "model") == mode(plain) == 0o777 & ~umask
    assert mode(tmp_path / "model/config.json") == 0o666 & ~umask


@pytest.mark.slow
def test_diverged_sft_exits_non_zero_and_keeps_the_previous_model(
    ci_data: Path, ci_base: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sft"
    shutil.copytree(ci_base, out)  # a good model already published there
    before = folder_sha256(out)
    proc = sft(
        ci_data,
        ci_base,
        out,
        "sft_cold_start.lr=1.0e+30",
        "sft_cold_start.max_steps=4",
        "sft_cold_start.log_every=1",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "training diverged at step" in proc.stderr and "Traceback" not in proc.stderr
    assert folder_sha256(out) == before
    # `.inf` is refused before any work, by the recipe's types
    proc = sft(ci_data, ci_base, out, "sft_cold_start.lr=.inf", check=False)
    assert proc.returncode == 2 and "finite" in proc.stderr, proc.stderr[-2000:]
    assert folder_sha256(out) == before


@pytest.mark.slow
def test_fresh_rerun_keeps_the_old_run_until_its_first_checkpoint(
    ci_data: Path, ci_base: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sft"
    settings = ("sft_cold_start.max_steps=6", "sft_cold_start.save_every=2")
    killed = sft(
        ci_data, ci_base, out, *settings, env={"R1FORGE_KILL_AFTER_STEP": "5"}, check=False
    )
    assert killed.returncode == -9
    run, previous = tmp_path / "sft.run", tmp_path / "sft.run.previous"
    assert (run / "checkpoints/latest").read_text() == "step-0000004"
    # a fresh rerun (no --resume), killed before its first checkpoint: step 4 is not lost
    again = sft(ci_data, ci_base, out, *settings, env={"R1FORGE_KILL_AFTER_STEP": "1"}, check=False)
    assert again.returncode == -9
    assert (previous / "checkpoints/latest").read_text() == "step-0000004"
    assert not (run / "checkpoints/latest").exists()
    # --resume goes on from the run set aside
    sft(ci_data, ci_base, out, *settings, extra=("--resume",))
    assert (out / "r1forge.json").is_file() and not previous.exists()
    assert json.loads((out / "r1forge.json").read_text())["metrics"]["resumed_from_step"] == 4
    # a fresh rerun that reaches its first checkpoint drops the set-aside folder
    sft(ci_data, ci_base, out, *settings)
    assert not previous.exists() and (run / "checkpoints/latest").read_text() == "step-0000006"

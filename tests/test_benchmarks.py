"""The benchmark scripts still run end to end (tiny CPU sizes; no timing is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_sft_throughput_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sft.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/sft_throughput.py"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for side in ("trl", "r1forge"):
        steps = report[side]["step_tokens_per_s"]
        assert report[side]["tokens_per_s"] > 0 and steps and all(x > 0 for x in steps)
    assert report["ratio_vs_trl"] == pytest.approx(
        report["r1forge"]["tokens_per_s"] / report["trl"]["tokens_per_s"]
    )
    assert "ratio r1forge / TRL" in proc.stdout


@pytest.mark.slow
def test_grpo_step_smoke(tmp_path: Path) -> None:
    out = tmp_path / "grpo.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/grpo_step.py"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ratio_vs_trl"] == pytest.approx(
        report["trl"]["seconds_per_step"] / report["r1forge"]["seconds_per_step"]
    )
    gen = report["generation"]
    assert gen["greedy_token_agreement"] == 1.0  # fp32 on CPU: the engine is exact
    for side in ("transformers_static_compiled", "r1forge_static_engine"):
        assert gen[side]["tokens_per_s"] > 0 and gen[side]["decode_ms_per_step"] > 0
    assert "ratio r1forge / TRL" in proc.stdout


@pytest.mark.slow
def test_recipe_quality_smoke(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"

    def bench() -> dict:
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks/recipe_quality.py"),
                "--recipe",
                str(ROOT / "recipes/ci.yaml"),
                "--seeds",
                "3",
                "--workdir",
                str(tmp_path / "work"),
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())

    report = bench()
    seed = report["seeds"]["3"]
    assert seed["grpo_steps"] == 4 and "arithmetic/greedy" in seed["eval"]
    e = seed["eval"]["arithmetic/greedy"]
    assert e["gain_points"] == pytest.approx(100 * (e["grpo"] - e["sft"]))
    assert report["summary"]["arithmetic/greedy"]["gain_points_min"] == pytest.approx(
        e["gain_points"]
    )
    curve = seed["eval_curve"]
    assert curve[0]["step"] == 0 and curve[-1]["step"] == 4
    assert curve[0]["eval/arithmetic/greedy"] == e["sft"]
    assert curve[-1]["eval/arithmetic/greedy"] == e["grpo"]
    # run again in the same work folder: every stage is already finished, nothing is redone
    log = tmp_path / "work/seed3/log.txt"
    logged = log.read_text()
    again = bench()
    assert log.read_text() == logged
    assert again["seeds"]["3"]["eval"] == seed["eval"]


@pytest.mark.slow
def test_multi_gpu_scaling_smoke(tmp_path: Path) -> None:
    """The DeepSpeed launcher with 1 and 2 gloo ranks: same losses, rewards and weights."""
    out = tmp_path / "multi.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/multi_gpu_scaling.py"),
            "--tiny",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    sft, grpo = report["sft"], report["grpo"]
    assert (
        sft["runs"]["2"]["rank_check"]["ranks"] == 2
        and grpo["runs"]["2"]["rank_check"]["ranks"] == 2
    )
    assert sft["runs"]["2"]["max_loss_diff_vs_1"] < 1e-5  # fp32 on CPU
    assert grpo["runs"]["2"]["max_reward_diff_vs_1"] < 1e-6
    assert grpo["runs"]["2"]["weights_vs_1"]["max_abs"] < 1e-6
    for part in (sft, grpo):
        resume = part["kill_and_resume"]
        assert resume["resumed_from_step"] == resume["killed_after_step"] > 0
        assert resume["weights_vs_uninterrupted"]["max_abs"] <= 1e-6
        assert all(r["scaling_efficiency"] > 0 for r in part["runs"].values())
    assert grpo["kill_and_resume"]["weights_moved"]["max_abs"] > 1e-5
    assert report["scaling"]["sft"]["scaling_efficiency"]["1"] == 1.0
    assert set(report["scaling"]["grpo"]["by_gpus"]) == {"1", "2"}

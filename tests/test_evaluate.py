"""Evaluation: pass@1 and cons@k by hand, grouped blocks, and `r1forge evaluate` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1forge.evaluation import cons_at_k, majority_vote, metrics_block, pass_at_1, report_block

from .conftest import ROOT, run_cli


def test_pass_at_1_is_the_mean_over_samples_then_prompts() -> None:
    # prompt 1: 3 of 4 right; prompt 2: 1 of 2 right -> (0.75 + 0.5) / 2
    assert pass_at_1([[1, 1, 0, 1], [0, 1]]) == pytest.approx(0.625)
    assert pass_at_1([]) == 0.0


def test_majority_vote_and_cons_at_k_by_hand() -> None:
    assert majority_vote(["3", " 3", "4", None]) == 0  # '3' and ' 3' are one answer, 2 votes
    assert majority_vote(["4", "3", "3", "4"]) == 0  # a tie goes to the first answer seen
    assert majority_vote([None, None]) is None
    answers = [["7", "7", "8"], ["1", "2", "2"], [None, None, None], ["5", "6", "6"]]
    correct = [[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 1]]
    # prompt 1 votes 7 (right), prompt 2 votes 2 (wrong), 3 has no answer, 4 votes 6 (right)
    assert cons_at_k(answers, correct) == pytest.approx(0.5)


def test_metrics_block_and_groups() -> None:
    row = {
        "task": "arithmetic",
        "difficulty": 1,
        "correct": [1.0, 0.0],
        "format": [1.0, 1.0],
        "language": [1.0, 0.0],
        "lengths": [10, 20],
        "answers": ["3", "4"],
        "greedy_correct": 1.0,
    }
    other = {**row, "difficulty": 2, "correct": [0.0, 0.0], "greedy_correct": 0.0}
    block = metrics_block([row, other])
    assert block == {
        "pass@1": 0.25,
        "cons@k": 0.5,
        "k": 2,
        "greedy_accuracy": 0.5,
        "format_rate": 1.0,
        "language_rate": 0.5,
        "mean_length": 15.0,
        "n_prompts": 2,
    }
    report = report_block([row, other])
    assert set(report["per_difficulty"]) == {"1", "2"}
    assert report["per_difficulty"]["1"]["pass@1"] == 0.5
    assert report["per_task"]["arithmetic"]["n_prompts"] == 2


@pytest.mark.slow
def test_evaluate_cli_writes_dvc_metrics_per_file(ci_data: Path, tmp_path: Path) -> None:
    from r1forge.config import load_recipe
    from r1forge.stages import base

    model = tmp_path / "model"
    base.build_base(load_recipe(ROOT / "recipes/ci.yaml"), ci_data, model)
    files = sorted((ci_data / "eval").glob("*.jsonl"))
    assert len(files) >= 2
    args = ["evaluate", "--recipe", str(ROOT / "recipes/ci.yaml"), "--model", str(model)]
    for f in files:
        args += ["--data", str(f)]
    out = tmp_path / "eval"
    proc = run_cli(
        *args, "--output", str(out), "--metrics", str(tmp_path / "m.json"), "--set", "evaluate.k=3"
    )
    assert "pass@1=" in proc.stdout
    report = json.loads((out / "metrics.json").read_text())
    for key in ("pass@1", "cons@k", "k", "greedy_accuracy", "format_rate", "language_rate"):
        assert key in report
    assert report["k"] == 3 and "per_task" in report and "per_difficulty" in report
    for f in files:
        assert report[f.stem]["n_prompts"] > 0 and "per_task" in report[f.stem]
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == report["n_prompts"] and len(json.loads(lines[0])["completions"]) == 3
    assert json.loads((tmp_path / "m.json").read_text())["evaluate"]["k"] == 3
    missing = run_cli(
        *args[:5], "--data", str(tmp_path / "nope.jsonl"), "--output", str(out), check=False
    )
    assert missing.returncode != 0 and "nope.jsonl" in missing.stderr
    assert json.loads((out / "metrics.json").read_text())["k"] == 3  # the old result is intact

"""Rejection sampling: every filter by hand, selection per prompt, and `r1forge sample`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1forge.rejection import Candidate, degenerate, pass_rate_ok, rejection_reasons, select

from .conftest import ROOT, run_cli

GOOD = "<think>\n3 + 8 = 11\n</think>\n\\boxed{11}"


def cand(text: str = GOOD, **changes: object) -> Candidate:
    values = dict(
        text=text, n_tokens=20, truncated=False, correct=1.0, well_formed=1.0, one_language=1.0
    )
    values.update(changes)
    return Candidate(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        (cand(correct=0.0), "incorrect"),
        (cand(well_formed=0.0), "malformed"),
        (cand(one_language=0.0), "mixed_language"),
        (cand(truncated=True), "overlong"),
        (cand(n_tokens=97), "overlong"),
        (cand("<think>\n" + "3 + 8 = 11 " * 20 + "\n</think>\n\\boxed{11}"), "degenerate"),
        (cand("<think>\n```python\nprint(11)\n```\n</think>\n\\boxed{11}"), "code_in_think"),
        (cand("<think>\n" + "x" * 1300 + "\n</think>\n\\boxed{11}"), "long_paragraph"),
    ],
)
def test_each_filter_refuses_for_its_reason(candidate: Candidate, reason: str) -> None:
    assert rejection_reasons(candidate, max_tokens=96) == [reason]


def test_a_clean_completion_passes_and_limits_are_settings() -> None:
    assert rejection_reasons(cand(), max_tokens=96) == []
    code = cand("<think>\n```python\nprint(11)\n```\n</think>\n\\boxed{11}")
    assert rejection_reasons(code, max_tokens=96, allow_code_in_think=True) == []
    # code after </think> is the answer's business, not the reasoning's
    assert rejection_reasons(cand(GOOD + "\n```x```"), max_tokens=96) == []
    assert rejection_reasons(cand(n_tokens=96), max_tokens=96) == []
    assert not degenerate("a b c d e f g h i j")
    assert degenerate("go " * 40)


def test_select_drops_duplicates_and_keeps_the_shortest() -> None:
    texts = ["long answer " * 5, "short one", "short one", "  SHORT one ", "another text here"]
    lengths = [10, 2, 2, 3, 3]
    # 2 and 3 duplicate 1 (exact after normalising); the rest by length, then order
    assert select(texts, lengths, n=2) == [1, 4]
    assert select(texts, lengths, n=10) == [1, 4, 0]
    assert select(["only"], [1], n=1) == [0]


def test_pass_rate_window() -> None:
    assert pass_rate_ok(0.5, None) and pass_rate_ok(0.2, (0.2, 0.8))
    assert not pass_rate_ok(1.0, (0.2, 0.8)) and not pass_rate_ok(0.1, (0.2, 0.8))


@pytest.mark.slow
def test_sample_cli_writes_a_valid_sft_dataset(ci_data: Path, tmp_path: Path) -> None:
    from r1forge.config import load_recipe
    from r1forge.data.jsonl import read_jsonl, read_manifest
    from r1forge.stages import base

    model = tmp_path / "model"
    base.build_base(load_recipe(ROOT / "recipes/ci.yaml"), ci_data, model)
    out = tmp_path / "syn" / "reasoning.jsonl"
    proc = run_cli(
        "sample",
        "--recipe",
        str(ROOT / "recipes/ci.yaml"),
        "--model",
        str(model),
        "--data",
        str(ci_data),
        "--output",
        str(out),
        "--set",
        "sample.limit=6",
        "--set",
        "sample.k=3",
    )
    assert "refused:" in proc.stdout
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["prompts"] == 6 and stats["samples"] == 18
    assert sum(stats["refused"].values()) >= stats["samples"] - stats["accepted_samples"]
    assert set(stats["per_task"]) and set(stats["per_difficulty"])
    assert read_manifest(out)["count"] == stats["examples_kept"]
    if stats["examples_kept"]:  # the untrained ci model rarely solves anything
        assert len(read_jsonl(out, "sft")) == stats["examples_kept"]
    else:
        assert out.read_text() == ""
    bad = run_cli("sample", "--model", str(tmp_path / "none"), "--output", str(out), check=False)
    assert bad.returncode != 0 and "none" in bad.stderr


def test_checks_choose_the_filters() -> None:
    wrong_and_long = cand(correct=0.0, truncated=True)
    assert rejection_reasons(wrong_and_long, max_tokens=96) == ["incorrect", "overlong"]
    assert rejection_reasons(wrong_and_long, max_tokens=96, checks=["overlong"]) == ["overlong"]
    assert rejection_reasons(wrong_and_long, max_tokens=96, checks=[]) == []

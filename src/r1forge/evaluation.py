"""Evaluation metrics as pure functions: pass@1 over k samples, cons@k, and grouped blocks.

R1's protocol: k samples per prompt at temperature 0.6, top-p 0.95; pass@1 is the mean
correctness over all k samples of all prompts; cons@k is majority voting: a prompt counts
as solved when the most frequent extracted answer among its k samples is a correct one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def pass_at_1(correct: Sequence[Sequence[float]]) -> float:
    """Mean over prompts of the mean correctness of that prompt's k samples."""
    if not correct:
        return 0.0
    return sum(sum(row) / len(row) for row in correct) / len(correct)


def normalize_answer(answer: str) -> str:
    """Votes for `1/2` and ` 1/2 ` are one vote: whitespace is dropped."""
    return "".join(answer.split())


def majority_vote(answers: Sequence[str | None]) -> int | None:
    """Index of a sample carrying the most frequent answer (None answers have no vote).

    Ties go to the answer that appeared first, so the vote is deterministic.
    """
    keys = [normalize_answer(a) if a else None for a in answers]
    counts = Counter(k for k in keys if k)
    if not counts:
        return None
    best = max(counts.values())
    for index, key in enumerate(keys):
        if key and counts[key] == best:
            return index
    return None


def cons_at_k(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[float]]) -> float:
    """Share of prompts whose majority-voted answer is correct."""
    if not answers:
        return 0.0
    solved = 0.0
    for row_answers, row_correct in zip(answers, correct, strict=True):
        index = majority_vote(row_answers)
        solved += 0.0 if index is None else row_correct[index]
    return solved / len(answers)


def metrics_block(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The metrics of a set of prompts, each row holding its k samples' scores and its greedy one.

    A row: `correct`, `format`, `language`, `lengths` (lists over the k samples), `answers`
    (extracted answers), `greedy_correct` (one float).
    """
    n = len(rows)
    k = len(rows[0]["correct"]) if rows else 0

    def mean_of(key: str) -> float:
        values = [v for row in rows for v in row[key]]
        return sum(values) / len(values) if values else 0.0

    return {
        "pass@1": pass_at_1([row["correct"] for row in rows]),
        "cons@k": cons_at_k([row["answers"] for row in rows], [row["correct"] for row in rows]),
        "k": k,
        "greedy_accuracy": sum(row["greedy_correct"] for row in rows) / n if n else 0.0,
        "format_rate": mean_of("format"),
        "language_rate": mean_of("language"),
        "mean_length": mean_of("lengths"),
        "n_prompts": n,
    }


def grouped(rows: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """One metrics block per value of row[key] (task, difficulty), in sorted order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row[key]), []).append(row)
    return {name: metrics_block(groups[name]) for name in sorted(groups)}


def report_block(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The overall block with its per-task and per-difficulty breakdowns."""
    return {
        **metrics_block(rows),
        "per_task": grouped(rows, "task"),
        "per_difficulty": grouped(rows, "difficulty"),
    }


SUMMARY_KEYS = ("pass@1", "cons@k", "greedy_accuracy", "format_rate", "mean_length")


def summary(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`metrics/summary.json`: one row per evaluated checkpoint, in the recipe's order."""
    return {
        "checkpoints": [
            {"name": name, **{key: report[key] for key in SUMMARY_KEYS}}
            for name, report in reports.items()
        ]
    }

"""Rejection-sampling filters (R1, stage 3) as pure functions.

A completion is kept only if it is correct, well formed, in one language, not truncated or
overlong, not degenerate, and its chain of thought holds no code block and no overlong
paragraph (R1 filtered "long paragraphs and code blocks" from its reasoning data). Then,
per prompt: exact and near duplicates go, and the shortest correct ones are kept, at most n.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import get_args

from r1forge.config import RejectionReason
from r1forge.data.dedup import exact_duplicates, near_duplicates
from r1forge.rewards.parsing import split_think


@dataclass(frozen=True)
class Candidate:
    """One scored completion of one prompt."""

    text: str
    n_tokens: int
    truncated: bool
    correct: float
    well_formed: float
    one_language: float


def degenerate(text: str, ngram: int = 4, min_unique: float = 0.3) -> bool:
    """True when the words repeat: under `min_unique` of the word n-grams are distinct."""
    words = text.split()
    if len(words) < 2 * ngram:
        return False
    grams = list(zip(*(words[i:] for i in range(ngram)), strict=False))
    return len(set(grams)) / len(grams) < min_unique


REASONS: tuple[str, ...] = get_args(RejectionReason)


def rejection_reasons(
    candidate: Candidate,
    *,
    max_tokens: int,
    max_paragraph_chars: int = 1200,
    allow_code_in_think: bool = False,
    checks: Sequence[str] = REASONS,
) -> list[str]:
    """Why a completion is refused (among the `checks` applied); an empty list keeps it."""
    reasons = []
    if candidate.correct < 1.0:
        reasons.append("incorrect")
    if candidate.well_formed < 1.0:
        reasons.append("malformed")
    if candidate.one_language < 1.0:
        reasons.append("mixed_language")
    if candidate.truncated or candidate.n_tokens > max_tokens:
        reasons.append("overlong")
    if degenerate(candidate.text):
        reasons.append("degenerate")
    think = split_think(candidate.text).think or ""
    if not allow_code_in_think and "```" in think:
        reasons.append("code_in_think")
    if any(len(p) > max_paragraph_chars for p in think.split("\n\n")):
        reasons.append("long_paragraph")
    return [r for r in reasons if r in checks]


def select(texts: Sequence[str], lengths: Sequence[int], n: int, near: float = 0.9) -> list[int]:
    """Indices of at most n accepted texts: duplicates dropped, shortest first (ties: order)."""
    exact = exact_duplicates(texts)
    close = near_duplicates(texts, threshold=near) if len(texts) > 1 else [False] * len(texts)
    unique = [i for i in range(len(texts)) if not exact[i] and not close[i]]
    return sorted(unique, key=lambda i: (lengths[i], i))[:n]


def pass_rate_ok(rate: float, bounds: tuple[float, float] | None) -> bool:
    """Keep a prompt whose pass rate lies in [a, b] (no bounds: keep every prompt)."""
    return bounds is None or bounds[0] <= rate <= bounds[1]

"""Verifiable task families, keyed by name. Each generates problems deterministically from an RNG.

A problem carries three renderings of one solution: the question, a worked chain of thought
(cold-start SFT), and a plain worked solution in another surface format (base pre-training).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    task: str
    question: str
    answer: str
    thought: str
    final: str
    solution_text: str
    difficulty: int
    verifier: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """What makes two problems the same problem (for dedupe and train/eval disjointness)."""
        return self.question


Generator = Callable[[random.Random, int], Problem]
TASKS: dict[str, Generator] = {}
MAX_DIFFICULTY = 5


def register_task(name: str) -> Callable[[Generator], Generator]:
    def wrap(fn: Generator) -> Generator:
        TASKS[name] = fn
        return fn

    return wrap


def generate(name: str, rng: random.Random, difficulty: int) -> Problem:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    if not 1 <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty must be in 1..{MAX_DIFFICULTY}, got {difficulty}")
    return TASKS[name](rng, difficulty)


from r1forge.data.tasks import arithmetic, countdown  # noqa: E402,F401  (registers the tasks)

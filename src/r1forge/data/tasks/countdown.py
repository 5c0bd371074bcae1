"""Countdown: reach a target from given numbers, each used exactly once, with + − × ÷.

The answer is an expression, checked by evaluating it (the `countdown` verifier), never by
string match: many expressions reach the same target.
"""

from __future__ import annotations

import random
from fractions import Fraction

from r1forge.data.tasks import Problem, register_task

# difficulty -> (how many numbers, largest number)
LEVELS = {1: (3, 9), 2: (3, 15), 3: (4, 15), 4: (4, 25), 5: (5, 25)}


def _wrap(text: str) -> str:
    return f"({text})" if " " in text else text


def _combine(rng: random.Random, a: tuple[Fraction, str], b: tuple[Fraction, str]):
    """One random operation on two (value, text) pairs, or None if it breaks the rules."""
    (va, ta), (vb, tb) = (a, b) if rng.random() < 0.5 else (b, a)
    op = rng.choice("+-*/")
    if op == "+":
        return va + vb, f"{ta} + {tb}"
    if op == "-":
        return (va - vb, f"{ta} - {_wrap(tb)}") if va > vb else None
    if op == "*":
        return va * vb, f"{_wrap(ta)} * {_wrap(tb)}"
    if vb == 0 or (va / vb).denominator != 1:
        return None
    return va / vb, f"{_wrap(ta)} / {_wrap(tb)}"


def _attempt(rng: random.Random, numbers: list[int]):
    """Combine the numbers in a random order; returns (value, expression, step lines) or None."""
    pool = [(Fraction(n), str(n)) for n in numbers]
    steps = []
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        made = _combine(rng, pool[i], pool[j])
        if made is None:
            return None
        value, text = made
        steps.append(f"{text} = {value}")
        pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [(value, text)]
    return pool[0][0], pool[0][1], steps


@register_task("countdown")
def countdown(rng: random.Random, difficulty: int) -> Problem:
    count, largest = LEVELS[difficulty]
    while True:
        numbers = [rng.randint(1, largest) for _ in range(count)]
        found = _attempt(rng, numbers)
        if found is None:
            continue
        target, expression, steps = found
        if target.denominator == 1 and 1 < target <= 999 and int(target) not in numbers:
            break
    target_int = int(target)
    listed = ", ".join(map(str, numbers))
    tries = []
    for _ in range(4):  # a short search: a failed try or two, as a person would write it
        miss = _attempt(rng, numbers)
        if miss is not None and miss[0] != target and len(tries) < 2:
            tries.append(f"try {miss[1]} = {miss[0]} , not {target_int}")
    thought = "\n".join([*tries, f"try {expression} = {target_int} , yes"])
    return Problem(
        task="countdown",
        question=f"Use {listed} once each with + - * / to make {target_int}.",
        answer=str(target_int),
        thought=thought,
        final=expression,
        solution_text=f"{listed} -> {target_int} :\n" + "\n".join(steps) + f"\nanswer {expression}",
        difficulty=difficulty,
        verifier="countdown",
        meta={"numbers": numbers, "use_all": True},
    )

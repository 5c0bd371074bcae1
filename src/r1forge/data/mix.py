"""Mixing SFT datasets at a ratio (R1 stage 4: ~600k reasoning + ~200k general examples)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def mix_datasets(
    sets: dict[str, Sequence[T]], weights: dict[str, float], seed: int = 0
) -> tuple[list[T], dict[str, int]]:
    """Merge datasets so that their sizes follow `weights`, relative to the first dataset.

    The first dataset (the reasoning set) is kept whole; every other dataset j contributes
    round(n_first * w_j / w_first) examples, drawn without replacement while it has enough
    and cycled (each example once more per pass, reshuffled) when it is smaller. Datasets
    missing from `weights` weigh as much as the first. An empty first dataset sets no
    scale: the others are then kept whole. Returns (merged examples, counts).
    """
    names = list(sets)
    if not names:
        return [], {}
    first = names[0]
    base_weight = weights.get(first, 1.0)
    if base_weight <= 0:
        raise ValueError(f"the first dataset {first!r} needs a positive weight")
    rng = random.Random(f"{seed}/mix")
    merged: list[T] = list(sets[first])
    counts = {first: len(merged)}
    for name in names[1:]:
        items = list(sets[name])
        want = (
            round(len(sets[first]) * weights.get(name, base_weight) / base_weight)
            if sets[first]
            else len(items)
        )
        chosen: list[T] = []
        while items and len(chosen) < want:
            order = items[:]
            rng.shuffle(order)
            chosen += order[: want - len(chosen)]
        merged += chosen
        counts[name] = len(chosen)
    rng.shuffle(merged)
    return merged, counts

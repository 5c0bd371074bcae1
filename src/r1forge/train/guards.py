"""Divergence guards: a run whose loss or weights stop being finite numbers stops with a clear
error, and nothing non-finite is ever published (a NaN model would replace a good one)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from r1forge.errors import TrainingError

# Metrics of a logged row that a diverged update turns into NaN or infinity.
DIVERGENCE_KEYS = ("loss", "grad_norm", "kl", "entropy")


def require_finite_metrics(row: Mapping[str, Any], stage: str) -> None:
    """Raise TrainingError if any of the row's divergence metrics is NaN or infinite."""
    bad = {
        key: row[key]
        for key in DIVERGENCE_KEYS
        if isinstance(row.get(key), float | int) and not math.isfinite(row[key])
    }
    if bad:
        shown = ", ".join(f"{k} {v}" for k, v in bad.items())
        raise TrainingError(
            f"{stage}: training diverged at step {row.get('step', '?')} ({shown}; lr "
            f"{row.get('lr', '?')}); stopped before publishing, the previous output is intact. "
            "Lower the learning rate or resume from an earlier checkpoint."
        )


def non_finite_tensors(state: Iterable[tuple[str, Any]]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    import torch

    return [
        name
        for name, tensor in state
        if torch.is_tensor(tensor)
        and tensor.is_floating_point()
        and not bool(torch.isfinite(tensor).all())
    ]


def require_finite_weights(
    state: Mapping[str, Any] | Iterable[tuple[str, Any]], where: str
) -> None:
    """Raise TrainingError before `where` is written if any weight is not finite."""
    items = state.items() if isinstance(state, Mapping) else state
    bad = non_finite_tensors(items)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise TrainingError(
            f"refusing to publish {where}: {len(bad)} weight tensor(s) hold NaN or infinity "
            f"({', '.join(bad[:3])}{more}); the previous version is intact"
        )

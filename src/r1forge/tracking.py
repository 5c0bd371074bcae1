"""Run tracking: a local metrics.jsonl every run writes, a DVC-style summary, and PNG curves."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from r1forge.io import atomic_file, write_json_atomic

log = logging.getLogger("r1forge")


class MetricsLog:
    """Appends one JSON object a logged step to `metrics.jsonl` in the run folder."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def write_summary(path: str | Path, metrics: dict[str, Any]) -> None:
    """A flat-or-nested JSON of final numbers, the format `dvc metrics show` reads."""
    write_json_atomic(path, metrics)


def plot_curves(rows: list[dict[str, Any]], keys: list[str], path: str | Path, title: str) -> Path:
    """Plot each key against `step` into one PNG (one panel a key), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in r for r in rows)]
    fig, axes = plt.subplots(len(keys) or 1, 1, figsize=(7, 2.6 * max(1, len(keys))), squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=False):
        points = [
            (r["step"], r[key])
            for r in rows
            if key in r and r[key] is not None and math.isfinite(r[key])
        ]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", linewidth=1)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)
    return Path(path)

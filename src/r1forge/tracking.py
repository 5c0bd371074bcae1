"""Run tracking: a local metrics.jsonl every run writes, W&B (offline by default), PNG curves.

All W&B folders live inside the run folder, and the logged config is scrubbed of anything
that looks like a secret; API keys stay in the environment and are never written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Any

from r1forge.io import atomic_file

log = logging.getLogger("r1forge")


SECRET_WORDS = ("key", "token", "secret", "password", "credential")


class MetricsLog:
    """Appends one JSON object a logged step to `metrics.jsonl` in the run folder.

    On resume, rows past `resume_step` (logged after the last checkpoint) are dropped so the
    file holds each step once.
    """

    def __init__(self, folder: str | Path, resume_step: int | None = None):
        self.path = Path(folder) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.rows = [r for r in rows if r.get("step", 0) <= resume_step]
            with atomic_file(self.path) as handle:
                handle.writelines(json.dumps(r) + "\n" for r in self.rows)
        elif self.path.exists():
            self.path.unlink()

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def scrub_secrets(value: Any) -> Any:
    """A copy of a config with every value under a secret-looking key replaced by '***'."""
    if isinstance(value, dict):
        return {
            k: "***" if any(w in str(k).lower() for w in SECRET_WORDS) and v else scrub_secrets(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub_secrets(v) for v in value]
    return value


class Tracker:
    """Local metrics.jsonl always; W&B too when the recipe enables it. Only rank 0 tracks."""

    def __init__(
        self,
        run_dir: str | Path,
        settings: Any,
        config: dict[str, Any],
        name: str,
        resume_step: int | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.metrics = MetricsLog(self.run_dir, resume_step)
        self.wandb = None
        if settings.wandb and settings.mode != "disabled":
            self.wandb = self._start_wandb(
                settings, scrub_secrets(config), name, resume_step is not None
            )

    def _start_wandb(self, settings: Any, config: dict[str, Any], name: str, resuming: bool) -> Any:
        folder = self.run_dir / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        for var in (
            "WANDB_DIR",
            "WANDB_CACHE_DIR",
            "WANDB_DATA_DIR",
            "WANDB_CONFIG_DIR",
            "WANDB_ARTIFACT_DIR",
        ):
            os.environ[var] = str(folder)
        os.environ["WANDB_SILENT"] = "true"
        import wandb

        id_file = self.run_dir / "wandb-run-id"
        run_id = (
            id_file.read_text().strip() if resuming and id_file.is_file() else uuid.uuid4().hex[:8]
        )
        id_file.write_text(run_id)
        return wandb.init(
            project=settings.project,
            entity=settings.entity,
            mode=settings.mode,
            dir=str(folder),
            name=name,
            id=run_id,
            resume="allow",
            config=config,
            tags=settings.tags,
            settings=wandb.Settings(
                save_code=False, disable_git=True, x_disable_stats=True, console="off"
            ),
        )

    def log(self, row: dict[str, Any]) -> None:
        self.metrics.log(row)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        """A table of examples (e.g. sample completions): W&B table and a local JSONL."""
        with open(self.run_dir / f"{key}.jsonl", "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(
                    json.dumps({"step": step, **dict(zip(columns, row, strict=True))}) + "\n"
                )
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Table(columns=columns, data=rows)}, step=step)

    def finish(self, summary: dict[str, Any]) -> None:
        if self.wandb is not None:
            self.wandb.summary.update(
                {k: v for k, v in summary.items() if isinstance(v, int | float | str)}
            )
            self.wandb.finish()
            self.wandb = None


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

"""Stage `distill`: R1's distillation: the teacher answers, its verified answers train students.

The teacher (the final RL model) samples answers to the distillation prompts, which pass
the same filters as rejection sampling (`r1forge.stages.sample`); each student
configuration, a smaller pre-trained base, is then fine-tuned on them (R1 distilled with
SFT alone), optionally mixing in logit distillation (forward or reverse KL at a
temperature) when teacher and student share a tokenizer. Several students train in one
run. Output: `<output>/data/distill.jsonl` (+ manifest and stats) and one model folder per
student, `<output>/<student>/`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from r1forge.config import Recipe
from r1forge.errors import ConfigError
from r1forge.io import atomic_dir, write_json_atomic
from r1forge.stages import sample, sft
from r1forge.stages.common import require_model_folder

log = logging.getLogger("r1forge.distill")
DATASET = "distill.jsonl"


def run(
    recipe: Recipe, data: Path, teacher: Path, output: Path, metrics: Path | None = None
) -> dict[str, Any]:
    """Sample the teacher's verified answers, then fine-tune every student on them."""
    cfg = recipe.distill
    if not cfg.students:
        raise ConfigError("distill.students is empty: name at least one student")
    require_model_folder(teacher)
    for name, student in cfg.students.items():
        require_model_folder(Path(student.model))
        if not name.isidentifier():
            raise ConfigError(f"student name {name!r}: use letters, digits and underscores")
    summary: dict[str, Any] = {"students": {}}
    with atomic_dir(output) as tmp:
        dataset = tmp / "data" / DATASET
        dataset.parent.mkdir(parents=True)
        summary["teacher_samples"] = sample.sample_dataset(
            cfg.teacher_samples, teacher, data, dataset
        )
        if summary["teacher_samples"]["examples_kept"] == 0:
            raise ConfigError(f"no teacher answer passed the filters (see {dataset.name} stats)")
        for name, student in cfg.students.items():
            log.info("student %s: SFT from %s", name, student.model)
            section = student.sft.model_copy(update={"datasets": [DATASET], "mix": {}})
            staged = recipe.model_copy(update={"sft_cold_start": section})
            summary["students"][name] = sft.run(
                staged,
                "sft_cold_start",
                dataset.parent,
                Path(student.model),
                tmp / name,
                teacher=teacher if student.kd else None,
                kd=student.kd,
            )
        # each student on the recipe's eval sets, as `r1forge evaluate` would
        from r1forge.stages import evaluate

        files = evaluate.eval_files(recipe.evaluate, data)
        for name in cfg.students:
            report = evaluate.run(recipe, tmp / name, files, tmp / name / "eval")
            summary["students"][name]["eval"] = {
                k: v for k, v in report.items() if k not in ("per_task", "per_difficulty", "model")
            }
        write_json_atomic(tmp / "summary.json", summary)
    if metrics is not None:
        write_json_atomic(metrics, {"distill": summary})
    return summary

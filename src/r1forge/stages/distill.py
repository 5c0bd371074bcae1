"""Stage `distill`: R1's distillation: the teacher answers, its verified answers train students.

The teacher (the final RL model) samples answers to the distillation prompts, which pass
the same filters as rejection sampling (`r1forge.stages.sample`); each student
configuration, a smaller pre-trained base, is then fine-tuned on them (R1 distilled with
SFT alone), optionally mixing in logit distillation (forward or reverse KL at a
temperature) when teacher and student share a tokenizer, and evaluated on the recipe's eval
sets. Several students train in one run (`run`), or one per task in a pipeline
(`run_teacher_data` once, then `run_student` for each). Output: `<output>/data/distill.jsonl`
(+ manifest and stats) and one model folder per student, `<output>/<student>/`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from r1forge.config import Recipe
from r1forge.errors import ConfigError
from r1forge.io import atomic_dir, write_json_atomic
from r1forge.stages import StageContext, evaluate, sample, sft
from r1forge.stages.common import require_model_folder

log = logging.getLogger("r1forge.distill")
DATASET = "distill.jsonl"


def teacher_dataset(recipe: Recipe, data: Path, teacher: Path, folder: Path) -> dict[str, Any]:
    """The teacher's filtered answers as `<folder>/distill.jsonl`; returns the sampling stats."""
    require_model_folder(teacher)
    folder.mkdir(parents=True, exist_ok=True)
    stats = sample.sample_dataset(recipe.distill.teacher_samples, teacher, data, folder / DATASET)
    if stats["examples_kept"] == 0:
        raise ConfigError(f"no teacher answer passed the filters (see {folder / DATASET} stats)")
    return stats


def train_student(
    recipe: Recipe, name: str, dataset: Path, data: Path, teacher: Path, output: Path
) -> dict[str, Any]:
    """SFT (and KD) of student `name` on the teacher's dataset folder; then its evaluation."""
    students = recipe.distill.students
    if name not in students:
        raise ConfigError(f"unknown student {name!r}; the recipe names {sorted(students)}")
    student = students[name]
    require_model_folder(Path(student.model))
    log.info("student %s: SFT from %s", name, student.model)
    section = student.sft.model_copy(update={"datasets": [DATASET], "mix": {}})
    staged = recipe.model_copy(update={"sft_cold_start": section})
    summary = sft.fine_tune(
        staged,
        "sft_cold_start",
        dataset,
        Path(student.model),
        output,
        teacher=teacher if student.kd else None,
        kd=student.kd,
    )
    report = evaluate.evaluate_model(
        recipe, output, evaluate.eval_files(recipe.evaluate, data), output / "eval"
    )
    summary["eval"] = {
        k: v
        for k, v in report.items()
        if k not in ("per_task", "per_difficulty", "model", "eval_sets")
    }
    return summary


def distill_students(
    recipe: Recipe, data: Path, teacher: Path, output: Path, metrics: Path | None = None
) -> dict[str, Any]:
    """Sample the teacher's verified answers, then fine-tune and evaluate every student."""
    cfg = recipe.distill
    if not cfg.students:
        raise ConfigError("distill.students is empty: name at least one student")
    for name, student in cfg.students.items():
        require_model_folder(Path(student.model))
        if not name.isidentifier():
            raise ConfigError(f"student name {name!r}: use letters, digits and underscores")
    summary: dict[str, Any] = {"students": {}}
    with atomic_dir(output) as tmp:
        summary["teacher_samples"] = teacher_dataset(recipe, data, teacher, tmp / "data")
        for name in cfg.students:
            summary["students"][name] = train_student(
                recipe, name, tmp / "data", data, teacher, tmp / name
            )
        write_json_atomic(tmp / "summary.json", summary)
    if metrics is not None:
        write_json_atomic(metrics, {"distill": summary})
    return summary


def run(ctx: StageContext) -> dict[str, Any]:
    return distill_students(
        ctx.recipe, ctx.inputs["data"], ctx.inputs["model"], ctx.output, ctx.metrics
    )


def run_teacher_data(ctx: StageContext) -> dict[str, Any]:
    """A pipeline's first half: the teacher's verified answers into the output folder."""
    return teacher_dataset(ctx.recipe, ctx.inputs["data"], ctx.inputs["model"], ctx.output)


def run_student(ctx: StageContext) -> dict[str, Any]:
    """A pipeline's second half, one task per student (`ctx.options["student"]`), its base
    the `base_student` input when the task is given one."""
    recipe, name = ctx.recipe, ctx.options["student"]
    students = dict(recipe.distill.students)
    if "base_student" in ctx.inputs and name in students:
        base = str(ctx.inputs["base_student"])
        students[name] = students[name].model_copy(update={"model": base})
        distill = recipe.distill.model_copy(update={"students": students})
        recipe = recipe.model_copy(update={"distill": distill})
    return train_student(
        recipe,
        name,
        ctx.inputs["distill_data"],
        ctx.inputs["data"],
        ctx.inputs["model"],
        ctx.output,
    )


def describe(summary: dict[str, Any], ctx: StageContext) -> str:
    kept = summary["teacher_samples"]["examples_kept"]
    return f"{ctx.output}: {kept} teacher examples; students: {', '.join(summary['students'])}"

"""The recipe's stages as lightweight KFP components, each a thin typed wrapper over
`r1forge.orchestration.tasks` (which calls `r1forge.stages`).

On a cluster each runs in the training image (which carries kfp and the project, hence
`install_kfp_package=False` and no `packages_to_install`); under `kfp.local` each runs as a
subprocess of this Python. Artifacts in and out are KFP Datasets and Models; every task
logs its numbers to a Metrics artifact (shown in the KFP UI) and a Markdown card.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from r1forge.orchestration import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def data_op(
    recipe: str,
    overrides: list,
    data: Output[Dataset],
    metrics: Output[Metrics],
    card: Output[Markdown],
):
    """Stage `data`: the recipe's datasets."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage("data", "data", recipe, overrides, output=data.path)
    report(metrics, card, "data", summary)
    record_lineage(data)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def base_op(
    recipe: str,
    overrides: list,
    section: str,
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    card: Output[Markdown],
):
    """Stages `base` / `base_student`: the named model, or the tiny one trained here."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage("base", section, recipe, overrides, data=data.path, output=model.path)
    report(metrics, card, section, summary)
    record_lineage(model)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def sft_op(
    recipe: str,
    overrides: list,
    section: str,
    data: Input[Dataset],
    model_in: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    card: Output[Markdown],
):
    """Stages `sft_cold_start` / `sft_student`: SFT on DeepSpeed (a TrainJob when nodes > 1)."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage(
        "sft", section, recipe, overrides, data=data.path, model=model_in.path, output=model.path
    )
    report(metrics, card, section, summary)
    record_lineage(model)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def sft_merged_op(
    recipe: str,
    overrides: list,
    data: Input[Dataset],
    synthetic: Input[Dataset],
    model_in: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    card: Output[Markdown],
):
    """Stage `sft_merged`: SFT from the base on the sampled reasoning mixed with general data."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage(
        "sft",
        "sft_merged",
        recipe,
        overrides,
        data=data.path,
        synthetic=synthetic.path,
        model=model_in.path,
        output=model.path,
    )
    report(metrics, card, "sft_merged", summary)
    record_lineage(model)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def select_op(
    recipe: str,
    overrides: list,
    data: Input[Dataset],
    model_in: Input[Model],
    selected: Output[Dataset],
    metrics: Output[Metrics],
    card: Output[Markdown],
):
    """Stage `select`: the RL prompts the starting model sometimes solves (its pass rates)."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage(
        "select",
        "select",
        recipe,
        overrides,
        data=data.path,
        model=model_in.path,
        output=selected.path,
    )
    report(metrics, card, "select", summary)
    record_lineage(selected)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def grpo_selected_op(
    recipe: str,
    overrides: list,
    section: str,
    data: Input[Dataset],
    selected: Input[Dataset],
    model_in: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    card: Output[Markdown],
):
    """Stage `grpo_reasoning`: GRPO whose prompts may come from `select` (../selected/…)."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage(
        "grpo",
        section,
        recipe,
        overrides,
        data=data.path,
        selected=selected.path,
        model=model_in.path,
        output=model.path,
    )
    report(metrics, card, section, summary)
    record_lineage(model)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def grpo_op(
    recipe: str,
    overrides: list,
    section: str,
    data: Input[Dataset],
    model_in: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    card: Output[Markdown],
):
    """Stages `grpo_reasoning` / `grpo_final` / `grpo_student`: GRPO (a TrainJob when nodes > 1)."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage(
        "grpo", section, recipe, overrides, data=data.path, model=model_in.path, output=model.path
    )
    report(metrics, card, section, summary)
    record_lineage(model)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def sample_op(
    recipe: str,
    overrides: list,
    data: Input[Dataset],
    model_in: Input[Model],
    synthetic: Output[Dataset],
    metrics: Output[Metrics],
    card: Output[Markdown],
):
    """Stage `sample`: rejection sampling into an SFT dataset with acceptance statistics."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage(
        "sample",
        "sample",
        recipe,
        overrides,
        data=data.path,
        model=model_in.path,
        output=synthetic.path,
    )
    report(metrics, card, "sample", summary)
    record_lineage(synthetic)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def distill_data_op(
    recipe: str,
    overrides: list,
    data: Input[Dataset],
    teacher: Input[Model],
    distill_data: Output[Dataset],
    metrics: Output[Metrics],
    card: Output[Markdown],
):
    """Stage `distill`, first half: the teacher's verified answers."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage(
        "distill_data",
        "distill",
        recipe,
        overrides,
        data=data.path,
        model=teacher.path,
        output=distill_data.path,
    )
    report(metrics, card, "distill data", summary)
    record_lineage(distill_data)


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def student_op(
    recipe: str,
    overrides: list,
    student: str,
    data: Input[Dataset],
    distill_data: Input[Dataset],
    teacher: Input[Model],
    student_base: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    card: Output[Markdown],
) -> float:
    """Stage `distill`, per student: SFT (and KD) on the teacher's answers, then evaluation."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage(
        "student",
        "distill",
        recipe,
        overrides,
        student=student,
        data=data.path,
        distill_data=distill_data.path,
        teacher=teacher.path,
        student_base=student_base.path,
        output=model.path,
    )
    report(metrics, card, f"student {student}", summary)
    record_lineage(model)
    return float(summary["eval"]["pass@1"])


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def evaluate_op(
    recipe: str,
    overrides: list,
    checkpoint: str,
    data: Input[Dataset],
    model_in: Input[Model],
    results: Output[Dataset],
    metrics: Output[Metrics],
    card: Output[Markdown],
) -> float:
    """Stage `evaluate`: pass@1 over k samples, cons@k, greedy, format, language, length."""
    from r1forge.orchestration.tasks import report, run_stage

    summary = run_stage(
        "evaluate",
        "evaluate",
        recipe,
        overrides,
        data=data.path,
        model=model_in.path,
        output=results.path,
    )
    top = {k: v for k, v in summary.items() if k not in ("per_task", "per_difficulty")}
    report(metrics, card, f"evaluation of {checkpoint}", top)
    return float(summary["pass@1"])


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def promote_op(
    recipe: str,
    overrides: list,
    checkpoint: str,
    registry_root: str,
    data: Input[Dataset],
    model_in: Input[Model],
    results: Input[Dataset],
    release: Output[Artifact],
    metrics: Output[Metrics],
    card: Output[Markdown],
) -> bool:
    """Stage `promote` (the gate's passing branch): the champion check, the registry entry
    and model card, and the Helm release; the release folder is this task's artifact."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage(
        "promote",
        "promote",
        recipe,
        overrides,
        checkpoint=checkpoint,
        registry_root=registry_root,
        data=data.path,
        model=model_in.path,
        results=results.path,
        output=release.path,
    )
    report(metrics, card, f"promotion of {checkpoint}", summary)
    release.metadata.update({k: summary[k] for k in ("uri", "sha256", "version") if k in summary})
    record_lineage(release, source=model_in.path)
    return bool(summary["promoted"])

"""The recipe's stages as a few lightweight KFP components, one per artifact shape; which
stage a task runs is its `kind` and `section` (`r1forge.stages.STAGES`), and
`r1forge.orchestration.tasks.run_stage` looks it up and runs it.

On a cluster each runs in the training image (which carries kfp and the project, hence
`install_kfp_package=False` and no `packages_to_install`); under `kfp.local` each runs as a
subprocess of this Python. Artifacts in and out are KFP Datasets and Models; every task
logs its numbers to a Metrics artifact (shown in the KFP UI) and a Markdown card.

KFP needs each component's artifacts spelled out in its signature, so the shapes differ
only there: a dataset or a model out, from up to a dataset, a model and one more dataset
(`extra`, read beside the data as `../<folder>/`); an evaluation (its pass@1 returned for
the gate); a student of the distillation loop; the gated promotion.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from r1forge.orchestration import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def dataset_op(
    recipe: str,
    overrides: list,
    kind: str,
    section: str,
    title: str,
    extra_input: str,
    dataset: Output[Dataset],
    metrics: Output[Metrics],
    card: Output[Markdown],
    data: Input[Dataset] = None,
    model_in: Input[Model] = None,
    extra: Input[Dataset] = None,
):
    """A stage that writes a dataset (data, select, sample, the teacher's answers)."""
    from r1forge.orchestration.tasks import run_written_artifact

    run_written_artifact(
        kind,
        section,
        recipe,
        overrides,
        title,
        dataset,
        metrics,
        card,
        data,
        model_in,
        extra,
        extra_input,
    )


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def model_op(
    recipe: str,
    overrides: list,
    kind: str,
    section: str,
    title: str,
    extra_input: str,
    model: Output[Model],
    metrics: Output[Metrics],
    card: Output[Markdown],
    data: Input[Dataset] = None,
    model_in: Input[Model] = None,
    extra: Input[Dataset] = None,
):
    """A stage that writes a model (base, SFT, GRPO; a TrainJob when nodes > 1)."""
    from r1forge.orchestration.tasks import run_written_artifact

    run_written_artifact(
        kind,
        section,
        recipe,
        overrides,
        title,
        model,
        metrics,
        card,
        data,
        model_in,
        extra,
        extra_input,
    )


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def evaluate_op(
    recipe: str,
    overrides: list,
    kind: str,
    section: str,
    title: str,
    data: Input[Dataset],
    model_in: Input[Model],
    results: Output[Dataset],
    metrics: Output[Metrics],
    card: Output[Markdown],
) -> float:
    """An evaluation: pass@1 over k samples, cons@k, greedy, format, language, length."""
    from r1forge.orchestration.tasks import report, run_stage

    summary = run_stage(
        kind, section, recipe, overrides, data=data.path, model=model_in.path, output=results.path
    )
    top = {k: v for k, v in summary.items() if k not in ("per_task", "per_difficulty")}
    report(metrics, card, title, top)
    return float(summary["pass@1"])


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def student_op(
    recipe: str,
    overrides: list,
    kind: str,
    section: str,
    title: str,
    student: str,
    data: Input[Dataset],
    distill_data: Input[Dataset],
    teacher: Input[Model],
    student_base: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
    card: Output[Markdown],
) -> float:
    """One student of the distillation loop: SFT (and KD) on the teacher's answers, then
    its evaluation."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage(
        kind,
        section,
        recipe,
        overrides,
        student=student,
        data=data.path,
        distill_data=distill_data.path,
        model=teacher.path,
        base_student=student_base.path,
        output=model.path,
    )
    report(metrics, card, f"{title} {student}", summary)
    record_lineage(model)
    return float(summary["eval"]["pass@1"])


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def promote_op(
    recipe: str,
    overrides: list,
    kind: str,
    section: str,
    title: str,
    checkpoint: str,
    registry_root: str,
    data: Input[Dataset],
    model_in: Input[Model],
    results: Input[Dataset],
    release: Output[Artifact],
    metrics: Output[Metrics],
    card: Output[Markdown],
) -> bool:
    """The gate's passing branch: the champion check, the registry entry and model card,
    and the Helm release; the release folder is this task's artifact."""
    from r1forge.orchestration.tasks import record_lineage, report, run_stage

    summary = run_stage(
        kind,
        section,
        recipe,
        overrides,
        checkpoint=checkpoint,
        registry_root=registry_root,
        data=data.path,
        model=model_in.path,
        results=results.path,
        output=release.path,
    )
    report(metrics, card, title, summary)
    release.metadata.update({k: summary[k] for k in ("uri", "sha256", "version") if k in summary})
    record_lineage(release, source=model_in.path)
    return bool(summary["promoted"])

"""What each Kubeflow pipeline task does inside its container: rebuild the recipe, run the
stage module on the task's artifact paths, and report to KFP (Metrics, Markdown).

The components in `components/` are one-line wrappers over these functions, so the logic is
importable, testable and the same as the CLI's.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from r1forge.config import Recipe, load_recipe


def recipe_of(text: str, overrides: list[str] | None = None) -> Recipe:
    """The recipe a pipeline was compiled with (its YAML text is a pipeline parameter)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(text)
    try:
        return load_recipe(handle.name, list(overrides or []))
    finally:
        Path(handle.name).unlink()


def numbers(summary: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a summary, flattened with '/' (what KFP's Metrics can show)."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[name] = float(value)
        elif isinstance(value, dict):
            out.update(numbers(value, f"{name}/"))
    return out


def report(metrics: Any, markdown: Any, title: str, summary: dict[str, Any]) -> None:
    """Log the summary's numbers to a KFP Metrics artifact and a Markdown table."""
    flat = numbers(summary)
    for name, value in flat.items():
        metrics.log_metric(name, value)
    lines = [f"## {title}", "", "| metric | value |", "| --- | ---: |"]
    lines += [f"| {name} | {value:.4g} |" for name, value in flat.items()]
    Path(markdown.path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def record_lineage(artifact: Any, source: str | None = None) -> None:
    """Copy what traces an artifact to its data into its KFP metadata: a model folder's
    lineage (dataset sha256s, base model, code revision), a dataset folder's manifests;
    `source` names the folder to read when it is not the artifact's own (a release)."""
    from r1forge.io import code_revision

    folder = Path(source or artifact.path)
    meta = folder / "r1forge.json"
    if meta.is_file():
        artifact.metadata["lineage"] = json.loads(meta.read_text(encoding="utf-8"))["lineage"]
        return
    manifests = {}
    for path in sorted(folder.rglob("*.manifest.json")) if folder.is_dir() else []:
        manifests[str(path.relative_to(folder))] = json.loads(path.read_text())["sha256"]
    artifact.metadata["dataset_sha256"] = manifests
    artifact.metadata["code_revision"] = code_revision()


def run_stage(
    kind: str, section: str | None, recipe_text: str, overrides: list[str], **paths: str
) -> dict[str, Any]:
    """Run the stage of `kind` that runs recipe section `section` on the task's paths (its
    named inputs, `output`, and the task's options: `student`, `checkpoint`,
    `registry_root`); returns its summary.

    A distributed training stage whose resources ask for several nodes is submitted as a
    TrainJob (or PyTorchJob) instead, and this task waits for it.
    """
    from r1forge.plugins import load_plugins
    from r1forge.stages import find

    load_plugins()
    recipe = recipe_of(recipe_text, overrides)
    entry = find(kind, section)
    resources = getattr(getattr(recipe, section or "", None), "resources", None)
    if entry.distributed and resources is not None and resources.nodes > 1:
        return _run_as_job(recipe, kind, section or kind, recipe_text, overrides, paths)
    return entry.runner()(task_context(entry, recipe, paths))


TASK_OPTIONS = ("student", "checkpoint", "registry_root")


def run_written_artifact(
    kind: str,
    section: str,
    recipe_text: str,
    overrides: list[str],
    title: str,
    output: Any,
    metrics: Any,
    card: Any,
    data: Any,
    model: Any,
    extra: Any,
    extra_input: str,
) -> None:
    """The body of the components that write a dataset or a model: the artifacts given (by
    input name; `extra` is the stage `extra_input` names, e.g. `select` for grpo_reasoning),
    the stage run into `output`, its numbers reported and its lineage recorded."""
    given = {"data": data, "model": model, extra_input: extra}
    paths = {name: artifact.path for name, artifact in given.items() if artifact is not None}
    summary = run_stage(kind, section, recipe_text, overrides, output=output.path, **paths)
    report(metrics, card, title, summary)
    record_lineage(output)


def task_context(entry: Any, recipe: Recipe, paths: dict[str, str]) -> Any:
    """The StageContext of a pipeline task: its artifact folders as the stage's inputs (a
    read dataset laid out beside `data`, as under DVC), and its output (a file of a stage
    that writes one goes inside the artifact's folder)."""
    from r1forge.stages import StageContext, output_of, read_path

    options = {k: paths[k] for k in TASK_OPTIONS if k in paths}
    inputs = {k: Path(v) for k, v in paths.items() if k not in (*TASK_OPTIONS, "output")}
    siblings = {
        read_path(name): inputs.pop(name)
        for name in entry.reads
        if name in inputs and read_path(name) != output_of(name)
    }
    if siblings:  # sft_merged names ../synthetic/…, grpo ../selected/…: lay them out so
        inputs["data"] = _workspace(inputs["data"], siblings) / "data"
    output = Path(paths["output"])
    if Path(entry.output).suffix:
        output.mkdir(parents=True, exist_ok=True)
        output = output / Path(entry.output).name
    return StageContext(recipe, entry.section, inputs, output, options=options)


def _workspace(data: Path, siblings: dict[str, Path]) -> Path:
    """A folder holding `data/` and each sibling artifact (`synthetic/`, `selected/`) side by
    side, as links, so that a recipe's `../synthetic/…` paths resolve as under DVC."""
    root = Path(tempfile.mkdtemp(prefix="r1forge-ws-"))
    (root / "data").symlink_to(data.resolve(), target_is_directory=True)
    for name, path in siblings.items():
        (root / name).symlink_to(path.resolve(), target_is_directory=True)
    return root


def _run_as_job(
    recipe: Recipe,
    kind: str,
    section: str,
    recipe_text: str,
    overrides: list[str],
    paths: dict[str, str],
) -> dict[str, Any]:
    """Hand a multi-node stage to the cluster's training operator; wait; read its summary.

    Its inputs and outputs must live on the shared volume (`pipeline.shared_pvc`), which every
    node mounts at the same path, so checkpoints there let a retried job resume.
    """
    from r1forge.orchestration import TRAIN_IMAGE
    from r1forge.orchestration.k8s import pytorchjob_manifest, submit_and_wait, trainjob_manifest

    cfg = recipe.pipeline
    if not cfg.shared_pvc:
        raise ValueError(
            f"{section}: several nodes need pipeline.shared_pvc for data and checkpoints"
        )
    shared = Path(cfg.model_cache_path) / "runs" / section
    recipe_file = shared / "recipe.yaml"
    recipe_file.parent.mkdir(parents=True, exist_ok=True)
    recipe_file.write_text(recipe_text, encoding="utf-8")
    output = shared / "model"
    args = [kind, "--recipe", str(recipe_file), "--stage", section, "--data", paths["data"]]
    args += ["--model", paths["model"], "--output", str(output), "--resume"]
    args += [x for item in overrides for x in ("--set", item)]
    build = trainjob_manifest if cfg.job_api == "trainjob" else pytorchjob_manifest
    resources = getattr(recipe, section).resources
    manifest = build(
        f"r1forge-{section.replace('_', '-')}",
        cfg.namespace,
        cfg.image or TRAIN_IMAGE,
        args,
        resources,
        secrets=cfg.secrets,
        volume_claim=cfg.shared_pvc,
        mount_path=cfg.model_cache_path,
        deadline_s=resources.timeout_s,
    )
    submit_and_wait(manifest)
    import shutil

    shutil.copytree(output, paths["output"], dirs_exist_ok=True)
    return json.loads((output / "r1forge.json").read_text(encoding="utf-8"))["metrics"]

"""The `r1forge` command: one subcommand per stage kind, plus data and pipeline helpers.

Heavy libraries (torch, transformers) are imported inside the commands, so `--help` is quick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

app = typer.Typer(
    name="r1forge",
    help="Train reasoning models the DeepSeek-R1 way: data, base, SFT, GRPO, sampling, distillation, serving.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Build the recipe's datasets (no subcommand), or import / validate a team's own files.",
    invoke_without_command=True,
)
stages_app = typer.Typer(
    help="The recipe's stages: list them, or print the DVC pipeline they make."
)
app.add_typer(data_app, name="data")
app.add_typer(stages_app, name="stages")

RecipeOpt = Annotated[
    Path, typer.Option("--recipe", "-r", help="YAML recipe (sections named after stages).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a recipe field, e.g. --set base.steps=100 (repeatable)."
    ),
]
ResumeOpt = Annotated[
    bool, typer.Option(help="Continue from the last checkpoint in <output>.run/checkpoints.")
]
MetricsOpt = Annotated[
    Path | None,
    typer.Option(help="Also write the stage's summary metrics JSON here (DVC metrics)."),
]


def _setup_logging() -> None:
    from rich.logging import RichHandler

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.basicConfig(
        level=os.environ.get("R1FORGE_LOG_LEVEL", "INFO"),
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False, markup=False)],
        force=True,
    )
    for noisy in ("httpx", "urllib3", "filelock", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn errors a user can fix into one clear message on stderr and exit code 2."""
    from r1forge.errors import DataError, R1ForgeError

    try:
        yield
    except R1ForgeError as exc:
        problems = exc.problems if isinstance(exc, DataError) else [str(exc)]
        for problem in problems[:50]:
            typer.echo(f"error: {problem}", err=True)
        if len(problems) > 50:
            typer.echo(f"error: ... and {len(problems) - 50} more", err=True)
        raise typer.Exit(2) from None


@app.callback()
def _load_plugins() -> None:
    """Import the modules R1FORGE_PLUGINS names (user rewards, verifiers, rollout engines)."""
    from r1forge.plugins import load_plugins

    with _user_errors():
        load_plugins()


def _load(recipe: Path, overrides: list[str] | None):
    from r1forge.config import load_recipe

    return load_recipe(recipe, overrides)


def _run_training_stage(
    kind: str,
    sections: tuple[str, ...],
    recipe: Path,
    overrides: list[str] | None,
    stage: str,
    data: Path,
    model: Path,
    output: Path,
    metrics: Path | None,
    resume: bool,
) -> dict:
    """Load the recipe, check that `stage` is a section of this kind, and run the stage module."""
    import importlib

    _setup_logging()
    with _user_errors():
        from r1forge.errors import ConfigError

        loaded = _load(recipe, overrides)
        if stage not in sections or getattr(loaded, stage, None) is None:
            raise ConfigError(
                f"--stage {stage}: not a section of {recipe} that `r1forge {kind}` runs ({', '.join(sections)})"
            )
        module = importlib.import_module(f"r1forge.stages.{kind}")
        return module.run(loaded, stage, data, model, output, metrics, resume)


@data_app.callback()
def data(
    ctx: typer.Context,
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    output: Annotated[
        Path, typer.Option(help="Folder for the datasets (replaced atomically).")
    ] = Path("data"),
    metrics: MetricsOpt = None,
) -> None:
    """Stage `data`: generate, validate, deduplicate and decontaminate every dataset of the recipe."""
    if ctx.invoked_subcommand is not None:
        return
    _setup_logging()
    with _user_errors():
        from r1forge.stages import data as stage

        loaded = _load(recipe, overrides)
        _check_data_output(output)
        summary = stage.run(loaded, output, metrics)
    typer.echo(f"datasets in {output}: " + ", ".join(f"{k}={v}" for k, v in summary.items()))


def _check_data_output(output: Path) -> None:
    """The data stage replaces its output folder whole: refuse a file, and a folder holding
    anything but a previous data stage's output (its report.json), which would be deleted."""
    from r1forge.errors import ConfigError

    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: is a file; the data stage writes a folder")
    if output.is_dir() and any(output.iterdir()) and not (output / "report.json").is_file():
        raise ConfigError(
            f"--output {output}: a folder that `r1forge data` did not write (no report.json); "
            "it would be replaced whole: name a new or empty folder"
        )


@data_app.command("import")
def data_import(
    source: Annotated[
        Path,
        typer.Argument(
            help="A .jsonl, .csv or .parquet file, or a saved Hugging Face dataset folder."
        ),
    ],
    kind: Annotated[
        Literal["sft", "prompt"], typer.Option(help="Record kind to produce: 'sft' or 'prompt'.")
    ],
    output: Annotated[
        Path, typer.Option(help="The JSONL file to write (with a .manifest.json beside it).")
    ],
    mapping: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="field=column: which source column fills a record field (repeatable; dotted columns reach into nested objects).",
        ),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="Task name for prompt rows that have none.")
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="Split of a saved DatasetDict (default: train).")
    ] = None,
) -> None:
    """Import a team's own cold-start or prompt data into validated r1forge records."""
    from r1forge.errors import ConfigError

    with _user_errors():
        pairs = {}
        for item in mapping or []:
            field, sep, column = item.partition("=")
            if not sep or not field or not column:
                raise ConfigError(f"--map expects field=column, got {item!r}")
            pairs[field] = column
        from r1forge.data.importer import import_file

        manifest = import_file(source, output, kind=kind, mapping=pairs, task=task, split=split)
    typer.echo(
        f"imported {manifest['count']} {kind} records into {output} (sha256 {manifest['sha256'][:12]})"
    )


@data_app.command("validate")
def data_validate(
    file: Annotated[Path, typer.Argument(help="A JSONL dataset.")],
    kind: Annotated[
        Literal["sft", "prompt", "sample"],
        typer.Option(help="Record kind: 'sft', 'prompt' or 'sample'."),
    ],
) -> None:
    """Check every line of a dataset and report all problems at once."""
    from r1forge.data.jsonl import read_jsonl

    with _user_errors():
        records = read_jsonl(file, kind, all_errors=True)
    typer.echo(f"{file}: {len(records)} valid {kind} records")


@app.command()
def base(
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    stage: Annotated[
        str,
        typer.Option(help="Recipe section to build: base, or base_student (distillation)."),
    ] = "base",
    data: Annotated[Path, typer.Option(help="Datasets folder written by `r1forge data`.")] = Path(
        "data"
    ),
    output: Annotated[
        Path, typer.Option(help="Model folder to write (replaced atomically).")
    ] = Path("models/base"),
    metrics: MetricsOpt = None,
) -> None:
    """Stage `base`: fetch the recipe's named model, or train the tiny tokenizer and base model."""
    _setup_logging()
    with _user_errors():
        from r1forge.stages import base as stage_module

        summary = stage_module.run(_load(recipe, overrides), data, output, metrics, stage)
    typer.echo(
        f"{stage} model in {output}: "
        + ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict))
    )


@app.command("select")
def select_prompts(
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    model: Annotated[
        Path, typer.Option(help="The checkpoint RL starts from (its pass rates decide).")
    ] = Path("models/sft_cold_start"),
    data: Annotated[
        Path, typer.Option(help="Datasets folder; `select.prompts` are read from it.")
    ] = Path("data"),
    output: Annotated[
        Path,
        typer.Option(help="Prompt dataset to write (with its manifest and <name>.stats.json)."),
    ] = Path("selected/rl_prompts.jsonl"),
    metrics: MetricsOpt = None,
) -> None:
    """Stage `select`: RL prompts chosen by the starting model's pass rate.

    k samples per prompt with the model RL starts from; keeps the prompts whose pass rate
    lies in `select.pass_rate` (default [0.01, 0.99]: solved sometimes, not always; groups
    whose rewards all agree teach GRPO nothing), each with `meta.pass_rate`; `order:
    easiest_first` makes it a curriculum. Point a GRPO section's `prompts` at it
    (`../selected/rl_prompts.jsonl`).
    """
    _setup_logging()
    with _user_errors():
        from r1forge.stages import select as stage

        stats = stage.run(_load(recipe, overrides), model, data, output, metrics)
    typer.echo(
        f"{output}: kept {stats['kept']} of {stats['prompts']} prompts (mean pass rate "
        f"{stats['mean_pass_rate']:.3f}, kept {stats['kept_mean_pass_rate']:.3f})"
    )


@app.command()
def sample(
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    model: Annotated[Path, typer.Option(help="Checkpoint to sample from.")] = Path(
        "models/grpo_reasoning"
    ),
    data: Annotated[
        Path, typer.Option(help="Datasets folder; the section's `prompts` are read from it.")
    ] = Path("data"),
    output: Annotated[
        Path,
        typer.Option(help="SFT dataset to write (with its manifest and <name>.stats.json)."),
    ] = Path("synthetic/reasoning.jsonl"),
    metrics: MetricsOpt = None,
) -> None:
    """Stage `sample`: rejection sampling, R1's stage 3.

    k samples per prompt; keeps completions that are correct, well formed, in one language,
    not overlong or degenerate, with no code block or long paragraph in the reasoning; drops
    exact and near duplicates; keeps the shortest `max_per_prompt` per prompt.
    """
    _setup_logging()
    with _user_errors():
        from r1forge.stages import sample as stage

        stats = stage.run(_load(recipe, overrides), model, data, output, metrics)
    typer.echo(
        f"{output}: {stats['examples_kept']} examples from {stats['prompts_kept']} of "
        f"{stats['prompts']} prompts (pass rate {stats['pass_rate']:.3f}; refused: "
        + ", ".join(f"{k}={v}" for k, v in stats["refused"].items())
        + ")"
    )


@app.command()
def distill(
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    data: Annotated[
        Path, typer.Option(help="Datasets folder; `distill.teacher_samples.prompts` come from it.")
    ] = Path("data"),
    model: Annotated[Path, typer.Option(help="The teacher (the final RL model).")] = Path(
        "models/grpo_final"
    ),
    output: Annotated[
        Path, typer.Option(help="Folder for the distillation data and one model per student.")
    ] = Path("models/distill"),
    metrics: MetricsOpt = None,
) -> None:
    """Stage `distill`: the teacher's verified answers fine-tune each student (R1's way).

    Students are smaller pre-trained bases named in `distill.students`; each may also mix in
    logit distillation (`kd`: forward or reverse KL at a temperature) when it shares the
    teacher's tokenizer. Several students train in one run.
    """
    _setup_logging()
    with _user_errors():
        from r1forge.stages import distill as stage

        summary = stage.run(_load(recipe, overrides), data, model, output, metrics)
    kept = summary["teacher_samples"]["examples_kept"]
    typer.echo(f"{output}: {kept} teacher examples; students: {', '.join(summary['students'])}")


@app.command()
def evaluate(
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    model: Annotated[Path, typer.Option(help="Model folder to evaluate.")] = Path(
        "models/grpo_reasoning"
    ),
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            help="Prompt JSONL file to evaluate on (repeatable). Default: the recipe's "
            "`evaluate.datasets` under data/, or every data/eval/*.jsonl.",
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option(help="Folder for metrics.json, samples.jsonl and config.yaml.")
    ] = Path("eval/grpo_reasoning"),
    metrics: MetricsOpt = None,
) -> None:
    """Stage `evaluate`: R1's protocol, k samples per prompt at T=0.6, top-p 0.95 (configurable).

    Reports pass@1 (mean over the k samples), cons@k (majority vote over extracted answers),
    greedy accuracy, format rate, language-consistency rate and mean length, overall and per
    task and difficulty.
    """
    _setup_logging()
    with _user_errors():
        from r1forge.stages import evaluate as stage

        loaded = _load(recipe, overrides)
        files = data or stage.eval_files(loaded.evaluate, Path("data"))
        report = stage.run(loaded, model, files, output, metrics)
    typer.echo(
        f"{model}: pass@1={report['pass@1']:.3f} cons@{report['k']}={report['cons@k']:.3f} "
        f"greedy={report['greedy_accuracy']:.3f} format={report['format_rate']:.3f} "
        f"language={report['language_rate']:.3f} mean_length={report['mean_length']:.1f} "
        f"({report['n_prompts']} prompts) -> {output / 'metrics.json'}"
    )


def candidate_table(candidates: dict[str, dict[str, Any]]) -> str:
    """The promote stage's candidates, best pass@1 first: whether each passed the gate, why not."""
    lines = [f"{'candidate':<18} {'pass@1':>7} {'format':>7}  gate"]
    for name, row in candidates.items():
        verdict = "passed" if row["passed"] else "refused: " + "; ".join(row["reasons"])
        lines.append(f"{name:<18} {row['pass@1']:>7.3f} {row['format_rate']:>7.3f}  {verdict}")
    return "\n".join(lines)


@app.command()
def promote(
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    candidates: Annotated[
        list[str] | None,
        typer.Option(
            "--candidate",
            help="A checkpoint to consider (repeatable): an evaluated one (models/NAME with "
            "eval/NAME/metrics.json) or distill/STUDENT. Default: the recipe's promote.candidates.",
        ),
    ] = None,
    models: Annotated[Path, typer.Option(help="Folder of the model folders.")] = Path("models"),
    evals: Annotated[Path, typer.Option(help="Folder of the eval/<name> results.")] = Path("eval"),
    data: Annotated[
        Path, typer.Option(help="Data folder, to evaluate the champion again on new eval sets.")
    ] = Path("data"),
    registry: Annotated[
        Path | None,
        typer.Option(help="Registry folder (models.json, cards/). Default: promote.registry."),
    ] = None,
    output: Annotated[
        Path, typer.Option(help="Release folder: values.yaml, manifests.yaml, history/.")
    ] = Path("deploy"),
    metrics: MetricsOpt = None,
    fail_on_refusal: Annotated[
        bool,
        typer.Option(
            help="Exit with status 3 when no candidate passes the gate (the DVC stage runs "
            "with --no-fail-on-refusal: a refusal is a normal outcome, recorded in the outputs)."
        ),
    ] = True,
) -> None:
    """Stage `promote`: gate every candidate; register, card and deploy the best that passes.

    The gate (recipe section `promote`): pass@1 and format rate at least the minimums, and
    pass@1 at least the champion's plus `champion_margin` on the same eval sets. Candidates
    are gated best pass@1 first; the table lists each with its pass@1, format rate and why it
    was refused. The best that passes is published to `promote.store`, its Helm values and
    manifests are rendered into OUTPUT and deployed (`deploy: render` runs helm template and
    install --dry-run=client; `cluster` runs helm upgrade --install), and
    `registry/models.json` names it champion, with its model card. When none passes nothing
    is deployed: OUTPUT/release.json says why, the champion's release and registry stay.
    """
    _setup_logging()
    with _user_errors():
        from r1forge.stages import promote as stage

        loaded = _load(recipe, overrides)
        found = stage.load_candidates(candidates or loaded.promote.candidates, models, evals)
        where = registry or Path(loaded.promote.registry)
        summary = stage.run(loaded, found, where, output, metrics, data)
    typer.echo(candidate_table(summary["candidates"]))
    if summary["promoted"]:
        typer.echo(
            f"promoted {summary['candidate']} as {summary['name']} v{summary['version']} "
            f"({summary['uri']}, sha256 {summary['sha256'][:12]}); release "
            f"{summary['release']['action']} -> {output}"
        )
        return
    kept = (
        f"the champion stays v{summary['champion_version']}"
        if summary["champion_version"]
        else "there is no champion yet"
    )
    typer.echo(f"no candidate passed the gate: nothing promoted, {kept}", err=True)
    if fail_on_refusal:
        raise typer.Exit(3)


@app.command()
def rollback(
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    registry: Annotated[
        Path | None, typer.Option(help="Registry folder. Default: promote.registry.")
    ] = None,
    output: Annotated[Path, typer.Option(help="Release folder to re-render.")] = Path("deploy"),
) -> None:
    """Restore the previous champion: in the registry, then its Helm values re-rendered and
    re-applied (the rolled-back version stays listed, marked `rolled_back`)."""
    _setup_logging()
    with _user_errors():
        from r1forge.stages import promote as stage

        loaded = _load(recipe, overrides)
        done = stage.rollback(loaded, registry or Path(loaded.promote.registry), output)
    typer.echo(
        f"{done['name']}: v{done['rolled_back']} rolled back, v{done['restored']} restored "
        f"({done['uri']}); release {done['release']['action']} -> {output}"
    )


@app.command()
def serve(
    model: Annotated[
        Path | None,
        typer.Option(help="Model folder to serve. Default: the registry's champion, fetched."),
    ] = None,
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    registry: Annotated[
        Path | None, typer.Option(help="Registry folder. Default: promote.registry.")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    served_model_name: Annotated[
        str | None, typer.Option(help="Name clients send. Default: the registry name or folder.")
    ] = None,
    max_model_len: Annotated[
        int | None,
        typer.Option(help="Longest prompt + completion. Default: the model's, at most 4096."),
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="vLLM dtype. Default: float32 on CPU, auto on GPU.")
    ] = None,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for /health before giving up.")
    ] = 600,
) -> None:
    """Serve a model with real vLLM (OpenAI-compatible, `--reasoning-parser deepseek_r1`).

    Waits until /health answers, prints the URL, and stops vLLM cleanly on Ctrl-C or SIGTERM.
    Set VLLM_API_KEY to require `Authorization: Bearer <key>` on /v1/*.
    """
    _setup_logging()
    with _user_errors():
        from r1forge.serving.server import ServerOptions
        from r1forge.serving.server import serve as run_server

        if model is None:
            from r1forge.stages.promote import fetch_champion

            loaded = _load(recipe, overrides)
            where = registry or Path(loaded.promote.registry)
            model, name = fetch_champion(loaded, where, Path(".cache/serve"))
            served_model_name = served_model_name or name
        options = ServerOptions(model, host, port, served_model_name, max_model_len, dtype)
        status = run_server(options, ready_timeout)
    raise typer.Exit(status)


@app.command()
def sft(
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    stage: Annotated[
        str,
        typer.Option(help="Recipe section to run: sft_cold_start, sft_merged or sft_student."),
    ] = "sft_cold_start",
    data: Annotated[
        Path, typer.Option(help="Datasets folder; the section's `datasets` are read from it.")
    ] = Path("data"),
    model: Annotated[
        Path, typer.Option(help="Model folder to start from (the base, or the previous stage).")
    ] = Path("models/base"),
    output: Annotated[
        Path, typer.Option(help="Model folder to write (replaced atomically).")
    ] = Path("models/sft_cold_start"),
    metrics: MetricsOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Stages `sft_cold_start` / `sft_merged`: supervised fine-tuning on DeepSpeed (ZeRO 0-3, LoRA optional).

    Runs as one process, or as N under `torchrun --nproc_per_node N -m r1forge.cli sft ...`
    or the `deepspeed` launcher; rank 0 writes the outputs.
    """
    summary = _run_training_stage(
        "sft",
        ("sft_cold_start", "sft_merged", "sft_student"),
        recipe,
        overrides,
        stage,
        data,
        model,
        output,
        metrics,
        resume,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(
            f"{stage} model in {output}: steps={summary['steps']}, final_loss={summary.get('final_loss')}, "
            f"eval_loss={summary.get('final_eval_loss')}"
        )


@app.command()
def grpo(
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    stage: Annotated[
        str,
        typer.Option(help="Recipe section to run: grpo_reasoning, grpo_final or grpo_student."),
    ] = "grpo_reasoning",
    data: Annotated[
        Path, typer.Option(help="Datasets folder: the section's `prompts` and eval/*.jsonl.")
    ] = Path("data"),
    model: Annotated[
        Path, typer.Option(help="Model folder to start from (the SFT checkpoint).")
    ] = Path("models/sft_cold_start"),
    output: Annotated[
        Path, typer.Option(help="Model folder to write (replaced atomically).")
    ] = Path("models/grpo_reasoning"),
    metrics: MetricsOpt = None,
    resume: ResumeOpt = False,
) -> None:
    """Stages `grpo_reasoning` / `grpo_final`: GRPO with the recipe's weighted rule rewards.

    Each step samples `group_size` completions per prompt, scores them, and updates the policy
    on group-relative advantages (clipped ratio, optional k3 KL to a frozen reference).
    Held-out pass@1 (greedy and sampled) is logged before training and every `eval_every` steps.
    """
    summary = _run_training_stage(
        "grpo",
        ("grpo_reasoning", "grpo_final", "grpo_student"),
        recipe,
        overrides,
        stage,
        data,
        model,
        output,
        metrics,
        resume,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        before, after = summary.get("eval_before", {}), summary.get("eval_after", {})
        shown = ", ".join(
            f"{k[5:]} {before.get(k, float('nan')):.3f} -> {v:.3f}" for k, v in after.items()
        )
        typer.echo(f"{stage} model in {output}: steps={summary['steps']}; held-out pass@1 {shown}")


@stages_app.command("list")
def stages_list() -> None:
    """Print the recipe's stages in order, with the command each runs."""
    from r1forge.stages import STAGES

    for item in STAGES:
        typer.echo(f"{item.name:16} {item.summary}\n{'':16} $ {item.command('recipes/tiny.yaml')}")


@stages_app.command("dvc-yaml")
def stages_dvc_yaml(
    recipe: Annotated[
        str, typer.Option(help="Recipe the DVC params come from.")
    ] = "recipes/tiny.yaml",
) -> None:
    """Print dvc.yaml as generated from the stage registry (the committed file must equal it)."""
    import yaml

    from r1forge.stages import dvc_yaml

    typer.echo(
        "# Generated by `r1forge stages dvc-yaml`; edit src/r1forge/stages/__init__.py instead."
    )
    typer.echo(yaml.safe_dump(dvc_yaml(recipe), sort_keys=False), nl=False)


pipeline_app = typer.Typer(
    help="The recipe as a Kubeflow pipeline: compile it, run it here (kfp.local), submit it.",
    no_args_is_help=True,
)
app.add_typer(pipeline_app, name="pipeline")


@pipeline_app.command("compile")
def pipeline_compile(
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="KFP YAML to write.")] = Path(
        "pipeline.yaml"
    ),
) -> None:
    """Compile the recipe's pipeline (every stage a component in the training image)."""
    with _user_errors():
        from pipelines.r1_pipeline import compile_pipeline

        compile_pipeline(recipe, output, overrides)
    typer.echo(f"compiled {recipe} -> {output}")


@pipeline_app.command("run-local")
def pipeline_run_local(
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    root: Annotated[Path, typer.Option(help="Where kfp.local keeps the run's artifacts.")] = Path(
        ".kfp-local"
    ),
) -> None:
    """Run the compiled DAG on this machine with kfp.local's SubprocessRunner (this Python)."""
    _setup_logging()
    with _user_errors():
        import importlib.util

        spec = importlib.util.find_spec("docker")
        if spec is not None and spec.origin is None:
            # run from the repo root with `python -m`, the images folder docker/ reads as a
            # namespace package; kfp.local only tolerates a missing docker SDK, not that one
            sys.modules["docker"] = None  # type: ignore[assignment]
        from kfp import local

        from pipelines.r1_pipeline import build

        root.mkdir(parents=True, exist_ok=True)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root.resolve()))
        build(recipe, overrides)(registry_root=str(root.resolve()))
    typer.echo(f"pipeline finished; artifacts under {root}")


@pipeline_app.command("rbac")
def pipeline_rbac(
    namespace: Annotated[str, typer.Option(help="Namespace the pipeline runs in.")] = "kubeflow",
) -> None:
    """Print the ServiceAccount, Role and RoleBinding a pipeline needs to submit TrainJobs."""
    import yaml

    from r1forge.orchestration.k8s import rbac_manifests

    typer.echo(yaml.safe_dump_all(rbac_manifests(namespace), sort_keys=False), nl=False)


@pipeline_app.command("submit")
def pipeline_submit(
    host: Annotated[str, typer.Option(help="KFP API endpoint, e.g. https://kfp.example.com")],
    recipe: RecipeOpt = Path("recipes/tiny.yaml"),
    overrides: SetOpt = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment name.")] = "r1forge",
    run_name: Annotated[str | None, typer.Option(help="Run name (default: recipe name).")] = None,
    token: Annotated[
        str | None, typer.Option(envvar="KFP_TOKEN", help="Bearer token (or $KFP_TOKEN).")
    ] = None,
) -> None:
    """Compile, upload and start a run on a Kubeflow Pipelines cluster."""
    with _user_errors():
        import tempfile

        from r1forge.orchestration.submit import submit

        with tempfile.TemporaryDirectory() as tmp:
            package = Path(tmp) / "pipeline.yaml"
            from pipelines.r1_pipeline import compile_pipeline

            compile_pipeline(recipe, package, overrides)
            run_id = submit(host, package, _load(recipe, overrides), experiment, run_name, token)
    typer.echo(f"submitted run {run_id} to {host}")


@app.command()
def report(
    metrics: Annotated[Path, typer.Option(help="Folder of per-stage metrics JSON files.")] = Path(
        "metrics"
    ),
) -> None:
    """Print what each finished stage of the recipe measured (from its metrics JSON)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from r1forge.evaluation import SUMMARY_KEYS, summary
    from r1forge.io import write_json_atomic
    from r1forge.stages import EVALUATED, STAGES

    table = Table(title="r1forge recipe: stage metrics")
    table.add_column("stage")
    table.add_column("metrics")
    held_out = Table(title="held-out pass@1 before and after RL")
    for column in ("stage", "eval set / mode", "before", "after", "gain (points)"):
        held_out.add_column(column)
    for item in STAGES:
        if item.kind == "evaluate":
            continue  # in the checkpoint table below
        path = metrics / f"{item.name}.json"
        if not path.is_file():
            table.add_row(item.name, "[dim]not run[/dim]")
            continue
        values = json.loads(path.read_text(encoding="utf-8")).get(item.name, {})
        before, after = values.pop("eval_before", None), values.pop("eval_after", None)
        shown = ", ".join(  # scalars only: breakdowns live in the stage's own files
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in values.items()
            if not isinstance(v, dict | list)
        )
        table.add_row(item.name, shown)
        for key in sorted(before or {}):
            if key in (after or {}):
                gain = 100 * (after[key] - before[key])
                held_out.add_row(
                    item.name,
                    key.removeprefix("eval/"),
                    f"{before[key]:.3f}",
                    f"{after[key]:.3f}",
                    f"{gain:+.1f}",
                )
    console = Console()
    console.print(table)
    if held_out.row_count:
        console.print(held_out)
    reports = {}
    for name in EVALUATED:
        path = metrics / f"eval_{name}.json"
        if path.is_file():
            reports[name] = json.loads(path.read_text(encoding="utf-8"))["evaluate"]
    distilled = metrics / "distill.json"
    if distilled.is_file():
        students = json.loads(distilled.read_text(encoding="utf-8"))["distill"]["students"]
        for name, result in students.items():
            reports[f"distill/{name}"] = result["eval"]
    if reports:
        rows = summary(reports)
        checkpoints = Table(title="checkpoints on the held-out eval sets (k samples, T=0.6)")
        checkpoints.add_column("checkpoint")
        for key in SUMMARY_KEYS:
            checkpoints.add_column(key)
        for row in rows["checkpoints"]:
            checkpoints.add_row(row["name"], *(f"{row[k]:.3f}" for k in SUMMARY_KEYS))
        console.print(checkpoints)
        write_json_atomic(metrics / "summary.json", rows)
        console.print(f"written: {metrics / 'summary.json'}")
    promoted = metrics / "promote.json"
    if promoted.is_file():
        decision = json.loads(promoted.read_text(encoding="utf-8"))["promote"]
        console.print("promotion gate, best pass@1 first:", highlight=False)
        console.print(candidate_table(decision["candidates"]), highlight=False, markup=False)
        if decision["promoted"]:
            console.print(
                f"promoted: {decision['candidate']} (pass@1 {decision['pass@1']:.3f}) is "
                f"{decision['name']} v{decision['version']}, the champion; release: "
                f"{decision['release']['action']}",
                highlight=False,
            )
        else:
            kept = (
                f"the champion stays v{decision['champion_version']}"
                if decision["champion_version"]
                else "there is no champion yet"
            )
            console.print(f"promoted: none (no candidate passed the gate; {kept})", highlight=False)


def main() -> None:
    app(prog_name="r1forge")


if __name__ == "__main__":
    sys.exit(main())

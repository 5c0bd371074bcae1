"""The `r1forge` command: one subcommand per stage kind (generated from the stage registry,
`r1forge.commands`), plus data, serving, pipeline and report helpers.

Heavy libraries (torch, transformers) are imported inside the commands, so `--help` is quick.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from r1forge.commands import add_stage_commands
from r1forge.commands import load_recipe as _load
from r1forge.commands import setup_logging as _setup_logging
from r1forge.commands import user_errors as _user_errors
from r1forge.stages import STAGES

app = typer.Typer(
    name="r1forge",
    help="Train reasoning models the DeepSeek-R1 way: data, base, SFT, GRPO, sampling, distillation, serving.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
# the first stage builds the datasets; its command also imports and validates a team's own
data_kind = STAGES[0].kind
data_app = add_stage_commands(app, groups=(data_kind,))[data_kind]
stages_app = typer.Typer(
    help="The recipe's stages: list them, or print the DVC pipeline they make."
)
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
DEFAULT_RECIPE = Path("recipes/tiny.yaml")
# where the promotion stage renders its Helm release
RELEASE = Path(next(s.output for s in STAGES if s.artifact == "release"))


@app.callback()
def _load_plugins() -> None:
    """Import the modules R1FORGE_PLUGINS names (user rewards, verifiers, rollout engines)."""
    from r1forge.plugins import load_plugins

    with _user_errors():
        load_plugins()


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
    from r1forge.rewards import VERIFIERS

    with _user_errors():
        records = read_jsonl(file, kind, all_errors=True, verifiers=VERIFIERS)
    typer.echo(f"{file}: {len(records)} valid {kind} records")


@app.command()
def rollback(
    recipe: RecipeOpt = DEFAULT_RECIPE,
    overrides: SetOpt = None,
    registry: Annotated[
        Path | None, typer.Option(help="Registry folder. Default: promote.registry.")
    ] = None,
    output: Annotated[Path, typer.Option(help="Release folder to re-render.")] = RELEASE,
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
    recipe: RecipeOpt = DEFAULT_RECIPE,
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


@stages_app.command("list")
def stages_list() -> None:
    """Print the recipe's stages in order, with the command each runs."""
    from r1forge.stages import STAGES

    for item in STAGES:
        typer.echo(f"{item.name:16} {item.summary}\n{'':16} $ {item.command(str(DEFAULT_RECIPE))}")


@stages_app.command("dvc-yaml")
def stages_dvc_yaml(
    recipe: Annotated[str, typer.Option(help="Recipe the DVC params come from.")] = str(
        DEFAULT_RECIPE
    ),
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
    recipe: RecipeOpt = DEFAULT_RECIPE,
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
    recipe: RecipeOpt = DEFAULT_RECIPE,
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
    recipe: RecipeOpt = DEFAULT_RECIPE,
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
    from r1forge.report import print_report

    print_report(metrics)


def main() -> None:
    app(prog_name="r1forge")


if __name__ == "__main__":
    sys.exit(main())

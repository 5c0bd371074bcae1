"""The CLI's stage commands, generated from `r1forge.stages.STAGES`: one command per stage
kind, its options from the kind's stages (their inputs, output, extra options), its help
from the registry. Every command builds a `StageContext` and calls the stage's `run`.

Heavy libraries (torch, transformers) are imported inside the stages, so `--help` is quick.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from r1forge.stages import STAGES, Stage, StageContext, output_of

INPUT_HELP = {
    "data": "Datasets folder written by `r1forge data` (the section's files are read from it).",
    "model": "Model folder to start from (or to evaluate, sample or teach with).",
}


def setup_logging() -> None:
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
def user_errors() -> Iterator[None]:
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


def load_recipe(recipe: Path, overrides: list[str] | None) -> Any:
    from r1forge.config import load_recipe as load

    return load(recipe, overrides)


RECIPE_HELP = "YAML recipe (sections named after stages)."
SET_HELP = "Override a recipe field, e.g. --set base.steps=100 (repeatable)."


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


def _parameters(kind: str, entries: list[Stage]) -> list[inspect.Parameter]:
    first = entries[0]
    sections = [s.section for s in entries if s.section]
    params = [
        _param(
            "recipe",
            Annotated[Path, typer.Option("--recipe", "-r", help=RECIPE_HELP)],
            Path("recipes/tiny.yaml"),
        ),
        _param(
            "overrides",
            Annotated[list[str] | None, typer.Option("--set", "-s", help=SET_HELP)],
            None,
        ),
    ]
    if len(sections) > 1:
        help_ = f"Recipe section to run: {', '.join(sections)}."
        params.append(_param("stage", Annotated[str, typer.Option(help=help_)], sections[0]))
    for option, producer in first.inputs.items():
        help_ = INPUT_HELP.get(option, f"Output of the `{producer}` stage.")
        params.append(
            _param(
                f"input_{option}",
                Annotated[Path, typer.Option(f"--{option}", help=help_)],
                Path(output_of(producer)),
            )
        )
    for extra in first.options:
        if extra.type is bool:  # a --flag/--no-flag pair
            kind_: Any = bool
        else:
            kind_ = list[extra.type] | None if extra.many else extra.type | None  # type: ignore[name-defined]
        params.append(
            _param(
                f"option_{extra.key}",
                Annotated[kind_, typer.Option(f"--{extra.name}", help=extra.help)],
                extra.default,
            )
        )
    what = "file" if Path(first.output).suffix else "folder"
    params.append(
        _param(
            "output",
            Annotated[Path, typer.Option(help=f"The {what} to write (replaced atomically).")],
            Path(first.output),
        )
    )
    params.append(
        _param(
            "metrics",
            Annotated[
                Path | None,
                typer.Option(
                    help="Also write the stage's summary metrics JSON here (DVC metrics)."
                ),
            ],
            None,
        )
    )
    if first.resumable:
        help_ = "Continue from the last checkpoint in <output>.run/checkpoints."
        params.append(_param("resume", Annotated[bool, typer.Option(help=help_)], False))
    return params


def _help(kind: str, entries: list[Stage]) -> str:
    names = " / ".join(f"`{s.name}`" for s in entries)
    first = entries[0]
    text = first.help or f"{first.summary[0].upper()}{first.summary[1:]}."
    return f"Stage{'s' if len(entries) > 1 else ''} {names}: {text}"


def stage_command(kind: str, entries: list[Stage]) -> Callable[..., None]:
    """The command that runs stages of `kind` (their sections picked with `--stage`)."""
    by_section = {s.section: s for s in entries}

    def command(**kwargs: Any) -> None:
        setup_logging()
        with user_errors():
            from r1forge.errors import ConfigError

            recipe = load_recipe(kwargs["recipe"], kwargs["overrides"])
            section = kwargs.get("stage", entries[0].section)
            entry = by_section.get(section)
            if entry is None or (section and getattr(recipe, section, None) is None):
                raise ConfigError(
                    f"--stage {section}: not a section of {kwargs['recipe']} that "
                    f"`r1forge {kind}` runs ({', '.join(str(s) for s in by_section)})"
                )
            inputs = {k[6:]: v for k, v in kwargs.items() if k.startswith("input_")}
            inputs.update({name: Path(output_of(name)) for name in entry.reads})
            ctx = StageContext(
                recipe=recipe,
                section=section,
                inputs=inputs,
                output=kwargs["output"],
                metrics=kwargs["metrics"],
                resume=kwargs.get("resume", False),
                options={k[7:]: v for k, v in kwargs.items() if k.startswith("option_")},
            )
            summary = entry.runner()(ctx)
        if int(os.environ.get("RANK", "0")) != 0:
            return
        module = importlib.import_module(entry.run.partition(":")[0])
        describe = getattr(module, "describe", None)
        if describe is not None:
            typer.echo(describe(summary, ctx))
        status = getattr(module, "exit_status", None)
        if status is not None:
            code, message = status(summary, ctx)
            if message:
                typer.echo(message, err=True)
            if code:
                raise typer.Exit(code)

    command.__signature__ = inspect.Signature(_parameters(kind, entries))  # type: ignore[attr-defined]
    command.__name__ = kind
    command.__doc__ = _help(kind, entries)
    return command


def add_stage_commands(
    app: typer.Typer, stages: tuple[Stage, ...] = STAGES, groups: tuple[str, ...] = ()
) -> dict[str, typer.Typer]:
    """Add one command per stage kind to `app`; the kinds in `groups` become command groups
    (the stage runs when no subcommand is named, as `data` with `data import`), returned."""
    from r1forge.stages import kinds

    made = {}
    for kind, entries in kinds(stages).items():
        command = stage_command(kind, entries)
        if kind not in groups:
            app.command(name=kind, help=command.__doc__)(command)
            continue
        group = typer.Typer()
        group.callback(invoke_without_command=True, help=command.__doc__)(
            _skip_if_subcommand(command)
        )
        app.add_typer(group, name=kind)
        made[kind] = group
    return made


def _skip_if_subcommand(command: Callable[..., None]) -> Callable[..., None]:
    """A group's callback runs before its subcommands: run the stage only when none is named."""

    def callback(ctx: typer.Context, **kwargs: Any) -> None:
        if ctx.invoked_subcommand is None:
            command(**kwargs)

    signature = inspect.signature(command)
    context = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
    )
    callback.__signature__ = signature.replace(parameters=[context, *signature.parameters.values()])  # type: ignore[attr-defined]
    callback.__doc__ = command.__doc__
    return callback

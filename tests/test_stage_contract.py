"""Issue 19: one stage contract. Every stage is `run(ctx) -> dict` behind one registry
entry, from which the CLI, `dvc.yaml`, the Kubeflow DAG and the task dispatch are made;
and the package's layers import only downward."""

from __future__ import annotations

import ast
import inspect
import json
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from r1forge.stages import STAGES, Stage, StageContext, dvc_yaml, find, pipeline_steps

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src/r1forge"

# lowest first: a module may import its own layer and those below, never one above
LAYERS = (
    ("r1forge", "errors", "io", "progress", "plugins"),
    ("data",),
    ("rewards", "zero"),
    ("config",),
    ("rollout",),
    ("train",),
    ("models", "tracking", "evaluation", "rejection", "promotion", "registry", "serving"),
    ("stages",),
    ("orchestration", "commands", "report", "cli"),
)
LAYER_OF = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str:
    """The layer-bearing part of a module name: `r1forge.train.rl` -> `train`."""
    names = module.split(".")
    return names[1] if len(names) > 1 else names[0]


def _imports(path: Path) -> set[str]:
    """Every r1forge module a file imports, at its top or inside a function."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "r1forge" or name.startswith("r1forge.")}


def _module_name(path: Path) -> str:
    return ".".join(["r1forge", *path.relative_to(SRC).with_suffix("").parts]).removesuffix(
        ".__init__"
    )


def test_no_module_imports_a_layer_above_its_own() -> None:
    back = []
    for path in sorted(SRC.rglob("*.py")):
        own = _part(_module_name(path))
        assert own in LAYER_OF, f"{path}: add {own!r} to a layer in LAYERS"
        for target in _imports(path):
            if LAYER_OF[_part(target)] > LAYER_OF[own]:
                back.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not back, "imports from a lower layer to a higher one:\n" + "\n".join(back)


def test_every_stage_runs_through_run_ctx() -> None:
    """One signature for every stage and pipeline step, and the task dispatch finds each
    step by its kind and section (a lookup, not a chain of ifs)."""
    for entry in [*STAGES, *pipeline_steps()]:
        params = list(inspect.signature(entry.runner()).parameters)
        assert params == ["ctx"], f"{entry.name}: run{tuple(params)}"
        assert find(entry.kind, entry.section).runner() is entry.runner()


def test_stage_context_carries_the_section() -> None:
    from r1forge.config import load_recipe

    recipe = load_recipe(ROOT / "recipes/ci.yaml")
    ctx = StageContext(recipe, "grpo_final", {"model": Path("m")}, Path("o"))
    assert ctx.config is recipe.grpo_final and ctx.resume is False and ctx.metrics is None


TOY_MODULE = '''
import json


def run(ctx):
    """Count the lines of the cold-start set."""
    lines = (ctx.inputs["data"] / "cold_start.jsonl").read_text().count("\\n")
    ctx.output.parent.mkdir(parents=True, exist_ok=True)
    ctx.output.write_text(json.dumps({"lines": lines, "times": ctx.options.get("times")}))
    return {"lines": lines}


def describe(summary, ctx):
    return f"toy: {summary['lines']} lines -> {ctx.output}"
'''


@pytest.fixture
def toy_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Stage, ...]:
    """The registry plus a toy stage (its module in a temporary folder): the two edits."""
    from r1forge.stages import Option

    (tmp_path / "toy_stage.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = Stage(
        name="toy",
        kind="toy",
        summary="a toy stage: the cold-start set's line count",
        output="toy/count.json",
        run="toy_stage:run",
        inputs={"data": "data"},
        artifact="dataset",
        help="Count the cold-start set's lines.",
        options=(Option("times", "times", "How many times.", type=int, default=1),),
    )
    return (*STAGES, toy)


def test_a_new_stage_is_in_the_cli_dvc_and_the_pipeline(
    toy_registry: tuple[Stage, ...], tmp_path: Path, ci_data: Path
) -> None:
    from kfp import compiler

    from pipelines.r1_pipeline import build
    from r1forge.commands import add_stage_commands

    app = typer.Typer()
    add_stage_commands(app, toy_registry)
    runner = CliRunner()
    shown = runner.invoke(app, ["toy", "--help"])
    assert shown.exit_code == 0 and "Count the cold-start set's lines." in shown.output
    assert "--times" in shown.output and "toy/count.json" in shown.output
    out = tmp_path / "count.json"
    args = ["toy", "--recipe", str(ROOT / "recipes/ci.yaml"), "--data", str(ci_data)]
    done = runner.invoke(app, [*args, "--output", str(out), "--times", "3"])
    assert done.exit_code == 0, done.output
    written = json.loads(out.read_text())
    assert written["times"] == 3 and written["lines"] > 0
    assert f"toy: {written['lines']} lines" in done.output

    stage = dvc_yaml("recipes/ci.yaml", toy_registry)["stages"]["toy"]
    assert stage["cmd"] == (
        "r1forge toy --recipe recipes/ci.yaml --data data --output toy/count.json "
        "--metrics metrics/toy.json"
    )
    assert "data" in stage["deps"] and stage["outs"] == ["toy/count.json"]

    package = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build(ROOT / "recipes/ci.yaml", None, toy_registry), str(package))
    spec = next(yaml.safe_load_all(package.read_text()))
    names = {t["taskInfo"]["name"] for t in spec["root"]["dag"]["tasks"].values()}
    assert "toy" in names and {s.name for s in STAGES} - {"distill"} <= names | {"promote"}


def test_cli_names_no_stage_and_no_default_path() -> None:
    """The CLI's stage commands come from the registry: cli.py writes no stage name (as a
    string) and no stage's default path, and stays short."""
    text = (SRC / "cli.py").read_text()
    assert len(text.splitlines()) < 350
    strings = {
        node.value
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    from r1forge.data.schema import RECORD_TYPES

    named = {s.name for s in STAGES} | {s.section for s in STAGES if s.section}
    named -= set(RECORD_TYPES)  # `data validate --kind sample`: a record kind, not the stage
    paths = {s.output for s in STAGES} | {p for s in STAGES for p in s.outs}
    assert not strings & (named | paths)


def test_help_of_every_stage_command_is_quick_to_import() -> None:
    """`r1forge --help` builds the stage commands without importing torch."""
    import subprocess

    code = "import sys, r1forge.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr

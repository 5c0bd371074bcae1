"""Every malformed input is a clear error: exit 2, file, line and field named, no traceback,
and nothing written or changed; well-formed input that used to be altered now survives intact.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from r1forge.config import Recipe, load_recipe
from r1forge.data.importer import import_file
from r1forge.data.jsonl import read_jsonl, write_jsonl
from r1forge.errors import ConfigError

from .conftest import ROOT, child_env

CI = str(ROOT / "recipes/ci.yaml")
GOOD = {"id": "p1", "prompt": "What is 2+2?", "answer": "4", "task": "arithmetic"}
PREVIOUS = {"id": "old", "prompt": "What is 1+1?", "answer": "2", "task": "arithmetic"}
MAP = ["--map", "prompt=question", "--map", "answer=solution", "--task", "math"]


def jsonl(*rows: dict[str, Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`r1forge ARGS` as a user runs it, wide enough that no message is wrapped."""
    return subprocess.run(
        [sys.executable, "-m", "r1forge.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env({"COLUMNS": "400"}),
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@dataclass
class Case:
    files: dict[str, str | bytes]
    args: list[str]
    says: list[str]  # fragments the message must hold: file[:line], field, what is wrong
    writes: str | None = None  # "import": --output out.jsonl; "data": --output data
    extra: list[str] = field(default_factory=list)


CASES: dict[str, Case] = {
    # tracebacks before
    "validate --kind foo": Case(
        {"good.jsonl": jsonl(GOOD)},
        ["data", "validate", "good.jsonl", "--kind", "foo"],
        ["--kind", "'foo' is not one of"],
    ),
    "import --kind foo": Case(
        {"good.jsonl": jsonl(GOOD)},
        ["data", "import", "good.jsonl", "--kind", "foo"],
        ["--kind", "'foo' is not one of"],
        writes="import",
    ),
    "validate JSON nested 100,000 deep": Case(
        {"deep.jsonl": "[" * 100_000 + "]" * 100_000 + "\n"},
        ["data", "validate", "deep.jsonl", "--kind", "prompt"],
        ["deep.jsonl:1:", "nested too deeply"],
    ),
    "import JSON nested 100,000 deep": Case(
        {"deep.jsonl": '{"question": "x", "solution": ' + "[" * 100_000 + "]" * 100_000 + "}\n"},
        ["data", "import", "deep.jsonl", "--kind", "prompt", *MAP],
        ["deep.jsonl:1:", "nested too deeply"],
        writes="import",
    ),
    "import JSON nested 500 deep in meta": Case(
        {"deep.jsonl": jsonl({**GOOD, "meta": json.loads("[" * 500 + "]" * 500)})},
        ["data", "import", "deep.jsonl", "--kind", "prompt"],
        ["deep.jsonl:1:", "field 'meta.0.0...'", "nested more than 100 levels"],
        writes="import",
    ),
    "import non-UTF-8 CSV": Case(
        {"latin1.csv": "question,solution\ncaf\xe9,4\n".encode("latin-1")},
        ["data", "import", "latin1.csv", "--kind", "prompt", *MAP],
        ["latin1.csv:2:", "not valid UTF-8"],
        writes="import",
    ),
    "import non-UTF-8 JSONL": Case(
        {"latin1.jsonl": '{"question": "caf\xe9", "solution": "4"}\n'.encode("latin-1")},
        ["data", "import", "latin1.jsonl", "--kind", "prompt", *MAP],
        ["latin1.jsonl:1:", "not valid UTF-8"],
        writes="import",
    ),
    "validate non-UTF-8 JSONL": Case(
        {"latin1.jsonl": (jsonl(GOOD) + '{"id": "caf\xe9"}\n').encode("latin-1")},
        ["data", "validate", "latin1.jsonl", "--kind", "prompt"],
        ["latin1.jsonl:2:", "not valid UTF-8"],
    ),
    "non-UTF-8 recipe": Case(
        {"r.yaml": "name: x\ndescription: caf\xe9\n".encode("latin-1")},
        ["data", "--recipe", "r.yaml"],
        ["r.yaml:2:", "not valid UTF-8"],
        writes="data",
    ),
    "import lone surrogate": Case(
        {"s.jsonl": '{"question": "a\\ud800b", "solution": "4"}\n'},
        ["data", "import", "s.jsonl", "--kind", "prompt", *MAP],
        ["s.jsonl:1:", "field 'prompt'", "lone surrogate"],
        writes="import",
    ),
    "validate lone surrogate": Case(
        {"s.jsonl": '{"id": "p1", "prompt": "x", "answer": "\\udfff", "task": "t"}\n'},
        ["data", "validate", "s.jsonl", "--kind", "prompt"],
        ["s.jsonl:1:", "field 'answer'", "lone surrogate"],
    ),
    "import corrupt parquet": Case(
        {"c.parquet": b"PAR1garbagegarbagePAR1"},
        ["data", "import", "c.parquet", "--kind", "prompt", *MAP],
        ["c.parquet:", "not a readable Parquet file"],
        writes="import",
    ),
    "import missing source": Case(
        {},
        ["data", "import", "missing.jsonl", "--kind", "prompt", *MAP],
        ["missing.jsonl: file not found"],
        writes="import",
    ),
    "import empty folder as HF dataset": Case(
        {"empty/": ""},
        ["data", "import", "empty", "--kind", "prompt", *MAP],
        ["empty: is a folder but not a saved Hugging Face dataset"],
        writes="import",
    ),
    "import --output an existing folder": Case(
        {"good.jsonl": jsonl(GOOD), "folder/keep.txt": "mine"},
        ["data", "import", "good.jsonl", "--kind", "prompt", "--output", "folder"],
        ["folder: output is a folder"],
    ),
    "import --output under a file": Case(
        {"good.jsonl": jsonl(GOOD), "afile": "mine"},
        ["data", "import", "good.jsonl", "--kind", "prompt", "--output", "afile/o.jsonl"],
        ["afile/o.jsonl: cannot write: afile is a file"],
    ),
    "--set weight=.inf": Case(
        {},
        ["data", "--recipe", CI, "--set", "data.tasks.arithmetic.weight=.inf"],
        ["(--set data.tasks.arithmetic.weight)", "field 'data.tasks.arithmetic.weight'", "finite"],
        writes="data",
    ),
    # silently wrong before
    "import CSV row with an unquoted comma": Case(
        {"c.csv": "id,prompt,response\ns1,What is 2+2?,It is 4, obviously\n"},
        ["data", "import", "c.csv", "--kind", "sft"],
        ["c.csv:2:", "4 fields but the header has 3"],
        writes="import",
    ),
    "import CSV row with too few fields": Case(
        {"c.csv": "id,prompt,response\ns1,What is 2+2?\n"},
        ["data", "import", "c.csv", "--kind", "sft"],
        ["c.csv:2:", "2 fields but the header has 3"],
        writes="import",
    ),
    "import CSV quote never closed": Case(
        {"c.csv": 'id,prompt,response\ns1,"What is 2+2?,4\ns2,x,y\n'},
        ["data", "import", "c.csv", "--kind", "sft"],
        ["c.csv:2:", "unexpected end of data"],
        writes="import",
    ),
    "import CSV header with a repeated column": Case(
        {"c.csv": "prompt,prompt,response\na,b,c\n"},
        ["data", "import", "c.csv", "--kind", "sft"],
        ["c.csv:1:", "['prompt'] appear more than once"],
        writes="import",
    ),
    "import NaN answer": Case(
        {"n.jsonl": '{"question": "What?", "solution": NaN}\n'},
        ["data", "import", "n.jsonl", "--kind", "prompt", *MAP],
        ["n.jsonl:1:", "field 'answer'", "must be text, got a number: nan"],
        writes="import",
    ),
    "import object answer": Case(
        {"o.jsonl": jsonl({"question": "What?", "solution": {"v": 4}})},
        ["data", "import", "o.jsonl", "--kind", "prompt", *MAP],
        ["o.jsonl:1:", "field 'answer'", "must be text, got an object"],
        writes="import",
    ),
    "import boolean answer": Case(
        {"b.jsonl": jsonl({"question": "What?", "solution": True})},
        ["data", "import", "b.jsonl", "--kind", "prompt", *MAP],
        ["b.jsonl:1:", "field 'answer'", "got a boolean"],
        writes="import",
    ),
    "import NaN inside meta": Case(
        {"m.jsonl": '{"question": "x", "solution": "1", "meta": {"w": [1, NaN]}}\n'},
        ["data", "import", "m.jsonl", "--kind", "prompt", "--map", "meta=meta", *MAP],
        ["m.jsonl:1:", "field 'meta.w.1'", "not a finite number"],
        writes="import",
    ),
    "import 5,000-digit number": Case(
        {"d.jsonl": '{"question": "x", "solution": ' + "9" * 5000 + "}\n"},
        ["data", "import", "d.jsonl", "--kind", "prompt", *MAP],
        ["d.jsonl:1:", "more than 4300 digits"],
        writes="import",
    ),
    "validate NaN reward": Case(
        {
            "s.jsonl": '{"id": "s", "prompt_id": "p", "completion": "c", '
            '"rewards": {"accuracy": NaN}, "accepted": true, "model": "m"}\n'
        },
        ["data", "validate", "s.jsonl", "--kind", "sample"],
        ["s.jsonl:1:", "field 'rewards.accuracy'", "not a finite number"],
    ),
    "validate Infinity reward": Case(
        {
            "s.jsonl": '{"id": "s", "prompt_id": "p", "completion": "c", '
            '"rewards": {"accuracy": -Infinity}, "accepted": true, "model": "m"}\n'
        },
        ["data", "validate", "s.jsonl", "--kind", "sample"],
        ["s.jsonl:1:", "field 'rewards.accuracy'", "not a finite number"],
    ),
    "validate 'yes' as a boolean": Case(
        {
            "s.jsonl": jsonl(
                {
                    "id": "s",
                    "prompt_id": "p",
                    "completion": "c",
                    "rewards": {},
                    "accepted": "yes",
                    "model": "m",
                }
            )
        },
        ["data", "validate", "s.jsonl", "--kind", "sample"],
        ["s.jsonl:1:", "field 'accepted'", 'got "yes"'],
    ),
    "validate true as a difficulty": Case(
        {"p.jsonl": jsonl({**GOOD, "difficulty": True})},
        ["data", "validate", "p.jsonl", "--kind", "prompt"],
        ["p.jsonl:1:", "field 'difficulty'", "got true"],
    ),
    "validate unknown verifier": Case(
        {"p.jsonl": jsonl({**GOOD, "verifier": "nosuch"})},
        ["data", "validate", "p.jsonl", "--kind", "prompt"],
        ["p.jsonl:1:", "field 'verifier'", "unknown verifier 'nosuch'"],
    ),
    "validate countdown without meta.numbers": Case(
        {"p.jsonl": jsonl({**GOOD, "task": "countdown", "verifier": "countdown"})},
        ["data", "validate", "p.jsonl", "--kind", "prompt"],
        ["p.jsonl:1:", "field 'meta.numbers'", "countdown"],
    ),
    "validate countdown with a non-number target": Case(
        {"p.jsonl": jsonl({**GOOD, "task": "countdown", "answer": "x", "meta": {"numbers": [1]}})},
        ["data", "validate", "p.jsonl", "--kind", "prompt"],
        ["p.jsonl:1:", "field 'answer'", "countdown target is a number"],
    ),
    "recipe with a duplicate data: key": Case(
        {
            "r.yaml": "name: x\ndata:\n  cold_start_size: 5\nbase:\n  steps: 3\ndata:\n  eval_size: 4\n"
        },
        ["data", "--recipe", "r.yaml"],
        ["r.yaml:6:", "field 'data'", "duplicate key (first on line 2)"],
        writes="data",
    ),
    "recipe with a duplicate nested key": Case(
        {"r.yaml": "name: x\nbase:\n  steps: 3\n  lr: 0.1\n  steps: 4\n"},
        ["data", "--recipe", "r.yaml"],
        ["r.yaml:5:", "field 'base.steps'", "duplicate key (first on line 3)"],
        writes="data",
    ),
    "recipe cold_start_size: true": Case(
        {"r.yaml": "name: x\ndata:\n  cold_start_size: true\n"},
        ["data", "--recipe", "r.yaml"],
        ["r.yaml:3:", "field 'data.cold_start_size'", "valid integer, got true"],
        writes="data",
    ),
    "recipe steps: 3.5": Case(
        {"r.yaml": "name: x\nbase:\n  steps: 3.5\n"},
        ["data", "--recipe", "r.yaml"],
        ["r.yaml:3:", "field 'base.steps'", "valid integer, got 3.5"],
        writes="data",
    ),
    "recipe imports[].output escaping the folder": Case(
        {
            "r.yaml": "name: x\ndata:\n  imports:\n    - path: good.jsonl\n      kind: prompt\n"
            "      output: ../../x.jsonl\n",
            "good.jsonl": jsonl(GOOD),
        },
        ["data", "--recipe", "r.yaml"],
        ["r.yaml:6:", "field 'data.imports.0.output'", "inside the data folder"],
        writes="data",
    ),
    "recipe imports[].output absolute": Case(
        {
            "r.yaml": "name: x\ndata:\n  imports:\n    - path: good.jsonl\n      kind: prompt\n"
            "      output: /tmp/x.jsonl\n",
        },
        ["data", "--recipe", "r.yaml"],
        ["r.yaml:6:", "field 'data.imports.0.output'", "inside the data folder"],
        writes="data",
    ),
    "recipe import replacing a generated set": Case(
        {
            "r.yaml": "name: x\ndata:\n  imports:\n    - path: good.jsonl\n      kind: sft\n"
            "      output: cold_start.jsonl\n",
        },
        ["data", "--recipe", "r.yaml"],
        ["r.yaml:4:", "field 'data.imports'", "would replace a generated set"],
        writes="data",
    ),
    # misleading before
    "validate a folder": Case(
        {"folder/keep.txt": "x"},
        ["data", "validate", "folder", "--kind", "prompt"],
        ["folder: is a folder, not a file"],
    ),
    "a folder as the recipe": Case(
        {"folder/keep.txt": "x"},
        ["data", "--recipe", "folder"],
        ["folder: is a folder, not a recipe file"],
        writes="data",
    ),
    "recipe NaN threshold": Case(
        {"r.yaml": "name: x\ndata:\n  near_dup_threshold: .nan\n"},
        ["data", "--recipe", "r.yaml"],
        ["r.yaml:3:", "field 'data.near_dup_threshold'", "finite number, got .nan"],
        writes="data",
    ),
    "data --output a folder it did not write": Case(
        {"mine/thesis.tex": "years of work"},
        ["data", "--recipe", CI, "--output", "mine"],
        ["--output mine", "did not write"],
    ),
    "data --output a file": Case(
        {"mine.txt": "mine"},
        ["data", "--recipe", CI, "--output", "mine.txt"],
        ["--output mine.txt", "is a file"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_a_clear_error_and_changes_nothing(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    for rel, content in case.files.items():
        path = tmp_path / rel
        if rel.endswith("/"):
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    args = list(case.args)
    if case.writes == "import":
        write_jsonl(tmp_path / "out.jsonl", [PREVIOUS], kind="prompt", source={})
        args += ["--output", "out.jsonl"]
    elif case.writes == "data":
        (tmp_path / "a/b/data").mkdir(parents=True)
        (tmp_path / "a/b/data/report.json").write_text("{}")
        (tmp_path / "a/b/data/cold_start.jsonl").write_text(jsonl(PREVIOUS))
        args += ["--output", "a/b/data"]
    before = snapshot(tmp_path)

    proc = cli(*args, cwd=tmp_path)

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())
    for fragment in case.says:
        assert fragment in message, proc.stderr
    assert snapshot(tmp_path) == before  # no output written, replaced or left half-done
    assert not (tmp_path / "a/x.jsonl").exists() and not (tmp_path.parent / "x.jsonl").exists()


def _float_overrides(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value with a non-finite float) for every float field of a config section."""
    out = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = info.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if isinstance(annotation, types.UnionType | typing._UnionGenericAlias) and len(args) == 1:
            annotation = args[0]  # X | None
        origin, inner = typing.get_origin(annotation), typing.get_args(annotation)
        if annotation is float:
            out.append((key, float("inf")))
        elif origin is tuple and inner and all(a is float for a in inner):
            out.append((key, [0.5, float("nan")]))
        elif origin is dict and inner[1] is float:
            out.append((key, {"accuracy": float("-inf")}))
        elif origin is dict and typing.get_args(inner[1]) == (str, float):
            out.append((key, {"chat": {"format": float("nan")}}))
        elif origin is dict and isinstance(inner[1], type) and issubclass(inner[1], BaseModel):
            out += _float_overrides(inner[1], f"{key}.arithmetic.")
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _float_overrides(annotation, f"{key}.")
    return out


FLOAT_FIELDS = _float_overrides(Recipe)


def test_every_float_field_is_found() -> None:
    keys = {key for key, _ in FLOAT_FIELDS}
    assert {"base.lr", "data.tasks.arithmetic.weight", "sft_cold_start.betas"} <= keys
    assert {"grpo_reasoning.rewards", "grpo_final.task_rewards", "select.pass_rate"} <= keys
    assert {"distill.students.arithmetic.kd.alpha", "base_student.lr"} <= keys


@pytest.mark.parametrize(("key", "value"), FLOAT_FIELDS, ids=[k for k, _ in FLOAT_FIELDS])
def test_every_float_field_rejects_inf_and_nan(key: str, value: Any) -> None:
    shown = json.dumps(value).replace("Infinity", ".inf").replace("NaN", ".nan")
    with pytest.raises(ConfigError) as info:
        load_recipe(CI, [f"{key}={shown}"])
    lines = [line for line in str(info.value).splitlines() if f"field '{key}" in line]
    assert any("finite number" in line for line in lines), str(info.value)


def test_recipe_reads_1e_minus_5_as_a_float(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nbase:\n  lr: 1e-5\nsft_cold_start:\n  betas: [0.8, 0.9]\n")
    recipe = load_recipe(path)
    assert recipe.base.lr == 1e-5 and recipe.sft_cold_start.betas == (0.8, 0.9)


def test_csv_with_bom_keeps_its_ids(tmp_path: Path) -> None:
    src = tmp_path / "bom.csv"
    src.write_bytes("\ufeffid,question,solution\nx1,What is 2+2?,4\n".encode())
    import_file(
        src,
        tmp_path / "o.jsonl",
        kind="prompt",
        mapping={"prompt": "question", "answer": "solution"},
        task="m",
    )
    [record] = read_jsonl(tmp_path / "o.jsonl", "prompt")
    assert record.id == "x1"


def test_csv_parser_keeps_quoted_delimiters_newlines_and_other_dialects(tmp_path: Path) -> None:
    src = tmp_path / "q.csv"
    with open(src, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [["id", "prompt", "response"], ["s1", "What is\n2+2?", 'It is 4, "obviously"']]
        )
    import_file(src, tmp_path / "q.jsonl", kind="sft")
    [record] = read_jsonl(tmp_path / "q.jsonl", "sft")
    assert [m.content for m in record.messages] == ["What is\n2+2?", 'It is 4, "obviously"']

    semi = tmp_path / "semi.csv"
    semi.write_text("id;prompt;answer\na1;What is 2,5 + 1?;3,5\n", encoding="utf-8")
    import_file(semi, tmp_path / "semi.jsonl", kind="prompt", task="m")
    [prompt] = read_jsonl(tmp_path / "semi.jsonl", "prompt")
    assert (prompt.prompt, prompt.answer) == ("What is 2,5 + 1?", "3,5")


def test_csv_field_over_the_csv_modules_limit_is_imported_whole(tmp_path: Path) -> None:
    long = "step " * 40_000  # 200,000 characters: a long reasoning trace
    src = tmp_path / "long.csv"
    src.write_text(f"prompt,response\nWhy?,{long}\n", encoding="utf-8")
    limit = csv.field_size_limit()
    import_file(src, tmp_path / "long.jsonl", kind="sft")
    [record] = read_jsonl(tmp_path / "long.jsonl", "sft")
    assert record.messages[1].content == long
    assert csv.field_size_limit() == limit  # the process-wide limit is restored


def test_whole_number_answers_and_ids_become_their_digits(tmp_path: Path) -> None:
    src = tmp_path / "n.jsonl"
    src.write_text(jsonl({"id": 0, "prompt": "x", "answer": 4}))
    import_file(src, tmp_path / "o.jsonl", kind="prompt", task="m")
    [record] = read_jsonl(tmp_path / "o.jsonl", "prompt")
    assert (record.id, record.answer) == ("0", "4")


def test_data_output_of_a_previous_run_or_empty_folder_is_accepted(tmp_path: Path) -> None:
    from r1forge.stages.data import check_output as _check_data_output

    previous = tmp_path / "data"
    previous.mkdir()
    (previous / "report.json").write_text("{}")
    _check_data_output(previous)
    (tmp_path / "empty").mkdir()
    _check_data_output(tmp_path / "empty")
    _check_data_output(tmp_path / "new")

"""`r1forge data import`: a team's JSONL, CSV, Parquet or saved dataset becomes validated records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from r1forge.data.importer import import_file
from r1forge.data.jsonl import read_jsonl, read_manifest
from r1forge.errors import DataError

from .conftest import run_cli

ROWS = [
    {"question": "What is 2+2?", "solution": "4", "level": 1, "extra": {"src": "a"}},
    {"question": "What is 3*3?", "solution": "9", "level": 2, "extra": {"src": "b"}},
]
MAPPING = {"prompt": "question", "answer": "solution", "difficulty": "level", "meta": "extra"}


def test_jsonl_prompts(tmp_path: Path) -> None:
    src = tmp_path / "team.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    manifest = import_file(src, tmp_path / "out.jsonl", kind="prompt", mapping=MAPPING, task="math")
    assert manifest["count"] == 2 and manifest["source"]["imported_file"] == "team.jsonl"
    records = read_jsonl(tmp_path / "out.jsonl", "prompt")
    assert [r.id for r in records] == ["team-000001", "team-000002"]
    assert (
        records[1].answer == "9" and records[1].difficulty == 2 and records[1].meta == {"src": "b"}
    )
    assert records[0].task == "math"


def test_csv_and_parquet_and_hf_folder(tmp_path: Path) -> None:
    csv_path = tmp_path / "team.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["q", "r", "a"])
        writer.writeheader()
        writer.writerow({"q": "Add 1 and 2", "r": "1 + 2 = 3", "a": "\\boxed{3}"})
    import_file(
        csv_path,
        tmp_path / "sft.jsonl",
        kind="sft",
        mapping={"prompt": "q", "reasoning": "r", "response": "a"},
    )
    [sft] = read_jsonl(tmp_path / "sft.jsonl", "sft")
    assert sft.messages[1].content == "<think>\n1 + 2 = 3\n</think>\n\\boxed{3}"

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.Table.from_pylist(
            [{"question": r["question"], "solution": r["solution"]} for r in ROWS]
        ),
        tmp_path / "t.parquet",
    )
    assert (
        import_file(
            tmp_path / "t.parquet",
            tmp_path / "pq.jsonl",
            kind="prompt",
            mapping={"prompt": "question", "answer": "solution"},
            task="m",
        )["count"]
        == 2
    )

    from datasets import Dataset

    Dataset.from_list(
        [{"question": r["question"], "solution": r["solution"]} for r in ROWS]
    ).save_to_disk(str(tmp_path / "hf"))
    import_file(
        tmp_path / "hf",
        tmp_path / "hf.jsonl",
        kind="prompt",
        mapping={"prompt": "question", "answer": "solution"},
        task="m",
    )
    assert read_manifest(tmp_path / "hf.jsonl")["count"] == 2


def test_bad_rows_are_all_reported_and_nothing_written(tmp_path: Path) -> None:
    src = tmp_path / "team.jsonl"
    rows = [ROWS[0], {"question": "no answer here", "level": 1}, {"solution": "5"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as info:
        import_file(
            src,
            tmp_path / "out.jsonl",
            kind="prompt",
            mapping={"prompt": "question", "answer": "solution"},
            task="m",
        )
    text = [str(p) for p in info.value.problems]
    assert any(t.startswith(f"{src}:2") and "answer" in t for t in text)
    assert any(t.startswith(f"{src}:3") and "question" in t for t in text)
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_import(tmp_path: Path) -> None:
    src = tmp_path / "team.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "p.jsonl"
    proc = run_cli(
        "data",
        "import",
        str(src),
        "--kind",
        "prompt",
        "--output",
        str(out),
        "--map",
        "prompt=question",
        "--map",
        "answer=solution",
        "--task",
        "math",
    )
    assert "imported 2 prompt records" in proc.stdout
    bad = run_cli(
        "data",
        "import",
        str(src),
        "--kind",
        "prompt",
        "--output",
        str(tmp_path / "q.jsonl"),
        "--map",
        "prompt=question",
        "--task",
        "math",
        check=False,
    )
    assert bad.returncode == 2 and "field 'answer'" in bad.stderr
    assert not (tmp_path / "q.jsonl").exists()

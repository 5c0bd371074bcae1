"""Bring a team's own data (JSONL, CSV, Parquet, or a saved Hugging Face dataset) into r1forge records.

A mapping names, for each record field, the source column it comes from (dotted paths reach
into nested objects); fields not mapped are taken from a column of the same name if there is
one. Every row is validated; all bad rows are reported at once and nothing is written.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from r1forge.data.chat import THINK_CLOSE, THINK_OPEN
from r1forge.data.jsonl import _problems_from_validation, write_jsonl
from r1forge.data.schema import PromptRecord, SFTRecord
from r1forge.errors import DataError, Problem
from r1forge.io import sha256_file

PROMPT_FIELDS = (
    "id",
    "prompt",
    "answer",
    "task",
    "verifier",
    "difficulty",
    "language",
    "tests",
    "meta",
)
SFT_FIELDS = ("id", "messages", "system", "prompt", "reasoning", "response")
STRUCTURED = {"prompt", "tests", "meta", "messages"}


def rows(path: str | Path, split: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, row) pairs from any supported format."""
    path = Path(path)
    if path.is_dir():
        from datasets import DatasetDict, load_from_disk

        dataset = load_from_disk(str(path))
        if isinstance(dataset, DatasetDict):
            name = split or ("train" if "train" in dataset else next(iter(dataset)))
            if name not in dataset:
                raise DataError.single(path, f"no split {name!r}; splits: {list(dataset)}")
            dataset = dataset[name]
        yield from enumerate(dataset, start=1)
    elif path.suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield number, json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError.single(
                            path, f"malformed JSON: {exc.msg}", line=number
                        ) from None
    elif path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                yield reader.line_num, row
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(path).to_pylist(), start=1)
    else:
        raise DataError.single(
            path, "unsupported format: use .jsonl, .csv, .parquet or a saved dataset folder"
        )


class MissingColumn(KeyError):
    """A column the mapping names is absent from a row."""

    def __init__(self, field: str, column: str):
        super().__init__(field)
        self.field, self.column = field, column


def _lookup(row: dict[str, Any], column: str) -> Any:
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(column)
        value = value[part]
    return value


def _fields(row: dict[str, Any], names: tuple[str, ...], mapping: dict[str, str]) -> dict[str, Any]:
    out = {}
    for name in names:
        column = mapping.get(name, name)
        try:
            value = _lookup(row, column)
        except KeyError:
            if name in mapping:
                raise MissingColumn(name, column) from None
            continue
        if name in STRUCTURED and isinstance(value, str) and value.strip()[:1] in "[{":
            value = json.loads(value)
        if value is not None and value != "":
            out[name] = value
    return out


def _sft(fields: dict[str, Any]) -> dict[str, Any]:
    if "messages" in fields:
        return {"id": fields.get("id"), "messages": fields["messages"]}
    if "prompt" not in fields or "response" not in fields:
        raise KeyError("needs 'messages', or 'prompt' and 'response' (map them with --map)")
    answer = str(fields["response"])
    if "reasoning" in fields:
        answer = f"{THINK_OPEN}\n{fields['reasoning']}\n{THINK_CLOSE}\n{answer}"
    system = [{"role": "system", "content": fields["system"]}] if "system" in fields else []
    return {
        "id": fields.get("id"),
        "messages": [
            *system,
            {"role": "user", "content": fields["prompt"]},
            {"role": "assistant", "content": answer},
        ],
    }


def import_file(
    path: str | Path,
    output: str | Path,
    *,
    kind: str,
    mapping: dict[str, str] | None = None,
    task: str | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Convert `path` into a validated JSONL dataset of `kind` ('sft' or 'prompt') at `output`."""
    if kind not in ("sft", "prompt"):
        raise ValueError(f"kind must be 'sft' or 'prompt', got {kind!r}")
    mapping = dict(mapping or {})
    names = PROMPT_FIELDS if kind == "prompt" else SFT_FIELDS
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise DataError.single(
            path, f"cannot map to unknown field(s) {unknown}; {kind} fields: {list(names)}"
        )
    model = PromptRecord if kind == "prompt" else SFTRecord
    shown, stem = str(path), Path(path).stem
    records, problems, seen = [], [], {}
    for number, row in rows(path, split):
        try:
            fields = _fields(row, names, mapping)
            data = fields if kind == "prompt" else _sft(fields)
        except MissingColumn as exc:
            problems.append(
                Problem(shown, number, exc.field, f"mapped column {exc.column!r} is missing")
            )
            continue
        except (KeyError, json.JSONDecodeError) as exc:
            problems.append(Problem(shown, number, None, str(exc).strip("\"'")))
            continue
        data["id"] = str(data.get("id") or f"{stem}-{number:06d}")
        if kind == "prompt" and "task" not in data and task:
            data["task"] = task
        if kind == "prompt" and "answer" in data:
            data["answer"] = str(data["answer"])
        try:
            record = model.model_validate(data)
        except ValidationError as exc:
            problems.extend(_problems_from_validation(shown, number, exc))
            continue
        if record.id in seen:
            problems.append(
                Problem(
                    shown, number, "id", f"duplicate id {record.id!r} (first at {seen[record.id]})"
                )
            )
            continue
        seen[record.id] = number
        records.append(record)
    if problems:
        raise DataError(problems)
    if not records:
        raise DataError.single(shown, "empty file: no records")
    source = {"imported_file": Path(path).name, "mapping": mapping}
    if Path(path).is_file():
        source["sha256"] = sha256_file(path)
    return write_jsonl(output, records, kind=kind, source=source)

"""Validated JSONL reading and atomic JSONL writing with a manifest beside every file."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from r1forge.data.schema import SCHEMA_VERSION, Record, record_type
from r1forge.errors import DataError, Problem
from r1forge.io import atomic_file, sha256_file, write_json_atomic

MAX_REPORTED_PROBLEMS = 1000


def manifest_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".manifest.json")


def _problems_from_validation(path: str, line: int, error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        # Pydantic names the union branch it tried (e.g. 'list[Message]'); users want the field.
        loc = [part for part in loc if not part.startswith(("list[", "str", "function-"))]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (not part of the schema)"
        field = ".".join(loc) or None
        if field is None and ": " in message:  # record-level checks say "field: message"
            field, message = message.split(": ", 1)
        problems.append(Problem(path, line, field, message))
    return problems


def read_jsonl(path: str | Path, kind: str, *, all_errors: bool = False) -> list[Any]:
    """Read and validate every line of a JSONL file as records of `kind` ('sft', 'prompt', 'sample').

    Raises DataError naming file:line:field at the first bad line, or with `all_errors`
    after collecting every bad line. Blank lines are allowed; duplicate ids are not.
    """
    model = record_type(kind)
    shown = str(path)
    path = Path(path)
    if not path.is_file():
        raise DataError.single(shown, "file not found")
    problems: list[Problem] = []
    records: list[Record] = []
    seen: dict[str, int] = {}

    def fail(problem_list: list[Problem]) -> None:
        problems.extend(problem_list)
        if not all_errors or len(problems) >= MAX_REPORTED_PROBLEMS:
            raise DataError(problems)

    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                fail(
                    [
                        Problem(
                            shown,
                            number,
                            None,
                            f"not valid UTF-8 ({exc.reason} at byte {exc.start})",
                        )
                    ]
                )
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                fail(
                    [
                        Problem(
                            shown, number, None, f"malformed JSON: {exc.msg} (column {exc.colno})"
                        )
                    ]
                )
                continue
            if not isinstance(obj, dict):
                fail(
                    [
                        Problem(
                            shown, number, None, f"expected a JSON object, got {type(obj).__name__}"
                        )
                    ]
                )
                continue
            try:
                record = model.model_validate(obj)
            except ValidationError as exc:
                fail(_problems_from_validation(shown, number, exc))
                continue
            if record.id in seen:
                fail(
                    [
                        Problem(
                            shown,
                            number,
                            "id",
                            f"duplicate id {record.id!r} (first on line {seen[record.id]})",
                        )
                    ]
                )
                continue
            seen[record.id] = number
            records.append(record)
    if problems:
        raise DataError(problems)
    if not records:
        raise DataError.single(shown, "empty file: no records")
    return records


def write_jsonl(
    path: str | Path,
    records: Iterable[Record | dict[str, Any]],
    *,
    kind: str,
    source: dict[str, Any],
) -> dict[str, Any]:
    """Write records atomically, then their manifest (count, sha256, schema version, source)."""
    path = Path(path)
    model = record_type(kind)
    count = 0
    with atomic_file(path) as handle:
        for record in records:
            if isinstance(record, dict):
                record = model.model_validate(record)
            handle.write(record.model_dump_json(exclude_none=True) + "\n")
            count += 1
    manifest = {
        "file": path.name,
        "kind": kind,
        "schema_version": SCHEMA_VERSION,
        "count": count,
        "sha256": sha256_file(path),
        "source": source,
    }
    write_json_atomic(manifest_path(path), manifest)
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a dataset file; DataError if it is missing or does not match the file."""
    mpath = manifest_path(path)
    if not mpath.is_file():
        raise DataError.single(str(path), f"no manifest ({mpath.name}) beside the dataset")
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    if manifest.get("sha256") != sha256_file(path):
        raise DataError.single(
            str(path), f"sha256 differs from {mpath.name}: file changed after writing"
        )
    return manifest

"""Bring a team's own data (JSONL, CSV, Parquet, or a saved Hugging Face dataset) into r1forge records.

A mapping names, for each record field, the source column it comes from (dotted paths reach
into nested objects); fields not mapped are taken from a column of the same name if there is
one. Every row is validated; all bad rows are reported at once and nothing is written.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from r1forge.data.chat import THINK_CLOSE, THINK_OPEN
from r1forge.data.jsonl import (
    _problems_from_validation,
    check_input_file,
    check_output_file,
    json_objects,
    parse_json,
    text_lines,
    write_jsonl,
)
from r1forge.data.schema import PromptRecord, SFTRecord
from r1forge.errors import ConfigError, DataError, Problem
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
KINDS = ("sft", "prompt")
# A long reasoning trace is a legitimate CSV field; the csv module's default cap is 128 KiB.
CSV_FIELD_LIMIT = 2**31 - 1
CSV_DELIMITERS = ",;\t|"

Row = dict[str, Any] | Problem


def rows(path: str | Path, split: str | None = None) -> Iterator[tuple[int, Row]]:
    """(line or row number, row) pairs from any supported format; a Problem for a bad row.

    Problems that make the rest of the file unreadable (a corrupt Parquet file, a CSV
    quote never closed) raise DataError instead.
    """
    path = Path(path)
    if path.is_dir():
        yield from _dataset_rows(path, split)
        return
    check_input_file(path)
    if path.suffix in (".jsonl", ".json"):
        yield from json_objects(path)
    elif path.suffix == ".csv":
        yield from _csv_rows(path)
    elif path.suffix == ".parquet":
        yield from _parquet_rows(path)
    else:
        raise DataError.single(
            path, "unsupported format: use .jsonl, .csv, .parquet or a saved dataset folder"
        )


def _dataset_rows(path: Path, split: str | None) -> Iterator[tuple[int, Row]]:
    import pyarrow as pa
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError.single(
            path, "is a folder but not a saved Hugging Face dataset (save_to_disk output)"
        ) from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError.single(path, f"unreadable saved dataset: {exc}") from None
    if isinstance(dataset, DatasetDict):
        name = split or ("train" if "train" in dataset else next(iter(dataset)))
        if name not in dataset:
            raise DataError.single(path, f"no split {name!r}; splits: {list(dataset)}")
        dataset = dataset[name]
    yield from enumerate(dataset, start=1)


def _parquet_rows(path: Path) -> Iterator[tuple[int, Row]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    number = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches():
            for row in batch.to_pylist():
                number += 1
                yield number, row
    except (OSError, pa.ArrowException) as exc:
        where = f" after row {number}" if number else ""
        raise DataError.single(path, f"not a readable Parquet file{where}: {exc}") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, Row]]:
    """Rows of a CSV file with the delimiter its header shows (`,` `;` tab or `|`), strictly
    parsed with standard quoting (a field in double quotes, `""` for a quote inside).

    A row with more or fewer fields than the header (an unquoted delimiter inside a text)
    is a problem, never a silently cut or padded row.
    """
    shown = str(path)

    def text() -> Iterator[str]:
        for _, line in text_lines(path):
            if isinstance(line, Problem):
                raise DataError([line])
            yield line

    lines = text()
    first = next(lines, None)
    if first is None:
        return
    try:  # only the delimiter: a header shows no quoting, so quoting stays RFC 4180's
        delimiter = csv.Sniffer().sniff(first, delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(
        itertools.chain([first], lines), csv.excel, delimiter=delimiter, strict=True
    )
    limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    header: list[str] | None = None
    try:
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError.single(
                    shown, f"bad CSV in the row that starts here: {exc}", start
                ) from None
            if not fields:
                continue
            if header is None:
                header = fields
                repeated = sorted({c for c in header if header.count(c) > 1})
                if repeated:
                    message = f"column(s) {repeated} appear more than once in the header"
                    raise DataError.single(shown, message, start)
            elif len(fields) != len(header):
                message = (
                    f"{len(fields)} fields but the header has {len(header)} "
                    f"(quote a field that holds {delimiter!r})"
                )
                yield start, Problem(shown, start, None, message)
            else:
                yield start, dict(zip(header, fields, strict=True))
    finally:
        csv.field_size_limit(limit)


class RowError(ValueError):
    """A row whose `field` cannot become a record field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def _lookup(row: dict[str, Any], column: str) -> Any:
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(column)
        value = value[part]
    return value


def _text(field: str, value: Any) -> str:
    """A field that must be text: whole numbers become their digits (exact); anything else
    (a float such as NaN, a boolean, an object) is an error, never its Python repr."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    kind = {dict: "an object", list: "a list", bool: "a boolean", float: "a number"}.get(
        type(value), type(value).__name__
    )
    raise RowError(field, f"must be text, got {kind}: {value!r:.60}")


def _fields(row: dict[str, Any], names: tuple[str, ...], mapping: dict[str, str]) -> dict[str, Any]:
    out = {}
    for name in names:
        column = mapping.get(name, name)
        try:
            value = _lookup(row, column)
        except KeyError:
            if name in mapping:
                raise RowError(name, f"mapped column {column!r} is missing") from None
            continue
        if name in STRUCTURED and isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
            try:
                value = parse_json(value)
            except ValueError as exc:
                raise RowError(name, f"column {column!r}: {exc}") from None
        if value is not None and value != "":
            out[name] = value
    return out


def _sft(fields: dict[str, Any]) -> dict[str, Any]:
    if "messages" in fields:
        return {"messages": fields["messages"]}
    if "prompt" not in fields or "response" not in fields:
        missing = "prompt" if "prompt" not in fields else "response"
        raise RowError(
            missing, "needs 'messages', or 'prompt' and 'response' (map them with --map)"
        )
    answer = _text("response", fields["response"])
    if "reasoning" in fields:
        answer = f"{THINK_OPEN}\n{_text('reasoning', fields['reasoning'])}\n{THINK_CLOSE}\n{answer}"
    system = (
        [{"role": "system", "content": _text("system", fields["system"])}]
        if "system" in fields
        else []
    )
    return {
        "messages": [
            *system,
            {"role": "user", "content": _text("prompt", fields["prompt"])},
            {"role": "assistant", "content": answer},
        ],
    }


def _record_data(
    row: dict[str, Any],
    kind: str,
    names: tuple[str, ...],
    mapping: dict[str, str],
    task: str | None,
    default_id: str,
) -> dict[str, Any]:
    fields = _fields(row, names, mapping)
    data = fields if kind == "prompt" else _sft(fields)
    data["id"] = _text("id", fields["id"]) if "id" in fields else default_id
    if kind == "prompt":
        if "task" not in data and task:
            data["task"] = task
        if "answer" in data:
            data["answer"] = _text("answer", data["answer"])
    return data


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
    if kind not in KINDS:
        raise ConfigError(f"kind must be 'sft' or 'prompt', got {kind!r}")
    mapping = dict(mapping or {})
    names = PROMPT_FIELDS if kind == "prompt" else SFT_FIELDS
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise DataError.single(
            path, f"cannot map to unknown field(s) {unknown}; {kind} fields: {list(names)}"
        )
    check_output_file(output)
    model = PromptRecord if kind == "prompt" else SFTRecord
    shown, stem = str(path), Path(path).stem
    records, problems, seen = [], [], {}
    for number, row in rows(path, split):
        if isinstance(row, Problem):
            problems.append(row)
            continue
        try:
            data = _record_data(row, kind, names, mapping, task, f"{stem}-{number:06d}")
        except RowError as exc:
            problems.append(Problem(shown, number, exc.field, exc.message))
            continue
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

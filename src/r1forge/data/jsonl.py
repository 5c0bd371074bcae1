"""Validated JSONL reading and atomic JSONL writing with a manifest beside every file."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator
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


# Pydantic names the union branch it tried (e.g. 'list[Message]', 'int'); users want the field.
_UNION_BRANCHES = {"int", "str", "float", "bool"}
_UNION_PREFIXES = ("list[", "dict[", "tuple[", "function-")


def _problems_from_validation(path: str, line: int, error: ValidationError) -> list[Problem]:
    """One problem per field; several union branches' messages are joined with 'or', and a
    value of the wrong type is shown."""
    messages: dict[str | None, list[str]] = {}
    given: dict[str | None, str] = {}
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        loc = [p for p in loc if p not in _UNION_BRANCHES and not p.startswith(_UNION_PREFIXES)]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field (not part of the schema)"
        field = ".".join(loc) or None
        if field is None and ": " in message:  # record-level checks say "field: message"
            field, message = message.split(": ", 1)
        if item["type"].endswith("_type"):
            given[field] = json.dumps(item["input"], default=repr)[:60]
        if message not in messages.setdefault(field, []):
            messages[field].append(message)
    return [
        Problem(
            path,
            line,
            field,
            " or ".join(msgs) + (f", got {given[field]}" if field in given else ""),
        )
        for field, msgs in messages.items()
    ]


def check_input_file(path: str | Path) -> None:
    """A missing path and a folder given where a file is wanted are told apart."""
    path = Path(path)
    if path.is_dir():
        raise DataError.single(path, "is a folder, not a file")
    if not path.is_file():
        raise DataError.single(path, "file not found")


def check_output_file(path: str | Path) -> None:
    """Refuse, before any work, an output that names a folder or lies under a file."""
    path = Path(path)
    if path.is_dir():
        raise DataError.single(path, "output is a folder; name the .jsonl file to write")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DataError.single(path, f"cannot write: {parent} is a file, not a folder")


def text_lines(path: str | Path) -> Iterator[tuple[int, str | Problem]]:
    """Each line of a UTF-8 file with its number (a BOM on line 1 dropped), or the Problem
    of a line that is not UTF-8: the bad line is named, not a byte offset in the file."""
    shown = str(path)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = f"not valid UTF-8 ({exc.reason} at byte {exc.start} of the line)"
                yield number, Problem(shown, number, None, reason)
                continue
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def parse_json(text: str) -> Any:
    """json.loads whose every failure (syntax, nesting past the stack, a 5,000-digit
    number) is a ValueError with a message a user can act on."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise ValueError("malformed JSON: nested too deeply") from None
    except ValueError:  # the only other failure: an integer too long to convert
        raise ValueError("malformed JSON: a number with more than 4300 digits") from None


def json_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | Problem]]:
    """Each non-blank line of a JSONL file parsed as a JSON object, or the Problem with it."""
    shown = str(path)
    for number, text in text_lines(path):
        if isinstance(text, Problem):
            yield number, text
            continue
        if not text.strip():
            continue
        try:
            obj = parse_json(text)
        except ValueError as exc:
            yield number, Problem(shown, number, None, str(exc))
            continue
        if not isinstance(obj, dict):
            message = f"expected a JSON object, got {type(obj).__name__}"
            yield number, Problem(shown, number, None, message)
            continue
        yield number, obj


def read_jsonl(
    path: str | Path,
    kind: str,
    *,
    all_errors: bool = False,
    verifiers: Collection[str] | None = None,
) -> list[Any]:
    """Read and validate every line of a JSONL file as records of `kind` ('sft', 'prompt', 'sample').

    Raises DataError naming file:line:field at the first bad line, or with `all_errors`
    after collecting every bad line. Blank lines are allowed; duplicate ids are not.
    `verifiers`: the registered verifier names a prompt's `verifier` must be one of
    (`r1forge.rewards.VERIFIERS`; unchecked when None).
    """
    model = record_type(kind)
    shown = str(path)
    check_input_file(path)
    problems: list[Problem] = []
    records: list[Record] = []
    seen: dict[str, int] = {}

    def fail(problem_list: list[Problem]) -> None:
        problems.extend(problem_list)
        if not all_errors or len(problems) >= MAX_REPORTED_PROBLEMS:
            raise DataError(problems)

    for number, obj in json_objects(path):
        if isinstance(obj, Problem):
            fail([obj])
            continue
        try:
            record = model.model_validate(obj, context={"verifiers": verifiers})
        except ValidationError as exc:
            fail(_problems_from_validation(shown, number, exc))
            continue
        if record.id in seen:
            message = f"duplicate id {record.id!r} (first on line {seen[record.id]})"
            fail([Problem(shown, number, "id", message)])
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
    check_output_file(path)
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
    try:
        manifest = parse_json(mpath.read_text(encoding="utf-8"))
    except ValueError as exc:  # UnicodeDecodeError too
        raise DataError.single(str(mpath), f"unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise DataError.single(str(mpath), "unreadable manifest: not a JSON object")
    if manifest.get("sha256") != sha256_file(path):
        raise DataError.single(
            str(path), f"sha256 differs from {mpath.name}: file changed after writing"
        )
    return manifest

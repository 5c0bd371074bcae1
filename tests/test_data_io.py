"""Data contracts: validation errors name file:line:field, writes are atomic with a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1forge.data.jsonl import manifest_path, read_jsonl, read_manifest, write_jsonl
from r1forge.data.schema import PromptRecord
from r1forge.errors import DataError
from r1forge.io import sha256_file

from .conftest import run_cli

GOOD_PROMPT = {"id": "p1", "prompt": "Compute 1 + 2.", "answer": "3", "task": "arithmetic"}
GOOD_SFT = {
    "id": "s1",
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_round_trip_writes_manifest(tmp_path: Path) -> None:
    out = tmp_path / "prompts.jsonl"
    manifest = write_jsonl(
        out, [GOOD_PROMPT], kind="prompt", source={"generator": "test", "seed": 7}
    )
    assert manifest["count"] == 1
    assert manifest["sha256"] == sha256_file(out)
    assert manifest["schema_version"] == 1
    assert manifest["source"] == {"generator": "test", "seed": 7}
    assert json.loads(manifest_path(out).read_text())["sha256"] == manifest["sha256"]
    [record] = read_jsonl(out, "prompt")
    assert isinstance(record, PromptRecord)
    assert record.language == "en" and record.answer == "3"
    assert read_manifest(out)["count"] == 1


def test_manifest_detects_changed_file(tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    write_jsonl(out, [GOOD_PROMPT], kind="prompt", source={})
    out.write_text(out.read_text() + json.dumps({**GOOD_PROMPT, "id": "p2"}) + "\n")
    with pytest.raises(DataError, match="sha256 differs"):
        read_manifest(out)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "p1", "prompt": "x", "answer": "3"', "f.jsonl:2: malformed JSON"),
        ('{"id": "p1", "prompt": "x", "answer": "3"}', "f.jsonl:2: field 'task': Field required"),
        (
            '{"id": "p1", "prompt": "x", "answer": 3, "task": "t"}',
            "f.jsonl:2: field 'answer': Input should be a valid string",
        ),
        (
            '{"id": "p1", "prompt": "x", "answer": "3", "task": "t", "colour": 1}',
            "f.jsonl:2: field 'colour': unknown field",
        ),
        (
            '{"id": "p1", "prompt": "x", "task": "math"}',
            "f.jsonl:2: field 'answer': is required unless task is 'chat'",
        ),
        (
            '{"id": "p1", "prompt": "x", "answer": "1", "task": "t", "language": "xx"}',
            "f.jsonl:2: field 'language'",
        ),
        ("[1, 2]", "f.jsonl:2: expected a JSON object"),
        (
            '{"id": "a", "prompt": "x", "answer": "1", "task": "t"}',
            "f.jsonl:2: field 'id': duplicate id 'a' (first on line 1)",
        ),
    ],
)
def test_bad_lines_name_file_line_field(tmp_path: Path, line: str, expected: str) -> None:
    first = json.dumps({"id": "a", "prompt": "x", "answer": "1", "task": "t"})
    path = write_lines(tmp_path / "f.jsonl", [first, line])
    with pytest.raises(DataError) as info:
        read_jsonl(path, "prompt")
    assert expected in str(info.value).replace(str(tmp_path) + "/", "")


def test_sft_needs_assistant_turn_and_known_role(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "s.jsonl",
        [
            json.dumps({"id": "1", "messages": [{"role": "user", "content": "hi"}]}),
            json.dumps(
                {
                    "id": "2",
                    "messages": [
                        {"role": "robot", "content": "hi"},
                        {"role": "assistant", "content": "x"},
                    ],
                }
            ),
        ],
    )
    with pytest.raises(DataError) as info:
        read_jsonl(path, "sft", all_errors=True)
    problems = [str(p).replace(str(tmp_path) + "/", "") for p in info.value.problems]
    assert problems[0].startswith("s.jsonl:1: field 'messages'") and "assistant" in problems[0]
    assert problems[1].startswith("s.jsonl:2: field 'messages.0.role'")


def test_all_errors_reports_every_bad_line(tmp_path: Path) -> None:
    lines = [
        json.dumps(GOOD_SFT),
        "{oops",
        json.dumps({"id": "s2"}),
        json.dumps({**GOOD_SFT, "id": "s3"}),
    ]
    path = write_lines(tmp_path / "s.jsonl", lines)
    with pytest.raises(DataError) as info:
        read_jsonl(path, "sft", all_errors=True)
    assert [p.line for p in info.value.problems] == [2, 3]


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="empty file"):
        read_jsonl(empty, "sft")
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl", "sft")


def test_failed_write_leaves_previous_version(tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    write_jsonl(out, [GOOD_PROMPT], kind="prompt", source={})
    before = out.read_bytes()

    def records():
        yield GOOD_PROMPT
        yield {"id": "bad"}  # invalid: raises mid-write

    with pytest.raises(ValueError):
        write_jsonl(out, records(), kind="prompt", source={})
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl", "p.manifest.json"]


def test_cli_validate_reports_and_exits_nonzero(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "bad.jsonl", [json.dumps(GOOD_PROMPT), '{"id": "p2", "prompt": "x"}', "nope"]
    )
    proc = run_cli("data", "validate", str(path), "--kind", "prompt", check=False)
    assert proc.returncode == 2
    assert f"{path}:2: field 'task'" in proc.stderr
    assert f"{path}:3: malformed JSON" in proc.stderr
    good = write_lines(tmp_path / "good.jsonl", [json.dumps(GOOD_PROMPT)])
    assert (
        "1 valid prompt records"
        in run_cli("data", "validate", str(good), "--kind", "prompt").stdout
    )

"""The model registry: `registry/models.json`, a list of promoted models, one champion per name.

Each entry: `name`, `version` (1, 2, … per name), `sha256` (of the published folder),
`uri` (where serving fetches it), `lineage` (datasets by sha256, stages, code revision),
`metrics` (its evaluation, with the eval sets' sha256s), `recipe` (the resolved recipe),
`created` (UTC, ISO 8601), `champion` (the one being served), plus `source` (the checkpoint
it came from), `card` (its model card) and `status` (`active`, or `rolled_back` once a
rollback took it out of service). The functions here are pure: they take and return lists.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from r1forge.errors import ConfigError, DataError
from r1forge.io import write_json_atomic

REGISTRY_FILE = "models.json"
ENTRY_FIELDS = (
    "name",
    "version",
    "sha256",
    "uri",
    "lineage",
    "metrics",
    "recipe",
    "created",
    "champion",
)


def load_registry(path: str | Path) -> list[dict[str, Any]]:
    """The entries of `path` (none when it does not exist yet), each checked for every field."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError.single(path, f"not JSON: {error.msg}", line=error.lineno) from None
    if not isinstance(entries, list):
        raise DataError.single(path, "expected a JSON list of model entries")
    for index, entry in enumerate(entries):
        missing = [key for key in ENTRY_FIELDS if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise DataError.single(
                path, f"entry {index} lacks {', '.join(missing)}", field=missing[0]
            )
    return entries


def save_registry(path: str | Path, entries: list[dict[str, Any]]) -> None:
    write_json_atomic(path, entries)


def champion(entries: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((e for e in entries if e["name"] == name and e["champion"]), None)


def next_version(entries: list[dict[str, Any]], name: str) -> int:
    return 1 + max((int(e["version"]) for e in entries if e["name"] == name), default=0)


def crown(entries: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """`entries` plus `entry` as its name's champion (the previous champion steps down)."""
    updated = copy.deepcopy(entries)
    for other in updated:
        if other["name"] == entry["name"]:
            other["champion"] = False
    return [*updated, {**entry, "champion": True, "status": "active"}]


def rollback(
    entries: list[dict[str, Any]], name: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Take `name`'s champion out of service and restore the champion before it.

    The previous champion is the latest earlier entry of that name not itself rolled back
    (every entry was champion when it was promoted). Returns the new list and the restored entry.
    """
    updated = copy.deepcopy(entries)
    current = next((i for i, e in enumerate(updated) if e["name"] == name and e["champion"]), None)
    if current is None:
        raise ConfigError(f"registry: {name!r} has no champion to roll back")
    earlier = [
        i
        for i in range(current)
        if updated[i]["name"] == name and updated[i].get("status", "active") != "rolled_back"
    ]
    if not earlier:
        raise ConfigError(
            f"registry: {name!r} v{updated[current]['version']} is its first champion; "
            "there is nothing to roll back to"
        )
    updated[current]["champion"] = False
    updated[current]["status"] = "rolled_back"
    restored = updated[earlier[-1]]
    restored["champion"] = True
    restored["status"] = "active"
    return updated, restored

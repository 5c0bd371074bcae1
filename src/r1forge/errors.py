"""Errors users can act on: each names the file, line and field at fault."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class R1ForgeError(Exception):
    """Base of every error the CLI reports as a clean message with a non-zero exit."""


@dataclass(frozen=True)
class Problem:
    """One bad spot in an input file."""

    path: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}: {what}{self.message}"


class DataError(R1ForgeError):
    """Invalid records in a dataset; `problems` lists every bad line that was found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        head = str(problems[0])
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(head + more)

    @classmethod
    def single(
        cls, path: str | Path, message: str, line: int | None = None, field: str | None = None
    ):
        return cls([Problem(str(path), line, field, message)])


class ConfigError(R1ForgeError):
    """An invalid recipe or override."""


class TrainingError(R1ForgeError):
    """Training diverged (a loss or weight that is not a finite number): nothing is published."""

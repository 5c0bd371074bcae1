"""Record types of every dataset r1forge reads or writes (DESIGN.md, data contracts).

Field names follow the Hugging Face conventions (`messages`, `prompt`, `answer`); unknown
fields are an error so that a typo in an imported file never passes silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from r1forge.data.languages import LANGUAGE_SCRIPTS
from r1forge.errors import ConfigError

SCHEMA_VERSION = 1
MAX_DEPTH = 100

# Strict: a value of the wrong type is an error, never converted (`true` is not a difficulty).
STRICT = ConfigDict(extra="forbid", strict=True)


def unsound_value(value: Any) -> tuple[str, str] | None:
    """(dotted field, why) of the first value no dataset may hold, else None.

    A NaN or infinite number and a lone surrogate cannot be written as JSON text without
    being changed, and nesting deeper than MAX_DEPTH is no record's shape. Iterative, so a
    deep value cannot exhaust the stack.
    """
    stack: list[tuple[tuple[str, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if len(path) > MAX_DEPTH:
            return ".".join(path[:3]) + "...", f"nested more than {MAX_DEPTH} levels deep"
        field = ".".join(path) or "(record)"
        if isinstance(item, float) and not math.isfinite(item):
            return field, f"not a finite number ({item})"
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return (
                    field,
                    f"lone surrogate {item[exc.start]!r} at character {exc.start} (not text)",
                )
        elif isinstance(item, dict):
            stack.extend(((*path, str(k)), v) for k, v in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend(((*path, str(i)), v) for i, v in reversed(list(enumerate(item))))
    return None


class Record(BaseModel):
    model_config = STRICT

    id: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _sound_values(cls, data: Any) -> Any:
        bad = unsound_value(data) if isinstance(data, dict) else None
        if bad:
            raise ValueError(f"{bad[0]}: {bad[1]}")
        return data


class Message(BaseModel):
    model_config = STRICT

    role: Literal["system", "user", "assistant"]
    content: str


class SFTRecord(Record):
    """A conversation to imitate; the assistant turn holds `<think>…</think>` then the answer."""

    messages: list[Message] = Field(min_length=1)

    @field_validator("messages")
    @classmethod
    def _has_assistant_turn(cls, messages: list[Message]) -> list[Message]:
        if not any(m.role == "assistant" for m in messages):
            raise ValueError("needs at least one assistant message (the text to learn)")
        return messages


class CodeTest(BaseModel):
    model_config = STRICT

    input: str = ""
    output: str


class PromptRecord(Record):
    """A prompt for RL, sampling or evaluation, with what a verifier needs to check the answer."""

    prompt: list[Message] | str
    answer: str | None = None
    task: str = Field(min_length=1)
    verifier: str | None = None
    difficulty: int | str | None = None
    language: str = "en"
    tests: list[str | CodeTest] | None = None
    meta: dict[str, Any] | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, prompt: list[Message] | str) -> list[Message] | str:
        if not prompt:
            raise ValueError("must not be empty")
        return prompt

    @field_validator("verifier")
    @classmethod
    def _known_verifier(cls, verifier: str | None, info: ValidationInfo) -> str | None:
        """Checked against the names the reader passes (`read_jsonl(verifiers=...)`): the
        verifiers are registered by `r1forge.rewards`, a layer above the data."""
        known = (info.context or {}).get("verifiers")
        if verifier is not None and known is not None and verifier not in known:
            raise ValueError(
                f"unknown verifier {verifier!r}; registered: {', '.join(sorted(known))}"
            )
        return verifier

    @field_validator("language")
    @classmethod
    def _known_language(cls, language: str) -> str:
        if language not in LANGUAGE_SCRIPTS:
            raise ValueError(
                f"unknown language code {language!r}; supported: {', '.join(sorted(LANGUAGE_SCRIPTS))}"
            )
        return language

    @model_validator(mode="after")
    def _answer_unless_chat(self) -> PromptRecord:
        if self.answer is None and self.task != "chat":
            raise ValueError("answer: is required unless task is 'chat'")
        return self

    @model_validator(mode="after")
    def _countdown_has_numbers(self) -> PromptRecord:
        """The countdown verifier checks the expression against `meta.numbers`: without
        them (or without a numeric target) every answer would fail or raise at reward time."""
        if "countdown" not in (self.task, self.verifier):
            return self
        numbers = (self.meta or {}).get("numbers")
        if not isinstance(numbers, list) or not numbers or any(type(n) is not int for n in numbers):
            raise ValueError("meta.numbers: a countdown prompt needs a list of integers to use")
        try:
            Fraction(str(self.answer).strip())
        except ValueError:
            raise ValueError(
                f"answer: a countdown target is a number, got {self.answer!r}"
            ) from None
        return self

    def messages(self, system_prompt: str | None = None) -> list[dict[str, str]]:
        """The prompt as chat messages (a bare string becomes one user turn)."""
        turns = (
            [{"role": "user", "content": self.prompt}]
            if isinstance(self.prompt, str)
            else [m.model_dump() for m in self.prompt]
        )
        if system_prompt and turns[0]["role"] != "system":
            turns.insert(0, {"role": "system", "content": system_prompt})
        return turns

    def example(self) -> dict[str, Any]:
        """The plain dict that rewards and verifiers take."""
        return self.model_dump(exclude_none=True)


class SampleRecord(Record):
    """One sampled completion with its rewards and whether rejection sampling kept it."""

    prompt_id: str = Field(min_length=1)
    completion: str
    rewards: dict[str, float]
    accepted: bool
    model: str


RECORD_TYPES: dict[str, type[Record]] = {
    "sft": SFTRecord,
    "prompt": PromptRecord,
    "sample": SampleRecord,
}


def record_type(kind: str) -> type[Record]:
    try:
        return RECORD_TYPES[kind]
    except KeyError:
        raise ConfigError(
            f"unknown record kind {kind!r}; known: {', '.join(RECORD_TYPES)}"
        ) from None


@dataclass
class PromptItem:
    """A prompt as the rollout engines take it: its chat-templated token ids, and the
    example dict (answer, task, verifier, meta) the rewards score its completions against."""

    ids: list[int]
    example: dict[str, Any]

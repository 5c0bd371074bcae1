"""Record types of every dataset r1forge reads or writes (DESIGN.md, data contracts).

Field names follow the Hugging Face conventions (`messages`, `prompt`, `answer`); unknown
fields are an error so that a typo in an imported file never passes silently.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)

    id: str = Field(min_length=1)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
    model_config = ConfigDict(extra="forbid")

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

    @field_validator("language")
    @classmethod
    def _known_language(cls, language: str) -> str:
        from r1forge.rewards.language import LANGUAGE_SCRIPTS

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
        raise ValueError(
            f"unknown record kind {kind!r}; known: {', '.join(RECORD_TYPES)}"
        ) from None

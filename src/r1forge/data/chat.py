"""The reasoning format and chat template shared by every stage.

Reasoning completions are `<think>…</think>` then the answer in `\\boxed{…}`; general chat
answers carry neither. The generation prompt ends at the assistant tag and does NOT prefill
`<think>`: the model must write it, or the format reward could never be earned or lost.
`<think>` and `</think>` are single tokens, as vLLM's deepseek_r1 reasoning parser requires.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from r1forge.io import sha256_text

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
REASONING_TOKENS = (THINK_OPEN, THINK_CLOSE)
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
END_TOKEN, PAD_TOKEN = "<|end|>", "<|pad|>"


@cache
def chat_template() -> str:
    return (
        resources.files("r1forge.data").joinpath("chat_template.jinja").read_text(encoding="utf-8")
    )


def template_sha256(template: str | None = None) -> str:
    return sha256_text(template if template is not None else chat_template())


def reasoning_completion(thought: str, final: str) -> str:
    return f"{THINK_OPEN}\n{thought}\n{THINK_CLOSE}\n\\boxed{{{final}}}"


def ensure_reasoning_tokens(tokenizer: Any, model: Any | None = None) -> list[str]:
    """Give a real model's tokenizer single-token `<think>`/`</think>`, resizing embeddings.

    The model's own chat template is kept: the reasoning format lives in the assistant
    content, so it layers onto any template. Returns the tokens that were added.
    """
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [t for t in REASONING_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
        if model is not None:
            model.resize_token_embeddings(len(tokenizer))
    for token in REASONING_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{token!r} must be a single token, got ids {ids}")
    if getattr(tokenizer, "chat_template", None) is None:
        tokenizer.chat_template = chat_template()
    return missing

"""The built-in rule rewards: accuracy, format, length, repetition and code."""

from __future__ import annotations

import re
from typing import Any

from r1forge.rewards import mathcheck, sandbox
from r1forge.rewards.mathcheck import MAX_ANSWER_CHARS
from r1forge.rewards.parsing import (
    THINK_CLOSE,
    THINK_OPEN,
    extract_boxed,
    extract_code,
    split_think,
)
from r1forge.rewards.registry import ANSWER_VERIFIERS, get_verifier, per_item, register

CHAT = "chat"
DEFAULT_MIN_THINK_CHARS = 5
DEFAULT_MIN_THINK_WORDS = 2
DEFAULT_NGRAM_SIZE = 3
DEFAULT_MAX_PENALTY = -1.0


def _is_chat(example: dict[str, Any]) -> bool:
    return example.get("task") == CHAT


@register("accuracy")
def accuracy(completions: list[str], examples: list[dict[str, Any]], **params: Any) -> list[float]:
    """1 if the final answer is right, by the example's verifier; chat examples score 0.

    The answer is the last `\\boxed{}` after `</think>` (a boxed guess inside the chain of
    thought does not count); verifiers with `boxed=False` get the whole answer part.
    """
    for example in examples:  # an unknown verifier is a data error: raise before scoring
        get_verifier(example.get("verifier") or "math")

    def one(completion: str, example: dict[str, Any]) -> float:
        if _is_chat(example):
            return 0.0
        name = example.get("verifier") or "math"
        answer = split_think(completion).answer
        if name in ANSWER_VERIFIERS:
            return get_verifier(name)(answer, example, **params)
        boxed = extract_boxed(answer)
        if boxed is None or not boxed.strip() or len(boxed) > MAX_ANSWER_CHARS:
            return 0.0
        return get_verifier(name)(boxed.strip(), example, **params)

    return per_item(one, completions, examples, threads=mathcheck.POOL.size)


@register("format")
def format_reward(
    completions: list[str], examples: list[dict[str, Any]], **params: Any
) -> list[float]:
    """1 for `<think>` real reasoning `</think>` then a non-empty `\\boxed{}`; chat: plain text.

    Real reasoning, so that padding does not pay: at least `min_think_chars` non-space
    characters, no control or invisible format characters (NUL, zero-width space), at least
    `min_think_words` distinct words (runs of letters or digits, not one character repeated),
    and two characters besides the final answer. `<think></think>`, `<think>hmmmm</think>`,
    `<think>12345</think>`, `<think>1 * 1 = 1</think>` and `<think>11</think>\\boxed{11}`
    do not pay; `3 + 4 = 7` does.
    """
    min_chars = int(params.get("min_think_chars", DEFAULT_MIN_THINK_CHARS))
    min_words = int(params.get("min_think_words", DEFAULT_MIN_THINK_WORDS))

    def one(completion: str, example: dict[str, Any]) -> float:
        if _is_chat(example):
            clean = all(tag not in completion for tag in (THINK_OPEN, THINK_CLOSE, "\\boxed"))
            return float(bool(completion.strip()) and clean)
        parts = split_think(completion)
        if not completion.lstrip().startswith(THINK_OPEN) or parts.n_open != 1:
            return 0.0
        if parts.n_close != 1 or parts.think is None:
            return 0.0
        boxed = extract_boxed(parts.answer)
        if boxed is None or not boxed.strip():
            return 0.0
        return float(_substantive(parts.think, boxed.strip(), min_chars, min_words))

    return per_item(one, completions, examples)


def _substantive(think: str, answer: str, min_chars: int, min_words: int) -> bool:
    """Whether a chain of thought is long enough, clean, and more than the answer repeated."""
    if sum(not ch.isspace() for ch in think) < min_chars or _INVISIBLE.search(think):
        return False
    words = {w for w in _WORD.findall(think) if len(set(w)) > 1 or len(w) < 3} - {"boxed"}
    rest = think.replace("\\boxed", " ").replace(answer, " ")
    return len(words) >= min_words and sum(not (ch.isspace() or ch in "{}") for ch in rest) >= 2


# Control characters other than tab and newlines, and invisible format characters.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]"
)
# A word: a run of letters or digits of any script (underscores are not word characters).
_WORD = re.compile(r"[^\W_]+")


@register("length")
def length(completions: list[str], examples: list[dict[str, Any]], **params: Any) -> list[float]:
    """DAPO's soft overlong penalty: 0, then a linear ramp to -1 over the last `cache_length`.

    Lengths are `params["lengths"]` (token counts from the trainer) if given, else characters.
    Limits come from params or the example's `meta` (`max_length`, `cache_length`); without
    a `max_length` there is no penalty.
    """
    lengths = params.get("lengths")
    if lengths is not None and len(lengths) != len(completions):
        raise ValueError(f"{len(lengths)} lengths for {len(completions)} completions")
    out = []
    for i, (completion, example) in enumerate(zip(completions, examples, strict=True)):
        meta = example.get("meta") or {}
        max_length = params.get("max_length", meta.get("max_length"))
        if max_length is None:
            out.append(0.0)
            continue
        cache = params.get("cache_length", meta.get("cache_length")) or 0
        if not 0 <= cache <= max_length:
            raise ValueError(f"need 0 <= cache_length ({cache}) <= max_length ({max_length})")
        n = lengths[i] if lengths is not None else len(completion)
        out.append(_overlong_penalty(n, max_length, cache))
    return out


def _overlong_penalty(n: float, max_length: float, cache: float) -> float:
    soft_limit = max_length - cache
    if n <= soft_limit:
        return 0.0
    if n <= max_length:
        return (soft_limit - n) / cache
    return -1.0


@register("repetition")
def repetition(
    completions: list[str], examples: list[dict[str, Any]], **params: Any
) -> list[float]:
    """open-r1's n-gram repetition penalty: (1 - unique/total n-grams) * max_penalty.

    Words are the lower-cased whitespace-separated tokens of the whole completion; fewer
    words than `ngram_size` scores 0.
    """
    n = int(params.get("ngram_size", DEFAULT_NGRAM_SIZE))
    max_penalty = float(params.get("max_penalty", DEFAULT_MAX_PENALTY))
    if n < 1 or max_penalty > 0:
        raise ValueError(f"need ngram_size >= 1 and max_penalty <= 0, got {n}, {max_penalty}")

    def one(completion: str, example: dict[str, Any]) -> float:
        words = completion.lower().split()
        if len(words) < n:
            return 0.0
        ngrams = list(zip(*(words[i:] for i in range(n)), strict=False))
        return (1 - len(set(ngrams)) / len(ngrams)) * max_penalty + 0.0  # + 0.0: no -0.0

    return per_item(one, completions, examples, default=max_penalty)


@register("code")
def code(completions: list[str], examples: list[dict[str, Any]], **params: Any) -> list[float]:
    """Fraction of `example["tests"]` (assert snippets or stdin/stdout pairs) passed.

    The program is the last ```python block of the answer part; each test runs in its own
    sandboxed subprocess (see `sandbox`), two at a time, and is judged in this process on the
    plain values the program's expressions produced. Where the sandbox cannot contain programs
    the first call raises ConfigError, unless `params["sandbox"]` is `"unsafe_local"`.
    """
    codes: list[str | None] = []
    for completion in completions:
        try:
            codes.append(extract_code(split_think(completion).answer))
        except Exception:
            codes.append(None)
    tests = [list(ex.get("tests") or []) for ex in examples]
    return sandbox.pass_fractions(codes, tests, sandbox.Limits.from_params(params))

"""DeepSeek-R1's language-consistency reward: the share of chain-of-thought words in the
target language.

This works at the level of writing systems (Unicode scripts), so it catches a chain of
thought drifting from Chinese into English, but it cannot tell English from French or
Russian from Ukrainian: every language written in the Latin script scores alike.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any

from r1forge.data.languages import LANGUAGE_SCRIPTS
from r1forge.rewards.parsing import THINK_CLOSE, THINK_OPEN, split_think
from r1forge.rewards.registry import per_item, register

# Scripts whose every character is a word of its own (no spaces between words).
_CHARACTER_WORDS = frozenset({"Han", "Hiragana", "Katakana"})
# LaTeX control words, runs of ASCII letters, runs of anything outside ASCII.
_TOKEN = re.compile(r"\\[A-Za-z]+|[A-Za-z]+|[^\x00-\x7f]+")
# Unicode name prefixes whose first word is not the script's name; None marks letters that
# are notation rather than language (𝑥, ℝ, ℓ, µ).
_NAME_PREFIXES = (
    ("CJK ", "Han"),
    ("IDEOGRAPHIC ", "Han"),
    ("KATAKANA-HIRAGANA", "Katakana"),
    ("HALFWIDTH KATAKANA", "Katakana"),
    ("HALFWIDTH HANGUL", "Hangul"),
    ("FULLWIDTH LATIN", "Latin"),
    ("FEMININE ORDINAL", "Latin"),
    ("MASCULINE ORDINAL", "Latin"),
    ("MATHEMATICAL ", None),
    ("DOUBLE-STRUCK ", None),
    ("SCRIPT ", None),
    ("BLACK-LETTER ", None),
    ("PLANCK ", None),
    ("MICRO SIGN", None),
    ("MODIFIER ", None),
)


def target_scripts(language: str) -> set[str]:
    """Scripts of an ISO 639-1 code (a region such as `zh-CN` is ignored); ValueError if unknown."""
    code = language.strip().lower().replace("_", "-").split("-")[0]
    if code not in LANGUAGE_SCRIPTS:
        known = ", ".join(sorted(LANGUAGE_SCRIPTS))
        raise ValueError(f"unsupported language code {language!r}; supported: {known}")
    return LANGUAGE_SCRIPTS[code]


def script_of(ch: str) -> str | None:
    """Unicode script of a letter, from its character name (`CYRILLIC SMALL LETTER A`)."""
    name = unicodedata.name(ch, "")
    for prefix, script in _NAME_PREFIXES:
        if name.startswith(prefix):
            return script
    return name.split(" ", 1)[0].title() or None


@functools.lru_cache(maxsize=8192)
def _classify(ch: str) -> str | None:
    """A non-ASCII character's script if it is a letter, "" for a combining mark, else None."""
    category = unicodedata.category(ch)
    if category[0] == "M":
        return ""
    return script_of(ch) if category[0] == "L" else None


def words_by_script(text: str) -> list[tuple[str, int]]:
    """`(script, letters)` per word: a run of letters of one script, or one Han/kana character.

    Digits, punctuation and LaTeX control words (`\\frac`) are neutral and yield nothing.
    Combining marks (Devanagari and Thai vowel signs) continue the current word. ASCII
    letters are matched in runs by a regex, which keeps a megabyte of text well under a second.
    """
    words: list[tuple[str, int]] = []
    current: str | None = None  # script of the word that ends at `end`
    end = -1
    for match in _TOKEN.finditer(text):
        token = match.group()
        if match.start() != end:
            current = None  # something neutral came in between
        end = match.end()
        if token[0] == "\\":
            current = None
        elif token.isascii():
            if current == "Latin":
                words[-1] = ("Latin", words[-1][1] + len(token))
            else:
                words.append(("Latin", len(token)))
            current = "Latin"
        else:
            for ch in token:
                script = _classify(ch)
                if script == "" and current is not None:
                    continue
                if not script:
                    current = None
                elif script == current and script not in _CHARACTER_WORDS:
                    words[-1] = (script, words[-1][1] + 1)
                else:
                    words.append((script, 1))
                    current = script
    return words


@register("language_consistency")
def language_consistency(
    completions: list[str], examples: list[dict[str, Any]], **params: Any
) -> list[float]:
    """Share of the chain of thought's words written in a script of the target language.

    The target is `params["language"]`, else the example's `language`, else English. The
    text is the think block if there is one, else the whole completion. Text without a word
    of any script (empty, `3+4=7`, digits or NULs) scores 0: consistency is undefined there,
    and paying for it would pay for padding. A lone Greek letter is math notation (θ,
    π), not a word, unless the target is written in Greek. Script-level only: see the
    module doc.
    """

    def target(example: dict[str, Any]) -> set[str]:
        return target_scripts(params.get("language") or example.get("language") or "en")

    for example in examples:  # an unknown language is a data error: raise before scoring
        target(example)

    def one(completion: str, example: dict[str, Any]) -> float:
        text = reasoning_text(completion)
        wanted = target(example)
        scripts = [
            script
            for script, letters in words_by_script(text)
            if letters > 1 or script != "Greek" or "Greek" in wanted
        ]
        if not scripts:
            return 0.0
        return sum(script in wanted for script in scripts) / len(scripts)

    return per_item(one, completions, examples)


def reasoning_text(completion: str) -> str:
    """The text whose language is judged: the think block if there is one, else the whole
    completion, without the think tags."""
    think = split_think(completion).think
    text = completion if think is None else think
    return text.replace(THINK_OPEN, " ").replace(THINK_CLOSE, " ")


def has_words(completion: str) -> bool:
    """Whether the reasoning holds a word of any script: without one, language consistency is
    undefined (the reward pays 0; a filter has nothing to mix)."""
    return bool(words_by_script(reasoning_text(completion)))

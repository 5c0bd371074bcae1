"""Pull the chain of thought, the boxed answer and code blocks out of a completion.

Every helper here runs in time linear in the input and never raises on a string, because
completions are arbitrary model output (truncated, binary junk, megabytes of braces).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from r1forge.data.chat import THINK_CLOSE, THINK_OPEN

BOXED = "\\boxed"

# A backslash escapes the next character (so `\{` is a literal brace and `\\` a line break);
# every other match is a brace that opens or closes a group.
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
# An opening fence alone on its line: ``` with an optional info string such as `python`.
_FENCE_OPEN = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[ \t]*\r?$", re.MULTILINE)
_PYTHON_TAGS = frozenset({"", "python", "python3", "py"})


class ThinkSplit(NamedTuple):
    """A completion cut into its chain of thought and its answer part."""

    think: str | None  # None when there is no `</think>`
    answer: str
    n_open: int
    n_close: int


def split_think(completion: str) -> ThinkSplit:
    """Split at the last `</think>`; the think text starts after the first `<think>`, if any.

    A completion without `<think>` but with `</think>` still has a think block, since chat
    templates often put the opening tag into the prompt.
    """
    n_open = completion.count(THINK_OPEN)
    n_close = completion.count(THINK_CLOSE)
    close = completion.rfind(THINK_CLOSE)
    if close < 0:
        return ThinkSplit(None, completion, n_open, n_close)
    head = completion[:close]
    start = head.find(THINK_OPEN)
    think = head[start + len(THINK_OPEN) :] if start >= 0 else head
    return ThinkSplit(think, completion[close + len(THINK_CLOSE) :], n_open, n_close)


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`, braces matched; None if absent or never closed.

    Only the last `\\boxed` is considered (the final answer), and the scan from it is one
    regex pass, so ten thousand nested braces cost no more than ten thousand letters.
    """
    start = text.rfind(BOXED)
    if start < 0:
        return None
    pos = start + len(BOXED)
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    if pos >= len(text) or text[pos] != "{":
        return None
    depth = 0
    for match in _BRACE_TOKEN.finditer(text, pos):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return text[pos + 1 : match.start()]
    return None


def extract_code(text: str) -> str | None:
    """Body of the last closed ```python (or untagged ```) fenced block, else None.

    Blocks tagged with another language are skipped rather than mistaken for Python, and an
    unclosed final block (a truncated completion) does not count.
    """
    found = None
    pos = 0
    while (fence := _FENCE_OPEN.search(text, pos)) is not None:
        body_start = fence.end() + 1  # past the newline that ends the fence line
        end = text.find("```", body_start)
        if end < 0:
            break
        if fence.group(1).lower() in _PYTHON_TAGS:
            found = text[body_start:end]
        pos = end + 3
    return found


# A relation between two values: `=`, `<`, `>`, `:=`, their Unicode forms, and the LaTeX
# relation and arrow commands (`\approx`, `\le`, `\to`, `\Rightarrow`, ...).
_RELATION = re.compile(
    r"[=<>\u2248\u2260\u2261\u2264\u2265\u2192\u21d2\u223c\u2243\u2245]|\\(?:approx|simeq|sim|"
    r"cong|equiv|neq?|leq?q?|geq?q?|lt|gt|ll|gg|to|gets|mapsto|implies|iff|"
    r"(?:long)?(?:left|right|leftright)arrow|(?:Long)?(?:Left|Right|Leftright)arrow)(?![a-zA-Z])"
)


def has_relation(text: str) -> bool:
    """Whether `text` states a relation (`36=37`, `37 \\approx 38`, `38 \\to 37`) rather than
    a value: a box holding one cannot be taken as the answer, whichever side is right."""
    return _RELATION.search(text) is not None

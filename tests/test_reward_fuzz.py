"""Issue 18: every reward fuzzed with a fixed seed never raises, stays in its range and
answers each batch within its time limit. CI runs a few thousand completions; set
R1FORGE_FUZZ_N (e.g. 100000) for a longer run."""

from __future__ import annotations

import os
import random
import time

import pytest

from r1forge.rewards import score_batch

from .test_rewards import RANGES

N = int(os.environ.get("R1FORGE_FUZZ_N", "2000"))
PIECES = [
    "<think>",
    "</think>",
    "\\boxed{",
    "}",
    "{",
    "\\",
    "\n",
    " ",
    "=",
    "\\approx",
    "\\to",
    "\\frac{1}{2}",
    "^{9^{9}}",
    "0",
    "7",
    "37",
    "-",
    "+",
    "*",
    "/",
    "(",
    ")",
    "x",
    "abc",
    "hmm",
    "\x00",
    "\u200b",
    "\ufeff",
    "\ud800",
    "\udfff",
    "é",
    "中文",
    "Привет",
    "```python\n",
    "```",
    "print(1)",
    "nan",
    "inf",
    "1e999",
    "$",
    "\\left(",
    "\\right)",
    "a" * 300,
    "{" * 200,
]
RULE_RANGES = {name: span for name, span in RANGES.items() if name != "code"}


def completions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40))) for _ in range(n)]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", sorted(RULE_RANGES))
def test_rule_rewards_survive_fuzzing(name: str) -> None:
    # math-verify parses what is not a plain number: fewer, and short time limits, for accuracy
    n = N // 8 if name == "accuracy" else N
    texts = completions(n, seed=18)
    examples = [
        {
            "id": str(i),
            "prompt": "p",
            "answer": ("37", "\\frac{1}{2}", "x > 2")[i % 3],
            "task": "arithmetic",
            "meta": {"max_length": 200, "cache_length": 50},
        }
        for i in range(n)
    ]
    low, high = RULE_RANGES[name]
    for start in range(0, n, 64):  # a GRPO step's worth at a time
        began = time.monotonic()
        values = score_batch(
            name, texts[start : start + 64], examples[start : start + 64], timeout=1
        )
        assert all(low <= v <= high for v in values), name
        assert time.monotonic() - began < 30, (name, start)  # a batch, not one item, bounded


@pytest.mark.timeout(300)
def test_code_reward_survives_fuzzing() -> None:
    """Random fenced programs through the sandbox: 0 exceptions, every value in [0, 1]."""
    rng = random.Random(18)
    bodies = [
        "def f(x):\n    return x\n",
        "import os\n",
        "while True: pass\n",
        "f = 1\n",
        "\x00",
        "\ud800",
    ]
    texts = [
        "<think>write it</think>\n```python\n"
        + "".join(rng.choice(bodies + PIECES[:20]) for _ in range(rng.randint(1, 6)))
        + "\n```"
        for _ in range(24)
    ]
    examples = [
        {"id": str(i), "prompt": "p", "task": "code", "tests": ["assert f(2) == 2"]}
        for i in range(24)
    ]
    values = score_batch("code", texts, examples, timeout=1)
    assert len(values) == 24 and all(0.0 <= v <= 1.0 for v in values)

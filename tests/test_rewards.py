"""Rule rewards: hand-computed values for every reward, plus adversarial completions that
must neither raise nor hang, and the math worker's timeout, restart and thread safety."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from typing import Any

import pytest

from r1forge.rewards import (
    LANGUAGE_SCRIPTS,
    REWARDS,
    VERIFIERS,
    available,
    mathcheck,
    register,
    register_verifier,
    score,
    score_batch,
)
from r1forge.rewards.language import LANGUAGE_SCRIPTS as LANGUAGE_SCRIPTS_FROM_MODULE
from r1forge.rewards.mathcheck import plain_number
from r1forge.rewards.parsing import extract_boxed, extract_code, split_think

GOOD = "<think>\n4 * 2 = 8\n3 + 8 = 11\n</think>\n\\boxed{11}"
MATH: dict[str, Any] = {"id": "m1", "prompt": "3 + 4 * 2?", "answer": "11", "task": "arithmetic"}
CHAT: dict[str, Any] = {"id": "c1", "prompt": "Say hi", "task": "chat"}


def math_example(answer: str) -> dict[str, Any]:
    return {"id": "m", "prompt": "?", "answer": answer, "task": "math"}


def boxed(answer: str) -> str:
    return f"<think>\nworking it out step by step\n</think>\n\\boxed{{{answer}}}"


# --- parsing -------------------------------------------------------------------------------


def test_split_think() -> None:
    assert split_think(GOOD) == ("\n4 * 2 = 8\n3 + 8 = 11\n", "\n\\boxed{11}", 1, 1)
    assert split_think("no tags \\boxed{1}") == (None, "no tags \\boxed{1}", 0, 0)
    # The opening tag may live in the prompt (chat template), so `</think>` alone splits.
    assert split_think("reasoning</think>answer") == ("reasoning", "answer", 0, 1)
    # Two blocks: the answer is after the last `</think>`.
    think, answer, n_open, n_close = split_think("<think>a</think>b<think>c</think>d")
    assert (answer, n_open, n_close) == ("d", 2, 2)
    assert think == "a</think>b<think>c"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{11}", "11"),
        ("\\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not count
        ("\\boxed {7}", "7"),
        ("\\boxed{}", ""),
        ("\\boxed{", None),
        ("\\boxed{\\frac{1}{2}", None),
        ("\\boxed 5", None),
        ("no box", None),
        ("\\boxed{1} and a dangling \\boxed{", None),  # the last box is the answer
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_extract_code() -> None:
    text = "```python\nx = 1\n```\ntext\n```cpp\nint x;\n```\n```\nprint(2)\n```\n```python\nnot closed"
    assert extract_code(text) == "print(2)\n"
    assert extract_code("```py\na = 1\n```") == "a = 1\n"
    assert extract_code("```cpp\nint x;\n```") is None
    assert extract_code("no code") is None


def test_plain_number_fast_path() -> None:
    assert plain_number(" -3/4 ") == plain_number("-0.75")
    assert plain_number("14") == plain_number("14.0") == 14
    assert plain_number("1/0") is None
    assert plain_number("1e9999999") is None  # exponents go to math-verify, not Fraction
    assert plain_number("\\frac{1}{2}") is None


# --- registry ------------------------------------------------------------------------------


def test_registry_lists_builtins_and_rejects_unknown() -> None:
    builtins = {"accuracy", "format", "language_consistency", "length", "repetition", "code"}
    assert builtins <= set(available())
    assert available() == sorted(REWARDS)
    assert {"math", "countdown", "exact", "code"} <= set(VERIFIERS)
    with pytest.raises(KeyError, match="accuracy"):
        score("acuracy", GOOD, MATH)
    with pytest.raises(ValueError, match="2 completions but 1 examples"):
        score_batch("format", [GOOD, GOOD], [MATH])


def test_register_user_reward_receives_params() -> None:
    @register("test_length_ratio")
    def ratio(completions: list[str], examples: list[dict], **params: Any) -> list[float]:
        return [len(c) / params["scale"] for c in completions]

    try:
        assert "test_length_ratio" in available()
        assert score_batch("test_length_ratio", ["ab", "abcd"], [MATH, MATH], scale=4) == [0.5, 1.0]
    finally:
        del REWARDS["test_length_ratio"]


def test_register_user_verifier() -> None:
    @register_verifier("test_parity")
    def parity(pred: str, example: dict, **params: Any) -> float:
        return float(int(pred) % 2 == int(example["answer"]) % 2)

    try:
        example = {"answer": "3", "task": "parity", "verifier": "test_parity"}
        assert score("accuracy", boxed("5"), example) == 1.0
        assert score("accuracy", boxed("4"), example) == 0.0
        assert score("accuracy", boxed("not a number"), example) == 0.0  # raised inside: 0
    finally:
        del VERIFIERS["test_parity"]
    with pytest.raises(KeyError, match="countdown"):
        score("accuracy", GOOD, {"answer": "1", "verifier": "test_parity"})


# --- accuracy ------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ("0.5", "\\frac{1}{2}", 1.0),
        ("\\frac{1}{2}", "0.5", 1.0),
        ("14", "14.0", 1.0),
        ("1/2", "\\frac{3}{6}", 1.0),
        ("-3/4", "-0.75", 1.0),
        ("\\sqrt{2}", "2^{1/2}", 1.0),
        ("11", "12", 0.0),
        ("\\frac{1}{2}", "\\frac{1}{3}", 0.0),
        ("11", "eleven apples", 0.0),
        # issue 18: a relation is no answer, though one of its sides is right
        ("37", "36=37", 0.0),
        ("37", "37 = 37", 0.0),
        ("37", "37 \\approx 38", 0.0),
        ("37", "38 \\to 37", 0.0),
        ("37", "38 \\rightarrow 37", 0.0),
        ("37", "37 \\le 38", 0.0),
        ("37", "36 < 37", 0.0),
        ("37", "37 ≈ 38", 0.0),
        ("37", "\\left(37\\right)", 1.0),  # \\left is not \\leftarrow
        ("x > 2", "x > 2", 1.0),  # unless the gold answer is a relation too
    ],
)
def test_accuracy_math(gold: str, pred: str, expected: float) -> None:
    assert score("accuracy", boxed(pred), math_example(gold)) == expected


@pytest.mark.parametrize(
    "completion",
    [
        "<think>3 + 8 = 11</think> the answer is 11",  # no box
        "<think>3 + 8 = 11</think>\\boxed{11",  # unclosed
        "<think>3 + 8 = 11</think>\\boxed{}",  # empty
        "<think>3 + 8 = 11</think>\\boxed{  }",
        "<think>\\boxed{11}</think>so it is eleven",  # a box in the thought is no answer
        "\\boxed{" + "1" * 1001 + "}",  # over the answer length cap
        "",
    ],
)
def test_accuracy_missing_or_malformed_answer(completion: str) -> None:
    assert score("accuracy", completion, MATH) == 0.0


def test_accuracy_uses_answer_after_think_and_chat_scores_zero() -> None:
    assert score("accuracy", GOOD, MATH) == 1.0
    assert score("accuracy", "<think>maybe \\boxed{12}</think>\\boxed{11}", MATH) == 1.0
    assert score("accuracy", "Hello! \\boxed{11}", CHAT) == 0.0
    assert score("accuracy", boxed("11"), {"task": "math"}) == 0.0  # no gold answer


COUNTDOWN = {
    "answer": "14",
    "task": "countdown",
    "verifier": "countdown",
    "meta": {"numbers": [2, 3, 4]},
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", 1.0),
        ("(3 * 4) + 2", 1.0),
        ("2 + 3 * 4 = 14", 1.0),  # `= target` suffix is dropped
        ("2 + 3 × 4", 1.0),
        ("2 + 3 \\times 4", 1.0),
        ("2 * 3 + 4", 0.0),  # evaluates to 10
        ("4 * 4 - 2", 0.0),  # reuses 4, skips 3
        ("3 * 4 + 2 + 0", 0.0),  # 0 is not a given number
        ("2 ** 3 + 4 + 2", 0.0),  # power is not allowed
        ("__import__('os').getpid()", 0.0),  # names and calls are not allowed
        ("2 + 3 * 4.0", 0.0),  # only integer literals
        ("(2 + 3) / (4 - 4) + 14", 0.0),  # division by zero
        ("(" * 95 + "2 + 3 * 4" + ")" * 95, 1.0),  # 199 characters
        ("(" * 96 + "2 + 3 * 4" + ")" * 96, 0.0),  # 201: over the length cap
        ("", 0.0),
    ],
)
def test_countdown(expression: str, expected: float) -> None:
    assert score("accuracy", boxed(expression), COUNTDOWN) == expected


def test_countdown_exact_fractions_and_use_all() -> None:
    example = {"answer": "24", "verifier": "countdown", "meta": {"numbers": [1, 3, 4, 6]}}
    assert score("accuracy", boxed("6 / (1 - 3 / 4)"), example) == 1.0  # 6 / (1/4), exactly
    assert score("accuracy", boxed("6 ÷ (1 - 3 ÷ 4)"), example) == 1.0
    partial = {"answer": "12", "verifier": "countdown", "meta": {"numbers": [2, 3, 4]}}
    assert score("accuracy", boxed("3 * 4"), partial) == 0.0  # 2 unused, use_all defaults on
    partial["meta"]["use_all"] = False
    assert score("accuracy", boxed("3 * 4"), partial) == 1.0
    assert score("accuracy", boxed("3 * 4 * 2 / 2"), partial) == 0.0  # 2 used twice
    negative = {"answer": "-2", "verifier": "countdown", "meta": {"numbers": [5, 3]}}
    assert score("accuracy", boxed("-5 + 3"), negative) == 1.0


@pytest.mark.parametrize(
    ("pred", "expected"), [("Paris", 1.0), ("  paris ", 1.0), ("PARIS", 1.0), ("Lyon", 0.0)]
)
def test_exact(pred: str, expected: float) -> None:
    assert score("accuracy", boxed(pred), {"answer": "Paris", "verifier": "exact"}) == expected
    example = {"answer": "New  York", "verifier": "exact"}
    assert score("accuracy", boxed("new york"), example) == 1.0


# --- math worker ---------------------------------------------------------------------------


def _only_worker() -> mathcheck.MathWorker:
    [worker] = mathcheck.POOL.workers()  # the tests score one answer at a time
    return worker


@pytest.mark.timeout(120)
def test_math_worker_timeout_kills_and_restarts() -> None:
    mathcheck.POOL.close()
    mathcheck.POOL._reset()
    assert score("accuracy", boxed("\\frac{1}{2}"), math_example("0.5")) == 1.0  # warm it up
    first = _only_worker()._proc
    assert first is not None
    start = time.monotonic()
    slow = boxed("9^{9^{9}}")  # sympy evaluates the power tower for minutes
    assert score_batch("accuracy", [slow], [math_example("5")], timeout=0.5) == [0.0]
    assert time.monotonic() - start < 5  # 0.5 s to wait plus killing, not minutes
    assert first.poll() is not None  # the stuck worker was killed
    assert score("accuracy", boxed("\\frac{3}{6}"), math_example("1/2")) == 1.0
    assert _only_worker()._proc is not None and _only_worker()._proc is not first


@pytest.mark.timeout(120)
def test_math_worker_recovers_from_crash() -> None:
    mathcheck.POOL.close()
    mathcheck.POOL._reset()
    assert score("accuracy", boxed("\\frac{1}{2}"), math_example("0.5")) == 1.0
    proc = _only_worker()._proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert score("accuracy", boxed("\\frac{1}{4}"), math_example("0.25")) == 1.0


@pytest.mark.timeout(120)
def test_slow_answers_do_not_hold_a_batch() -> None:
    """Issue 18: eight power towers took 47.8 s one after the other; now the workers run side
    by side and a repeated answer is judged once."""
    towers = [boxed(f"{b}^{{{b}^{{{b}^{{{b}}}}}}}") for b in (9, 8, 7, 6)] * 2
    examples = [math_example("5")] * len(towers)
    score_batch("accuracy", [boxed("\\sqrt{4}")], [math_example("2")])  # start one worker
    start = time.monotonic()
    assert score_batch("accuracy", towers, examples, timeout=1.0) == [0.0] * 8
    # 4 distinct answers, each at most 1 s, on at least 2 workers (+ starting them, loaded)
    assert time.monotonic() - start < 3.0 + 2 * 20
    assert score_batch("accuracy", towers, examples, timeout=1.0) == [0.0] * 8  # remembered
    assert score("accuracy", boxed("\\frac{6}{3}"), math_example("2")) == 1.0


@pytest.mark.timeout(120)
def test_score_from_threads() -> None:
    """math-verify's own SIGALRM timeout would fail off the main thread; ours does not."""
    cases = [("0.5", "\\frac{1}{2}", 1.0), ("2", "\\sqrt{4}", 1.0), ("3", "\\frac{1}{3}", 0.0)]
    results: dict[int, float] = {}

    def work(i: int) -> None:
        gold, pred, _ = cases[i % len(cases)]
        results[i] = score("accuracy", boxed(pred), math_example(gold))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {i: cases[i % len(cases)][2] for i in range(6)}


# --- format --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 1.0),
        ("  \n" + GOOD + "\nThat is all.", 1.0),
        ("<think></think>\\boxed{11}", 0.0),
        ("<think> </think>\\boxed{11}", 0.0),
        ("<think>ok</think>\\boxed{11}", 0.0),
        ("<think>11</think>\\boxed{11}", 0.0),
        ("<think>11 11 11 11 11</think>\\boxed{11}", 0.0),  # only the answer, repeated
        ("<think>\\boxed{11} \\boxed{11}</think>\\boxed{11}", 0.0),
        ("<think>........ ????</think>\\boxed{11}", 0.0),  # no letter or digit
        ("<think>3+11</think>\\boxed{11}", 0.0),  # 4 characters < 5
        ("<think>3+8=11</think>\\boxed{11}", 1.0),  # 6 characters
        ("<think>1 * 1 = 1</think>\\boxed{1}", 0.0),  # one word, repeated
        ("<think>1 * 2 = 2</think>\\boxed{2}", 1.0),  # two words: a real step
        ("<think>hmmmm</think>\\boxed{2}", 0.0),  # issue 18: one word
        ("<think>12345</think>\\boxed{2}", 0.0),
        ("<think>hmm hmm hmm hmm</think>\\boxed{2}", 0.0),
        ("<think>aaaaaa bbbbbb</think>\\boxed{2}", 0.0),  # repeats of one character
        ("<think>\x00\x00\x00\x00\x00ab cd</think>\\boxed{2}", 0.0),  # NUL padding
        ("<think>\u200b\u200b\u200b\u200b\u200bab cd</think>\\boxed{2}", 0.0),  # zero-width
        (
            "<think>\u0434\u0432\u0430 \u043f\u043b\u044e\u0441</think>\\boxed{2}",
            1.0,
        ),  # Cyrillic words
        ("<think>a b c d e</think>\\boxed{11}", 1.0),  # 5 characters
        ("<think>4*2=8</think><think>3+8=11</think>\\boxed{11}", 0.0),  # two blocks
        ("<think>4*2=8, 3+8=11</think></think>\\boxed{11}", 0.0),
        ("Sure! <think>4*2=8, 3+8=11</think>\\boxed{11}", 0.0),  # not at the start
        ("4*2=8, 3+8=11</think>\\boxed{11}", 0.0),  # no opening tag
        ("<think>4*2=8, 3+8=11\\boxed{11}", 0.0),  # never closed
        ("<think>4*2=8, 3+8=11</think>11", 0.0),  # no box
        ("<think>4*2=8, 3+8=11</think>\\boxed{}", 0.0),
        ("<think>4*2=8, 3+8=11</think>\\boxed{11", 0.0),
        ("<think>4*2=8, 3+8=11 \\boxed{11}</think>", 0.0),  # box only inside the thought
        ("", 0.0),
    ],
)
def test_format(completion: str, expected: float) -> None:
    assert score("format", completion, MATH) == expected


def test_format_min_think_chars_param() -> None:
    short = "<think>3+8=11</think>\\boxed{11}"
    assert score_batch("format", [short], [MATH], min_think_chars=7) == [0.0]
    assert score_batch("format", [short], [MATH], min_think_chars=4) == [1.0]
    assert score_batch("format", [GOOD], [MATH], min_think_chars=100) == [0.0]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("Hello! How can I help?", 1.0),
        ("", 0.0),
        ("   \n", 0.0),
        ("<think>greet</think>Hello!", 0.0),
        ("Hello!</think>", 0.0),
        ("The answer is \\boxed{3}", 0.0),
    ],
)
def test_format_chat(completion: str, expected: float) -> None:
    assert score("format", completion, CHAT) == expected


# --- language consistency ------------------------------------------------------------------


def lang(completion: str, example_language: str | None = None, **params: Any) -> float:
    example: dict[str, Any] = {"answer": "1", "task": "math"}
    if example_language is not None:
        example["language"] = example_language
    return score_batch("language_consistency", [completion], [example], **params)[0]


def test_language_scripts_exported() -> None:
    assert LANGUAGE_SCRIPTS is LANGUAGE_SCRIPTS_FROM_MODULE
    assert LANGUAGE_SCRIPTS["en"] == {"Latin"}
    assert LANGUAGE_SCRIPTS["ja"] == {"Han", "Hiragana", "Katakana"}
    assert LANGUAGE_SCRIPTS["ko"] == {"Hangul", "Han"}
    assert {"zh", "ru", "ar", "he", "hi", "el", "th", "fr", "de"} <= set(LANGUAGE_SCRIPTS)


def test_language_consistency_values() -> None:
    assert lang(GOOD) == 0.0  # no word of any script: undefined, so no pay (issue 18)
    assert lang("<think>Let me add the numbers first.</think>\\boxed{1}") == 1.0
    assert lang("<think>我们先计算</think>\\boxed{1}") == 0.0
    # 我 (Han) + like, apples, too (Latin): 3 of 4 words.
    mixed = "<think>我 like apples too</think>\\boxed{1}"
    assert lang(mixed, "en") == 0.75
    assert lang(mixed, "zh") == 0.25
    # こ れ は (Hiragana) 日 本 語 (Han) で す (Hiragana): each character is a word.
    japanese = "<think>これは日本語です</think>\\boxed{1}"
    assert lang(japanese, "ja") == 1.0
    assert lang(japanese, "zh") == 3 / 8
    assert lang("<think>Привет, мир! hello</think>", "ru") == 2 / 3
    assert lang("<think>한국어 문장 中</think>", "ko") == 1.0
    assert lang("<think>Bonjour le monde</think>", "fr") == 1.0  # Latin script, as for en


def test_language_consistency_text_choice_and_edges() -> None:
    # No think block: the whole completion, 4 Latin words and 你, 好.
    assert lang("Bonjour tout le monde, 你好") == 4 / 6
    assert lang("<think>3+4=7</think>\\boxed{7}") == 0.0  # no words: undefined, no pay
    assert lang("<think>1234567890</think>\\boxed{7}") == 0.0  # issue 18
    assert lang("<think>\x00\x00\x00\x00</think>\\boxed{7}") == 0.0
    assert lang("") == 0.0
    assert lang("<think>   </think>\\boxed{1}") == 0.0
    assert lang("<think>计算 \\frac{1}{2}</think>", "zh") == 1.0  # LaTeX commands are neutral
    assert lang("<think>हिन्दी भाषा</think>", "hi") == 1.0  # vowel signs join their word
    assert lang("<think>中文</think>", "zh-CN") == 1.0
    # A lone Greek letter is notation (θ, π); Greek words count as Greek.
    assert lang("<think>Let θ be the angle, so sin θ = 1/2 and 2π</think>") == 1.0
    assert lang("<think>Γειά σου κόσμε θ</think>", "el") == 1.0
    assert lang("<think>Γειά σου κόσμε</think>", "en") == 0.0
    assert lang("<think>中文</think>", "en", language="zh") == 1.0  # params win


def test_language_unknown_code_is_a_data_error() -> None:
    with pytest.raises(ValueError, match=r"'xx'.*en"):
        lang(GOOD, "xx")


# --- length --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [(50, 0.0), (80, 0.0), (85, -0.25), (90, -0.5), (100, -1.0), (101, -1.0), (5000, -1.0)],
)
def test_length_branches(n: int, expected: float) -> None:
    # L_max = 100, L_cache = 20: free up to 80, then (80 - n) / 20, then -1 past 100.
    got = score_batch("length", ["x"], [MATH], max_length=100, cache_length=20, lengths=[n])
    assert got == [expected]


def test_length_sources() -> None:
    assert score("length", "x" * 10_000, MATH) == 0.0  # no limit configured
    assert score_batch("length", ["x" * 90], [MATH], max_length=100, cache_length=20) == [-0.5]
    meta_example = {**MATH, "meta": {"max_length": 10, "cache_length": 4}}
    assert score("length", "x" * 8, meta_example) == -0.5  # (6 - 8) / 4
    assert score("length", "x" * 6, meta_example) == 0.0
    hard = score_batch("length", ["x" * 100, "x" * 101], [MATH, MATH], max_length=100)
    assert hard == [0.0, -1.0]  # no cache: a hard cut
    with pytest.raises(ValueError, match="lengths"):
        score_batch("length", ["a", "b"], [MATH, MATH], max_length=10, lengths=[1])
    with pytest.raises(ValueError, match="cache_length"):
        score_batch("length", ["a"], [MATH], max_length=10, cache_length=20)


# --- repetition ----------------------------------------------------------------------------


def test_repetition() -> None:
    # Trigrams: the-cat-sat, cat-sat-on, sat-on-the, on-the-cat, the-cat-sat: 4 unique of 5.
    assert score("repetition", "the cat sat on the cat sat", MATH) == pytest.approx(-0.2)
    assert score("repetition", "a a a a", MATH) == -0.5  # 2 trigrams, 1 unique
    assert score_batch("repetition", ["a a a a"], [MATH], max_penalty=-0.5) == [-0.25]
    # Bigrams: a-b, b-a, a-b: 2 unique of 3.
    assert score_batch("repetition", ["a b a b"], [MATH], ngram_size=2) == [pytest.approx(-1 / 3)]
    assert score_batch("repetition", ["The the THE the"], [MATH], ngram_size=1) == [-0.75]
    assert score("repetition", "all words differ here", MATH) == 0.0
    assert score("repetition", "too short", MATH) == 0.0
    assert score("repetition", "", MATH) == 0.0
    with pytest.raises(ValueError, match="max_penalty"):
        score_batch("repetition", ["a"], [MATH], max_penalty=1.0)


def test_score_batch_mixed_examples() -> None:
    completions = [GOOD, boxed("12"), "Hi there!", "<think>ok</think>\\boxed{11}"]
    examples = [MATH, MATH, CHAT, MATH]
    assert score_batch("accuracy", completions, examples) == [1.0, 0.0, 0.0, 1.0]
    assert score_batch("format", completions, examples) == [1.0, 1.0, 1.0, 0.0]


# --- adversarial completions ---------------------------------------------------------------

_rng = random.Random(0)
ADVERSARIAL = {
    "1mb": "<think>" + "a" * 1_000_000 + "</think>\\boxed{1}",
    "1mb_words": "the cat " * 125_000,
    "nested_braces": "\\boxed{" + "{" * 10_000,
    "nested_closed": "<think>x</think>\\boxed{" + "{" * 10_000 + "}" * 10_001,
    "many_boxes": "\\boxed{" * 50_000,
    "many_fences": "```python\n" * 50_000,
    "many_tags": "<think>" * 50_000 + "</think>" * 50_000,
    "latin1": bytes(range(256)).decode("latin-1"),
    "random_bytes": bytes(_rng.getrandbits(8) for _ in range(50_000)).decode(errors="replace"),
    "surrogates": "<think>\ud800\udfff</think>\\boxed{\ud800}",
    "nul": "<think>\x00\x00</think>\\boxed{\x00}",
    "power_tower": "<think>hard</think>\\boxed{9^{9^{9^{9^{9}}}}}",
    "deep_frac": "<think>x</think>\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}",
}
RANGES = {
    "accuracy": (0.0, 1.0),
    "format": (0.0, 1.0),
    "language_consistency": (0.0, 1.0),
    "length": (-1.0, 0.0),
    "repetition": (-1.0, 0.0),
    "code": (0.0, 1.0),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_adversarial_completions_never_raise(case: str) -> None:
    example = {
        "answer": "5",
        "task": "math",
        "tests": ["assert 1 + 1 == 2"],
        "meta": {"max_length": 1000, "cache_length": 100},
    }
    completion = ADVERSARIAL[case]
    for name, (low, high) in RANGES.items():
        start = time.monotonic()
        [value] = score_batch(name, [completion], [example], timeout=1)
        assert low <= value <= high, (name, value)
        assert time.monotonic() - start < 15, name


def test_adversarial_expected_values() -> None:
    assert score("accuracy", ADVERSARIAL["nested_braces"], MATH) == 0.0
    assert score("format", ADVERSARIAL["many_tags"], MATH) == 0.0
    assert score("repetition", ADVERSARIAL["1mb_words"], MATH) == pytest.approx(-1.0, abs=1e-4)
    assert score("language_consistency", ADVERSARIAL["1mb"], MATH) == 1.0


@pytest.mark.parametrize("bad", [None, 42])
def test_non_string_completion_scores_default(bad: Any) -> None:
    for name in ("accuracy", "format", "language_consistency"):
        assert score(name, bad, MATH) == 0.0
    assert score("repetition", bad, MATH) == -1.0

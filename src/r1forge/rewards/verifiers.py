"""Built-in accuracy verifiers, chosen per example by its `verifier` field (default `math`)."""

from __future__ import annotations

from typing import Any

from r1forge.rewards import countdown, sandbox
from r1forge.rewards.mathcheck import DEFAULT_TIMEOUT, math_equal
from r1forge.rewards.parsing import extract_code, has_relation
from r1forge.rewards.registry import register_verifier


@register_verifier("math")
def verify_math(pred: str, example: dict[str, Any], **params: Any) -> float:
    """Mathematical equivalence with the gold answer (`0.5` == `\\frac{1}{2}`).

    A box stating a relation (`36=37`, `37 \\approx 38`, `38 \\to 37`) is no answer unless
    the gold answer is one too (`x > 2`): math-verify would take one side, paying a hedge."""
    gold = example.get("answer")
    if gold is None or (has_relation(pred) and not has_relation(str(gold))):
        return 0.0
    return float(math_equal(str(gold), pred, float(params.get("timeout", DEFAULT_TIMEOUT))))


@register_verifier("countdown")
def verify_countdown(pred: str, example: dict[str, Any], **params: Any) -> float:
    """Expression over `meta.numbers` that evaluates exactly to the target `answer`."""
    meta = example.get("meta") or {}
    ok = countdown.check(pred, example["answer"], meta["numbers"], meta.get("use_all", True))
    return float(ok)


@register_verifier("exact")
def verify_exact(pred: str, example: dict[str, Any], **params: Any) -> float:
    """String equality up to case and whitespace, for short factual or label answers."""
    gold = example.get("answer")
    if gold is None:
        return 0.0
    return float(" ".join(pred.split()).casefold() == " ".join(str(gold).split()).casefold())


@register_verifier("code", boxed=False)
def verify_code(answer: str, example: dict[str, Any], **params: Any) -> float:
    """Fraction of `example["tests"]` passed by the answer's last Python code block."""
    code = extract_code(answer)
    tests = example.get("tests") or []
    return sandbox.pass_fractions([code], [tests], sandbox.Limits.from_params(params))[0]

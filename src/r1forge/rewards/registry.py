"""Name -> function registries for rewards and accuracy verifiers, and the scoring entry points.

A reward maps a batch, `(completions, examples, **params) -> list[float]`, so that rewards
which benefit from batching (the code sandbox runs tests concurrently) can do so. A verifier
judges one extracted answer against one example, `(pred, example, **params) -> float`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list[float]]
Verifier = Callable[..., float]

REWARDS: dict[str, RewardFn] = {}
VERIFIERS: dict[str, Verifier] = {}
# Verifiers that want the whole answer part (text after `</think>`) instead of the last boxed
# answer, e.g. `code`, whose answer is a fenced block.
ANSWER_VERIFIERS: set[str] = set()


def register(name: str) -> Callable[[RewardFn], RewardFn]:
    """Register a batch reward under `name`; re-registering replaces it (to swap a built-in)."""

    def decorator(fn: RewardFn) -> RewardFn:
        if name in REWARDS and REWARDS[name] is not fn:
            logger.warning("reward %r is being replaced by %r", name, fn)
        REWARDS[name] = fn
        return fn

    return decorator


def register_verifier(name: str, *, boxed: bool = True) -> Callable[[Verifier], Verifier]:
    """Register an accuracy verifier for examples whose `verifier` field is `name`.

    With `boxed=True` the verifier receives the content of the last `\\boxed{}` (completions
    without one score 0 without calling it); with `boxed=False` it receives the answer part.
    """

    def decorator(fn: Verifier) -> Verifier:
        VERIFIERS[name] = fn
        if boxed:
            ANSWER_VERIFIERS.discard(name)
        else:
            ANSWER_VERIFIERS.add(name)
        return fn

    return decorator


def available() -> list[str]:
    """Names of the registered rewards, sorted."""
    return sorted(REWARDS)


def get_reward(name: str) -> RewardFn:
    """The reward registered as `name`; the KeyError lists the known names to spot typos."""
    try:
        return REWARDS[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; available: {', '.join(available())}") from None


def get_verifier(name: str) -> Verifier:
    """The verifier registered as `name`; an unknown name is a data error, so it raises."""
    try:
        return VERIFIERS[name]
    except KeyError:
        known = ", ".join(sorted(VERIFIERS))
        raise KeyError(f"unknown verifier {name!r}; available: {known}") from None


def score_batch(
    name: str, completions: list[str], examples: list[dict[str, Any]], **params: Any
) -> list[float]:
    """Score each completion against its example with the reward `name`."""
    fn = get_reward(name)
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions but {len(examples)} examples")
    rewards = fn(list(completions), list(examples), **params)
    if len(rewards) != len(completions):
        raise ValueError(f"reward {name!r} returned {len(rewards)} values for {len(completions)}")
    return [float(r) for r in rewards]


def score(name: str, completion: str, example: dict[str, Any]) -> float:
    """Score one completion with the reward's default parameters."""
    return score_batch(name, [completion], [example])[0]


def per_item(
    fn: Callable[[str, dict[str, Any]], float],
    completions: list[str],
    examples: list[dict[str, Any]],
    default: float = 0.0,
    threads: int = 1,
) -> list[float]:
    """Apply `fn` pairwise; a completion that makes it raise gets `default`, never an error.

    With `threads` > 1 the items run side by side (for rewards that wait on workers, so one
    slow item does not hold the batch)."""

    def safe(pair: tuple[str, dict[str, Any]]) -> float:
        try:
            return float(fn(*pair))
        except Exception:
            logger.debug("reward failed on a completion; scoring %s", default, exc_info=True)
            return default

    pairs = list(zip(completions, examples, strict=True))
    if threads <= 1 or len(pairs) <= 1:
        return [safe(pair) for pair in pairs]
    with ThreadPoolExecutor(max_workers=min(threads, len(pairs))) as pool:
        return list(pool.map(safe, pairs))


def check_runnable(
    rewards: Iterable[str], examples: Iterable[dict[str, Any]], params: dict[str, dict[str, Any]]
) -> None:
    """Fail at stage start, not midway through a run, when a reward that executes programs
    (`code`, or `accuracy` on examples with `verifier: code`) cannot contain them here."""
    from r1forge.rewards import sandbox

    if "code" in rewards:
        sandbox.check_available(params.get("code", {}))
    if any(example.get("verifier") == "code" for example in examples):
        sandbox.check_available(params.get("accuracy", {}))

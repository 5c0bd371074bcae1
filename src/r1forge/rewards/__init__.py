"""Rule rewards for DeepSeek-R1-style RL: accuracy, format, language consistency, length,
repetition and code execution, plus a model-based reward for general prompts, behind one
registry.

Rewards never raise on a completion and never hang: answers are parsed in bounded time,
math-verify runs in a killable worker process and code runs in a limited subprocess.
Errors in the data or the recipe (an unknown verifier or language) do raise.
"""

from r1forge.rewards import builtin, language, model, verifiers
from r1forge.rewards.language import LANGUAGE_SCRIPTS
from r1forge.rewards.registry import (
    REWARDS,
    VERIFIERS,
    RewardFn,
    Verifier,
    available,
    check_runnable,
    register,
    register_verifier,
    score,
    score_batch,
)

__all__ = [
    "LANGUAGE_SCRIPTS",
    "REWARDS",
    "VERIFIERS",
    "RewardFn",
    "Verifier",
    "available",
    "builtin",
    "check_runnable",
    "language",
    "model",
    "register",
    "register_verifier",
    "score",
    "score_batch",
    "verifiers",
]

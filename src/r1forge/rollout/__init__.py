"""Rollout engines: generate G completions per prompt, with token ids and log-probs.

One small interface, a registry keyed by name (the built-in `transformers`, `static` and
`vllm`, as `config.RolloutEngineName` lists them; plugins may register more), so trainers and
evaluation never care which engine samples. Engines take prompts as token ids, so what the
policy is trained on is exactly what was sampled.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

from r1forge.config import RolloutEngineName


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    logprobs: bool = True
    ignore_eos: bool = False  # run every completion to max_new_tokens (benchmarks)
    # one seed per prompt: engines that honour it (static, vllm) then draw a prompt's samples
    # the same whichever batch or rank it lands in, so N ranks sample what 1 process would
    prompt_seeds: tuple[int, ...] | None = None
    # one length per completion (prompt-major): each stops after exactly that many tokens, EOS
    # ignored, so a benchmark can draw real length mixes; only the static engine honours it
    lengths: tuple[int, ...] | None = None


@dataclass
class Completion:
    """One sampled continuation of prompt `prompt_index`; `token_ids` end with EOS when it stopped."""

    prompt_index: int
    token_ids: list[int]
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: list[float] = field(default_factory=list)


def cut_at_eos(
    prompt_index: int,
    tokens: list[int],
    logprobs: list[float] | None,
    eos: int | None,
    tokenizer: Any,
) -> Completion:
    """A completion from a row of sampled tokens: cut after the first EOS, decoded."""
    stop = tokens.index(eos) + 1 if eos is not None and eos in tokens else None
    tokens = tokens[:stop] if stop else tokens
    return Completion(
        prompt_index=prompt_index,
        token_ids=tokens,
        text=tokenizer.decode(tokens, skip_special_tokens=True),
        finish_reason="stop" if stop else "length",
        logprobs=logprobs[: len(tokens)] if logprobs is not None else [],
    )


def refuse_lengths(sampling: Sampling, engine: str) -> None:
    """Engines that cannot force per-completion lengths say so instead of ignoring them."""
    if sampling.lengths is not None:
        raise ValueError(f"the {engine} engine does not force per-completion lengths; static does")


class RolloutEngine(Protocol):
    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> list[Completion]:
        """n completions per prompt, grouped: prompt 0's n, then prompt 1's, ..."""
        ...

    def sync_weights(self, model: Any) -> None:
        """Load the policy's current weights (after an update) into the engine."""
        ...


ENGINES: dict[str, Callable[..., RolloutEngine]] = {}


def sampling_module(policy: Any, replica: Any = None) -> Any:
    """The module an engine samples with: the policy itself, or, when ZeRO-3 partitions it
    (its weights then exist only inside forward hooks, gathered layer by layer on every rank
    in lockstep), a dense replica on this rank's device refreshed from the gathered weights.
    Collective under ZeRO-3: every rank calls it, after each update."""
    from r1forge.zero import copy_gathered, dense_replica, is_partitioned

    if not is_partitioned(policy):
        return policy
    if replica is None or replica is policy:
        import torch

        device = (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
        replica = dense_replica(policy, device).eval()
    copy_gathered(policy, replica)
    return replica


def register_engine(
    name: str,
) -> Callable[[Callable[..., RolloutEngine]], Callable[..., RolloutEngine]]:
    def wrap(factory: Callable[..., RolloutEngine]) -> Callable[..., RolloutEngine]:
        ENGINES[name] = factory
        return factory

    return wrap


def make_engine(name: str, **kwargs: Any) -> RolloutEngine:
    """The engine registered as `name`; a built-in one's module is imported (and so
    registered) on first use, so its heavy imports stay out of runs that never use it."""
    builtin = get_args(RolloutEngineName)
    if name not in ENGINES and name in builtin:
        importlib.import_module(f"r1forge.rollout.{'hf' if name == 'transformers' else name}")
    if name not in ENGINES:
        raise KeyError(f"unknown rollout engine {name!r}; known: {sorted({*ENGINES, *builtin})}")
    return ENGINES[name](**kwargs)

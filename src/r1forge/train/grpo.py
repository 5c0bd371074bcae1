"""GRPO's pure pieces: advantages, the clipped policy loss and its variants, and the levers.

DeepSeek-R1 (and DeepSeekMath before it) score each sampled answer against the other answers
to the same prompt, so no value model is needed. The loss variants differ only in how token
terms become one number: per sequence then over sequences (`grpo`), over all tokens (`dapo`),
or over a fixed budget of B x T tokens (`dr_grpo`, which also drops the std normalisation).
Each variant owns its normaliser, computed once for the whole batch (every micro-batch, every
rank), so the training loop treats them all alike.

The levers current RL systems ship, each a pure function here: dynamic sampling's test of a
group (`informative_groups`), truncated importance sampling against rollout/trainer mismatch
(`tis_weights`, `mismatch_kl`), and adaptive entropy control (`next_entropy_coef`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

STD_EPS = 1e-4
AdvantageScale = Literal["group", "batch", "none"]
LossType = Literal["grpo", "dapo", "dr_grpo"]


def group_advantages(rewards: Any, group_size: int, scale: AdvantageScale = "group") -> Any:
    """Each reward minus its group's mean, divided by a sample std (+1e-4) per `scale`.

    `rewards` is flat, n_prompts x group_size values, group after group. `group` divides by
    the group's sample std, `batch` by the sample std of all rewards, `none` not at all
    (Dr. GRPO). A group of identical rewards gets zero advantage, hence zero gradient.
    """
    import torch

    if rewards.ndim != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be flat with a multiple of group_size={group_size} values, got {tuple(rewards.shape)}"
        )
    grouped = rewards.float().view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred.view(-1)
    if scale == "group":
        std = (
            grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(grouped[:, :1])
        )
    elif scale == "batch":
        std = rewards.float().std() if rewards.numel() > 1 else rewards.new_zeros(())
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return (centred / (std + STD_EPS)).view(-1)


def informative_groups(rewards: list[float], group_size: int, tol: float = 1e-9) -> list[bool]:
    """Per group: do its rewards differ? A group whose rewards are all equal has zero
    advantage everywhere, so it teaches nothing (DAPO's dynamic sampling drops it)."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not make groups of {group_size}")
    groups = [rewards[i : i + group_size] for i in range(0, len(rewards), group_size)]
    return [max(g) - min(g) > tol for g in groups]


def k3_kl(logp: Any, ref_logp: Any) -> Any:
    """Per-token k3 estimator of KL(policy || reference): exp(r) - r - 1 with r = ref - logp."""
    import torch

    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


@dataclass(frozen=True)
class BatchSize:
    """What a loss normaliser may depend on, counted over the whole batch (all ranks)."""

    sequences: int
    """Completions trained on (filler rows of a short dynamic-sampling batch excluded)."""
    tokens: float
    """Completion tokens in the loss mask."""
    max_tokens: int
    """The completion budget (max_new_tokens): Dr. GRPO's fixed length."""


@dataclass(frozen=True)
class LossVariant:
    """How token terms become one loss: `contribution` sums a micro-batch's terms (grpo first
    averages each sequence over its own tokens), `normaliser` divides by a count of the whole
    batch, so sum over micro-batches of contribution / normaliser is the batch's loss."""

    contribution: Callable[[Any, Any], Any]
    normaliser: Callable[[BatchSize], float]


def _sequence_means(terms: Any, mask: Any) -> Any:
    return ((terms * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum()


def _token_sum(terms: Any, mask: Any) -> Any:
    return (terms * mask).sum()


# The loss variants by name (a registry: a new variant is one entry).
LOSS_VARIANTS: dict[str, LossVariant] = {
    "grpo": LossVariant(_sequence_means, lambda b: max(1, b.sequences)),
    "dapo": LossVariant(_token_sum, lambda b: max(1.0, b.tokens)),
    "dr_grpo": LossVariant(_token_sum, lambda b: max(1, b.sequences * b.max_tokens)),
}


def micro_batch_size_of(mask: Any, max_tokens: int | None = None) -> BatchSize:
    """The BatchSize of one micro-batch alone (its loss then stands on its own)."""
    return BatchSize(
        sequences=int(mask.shape[0]),
        tokens=float(mask.sum()),
        max_tokens=int(max_tokens or mask.shape[1]),
    )


def tis_weights(trainer_logp: Any, rollout_logp: Any, cap: float) -> tuple[Any, Any]:
    """Truncated importance sampling: per-token weights min(p_trainer / p_rollout, cap).

    The rollout engine sampled from its own distribution; the trainer's policy may give the
    same tokens other probabilities (kernels, precision, a stale copy). Weighting each
    token's policy-gradient term by the ratio, capped so one token cannot dominate, corrects
    for it (as TRL and verl do for vLLM rollouts). Returns (weights, capped?) without grad.
    """
    import torch

    with torch.no_grad():
        ratio = torch.exp(trainer_logp.detach() - rollout_logp)
        return ratio.clamp(max=cap), ratio > cap


def mismatch_kl(trainer_logp: Any, rollout_logp: Any, mask: Any) -> float:
    """Mean per-token k3 estimate of KL(rollout || trainer) over the masked tokens: 0 when the
    trainer scores exactly what the engine sampled from."""
    import torch

    with torch.no_grad():
        log_ratio = trainer_logp.detach() - rollout_logp
        k3 = torch.exp(log_ratio) - log_ratio - 1
        return float((k3 * mask).sum() / mask.sum().clamp(min=1))


def next_entropy_coef(
    coef: float, entropy: float, target: float | None, step: float, coef_max: float
) -> float:
    """Adaptive entropy control (Skywork-OR1): raise the bonus's coefficient by `step` while
    the rollouts' entropy is below `target`, lower it above, within [0, coef_max]; a fixed
    coefficient when no target is set."""
    if target is None:
        return coef
    moved = coef + step if entropy < target else coef - step
    return min(coef_max, max(0.0, moved))


def policy_loss(
    logp: Any,
    old_logp: Any,
    ref_logp: Any | None,
    advantages: Any,
    mask: Any,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    loss_type: LossType = "grpo",
    *,
    batch: BatchSize | None = None,
    is_weights: Any | None = None,
    entropy: Any | None = None,
    entropy_coef: float = 0.0,
) -> tuple[Any, dict[str, float]]:
    """The clipped surrogate loss with an optional k3 KL penalty and entropy bonus.

    Shapes: logp, old_logp, ref_logp, mask, is_weights and entropy are (B, T) over completion
    tokens; advantages is (B,). Each token's term is
    -min(r A, clip(r, 1-eps, 1+eps_high) A) * w + beta * k3 - entropy_coef * H,
    with r = exp(logp - old_logp) and w the truncated importance weight (1 without one).
    The loss is the variant's contribution divided by its normaliser of `batch` (default:
    this micro-batch alone). Returns (loss, stats): `clip_fraction` (share of masked tokens
    whose clipped term was taken), `kl` (mean k3; 0 without a reference), `ratio_mean`.
    """
    import torch

    if loss_type not in LOSS_VARIANTS:
        raise ValueError(f"loss_type must be one of {sorted(LOSS_VARIANTS)}, got {loss_type!r}")
    if beta != 0.0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the frozen reference model's log-probs)")
    if entropy_coef != 0.0 and entropy is None:
        raise ValueError("entropy_coef needs the per-token entropy")
    high = epsilon if epsilon_high is None else epsilon_high
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)[:, None]
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + high) * adv
    terms = -torch.minimum(unclipped, clipped)
    if is_weights is not None:
        terms = terms * is_weights.to(logp.dtype)
    kl = k3_kl(logp, ref_logp) if ref_logp is not None else None
    if beta != 0.0:
        terms = terms + beta * kl
    if entropy_coef != 0.0:
        terms = terms - entropy_coef * entropy
    variant = LOSS_VARIANTS[loss_type]
    loss = variant.contribution(terms, mask) / variant.normaliser(
        batch or micro_batch_size_of(mask)
    )
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        took_clip = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))
        stats = {
            "clip_fraction": float((took_clip.to(mask.dtype) * mask).sum() / n),
            "kl": float((kl * mask).sum() / n) if kl is not None else 0.0,
            "ratio_mean": float((ratio * mask).sum() / n),
        }
    return loss, stats

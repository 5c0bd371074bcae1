"""GRPO's pure pieces: group-relative advantages and the clipped policy loss with its variants.

DeepSeek-R1 (and DeepSeekMath before it) score each sampled answer against the other answers
to the same prompt, so no value model is needed. The loss variants differ only in how token
terms are averaged: per sequence then over sequences (`grpo`), over all tokens (`dapo`), or
over a fixed budget of B x T tokens (`dr_grpo`, which also drops the std normalisation).
"""

from __future__ import annotations

from collections.abc import Callable
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


def k3_kl(logp: Any, ref_logp: Any) -> Any:
    """Per-token k3 estimator of KL(policy || reference): exp(r) - r - 1 with r = ref - logp."""
    import torch

    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def _aggregate_grpo(terms: Any, mask: Any) -> Any:
    return ((terms * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()


def _aggregate_dapo(terms: Any, mask: Any) -> Any:
    return (terms * mask).sum() / mask.sum().clamp(min=1)


def _aggregate_dr_grpo(terms: Any, mask: Any) -> Any:
    return (terms * mask).sum() / (mask.shape[0] * mask.shape[1])


# How token terms become one loss, by name (a registry: add a variant with one function).
LOSS_AGGREGATIONS: dict[str, Callable[[Any, Any], Any]] = {
    "grpo": _aggregate_grpo,
    "dapo": _aggregate_dapo,
    "dr_grpo": _aggregate_dr_grpo,
}


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
) -> tuple[Any, dict[str, float]]:
    """The clipped surrogate loss with an optional k3 KL penalty to a reference model.

    Shapes: logp, old_logp, ref_logp and mask are (B, T) over completion tokens; advantages
    is (B,). Returns (loss, stats) with stats `clip_fraction` (share of masked tokens whose
    clipped term was taken), `kl` (mean k3 over masked tokens; 0 without a reference),
    `ratio_mean`. `ref_logp` may be None only when `beta` is 0.
    """
    import torch

    if loss_type not in LOSS_AGGREGATIONS:
        raise ValueError(f"loss_type must be one of {sorted(LOSS_AGGREGATIONS)}, got {loss_type!r}")
    if beta != 0.0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp (the frozen reference model's log-probs)")
    high = epsilon if epsilon_high is None else epsilon_high
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)[:, None]
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + high) * adv
    terms = -torch.minimum(unclipped, clipped)
    kl = k3_kl(logp, ref_logp) if ref_logp is not None else None
    if beta != 0.0:
        terms = terms + beta * kl
    loss = LOSS_AGGREGATIONS[loss_type](terms, mask)
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        took_clip = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))
        stats = {
            "clip_fraction": float((took_clip.to(mask.dtype) * mask).sum() / n),
            "kl": float((kl * mask).sum() / n) if kl is not None else 0.0,
            "ratio_mean": float((ratio * mask).sum() / n),
        }
    return loss, stats

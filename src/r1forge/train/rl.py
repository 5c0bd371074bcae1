"""The GRPO loop on a DeepSpeed engine, as named phases a step runs in order:

- rollout: `group_size` completions for each of `prompts_per_step` prompts (split across
  ranks), sampled by the rollout engine;
- score: the recipe's weighted rule rewards of each completion;
- filter: with dynamic sampling, groups whose rewards are all equal are dropped and more
  prompts drawn (rollout and score again) until the batch is full or the draws run out;
- advantages: group-relative, per `advantage_scale`;
- update: `mu` clipped policy updates over the batch, the loss variant's own normaliser,
  truncated importance weights against the engine's log-probs, an entropy bonus;
- log: the step's metrics, by name, reduced over ranks.

The first three run where the batch is sampled: in this process (`LocalRollouts`), or, with
`placement`, in a rollout worker on another GPU (`placement.RemoteRollouts`).

Sampling seeds are a function of (seed, step, draw, prompt) (the `transformers` engine: of
(seed, step, draw, rank)), and the prompt stream's position is saved with each checkpoint,
so a resumed run samples exactly what the uninterrupted run would have; with the static or
vLLM engine and no dynamic sampling, N ranks sample what one process would.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1forge.config import EVAL_TEMPERATURE, EVAL_TOP_P, GRPOConfig
from r1forge.data.schema import PromptItem
from r1forge.errors import ConfigError
from r1forge.rollout import Completion, RolloutEngine, Sampling
from r1forge.train.engine import (
    Dist,
    all_reduce_max,
    all_reduce_sum,
    build_engine,
    check_ranks_agree,
    deepspeed_config,
    kill_if_asked,
    latest_checkpoint,
    load_checkpoint,
    reduce_named,
    save_checkpoint,
    use_bf16,
    warmup_cosine,
)
from r1forge.train.grpo import (
    BatchSize,
    group_advantages,
    informative_groups,
    mismatch_kl,
    next_entropy_coef,
    policy_loss,
    tis_weights,
)
from r1forge.train.guards import require_finite_metrics

log = logging.getLogger("r1forge.grpo")
ALWAYS_MEASURED = ("accuracy", "format")


def reward_weights(cfg: GRPOConfig, task: str) -> dict[str, float]:
    return cfg.task_rewards.get(task, cfg.rewards)


def score_completions(
    texts: list[str], examples: list[dict[str, Any]], cfg: GRPOConfig
) -> tuple[list[float], dict[str, list[float]]]:
    """(weighted total per completion, each reward's raw values) under the recipe's weights."""
    from r1forge.rewards import score_batch

    names = sorted(
        {*ALWAYS_MEASURED, *cfg.rewards, *(n for t in cfg.task_rewards.values() for n in t)}
    )
    values = {
        name: score_batch(name, texts, examples, **cfg.reward_params.get(name, {}))
        for name in names
    }
    totals = []
    for i, example in enumerate(examples):
        weights = reward_weights(cfg, example.get("task", ""))
        totals.append(sum(w * values[name][i] for name, w in weights.items()))
    return totals, values


def policy_module(model: Any, temperature: float) -> Any:
    """Wrap a causal LM so DeepSpeed's forward returns completion log-probs and entropies."""
    import torch

    class Policy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: Any, attention_mask: Any, completion_ids: Any
        ) -> tuple[Any, Any]:
            return completion_logprobs(
                self.model, input_ids, attention_mask, completion_ids, temperature
            )

    return Policy()


def completion_logprobs(
    model: Any, input_ids: Any, attention_mask: Any, completion_ids: Any, temperature: float
) -> tuple[Any, Any]:
    """Log-probs (B, C) of the completion tokens under the sampling temperature, and entropies."""
    import torch

    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    width = completion_ids.shape[1]
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
    ).logits
    logits = logits[:, -width - 1 : -1].float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, completion_ids[..., None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def build_batch(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int, width: int
) -> tuple[Any, Any, Any, Any]:
    """Left-padded prompts then right-padded completions: (input_ids, attention, completion_ids, completion_mask)."""
    import torch

    prompt_width = max(len(p) for p in prompts)
    rows = len(prompts)
    input_ids = torch.full((rows, prompt_width + width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    completion_mask = torch.zeros((rows, width), dtype=torch.float32)
    for r, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        input_ids[r, prompt_width - len(p) : prompt_width] = torch.tensor(p)
        attention[r, prompt_width - len(p) : prompt_width] = 1
        if c:
            input_ids[r, prompt_width : prompt_width + len(c)] = torch.tensor(c)
            attention[r, prompt_width : prompt_width + len(c)] = 1
            completion_mask[r, : len(c)] = 1
    return input_ids, attention, input_ids[:, prompt_width:].clone(), completion_mask


class CollapseWatch:
    """Warns (and can stop training) when RL farms a reward instead of learning."""

    def __init__(self, cfg: GRPOConfig):
        self.cfg = cfg.collapse
        self.history: list[dict[str, float]] = []

    def check(self, row: dict[str, float]) -> list[str]:
        self.history.append(row)
        signs = []
        if row["entropy"] < self.cfg.min_entropy:
            signs.append(f"entropy collapsed to {row['entropy']:.4f}")
        if row["completion_length"] < self.cfg.min_length:
            signs.append(f"completions shrank to {row['completion_length']:.1f} tokens")
        if len(self.history) >= self.cfg.window:
            first, last = self.history[-self.cfg.window], row
            rise = last["format_rate"] - first["format_rate"]
            fall = first["accuracy"] - last["accuracy"]
            if (
                rise >= self.cfg.format_up_accuracy_down
                and fall >= self.cfg.format_up_accuracy_down
            ):
                signs.append(f"format rate rose {rise:+.2f} while accuracy fell {-fall:+.2f}")
        return signs


def evaluate_pass1(
    engine: RolloutEngine, sets: dict[str, list[PromptItem]], cfg: GRPOConfig, seed: int
) -> dict[str, float]:
    """Held-out pass@1, greedy and sampled (one sample at R1's temperature 0.6, top-p 0.95)."""
    from r1forge.rewards import score_batch

    out = {}
    for name, items in sets.items():
        ids = [item.ids for item in items]
        examples = [item.example for item in items]
        for mode, temperature, top_p in (
            ("greedy", 0.0, 1.0),
            ("sampled", EVAL_TEMPERATURE, EVAL_TOP_P),
        ):
            sampling = Sampling(
                max_new_tokens=cfg.max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                logprobs=False,
            )
            texts = [c.text for c in engine.generate(ids, 1, sampling)]
            scores = score_batch("accuracy", texts, examples)
            out[f"eval/{name}/{mode}"] = sum(scores) / len(scores)
    return out


def _sampling_seed(seed: int, step: int, who: str) -> int:
    return random.Random(f"{seed}/rollout/{step}/{who}").randrange(1 << 31)


class PromptStream:
    """The RL prompts in draws of `per_draw`: epoch after epoch, each epoch in a seeded
    shuffle (or the file's order, a curriculum). `draws` counts the draws made so far; it is
    saved with each checkpoint, so a resumed run (dynamic sampling's refills included)
    continues with exactly the prompts the uninterrupted run would have drawn."""

    def __init__(self, count: int, per_draw: int, seed: int, order: str, rank: int, world: int):
        self.per_epoch = count // per_draw
        if self.per_epoch == 0:
            raise ConfigError(f"prompts_per_step {per_draw} exceeds the {count} prompts")
        self.count, self.per_draw, self.seed, self.order = count, per_draw, seed, order
        self.rank, self.world = rank, world
        self.draws = 0

    def take(self) -> list[int]:
        """This rank's share (every world-th) of the next draw's prompt indices."""
        epoch, within = divmod(self.draws, self.per_epoch)
        order = list(range(self.count))
        if self.order == "shuffle":
            random.Random(f"{self.seed}/prompts/{epoch}").shuffle(order)
        self.draws += 1
        chosen = order[within * self.per_draw : (within + 1) * self.per_draw]
        return chosen[self.rank :: self.world]


@dataclass
class Rollouts:
    """Sampled groups: `group_size` completions per prompt item, group after group (completion
    r belongs to items[r // group_size]), with their weighted reward (`totals`) and each
    reward's raw values."""

    items: list[PromptItem]
    completions: list[Completion]
    totals: list[float]
    values: dict[str, list[float]]
    group_size: int

    @property
    def groups(self) -> int:
        return len(self.items)

    def take(self, groups: list[int]) -> Rollouts:
        rows = [g * self.group_size + j for g in groups for j in range(self.group_size)]
        return Rollouts(
            [self.items[g] for g in groups],
            [self.completions[r] for r in rows],
            [self.totals[r] for r in rows],
            {name: [v[r] for r in rows] for name, v in self.values.items()},
            self.group_size,
        )

    def __add__(self, other: Rollouts) -> Rollouts:
        return Rollouts(
            self.items + other.items,
            self.completions + other.completions,
            self.totals + other.totals,
            {name: v + other.values[name] for name, v in self.values.items()},
            self.group_size,
        )


@dataclass
class StepBatch:
    """What one step trains on: the groups kept (the first `real_groups` real, any after them
    filler of a short dynamic-sampling batch, masked out) and everything that was drawn."""

    train: Rollouts
    real_groups: int
    drawn: Rollouts
    draws: int
    first_draw_zero_std: float
    rollout_seconds: float


class LocalRollouts:
    """Where a step's batch comes from when rollouts share the trainer's GPUs (today's
    synchronous loop): this process samples it with the loop's own engine (rollout, score
    and filter phases), which the loop syncs after each update."""

    def __init__(
        self,
        engine: RolloutEngine,
        prompts: list[PromptItem],
        cfg: GRPOConfig,
        dist: Dist,
        logprobs: bool,
    ):
        self.engine, self.prompts, self.cfg = engine, prompts, cfg
        self.dist, self.logprobs = dist, logprobs
        self.stream = PromptStream(
            len(prompts), cfg.prompts_per_step, cfg.seed, cfg.prompt_order, dist.rank, dist.world
        )
        self.quota = cfg.prompts_per_step // dist.world

    @property
    def draws(self) -> int:
        """The prompt stream's position, saved with each checkpoint."""
        return self.stream.draws

    def start(self, step: int, draws: int, policy: Any) -> None:
        """Continue from `step` with the stream at `draws` (0 and 0 for a fresh run)."""
        self.stream.draws = draws

    def next_batch(self, step: int) -> tuple[StepBatch, int]:
        """Step `step`'s batch and the policy version (updates made) that sampled it."""
        batch = sample_batch(
            self.engine,
            self.prompts,
            self.stream,
            self.cfg,
            step,
            self.dist.rank,
            self.logprobs,
            self.quota,
        )
        self.stream.draws = int(all_reduce_max(float(self.stream.draws), self.dist.device))
        return batch, step

    def publish(self, policy: Any, version: int, last: bool) -> None:
        """After each update: nothing to send (the loop syncs its engine with `policy`)."""


def sample_batch(
    engine: RolloutEngine,
    prompts: list[PromptItem],
    stream: PromptStream,
    cfg: GRPOConfig,
    step: int,
    rank: int,
    logprobs: bool,
    quota: int,
) -> StepBatch:
    """One step's batch: rollout and score each draw of the stream, then filter."""

    def draw(index: int) -> Rollouts:
        chosen = stream.take()
        completions = rollout_phase(engine, prompts, chosen, cfg, step, index, rank, logprobs)
        return score_phase([prompts[i] for i in chosen], completions, cfg)

    return filter_phase(draw, cfg, quota)


# -- the phases of a step -----------------------------------------------------------------


def rollout_phase(
    engine: RolloutEngine,
    prompts: list[PromptItem],
    chosen: list[int],
    cfg: GRPOConfig,
    step: int,
    draw: int,
    rank: int,
    logprobs: bool,
) -> list[Completion]:
    """Sample `group_size` completions for each chosen prompt; seeds are a function of
    (seed, step, draw, prompt), so a resumed run samples what the uninterrupted one did."""
    suffix = f"/draw{draw}" if draw else ""
    sampling = Sampling(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=_sampling_seed(cfg.seed, step, f"rank{rank}{suffix}"),
        prompt_seeds=tuple(_sampling_seed(cfg.seed, step, f"prompt{i}{suffix}") for i in chosen),
        logprobs=logprobs,
    )
    return engine.generate([prompts[i].ids for i in chosen], cfg.group_size, sampling)


def score_phase(
    items: list[PromptItem], completions: list[Completion], cfg: GRPOConfig
) -> Rollouts:
    """The recipe's weighted rewards of each completion."""
    examples = [items[c.prompt_index].example for c in completions]
    totals, values = score_completions([c.text for c in completions], examples, cfg)
    return Rollouts(items, completions, totals, values, cfg.group_size)


def filter_phase(draw: Callable[[int], Rollouts], cfg: GRPOConfig, quota: int) -> StepBatch:
    """Dynamic sampling (when on): keep the groups whose rewards differ, drawing more prompts
    until `quota` groups are kept or `max_draws` draws were made; a batch still short is
    topped up with dropped groups as masked-out filler (the update's shape stays fixed)."""
    began = time.perf_counter()
    first = draw(0)
    flags = informative_groups(first.totals, cfg.group_size)
    zero_std = 1.0 - sum(flags) / max(1, len(flags))
    if not cfg.dynamic_sampling.enabled:
        return StepBatch(first, first.groups, first, 1, zero_std, time.perf_counter() - began)
    drawn, kept = first, first.take([g for g, ok in enumerate(flags) if ok])
    draws = 1
    while kept.groups < quota and draws < cfg.dynamic_sampling.max_draws:
        more = draw(draws)
        draws += 1
        good = informative_groups(more.totals, cfg.group_size)
        drawn, kept = drawn + more, kept + more.take([g for g, ok in enumerate(good) if ok])
    real = min(quota, kept.groups)
    batch = kept.take(list(range(real)))
    if real < quota:
        dropped = [g for g, ok in enumerate(flags) if not ok]
        batch = batch + first.take(dropped[: quota - real])
    return StepBatch(batch, real, drawn, draws, zero_std, time.perf_counter() - began)


def advantage_phase(batch: StepBatch, cfg: GRPOConfig) -> Any:
    """Group-relative advantages of the trained groups (filler rows: 0)."""
    import torch

    advantages = group_advantages(
        torch.tensor(batch.train.totals), cfg.group_size, cfg.advantage_scale
    )
    advantages[batch.real_groups * cfg.group_size :] = 0.0
    return advantages


def rollout_logprobs(cfg: GRPOConfig) -> bool:
    """Whether rollouts keep the engine's log-probs (for TIS, and the mismatch KL logged)."""
    return tis_enabled(cfg) or cfg.rollout_engine != "transformers"


def tis_enabled(cfg: GRPOConfig) -> bool:
    """On by default where the sampling policy is not the trained one: vLLM's kernels, or
    a rollout worker's batch from an older policy."""
    if cfg.tis.enabled is not None:
        return cfg.tis.enabled
    stale = cfg.placement is not None and cfg.placement.max_staleness > 0
    return cfg.rollout_engine == "vllm" or stale


def update_phase(
    engine: Any,
    batch: StepBatch,
    advantages: Any,
    cfg: GRPOConfig,
    *,
    dist: Dist,
    reference: Any | None,
    pad_id: int,
    micro: int,
    entropy_coef: float,
) -> dict[str, float]:
    """`mu` clipped policy updates over the batch; returns this rank's token-weighted sums of
    the update's statistics (reduced over ranks by the log phase)."""
    import torch

    rollouts, group = batch.train, cfg.group_size
    real_rows = batch.real_groups * group
    use_tis = tis_enabled(cfg)
    with_rollout_logp = all(c.logprobs for c in rollouts.completions)
    if use_tis and not with_rollout_logp:
        raise ConfigError("tis needs the rollout engine's log-probs; this engine gave none")
    width = max(1, max(len(c.token_ids) for c in rollouts.completions))
    batches = []
    for s in range(0, len(rollouts.completions), micro):
        part = rollouts.completions[s : s + micro]
        ids, attn, comp, mask = build_batch(
            [rollouts.items[(s + r) // group].ids for r in range(len(part))],
            [c.token_ids for c in part],
            pad_id,
            width,
        )
        keep = [
            [0.0]
            if (s + r >= real_rows or (cfg.mask_truncated and c.finish_reason == "length"))
            else [1.0]
            for r, c in enumerate(part)
        ]
        mask *= torch.tensor(keep)
        sampled = torch.zeros_like(mask)
        if with_rollout_logp:
            for r, c in enumerate(part):
                sampled[r, : len(c.logprobs)] = torch.tensor(c.logprobs)
        batches.append((ids, attn, comp, mask, advantages[s : s + micro], sampled))
    local_tokens = float(sum(b[3].sum() for b in batches))
    real_sequences = min(real_rows, len(rollouts.completions))
    tokens, sequences = all_reduce_sum([local_tokens, float(real_sequences)], dist.device)
    size = BatchSize(sequences=int(sequences), tokens=tokens, max_tokens=cfg.max_new_tokens)
    n_micro = len(batches)
    old_logps: list[Any] = []
    ref_logps: list[Any] = []
    with torch.no_grad():
        for ids, attn, comp, *_ in batches:
            moved = (ids.to(dist.device), attn.to(dist.device), comp.to(dist.device))
            if cfg.mu > 1:
                old_logps.append(engine(*moved)[0].detach())
            if reference is not None:
                ref_logps.append(completion_logprobs(reference, *moved, cfg.temperature)[0])
    sums = dict.fromkeys(
        ("tokens", "clip_fraction", "kl", "entropy", "mismatch_kl", "tis_capped"), 0.0
    )
    grad_norm: float | None = None
    for epoch in range(cfg.mu):
        for k, (ids, attn, comp, mask, adv, sampled) in enumerate(batches):
            mask = mask.to(dist.device)
            logp, entropy = engine(ids.to(dist.device), attn.to(dist.device), comp.to(dist.device))
            old = old_logps[k] if old_logps else logp.detach()
            weights = None
            if with_rollout_logp and epoch == 0:
                sampled = sampled.to(dist.device)
                sums["mismatch_kl"] += mismatch_kl(old, sampled, mask) * float(mask.sum())
            if use_tis:
                weights, capped = tis_weights(old, sampled.to(dist.device), cfg.tis.cap)
                if epoch == 0:
                    sums["tis_capped"] += float((capped.to(mask.dtype) * mask).sum())
            loss, stats = policy_loss(
                logp,
                old,
                ref_logps[k] if ref_logps else None,
                adv.to(dist.device),
                mask,
                cfg.epsilon,
                cfg.epsilon_high,
                cfg.beta,
                cfg.loss_type,
                batch=size,
                is_weights=weights,
                entropy=entropy if entropy_coef else None,
                entropy_coef=entropy_coef,
            )
            # the loss is already this micro-batch's share of the whole batch's: undo
            # DeepSpeed's averaging over accumulation steps and ranks
            engine.backward(loss * n_micro * dist.world)
            if epoch == cfg.mu - 1 and k == n_micro - 1:
                grad_norm = gradient_norm(engine)
            engine.step()
            weight = float(mask.sum())
            sums["tokens"] += weight
            sums["clip_fraction"] += stats["clip_fraction"] * weight
            sums["kl"] += stats["kl"] * weight
            sums["entropy"] += float((entropy.detach() * mask).sum())
    sums["first_pass_tokens"] = local_tokens
    if grad_norm is None and hasattr(engine, "get_global_grad_norm"):
        grad_norm = engine.get_global_grad_norm()  # ZeRO keeps gradients in its partitions
    sums["grad_norm"] = float(grad_norm) if grad_norm is not None else 0.0
    return sums


def gradient_norm(engine: Any) -> float | None:
    """The accumulated gradient's norm before clipping, when it lives on the parameters
    (ZeRO stages 0 and 1; later stages keep it in the optimizer's partitions)."""
    import torch

    module = getattr(engine, "module", engine)
    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(grads))) if grads else None


def log_phase(
    batch: StepBatch,
    update: dict[str, float],
    *,
    step: int,
    dist: Dist,
    train_seconds: float,
    began: float,
    lr: float,
    entropy_coef: float,
) -> dict[str, Any]:
    """The step's metrics by name, reduced over ranks: rewards over everything drawn, the
    update's statistics over the trained tokens, dynamic sampling's shares."""
    drawn = batch.drawn
    lengths = [len(c.token_ids) for c in drawn.completions]
    local = {
        "reward_sum": sum(drawn.totals),
        "reward_sq": sum(t * t for t in drawn.totals),
        "completions": float(len(drawn.totals)),
        "length_sum": float(sum(lengths)),
        "truncated": float(sum(c.finish_reason == "length" for c in drawn.completions)),
        "groups_drawn": float(drawn.groups),
        "groups_trained": float(batch.real_groups),
        "groups_filler": float(batch.train.groups - batch.real_groups),
        "zero_std_groups": batch.first_draw_zero_std,
        "ranks": 1.0,
        **{f"update/{k}": v for k, v in update.items()},
        **{f"rewards/{name}": sum(v) for name, v in drawn.values.items()},
    }
    total = reduce_named(local, dist.device)
    n = total["completions"]
    mean = total["reward_sum"] / n
    tokens = max(1.0, total["update/tokens"])
    first_tokens = max(1.0, total["update/first_pass_tokens"])
    row: dict[str, Any] = {
        "step": step,
        "reward": mean,
        "reward_std": math.sqrt(max(0.0, total["reward_sq"] / n - mean * mean)),
        "clip_fraction": total["update/clip_fraction"] / tokens,
        "kl": total["update/kl"] / tokens,
        "entropy": total["update/entropy"] / tokens,
        "entropy_coef": entropy_coef,
        "mismatch_kl": total["update/mismatch_kl"] / first_tokens,
        "tis_capped_fraction": total["update/tis_capped"] / first_tokens,
        "grad_norm": total["update/grad_norm"] / total["ranks"],
        "completion_length": total["length_sum"] / n,
        "truncated_fraction": total["truncated"] / n,
        "zero_std_fraction": total["zero_std_groups"] / total["ranks"],
        "dynamic/draws": float(batch.draws),
        "dynamic/dropped_fraction": 1.0 - total["groups_trained"] / max(1.0, total["groups_drawn"]),
        "dynamic/filler_groups": total["groups_filler"],
        "rollout_tokens_per_s": sum(lengths) / max(1e-9, batch.rollout_seconds),
        "train_tokens_per_s": update["tokens"] / max(1e-9, train_seconds),
        "step_seconds": time.perf_counter() - began,  # rollout, rewards and updates
        "lr": lr,
    }
    for name in drawn.values:
        row[f"rewards/{name}"] = total[f"rewards/{name}"] / n
    row["accuracy"], row["format_rate"] = row["rewards/accuracy"], row["rewards/format"]
    return row


# -- the loop ------------------------------------------------------------------------------


def train_grpo(
    model: Any,
    tokenizer: Any,
    prompts: list[PromptItem],
    eval_sets: dict[str, list[PromptItem]],
    cfg: GRPOConfig,
    *,
    dist: Dist,
    make_engine: Callable[[Any], RolloutEngine],
    reference: Any | None,
    checkpoints: Path | None,
    resume: bool,
    on_log: Callable[[dict[str, Any]], None],
    on_samples: Callable[[int, list[list[Any]]], None] | None = None,
    progress: Callable[..., None] | None = None,
    remote: Any | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Run GRPO for cfg.max_steps (or until a collapse guard stops it); returns (engine, summary).

    Each step: the batch (rollout and score, repeated by the filter when dynamic sampling
    refills), advantages, update, log; then evaluation and checkpoints on their schedules.
    The batch comes from this process's own engine, or, with `remote` (a
    `placement.RemoteRollouts`), from a rollout worker on another GPU.
    """
    import torch

    if cfg.prompts_per_step % dist.world:
        raise ConfigError(
            f"prompts_per_step {cfg.prompts_per_step} must divide by the {dist.world} processes"
        )
    quota = cfg.prompts_per_step // dist.world
    per_rank = quota * cfg.group_size
    if per_rank % cfg.micro_batch_size and cfg.micro_batch_size < per_rank:
        raise ConfigError(
            f"micro_batch_size {cfg.micro_batch_size} must divide the {per_rank} completions per process"
        )
    micro = min(cfg.micro_batch_size, per_rank)
    if cfg.beta > 0 and reference is None:
        raise ConfigError("beta > 0 needs a reference model")
    torch.manual_seed(cfg.seed)
    engine = build_engine(
        policy_module(model, cfg.temperature),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        lr_lambda=warmup_cosine(cfg.max_steps * cfg.mu, cfg.warmup_steps, cfg.min_lr_ratio),
        config=deepspeed_config(
            zero_stage=cfg.zero_stage,
            grad_accum=per_rank // micro,
            max_grad_norm=cfg.max_grad_norm,
            bf16=use_bf16(cfg.precision, dist.device),
            offload_optimizer=False,
            persistence_threshold=cfg.zero3_persistence_threshold,
        ),
        device=dist.device,
    )
    rollout = make_engine(engine.module.model)  # the evaluations' engine, and the local batches'
    source = remote or LocalRollouts(rollout, prompts, cfg, dist, rollout_logprobs(cfg))
    start, draws, entropy_coef = 0, 0, cfg.entropy.coef
    summary: dict[str, Any] = {"stopped_early": None, "reference_model": reference is not None}
    last_eval: dict[str, float] = {}
    if resume and checkpoints is not None and latest_checkpoint(checkpoints):
        trainer_state = load_checkpoint(engine, checkpoints, dist)
        start = trainer_state["step"]
        draws = trainer_state.get("draws", start)
        entropy_coef = trainer_state.get("entropy_coef", entropy_coef)
        # held-out results are measured once each: the step-0 baseline and the latest evaluation
        if trainer_state.get("eval_before"):
            summary["eval_before"] = trainer_state["eval_before"]
        last_eval = trainer_state.get("eval_last", {})
        rollout.sync_weights(engine.module.model)
        log.info("resumed from %s at step %d", latest_checkpoint(checkpoints), start)
    source.start(start, draws, engine.module.model)
    if progress:
        progress(start, cfg.max_steps)
    watch = CollapseWatch(cfg)
    first_eval = (
        evaluate_pass1(rollout, eval_sets, cfg, cfg.seed)
        if dist.main and start == 0 and eval_sets
        else {}
    )
    if first_eval:
        on_log({"step": 0, **first_eval})
        summary["eval_before"] = first_eval
    done = start  # a resumed run that had already finished trains no further
    for step in range(start, cfg.max_steps):
        began = time.perf_counter()
        batch, version = source.next_batch(step)
        advantages = advantage_phase(batch, cfg)
        trained = time.perf_counter()
        update = update_phase(
            engine,
            batch,
            advantages,
            cfg,
            dist=dist,
            reference=reference,
            pad_id=tokenizer.pad_token_id,
            micro=micro,
            entropy_coef=entropy_coef,
        )
        done = step + 1
        row = log_phase(
            batch,
            update,
            step=done,
            dist=dist,
            train_seconds=time.perf_counter() - trained,
            began=began,
            lr=engine.get_lr()[0],
            entropy_coef=entropy_coef,
        )
        row["staleness"] = step - version
        require_finite_metrics(row, "GRPO")
        entropy_coef = next_entropy_coef(
            entropy_coef, row["entropy"], cfg.entropy.target, cfg.entropy.step, cfg.entropy.coef_max
        )
        signs = watch.check(row)
        stop = bool(signs) and cfg.collapse.stop
        source.publish(engine.module.model, done, last=stop or done == cfg.max_steps)
        rollout.sync_weights(engine.module.model)  # the evaluations' (and local batches') engine
        if (done % cfg.eval_every == 0 or done == cfg.max_steps) and dist.main and eval_sets:
            last_eval = evaluate_pass1(rollout, eval_sets, cfg, cfg.seed)
            row.update(last_eval)
        for sign in signs:
            log.warning("collapse guard at step %d: %s", done, sign)
        if done % cfg.log_every == 0 or done == cfg.max_steps or signs:
            on_log(row)
        if (
            on_samples
            and dist.main
            and (done % cfg.sample_table_every == 0 or done == cfg.max_steps)
        ):
            drawn = batch.drawn
            on_samples(
                done,
                [
                    [
                        drawn.items[i // cfg.group_size].example.get("id"),
                        c.text,
                        t,
                        drawn.values["accuracy"][i],
                    ]
                    for i, (c, t) in enumerate(
                        zip(drawn.completions[:8], drawn.totals[:8], strict=False)
                    )
                ],
            )
        if checkpoints is not None and (
            done % cfg.save_every == 0 or done == cfg.max_steps or stop
        ):
            trainer_state = {
                "step": done,
                "draws": source.draws,
                "entropy_coef": entropy_coef,
                "eval_before": summary.get("eval_before", {}),
                "eval_last": last_eval,
            }
            save_checkpoint(engine, checkpoints, done, dist, trainer_state, cfg.keep_checkpoints)
        if progress:
            progress(1)
        kill_if_asked(done)
        if stop:
            summary["stopped_early"] = {"step": done, "signs": signs}
            break
    summary.update(
        steps=done,
        rank_check=check_ranks_agree(engine, done),
        resumed_from_step=start,
        eval_after=last_eval,
    )
    return engine, summary

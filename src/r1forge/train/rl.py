"""The GRPO loop on a DeepSpeed engine: sample, score, compare within groups, update.

Each step takes `prompts_per_step` prompts (split across ranks), samples `group_size`
completions for each with the rollout engine, scores them with the recipe's weighted rule
rewards, turns rewards into group-relative advantages and makes `mu` policy updates over
the batch. Sampling seeds are a function of (seed, step, prompt) (the `transformers` engine:
of (seed, step, rank)), so a resumed run samples exactly what the uninterrupted run would
have, and with the static or vLLM engine N ranks sample what one process would.
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

from r1forge.config import GRPOConfig
from r1forge.errors import ConfigError
from r1forge.rollout import Completion, RolloutEngine, Sampling
from r1forge.train.engine import (
    Dist,
    all_reduce_sum,
    build_engine,
    check_ranks_agree,
    deepspeed_config,
    kill_if_asked,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    use_bf16,
    warmup_cosine,
)
from r1forge.train.grpo import group_advantages, policy_loss

log = logging.getLogger("r1forge.grpo")
ALWAYS_MEASURED = ("accuracy", "format")
EVAL_TEMPERATURE, EVAL_TOP_P = 0.6, 0.95  # DeepSeek-R1's evaluation sampling


@dataclass
class PromptItem:
    ids: list[int]
    example: dict[str, Any]


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
) -> tuple[Any, dict[str, Any]]:
    """Run GRPO for cfg.max_steps (or until a collapse guard stops it); returns (engine, summary)."""
    import torch

    if cfg.prompts_per_step % dist.world:
        raise ConfigError(
            f"prompts_per_step {cfg.prompts_per_step} must divide by the {dist.world} processes"
        )
    per_rank = cfg.prompts_per_step // dist.world * cfg.group_size
    if per_rank % cfg.micro_batch_size and cfg.micro_batch_size < per_rank:
        raise ConfigError(
            f"micro_batch_size {cfg.micro_batch_size} must divide the {per_rank} completions per process"
        )
    micro = min(cfg.micro_batch_size, per_rank)
    n_micro = per_rank // micro
    if cfg.beta > 0 and reference is None:
        raise ConfigError("beta > 0 needs a reference model")
    torch.manual_seed(cfg.seed)
    bf16 = use_bf16(cfg.precision, dist.device)
    engine = build_engine(
        policy_module(model, cfg.temperature),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        lr_lambda=warmup_cosine(cfg.max_steps * cfg.mu, cfg.warmup_steps, cfg.min_lr_ratio),
        config=deepspeed_config(
            zero_stage=cfg.zero_stage,
            grad_accum=n_micro,
            max_grad_norm=cfg.max_grad_norm,
            bf16=bf16,
            offload_optimizer=False,
            persistence_threshold=cfg.zero3_persistence_threshold,
        ),
        device=dist.device,
    )
    rollout = make_engine(engine.module.model)
    start = 0
    summary: dict[str, Any] = {"stopped_early": None, "reference_model": reference is not None}
    last_eval: dict[str, float] = {}
    if resume and checkpoints is not None and latest_checkpoint(checkpoints):
        trainer_state = load_checkpoint(engine, checkpoints, dist)
        start = trainer_state["step"]
        # held-out results are measured once each: the step-0 baseline and the latest evaluation
        if trainer_state.get("eval_before"):
            summary["eval_before"] = trainer_state["eval_before"]
        last_eval = trainer_state.get("eval_last", {})
        rollout.sync_weights(engine.module.model)
        log.info("resumed from %s at step %d", latest_checkpoint(checkpoints), start)
    if progress:
        progress(start, cfg.max_steps)
    order = list(range(len(prompts)))
    per_epoch = len(prompts) // cfg.prompts_per_step
    if per_epoch == 0:
        raise ConfigError(
            f"prompts_per_step {cfg.prompts_per_step} exceeds the {len(prompts)} prompts"
        )
    watch = CollapseWatch(cfg)
    first_eval = (
        evaluate_pass1(rollout, eval_sets, cfg, cfg.seed)
        if dist.main and start == 0 and eval_sets
        else {}
    )
    if first_eval:
        on_log({"step": 0, **first_eval})
        summary["eval_before"] = first_eval
    pad = tokenizer.pad_token_id
    done = start  # a resumed run that had already finished trains no further
    for step in range(start, cfg.max_steps):
        epoch, within = divmod(step, per_epoch)
        shuffled = order[:]
        random.Random(f"{cfg.seed}/prompts/{epoch}").shuffle(shuffled)
        chosen = shuffled[within * cfg.prompts_per_step : (within + 1) * cfg.prompts_per_step][
            dist.rank :: dist.world
        ]
        items = [prompts[i] for i in chosen]
        began = time.perf_counter()
        sampling = Sampling(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=_sampling_seed(cfg.seed, step, f"rank{dist.rank}"),
            prompt_seeds=tuple(_sampling_seed(cfg.seed, step, f"prompt{i}") for i in chosen),
            logprobs=False,
        )
        completions: list[Completion] = rollout.generate(
            [it.ids for it in items], cfg.group_size, sampling
        )
        rollout_seconds = time.perf_counter() - began
        texts = [c.text for c in completions]
        examples = [items[c.prompt_index].example for c in completions]
        totals, values = score_completions(texts, examples, cfg)
        advantages = group_advantages(torch.tensor(totals), cfg.group_size, cfg.advantage_scale)
        width = max(1, max(len(c.token_ids) for c in completions))
        masks, batches = [], []
        for s in range(0, len(completions), micro):
            part = completions[s : s + micro]
            ids, attn, comp, mask = build_batch(
                [items[c.prompt_index].ids for c in part], [c.token_ids for c in part], pad, width
            )
            if cfg.mask_truncated:
                mask *= torch.tensor(
                    [[0.0] if c.finish_reason == "length" else [1.0] for c in part]
                )
            batches.append((ids, attn, comp, mask, advantages[s : s + micro]))
            masks.append(mask)
        local_tokens = float(sum(m.sum() for m in masks))
        (global_tokens,) = all_reduce_sum([local_tokens], dist.device)
        total_rows = cfg.prompts_per_step * cfg.group_size
        old_logps: list[Any] = []
        ref_logps: list[Any] = []
        with torch.no_grad():
            for ids, attn, comp, _, _ in batches:
                moved = (ids.to(dist.device), attn.to(dist.device), comp.to(dist.device))
                if cfg.mu > 1:
                    old_logps.append(engine(*moved)[0].detach())
                if reference is not None:
                    ref_logps.append(completion_logprobs(reference, *moved, cfg.temperature)[0])
        trained = time.perf_counter()
        stat_sums = {"clip_fraction": 0.0, "kl": 0.0, "entropy": 0.0}
        for _ in range(cfg.mu):
            for k, (ids, attn, comp, mask, adv) in enumerate(batches):
                mask = mask.to(dist.device)
                logp, entropy = engine(
                    ids.to(dist.device), attn.to(dist.device), comp.to(dist.device)
                )
                old = old_logps[k] if old_logps else logp.detach()
                ref = ref_logps[k] if ref_logps else None
                loss, stats = policy_loss(
                    logp,
                    old,
                    ref,
                    adv.to(dist.device),
                    mask,
                    cfg.epsilon,
                    cfg.epsilon_high,
                    cfg.beta,
                    cfg.loss_type,
                )
                # each micro-batch's loss is weighted to its share of the whole (all ranks) batch
                tokens = float(mask.sum())
                share = (
                    tokens / max(1.0, global_tokens)
                    if cfg.loss_type == "dapo"
                    else len(adv) / total_rows
                )
                engine.backward(loss * share * n_micro * dist.world)
                engine.step()
                for key in ("clip_fraction", "kl"):
                    stat_sums[key] += stats[key] * tokens
                stat_sums["entropy"] += float((entropy.detach() * mask).sum())
        rollout.sync_weights(engine.module.model)
        train_seconds = time.perf_counter() - trained
        done = step + 1
        lengths = [len(c.token_ids) for c in completions]
        local = [
            sum(totals),
            sum(t * t for t in totals),
            len(totals),
            local_tokens * cfg.mu,
            stat_sums["clip_fraction"],
            stat_sums["kl"],
            stat_sums["entropy"],
            sum(lengths),
            sum(c.finish_reason == "length" for c in completions),
            *(sum(values[name]) for name in sorted(values)),
        ]
        reduced = all_reduce_sum(local, dist.device)
        n = reduced[2]
        mean = reduced[0] / n
        row: dict[str, Any] = {
            "step": done,
            "reward": mean,
            "reward_std": math.sqrt(max(0.0, reduced[1] / n - mean * mean)),
            "clip_fraction": reduced[4] / max(1.0, reduced[3]),
            "kl": reduced[5] / max(1.0, reduced[3]),
            "entropy": reduced[6] / max(1.0, reduced[3]),
            "completion_length": reduced[7] / n,
            "truncated_fraction": reduced[8] / n,
            "rollout_tokens_per_s": sum(lengths) / max(1e-9, rollout_seconds),
            "train_tokens_per_s": local_tokens * cfg.mu / max(1e-9, train_seconds),
            "step_seconds": time.perf_counter() - began,  # rollout, rewards and updates
            "lr": engine.get_lr()[0],
        }
        for offset, name in enumerate(sorted(values)):
            row[f"rewards/{name}"] = reduced[9 + offset] / n
        row["accuracy"], row["format_rate"] = row["rewards/accuracy"], row["rewards/format"]
        if (done % cfg.eval_every == 0 or done == cfg.max_steps) and dist.main and eval_sets:
            last_eval = evaluate_pass1(rollout, eval_sets, cfg, cfg.seed)
            row.update(last_eval)
        signs = watch.check(row)
        for sign in signs:
            log.warning("collapse guard at step %d: %s", done, sign)
        if done % cfg.log_every == 0 or done == cfg.max_steps or signs:
            on_log(row)
        if (
            on_samples
            and dist.main
            and (done % cfg.sample_table_every == 0 or done == cfg.max_steps)
        ):
            on_samples(
                done,
                [
                    [items[c.prompt_index].example.get("id"), c.text, t, values["accuracy"][i]]
                    for i, (c, t) in enumerate(zip(completions[:8], totals[:8], strict=False))
                ],
            )
        stop = bool(signs) and cfg.collapse.stop
        if checkpoints is not None and (
            done % cfg.save_every == 0 or done == cfg.max_steps or stop
        ):
            trainer_state = {
                "step": done,
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

"""Supervised fine-tuning on a DeepSpeed engine: one loop, read top to bottom.

The data order is a pure function of (seed, epoch), so every rank knows every micro-batch of
every step without communication, a resumed run continues at exactly the next micro-batch,
and the loss is normalised by the labelled tokens of the whole global batch (all ranks, all
accumulation steps), which makes 1-process and N-process runs compute the same update.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1forge.config import SFTConfig
from r1forge.errors import ConfigError
from r1forge.train.batching import Batch, Example, collate, pack, tokenize_conversation
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
from r1forge.train.guards import require_finite_metrics
from r1forge.train.losses import causal_lm_loss_sum, distillation_loss_sum

log = logging.getLogger("r1forge.sft")


def sft_loss_module(model: Any, implementation: str) -> Any:
    """Wrap a causal LM so DeepSpeed's forward returns the summed next-token loss of a batch."""
    import torch

    class SFTLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            loss, _ = causal_lm_loss_sum(self.model, Batch(*tensors), implementation)
            return loss

    return SFTLoss()


def distill_loss_module(
    model: Any, teacher: Any, implementation: str, alpha: float, temperature: float, kind: str
) -> Any:
    """Like `sft_loss_module`, mixing in the KL to a frozen teacher (not a submodule: the
    engine must neither train nor save it)."""
    import torch

    teacher.requires_grad_(False).eval()

    class DistillLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.frozen = [teacher]

        def forward(self, *tensors: Any) -> Any:
            return distillation_loss_sum(
                self.model,
                self.frozen[0],
                Batch(*tensors),
                implementation,
                alpha=alpha,
                temperature=temperature,
                kind=kind,
            )

    return DistillLoss()


@dataclass
class SFTData:
    train: list[Example]
    eval: list[Example]
    stats: dict[str, int] = field(default_factory=dict)


def prepare_examples(
    conversations: list[list[dict[str, str]]], tokenizer: Any, cfg: SFTConfig
) -> SFTData:
    """Tokenise, drop examples with nothing to learn (counted), split off the eval share."""
    examples, truncated, empty = [], 0, 0
    for messages in conversations:
        full = tokenize_conversation(messages, tokenizer, 1 << 30)
        if len(full.input_ids) > cfg.max_seq_len:
            truncated += 1
        example = Example(full.input_ids[: cfg.max_seq_len], full.labels[: cfg.max_seq_len])
        if example.n_labels <= 1:
            empty += 1
            continue
        examples.append(example)
    order = list(range(len(examples)))
    random.Random(f"{cfg.seed}/eval-split").shuffle(order)
    n_eval = round(cfg.eval_fraction * len(examples))
    held = set(order[:n_eval])
    return SFTData(
        train=[e for i, e in enumerate(examples) if i not in held],
        eval=[e for i, e in enumerate(examples) if i in held],
        stats={
            "examples": len(examples),
            "truncated": truncated,
            "dropped_no_labels": empty,
            "eval_examples": n_eval,
        },
    )


def epoch_batches(examples: list[Example], cfg: SFTConfig, pad_id: int, epoch: int) -> list[Batch]:
    """The micro-batches of one epoch, in a deterministic order given (seed, epoch)."""
    rng = random.Random(f"{cfg.seed}/epoch/{epoch}")
    order = list(range(len(examples)))
    rng.shuffle(order)
    size = cfg.micro_batch_size
    if cfg.packing == "packed":
        rows = [
            [examples[order[i]] for i in row]
            for row in pack([len(examples[i].input_ids) for i in order], cfg.max_seq_len)
        ]
        rng.shuffle(rows)
        return [
            collate(rows[i : i + size], pad_id, cfg.max_seq_len)
            for i in range(0, len(rows) - size + 1, size)
        ]
    chunks = [
        [examples[i] for i in order[s : s + size]] for s in range(0, len(order) - size + 1, size)
    ]
    if cfg.packing == "padding_free":
        return [collate([chunk], pad_id) for chunk in chunks]
    return [collate([[e] for e in chunk], pad_id) for chunk in chunks]


class Schedule:
    """Which micro-batches each rank trains on at each optimizer step."""

    def __init__(self, examples: list[Example], cfg: SFTConfig, pad_id: int, world: int):
        self.examples, self.cfg, self.pad_id, self.world = examples, cfg, pad_id, world
        self.per_step = cfg.gradient_accumulation * world
        self._cache: dict[int, list[Batch]] = {}
        first = len(self.epoch(0))
        self.steps_per_epoch = first // self.per_step
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"a global batch needs {self.per_step} micro-batches (gradient_accumulation "
                f"{cfg.gradient_accumulation} x {world} processes) but the training set makes only {first} "
                f"micro-batches of {cfg.micro_batch_size}: lower micro_batch_size or gradient_accumulation"
            )
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))

    def epoch(self, epoch: int) -> list[Batch]:
        if epoch not in self._cache:
            self._cache = {epoch: epoch_batches(self.examples, self.cfg, self.pad_id, epoch)}
        return self._cache[epoch]

    def step(self, step: int) -> list[Batch]:
        """All micro-batches of global step `step` (every rank's), rank r owning r, r+world, ..."""
        epoch, within = divmod(step, self.steps_per_epoch)
        batches = self.epoch(epoch)
        return batches[within * self.per_step : (within + 1) * self.per_step]


def evaluate_loss(engine: Any, batches: list[Batch], dist: Dist) -> float | None:
    """Mean next-token loss over labelled eval tokens (batches split across ranks)."""
    import torch

    if not batches:
        return None
    engine.eval()
    loss_sum = labels = 0.0
    with torch.no_grad():
        for batch in batches[dist.rank :: dist.world]:
            loss_sum += engine(*batch.to(dist.device).tensors()).item()
            labels += batch.n_labels
    engine.train()
    total_loss, total_labels = all_reduce_sum([loss_sum, labels], dist.device)
    return total_loss / max(1.0, total_labels)


def train_sft(
    model: Any,
    data: SFTData,
    cfg: SFTConfig,
    *,
    pad_id: int,
    dist: Dist,
    checkpoints: Path | None,
    resume: bool,
    on_log: Callable[[dict[str, Any]], None],
    progress: Callable[..., None] | None = None,
    loss_module: Any | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train until the schedule's last step; returns (engine, summary).

    `checkpoints` is the folder for resumable checkpoints (None: keep none, e.g. benchmarks).
    `loss_module` replaces the plain next-token loss (e.g. distillation's); its forward takes
    a batch's tensors and returns the loss summed over labelled tokens.
    """
    import torch

    torch.manual_seed(cfg.seed)
    schedule = Schedule(data.train, cfg, pad_id, dist.world)
    bf16 = use_bf16(cfg.precision, dist.device)
    # Without ZeRO, clip here with one fused norm over all gradients: DeepSpeed's own
    # clipping walks the parameters one by one, which costs more than the step on small models.
    own_clipping = cfg.zero_stage == 0 and not (bf16 and cfg.master_weights)
    parameters = [p for p in model.parameters() if p.requires_grad]
    grad_norm = None
    engine = build_engine(
        loss_module or sft_loss_module(model, cfg.attn_implementation),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        betas=cfg.betas,
        lr_lambda=warmup_cosine(schedule.total_steps, cfg.warmup_steps, cfg.min_lr_ratio),
        config=deepspeed_config(
            zero_stage=cfg.zero_stage,
            grad_accum=cfg.gradient_accumulation,
            max_grad_norm=0.0 if own_clipping else cfg.max_grad_norm,
            bf16=bf16 and cfg.master_weights,
            offload_optimizer=cfg.offload_optimizer,
            persistence_threshold=cfg.zero3_persistence_threshold,
        ),
        device=dist.device,
    )
    start = 0
    if resume and checkpoints is not None and latest_checkpoint(checkpoints):
        start = load_checkpoint(engine, checkpoints, dist)["step"]
        log.info("resumed from %s at step %d", latest_checkpoint(checkpoints), start)
    size = cfg.micro_batch_size
    eval_batches = [
        collate([[e] for e in data.eval[i : i + size]], pad_id)
        for i in range(0, len(data.eval), size)
    ]
    engine.train()
    tokens_seen, started, last_eval = 0, time.perf_counter(), None
    window_tokens, window_start = 0.0, started
    if progress:
        progress(start, schedule.total_steps)
    for step in range(start, schedule.total_steps):
        batches = schedule.step(step)
        global_labels = sum(b.n_labels for b in batches)
        scale = schedule.per_step / max(1, global_labels)
        loss_sum = (
            0.0  # becomes a device tensor, read back only on logged steps: the GPU never waits
        )
        for batch in batches[dist.rank :: dist.world]:
            loss = engine(*batch.to(dist.device).tensors())
            engine.backward(loss * scale)
            if own_clipping and engine.is_gradient_accumulation_boundary():
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    parameters, cfg.max_grad_norm, foreach=True
                )
            engine.step()
            loss_sum = loss_sum + loss.detach()
        total_tokens = sum(b.n_tokens for b in batches)
        tokens_seen += total_tokens
        window_tokens += total_tokens
        done = step + 1
        row: dict[str, Any] = {}
        if done % cfg.eval_every == 0 or done == schedule.total_steps:
            last_eval = evaluate_loss(engine, eval_batches, dist)
            row["eval_loss"] = last_eval
        if done % cfg.log_every == 0 or done == schedule.total_steps or row:
            (total_loss,) = all_reduce_sum([float(loss_sum)], dist.device)
            now = time.perf_counter()
            if not own_clipping:
                grad_norm = engine.get_global_grad_norm()
            row.update(
                step=done,
                loss=total_loss / max(1, global_labels),
                lr=engine.get_lr()[0],
                grad_norm=float(grad_norm) if grad_norm is not None else None,
                epoch=round(step / schedule.steps_per_epoch, 3),
                tokens_per_s=window_tokens / (now - window_start),
            )
            on_log(row)
            require_finite_metrics(row, "SFT")
            window_tokens, window_start = 0.0, time.perf_counter()
        if checkpoints is not None and (done % cfg.save_every == 0 or done == schedule.total_steps):
            save_checkpoint(
                engine,
                checkpoints,
                done,
                dist,
                {"step": done, "total_steps": schedule.total_steps},
                cfg.keep_checkpoints,
            )
        if progress:
            progress(1)
        kill_if_asked(done)
    summary = {
        "steps": schedule.total_steps,
        "rank_check": check_ranks_agree(engine, schedule.total_steps),
        "resumed_from_step": start,
        "steps_per_epoch": schedule.steps_per_epoch,
        "final_eval_loss": last_eval,
        "train_tokens_per_s": tokens_seen / max(1e-9, time.perf_counter() - started),
        **data.stats,
    }
    return engine, summary

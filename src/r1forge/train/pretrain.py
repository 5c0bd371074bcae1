"""Causal-LM pre-training of the tiny base on packed plain text: one readable loop."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from r1forge.config import BaseConfig


def pack(token_lists: list[list[int]], eos_id: int, block: int) -> Any:
    """Concatenate documents (each ended by EOS) and cut them into blocks of `block` tokens."""
    import torch

    flat = [t for ids in token_lists for t in (*ids, eos_id)]
    usable = len(flat) // block * block
    if usable == 0:
        raise ValueError(f"corpus of {len(flat)} tokens is shorter than one block of {block}")
    return torch.tensor(flat[:usable], dtype=torch.long).view(-1, block)


def lr_at(step: int, cfg: BaseConfig) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def pretrain(
    model: Any,
    blocks: Any,
    cfg: BaseConfig,
    on_log: Callable[[dict[str, Any]], None],
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train `model` on random batches of `blocks`; deterministic given cfg.seed and thread count.

    On a machine with a GPU it trains there, in bf16 autocast (fp32 weights).
    """
    import contextlib

    import torch

    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model.to(device)
    blocks = blocks.to(device)
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else contextlib.nullcontext
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    model.train()
    start, tokens, window = time.perf_counter(), 0, []
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        index = torch.randint(0, blocks.shape[0], (cfg.batch_size,), generator=generator)
        batch = blocks[index.to(device)]
        with autocast():
            loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        tokens += batch.numel()
        window.append(loss.detach())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            elapsed = time.perf_counter() - start
            on_log(
                {
                    "step": step + 1,
                    "loss": torch.stack(window).mean().item(),
                    "lr": optimizer.param_groups[0]["lr"],
                    "tokens": tokens,
                    "tokens_per_s": tokens / elapsed,
                }
            )
            window = []
        if progress:
            progress(1)
    elapsed = time.perf_counter() - start
    return {
        "steps": cfg.steps,
        "tokens": tokens,
        "seconds": round(elapsed, 2),
        "tokens_per_s": tokens / elapsed,
    }

"""DeepSpeed setup shared by every trainer: process group, engine, checkpoints, final weights.

One code path runs as a single process (CPU or one GPU) or under torchrun / the deepspeed
launcher (N processes, ZeRO 0-3). Checkpoints are complete before `latest` names them, so a
run killed at any moment resumes from the last whole checkpoint.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import random
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1forge.io import free_port, write_text_atomic

log = logging.getLogger("r1forge.train")
LATEST = "latest"
FAULT_ENV = "R1FORGE_KILL_AFTER_STEP"  # tests: SIGKILL the process right after that step


def kill_if_asked(step: int) -> None:
    """Die by SIGKILL after `step` when FAULT_ENV names it, to test resuming from a real crash."""
    if step == int(os.environ.get(FAULT_ENV, "0") or 0):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: Any

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(threads: int | None = None) -> Dist:
    """Join (or, for a single process, create) the process group DeepSpeed expects."""
    import torch

    if "RANK" not in os.environ:  # plain single process: DeepSpeed would otherwise look for MPI
        os.environ.update(
            RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1"
        )
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    cuda = torch.cuda.is_available()
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cuda else "cpu")
    os.environ.setdefault(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "r1forge" / "torch_extensions")
    )
    import deepspeed

    for name in ("DeepSpeed", "deepspeed"):
        logging.getLogger(name).setLevel(logging.WARNING)

    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
    else:
        per_rank = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.set_num_threads(threads or per_rank)
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
        atexit.register(_leave_process_group)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank, device)


def _leave_process_group() -> None:
    """Leave the process group together, before the interpreter tears down. Rank 0 publishes
    alone while the others return; a rank whose peer has already gone, or that exits with the
    group's threads still running, can abort ('terminate called without an active exception',
    seen on CPU at the end of 2-rank runs under load). So the ranks meet at a barrier (bounded:
    after a failure on one rank the others must not wait forever), then destroy the group."""
    import datetime

    import torch

    if not torch.distributed.is_initialized():
        return
    if torch.distributed.get_world_size() > 1:
        with contextlib.suppress(Exception):
            if torch.distributed.get_backend() == "gloo":
                torch.distributed.monitored_barrier(timeout=datetime.timedelta(seconds=120))
            else:
                torch.distributed.barrier()
    with contextlib.suppress(Exception):
        torch.distributed.destroy_process_group()


def barrier() -> None:
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def all_reduce_sum(values: list[float], device: Any) -> list[float]:
    import torch

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def all_reduce_max(value: float, device: Any) -> float:
    import torch

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return float(tensor.item())


def reduce_named(values: dict[str, float], device: Any) -> dict[str, float]:
    """Sums over ranks of named values (every rank holds the same names), keyed by name."""
    names = sorted(values)
    return dict(zip(names, all_reduce_sum([values[n] for n in names], device), strict=True))


def use_bf16(precision: str, device: Any) -> bool:
    """bf16 on GPUs, fp32 on CPU, unless the recipe says otherwise."""
    if precision == "auto":
        return device.type == "cuda"
    return precision == "bf16"


def deepspeed_config(
    *,
    zero_stage: int,
    grad_accum: int,
    max_grad_norm: float,
    bf16: bool,
    offload_optimizer: bool,
    persistence_threshold: int = 100_000,
) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": zero_stage}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False
        zero["stage3_param_persistence_threshold"] = persistence_threshold
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def build_engine(
    model: Any,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    lr_lambda: Callable[[int], float],
    config: dict[str, Any],
    device: Any,
) -> Any:
    """A DeepSpeed engine over torch AdamW (fused on GPU) and a LambdaLR schedule."""
    import deepspeed
    import torch

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, **fused)
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda),
        config=config,
        dist_init_required=False,
    )
    return engine


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warmup, then cosine decay to `min_ratio` of the peak."""
    import math

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    engine: Any, folder: Path, step: int, dist: Dist, state: dict[str, Any], keep: int
) -> Path:
    """Save engine + per-rank RNG + trainer state under `step-N`, then point `latest` at it."""
    import torch

    tag = f"step-{step:07d}"
    engine.save_checkpoint(str(folder), tag=tag, client_state={"trainer": state}, save_latest=False)
    torch.save(rng_state(), folder / tag / f"rng-rank{dist.rank}.pt")
    barrier()
    if dist.main:
        write_text_atomic(folder / tag / "trainer.json", json.dumps(state))
        write_text_atomic(folder / LATEST, tag)
        shutil.rmtree(previous_run_dir(folder.parent), ignore_errors=True)  # now superseded
        tags = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))
        for old in tags[:-keep] if keep > 0 else []:
            shutil.rmtree(folder / old, ignore_errors=True)
    barrier()
    return folder / tag


def previous_run_dir(run_dir: Path) -> Path:
    """Where a fresh run sets the old run folder aside until its own first checkpoint."""
    return run_dir.with_name(run_dir.name + ".previous")


def latest_checkpoint(folder: Path) -> str | None:
    marker = folder / LATEST
    return marker.read_text().strip() if marker.is_file() else None


def load_checkpoint(engine: Any, folder: Path, dist: Dist) -> dict[str, Any]:
    """Restore engine (weights, optimizer, scheduler) and RNG; return the trainer state."""
    import torch

    tag = latest_checkpoint(folder)
    if tag is None:
        raise FileNotFoundError(f"no checkpoint in {folder}")
    engine.load_checkpoint(
        str(folder), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    rng_file = folder / tag / f"rng-rank{dist.rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((folder / tag / "trainer.json").read_text())


def check_ranks_agree(engine: Any, step: int, chunk: int = 64) -> dict[str, Any]:
    """Every rank's step and checksums of the whole weights (gathered under ZeRO-3), compared.

    Ranks that drifted apart (replicas updated differently, a rank a step behind) fail the
    run here rather than publish one rank's view. Collective: every rank calls it.
    """
    import deepspeed
    import torch

    params = list(engine.module.parameters())
    sums = torch.zeros(2, dtype=torch.float64, device=params[0].device)
    with torch.no_grad():
        for start in range(0, len(params), chunk):
            part = params[start : start + chunk]
            with deepspeed.zero.GatheredParameters(part, modifier_rank=None):
                for param in part:
                    sums[0] += param.detach().double().sum()
                    sums[1] += param.detach().double().abs().sum()
    mine = torch.cat([torch.tensor([float(step)], dtype=torch.float64, device=sums.device), sums])
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    every = [mine.clone() for _ in range(world)]
    if world > 1:
        torch.distributed.all_gather(every, mine)
    views = [t.tolist() for t in every]
    disagree = [rank for rank, view in enumerate(views) if view != views[0]]
    if disagree:
        raise RuntimeError(
            f"ranks {disagree} disagree with rank 0 on (step, weight sum, |weight| sum): {views}"
        )
    return {"ranks": world, "step": step, "weight_sum": views[0][1], "weight_abs_sum": views[0][2]}

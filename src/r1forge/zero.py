"""DeepSpeed ZeRO-3 helpers for the code that needs a model's weights whole: the rollout
engines (a dense replica to generate with) and the trainers (the published state dict).

Below both `train/` and `rollout/` in the layers, so neither imports the other for them.
"""

from __future__ import annotations

import contextlib
from typing import Any


def is_partitioned(model: Any) -> bool:
    """True when ZeRO-3 holds `model`'s weights as shards, gathered only inside its hooks."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def dense_replica(model: Any, device: Any) -> Any:
    """A plain module of `model`'s architecture and dtype on `device`, its weights to be
    filled (on "meta" it takes no memory and no time to initialise).

    ZeRO-3 leaves the trained module's parameters empty outside its hooks; what must run or
    be saved whole (rollouts, the published model) runs on such a replica filled by
    `copy_gathered`. LoRA adapters are rebuilt from the model's own peft config.
    """
    import torch
    from transformers import AutoModelForCausalLM

    peft_config = getattr(model, "peft_config", None)
    base = model.get_base_model() if peft_config else model
    dtype = next(iter(p.ds_tensor for p in base.parameters() if hasattr(p, "ds_tensor"))).dtype
    with torch.device(device):
        replica = AutoModelForCausalLM.from_config(base.config, dtype=dtype)
    if peft_config:
        from peft import get_peft_model

        replica = get_peft_model(replica, peft_config["default"])
    return replica.requires_grad_(False)


def copy_gathered(model: Any, replica: Any, chunk: int = 64) -> None:
    """Copy ZeRO-3-partitioned `model`'s weights into the dense `replica`, `chunk` tensors at a
    time so no rank ever holds more than that much gathered. Collective: every rank calls it."""
    import deepspeed
    import torch

    target = dict(replica.named_parameters())
    named = list(model.named_parameters())
    with torch.no_grad():
        for start in range(0, len(named), chunk):
            part = named[start : start + chunk]
            with deepspeed.zero.GatheredParameters([p for _, p in part], modifier_rank=None):
                for name, param in part:
                    target[name].copy_(param.detach())


def full_state_dict(engine: Any) -> dict[str, Any] | None:
    """The whole model's weights on rank 0 (gathered under ZeRO-3), None on other ranks."""
    import deepspeed
    import torch

    module = engine.module
    params = list(module.parameters())
    zero3 = engine.zero_optimization_stage() == 3
    ctx = (
        deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        if zero3
        else contextlib.nullcontext()
    )
    with ctx:
        if torch.distributed.get_rank() != 0:
            return None
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

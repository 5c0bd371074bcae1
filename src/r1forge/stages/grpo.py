"""Stages `grpo_reasoning` and `grpo_final`: GRPO with rule rewards from an SFT checkpoint.

The policy trains on a DeepSpeed engine; rollouts come from the recipe's engine
(`transformers` samples with the policy module itself). With `beta: 0` no reference model is
loaded at all. Like SFT: `<output>.run/` keeps checkpoints for an exact `--resume`, and the
final folder is published atomically with lineage, metrics and curves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from r1forge.config import GRPOConfig
from r1forge.data.jsonl import read_manifest
from r1forge.progress import progress_bar
from r1forge.stages import StageContext
from r1forge.stages.common import (
    dataset_path,
    load_prompts,
    open_run,
    publish_model,
    require_model_folder,
)

log = logging.getLogger("r1forge.grpo")
CURVES = [
    "reward",
    "accuracy",
    "format_rate",
    "completion_length",
    "entropy",
    "kl",
    "clip_fraction",
]


def load_policy(path: Path, cfg: GRPOConfig, bf16: bool) -> tuple[Any, Any]:
    import torch

    from r1forge.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(path)
    model = load_model(
        path,
        dtype=torch.bfloat16 if bf16 else torch.float32,
        attn_implementation=cfg.attn_implementation,
    )
    return model, tokenizer


def run(ctx: StageContext) -> dict[str, Any]:
    """Train the `model` input with GRPO on the section's prompt sets (read from the `data`
    input); write the policy to the output."""
    from r1forge.rewards import check_runnable
    from r1forge.rollout import make_engine
    from r1forge.train.engine import init_distributed, use_bf16
    from r1forge.train.rl import train_grpo

    recipe, stage, data, model = ctx.recipe, ctx.section, ctx.inputs["data"], ctx.inputs["model"]
    output, metrics, resume = ctx.output, ctx.metrics, ctx.resume
    cfg: GRPOConfig = ctx.config
    require_model_folder(model)
    dist = init_distributed(cfg.threads)
    bf16 = use_bf16(cfg.precision, dist.device)
    net, tokenizer = load_policy(model, cfg, bf16)
    prompts, hashes = [], {}
    for name in cfg.prompts:
        prompts += load_prompts(dataset_path(data, name), tokenizer)
        hashes[name] = read_manifest(dataset_path(data, name))["sha256"]
    eval_sets = {
        path.stem: load_prompts(path, tokenizer, cfg.eval_size)
        for path in sorted((data / "eval").glob("*.jsonl"))
    }
    check_runnable(
        {name for weights in [cfg.rewards, *cfg.task_rewards.values()] for name in weights},
        [item.example for items in (prompts, *eval_sets.values()) for item in items],
        cfg.reward_params,
    )
    reference = None
    if cfg.beta > 0:  # only then: with beta 0 no reference model is loaded
        reference, _ = load_policy(model, cfg, bf16)
        reference.requires_grad_(False).eval().to(dist.device)
    _, checkpoints, tracker = open_run(recipe, stage, output, resume, dist.main, cfg.tracking)

    def on_log(row: dict[str, Any]) -> None:
        if tracker is None:
            return
        tracker.log(row)
        if "reward" in row:
            log.info(
                "step %d reward %.3f acc %.3f format %.3f len %.1f entropy %.3f kl %.4f clip %.3f | rollout %.0f tok/s",
                row["step"],
                row["reward"],
                row["accuracy"],
                row["format_rate"],
                row["completion_length"],
                row["entropy"],
                row["kl"],
                row["clip_fraction"],
                row["rollout_tokens_per_s"],
            )
        evals = {k: v for k, v in row.items() if k.startswith("eval/")}
        if evals:
            log.info(
                "step %d held-out pass@1: %s",
                row["step"],
                ", ".join(f"{k[5:]}={v:.3f}" for k, v in evals.items()),
            )

    def on_samples(step: int, rows: list[list[Any]]) -> None:
        if tracker is not None:
            tracker.table("samples", ["prompt_id", "completion", "reward", "accuracy"], rows, step)

    def engine_for(policy: Any) -> Any:
        if cfg.rollout_engine != "vllm":
            return make_engine(cfg.rollout_engine, model=policy, tokenizer=tokenizer)
        longest = max(len(item.ids) for items in (prompts, *eval_sets.values()) for item in items)
        return make_engine(
            "vllm",
            model=policy,
            tokenizer=tokenizer,
            model_path=model,
            max_model_len=longest + cfg.max_new_tokens,
            seed=cfg.seed,
        )

    try:
        with progress_bar(stage) as advance:
            engine, summary = train_grpo(
                net,
                tokenizer,
                prompts,
                eval_sets,
                cfg,
                dist=dist,
                make_engine=engine_for,
                reference=reference,
                checkpoints=checkpoints,
                resume=resume,
                on_log=on_log,
                on_samples=on_samples,
                progress=advance,
            )
        evals = [f"eval/{name}/{mode}" for name in eval_sets for mode in ("greedy", "sampled")]
        publish_model(
            engine,
            dist,
            recipe,
            stage,
            model_in=model,
            output=output,
            model=net,
            tokenizer=tokenizer,
            tracker=tracker,
            summary=summary,
            datasets=hashes,
            plot_keys=[*CURVES, *evals],
            metrics=metrics,
        )
        return summary
    finally:
        if tracker is not None:
            tracker.finish({})


def describe(summary: dict[str, Any], ctx: StageContext) -> str:
    before, after = summary.get("eval_before", {}), summary.get("eval_after", {})
    shown = ", ".join(
        f"{k[5:]} {before.get(k, float('nan')):.3f} -> {v:.3f}" for k, v in after.items()
    )
    return f"{ctx.section} model in {ctx.output}: steps={summary['steps']}; held-out pass@1 {shown}"

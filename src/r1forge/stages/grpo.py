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
from r1forge.errors import ConfigError
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


def rollout_engine(
    cfg: GRPOConfig, policy: Any, tokenizer: Any, model: Path, prompt_sets: list[list[Any]]
) -> Any:
    """The recipe's rollout engine over `policy` (vLLM also needs the longest prompt)."""
    from r1forge.rollout import make_engine

    if cfg.rollout_engine != "vllm":
        return make_engine(cfg.rollout_engine, model=policy, tokenizer=tokenizer)
    longest = max(len(item.ids) for items in prompt_sets for item in items)
    return make_engine(
        "vllm",
        model=policy,
        tokenizer=tokenizer,
        model_path=model,
        max_model_len=longest + cfg.max_new_tokens,
        seed=cfg.seed,
    )


def load_rl_prompts(
    data: Path, cfg: GRPOConfig, tokenizer: Any
) -> tuple[list[Any], dict[str, str]]:
    """The section's RL prompts, tokenized, and each file's content hash (for lineage)."""
    prompts, hashes = [], {}
    for name in cfg.prompts:
        prompts += load_prompts(dataset_path(data, name), tokenizer)
        hashes[name] = read_manifest(dataset_path(data, name))["sha256"]
    return prompts, hashes


def rollout_worker(
    cfg: GRPOConfig, data: Path, model: Path, port: int, threads: int | None
) -> None:
    """The rollout worker process of a split placement: the policy's copy on the GPU after
    the trainer's, sampling batches for the trainer (`placement.serve_rollouts`)."""
    import torch

    from r1forge.plugins import load_plugins
    from r1forge.train.channel import WORKER, RolloutChannel
    from r1forge.train.engine import use_bf16
    from r1forge.train.placement import serve_rollouts

    assert cfg.placement is not None
    load_plugins()  # a spawned process: the user's rewards and engines registered again
    if threads:
        torch.set_num_threads(threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", cfg.placement.train_gpus) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)
    net, tokenizer = load_policy(model, cfg, use_bf16(cfg.precision, device))
    net.to(device).eval()
    prompts, _ = load_rl_prompts(data, cfg, tokenizer)
    channel = RolloutChannel.connect(
        "127.0.0.1", port, WORKER, device, cfg.placement.transfer_timeout_s
    )
    engine = rollout_engine(cfg, net, tokenizer, model, [prompts])
    serve_rollouts(channel, net, engine, prompts, cfg)


def start_rollout_worker(cfg: GRPOConfig, data: Path, model: Path, dist: Any) -> Any:
    """Spawn the rollout worker and connect to it; returns the trainer's `RemoteRollouts`
    (its channel knows when the worker process has died)."""
    import multiprocessing

    from r1forge.io import free_port
    from r1forge.train.channel import TRAINER, RolloutChannel
    from r1forge.train.placement import RemoteRollouts

    assert cfg.placement is not None
    if dist.world != cfg.placement.train_gpus:
        raise ConfigError(
            f"placement.train_gpus is {cfg.placement.train_gpus} but {dist.world} trainer "
            "processes were started"
        )
    port = free_port()
    worker = multiprocessing.get_context("spawn").Process(
        target=rollout_worker,
        args=(cfg, data, model, port, cfg.threads),
        name="r1forge-rollout-worker",
        daemon=True,
    )
    worker.start()
    channel = RolloutChannel.connect(
        "127.0.0.1", port, TRAINER, dist.device, cfg.placement.transfer_timeout_s
    )

    def gone() -> str | None:
        if worker.is_alive():
            return None
        return f"the rollout worker exited with code {worker.exitcode} (its log is above)"

    channel.peer_gone = gone
    return RemoteRollouts(channel, cfg, process=worker)


def run(ctx: StageContext) -> dict[str, Any]:
    """Train the `model` input with GRPO on the section's prompt sets (read from the `data`
    input); write the policy to the output."""
    from r1forge.rewards import check_runnable
    from r1forge.train.channel import TransferError
    from r1forge.train.engine import init_distributed, use_bf16
    from r1forge.train.rl import train_grpo

    recipe, stage, data, model = ctx.recipe, ctx.section, ctx.inputs["data"], ctx.inputs["model"]
    output, metrics, resume = ctx.output, ctx.metrics, ctx.resume
    cfg: GRPOConfig = ctx.config
    require_model_folder(model)
    dist = init_distributed(cfg.threads)
    bf16 = use_bf16(cfg.precision, dist.device)
    net, tokenizer = load_policy(model, cfg, bf16)
    prompts, hashes = load_rl_prompts(data, cfg, tokenizer)
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
        return rollout_engine(cfg, policy, tokenizer, model, [prompts, *eval_sets.values()])

    remote = start_rollout_worker(cfg, data, model, dist) if cfg.placement else None
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
                remote=remote,
            )
        if remote is not None:
            remote.process.join(timeout=cfg.placement.transfer_timeout_s)
            if remote.process.exitcode != 0:
                raise TransferError(
                    f"the rollout worker exited with code {remote.process.exitcode}"
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
        if remote is not None and remote.process.is_alive():
            remote.process.terminate()
        if tracker is not None:
            tracker.finish({})


def describe(summary: dict[str, Any], ctx: StageContext) -> str:
    before, after = summary.get("eval_before", {}), summary.get("eval_after", {})
    shown = ", ".join(
        f"{k[5:]} {before.get(k, float('nan')):.3f} -> {v:.3f}" for k, v in after.items()
    )
    return f"{ctx.section} model in {ctx.output}: steps={summary['steps']}; held-out pass@1 {shown}"

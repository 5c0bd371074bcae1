"""Stages `sft_cold_start` and `sft_merged`: supervised fine-tuning of a model on SFT datasets.

Runs as one process or under torchrun / the deepspeed launcher; rank 0 alone writes. The
run folder (`<output>.run/`: checkpoints, metrics, W&B) survives a crash so `--resume`
continues exactly; the final model folder is assembled under a temp name and swapped in.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from r1forge.config import KDConfig, Recipe, SFTConfig
from r1forge.data.jsonl import read_jsonl, read_manifest
from r1forge.errors import ConfigError, DataError
from r1forge.progress import progress_bar
from r1forge.stages import StageContext
from r1forge.stages.common import dataset_path, open_run, publish_model, require_model_folder

log = logging.getLogger("r1forge.sft")


def load_conversations(
    data: Path, cfg: SFTConfig
) -> tuple[list[list[dict[str, str]]], dict[str, str], dict[str, int]]:
    """The conversations of the stage's datasets mixed at `cfg.mix`, each dataset's sha256
    (lineage), and how many examples each contributed."""
    from r1forge.data.mix import mix_datasets

    sets, hashes = {}, {}
    for name in cfg.datasets:
        path = dataset_path(data, name)
        if not path.is_file():
            raise DataError.single(path, "file not found")
        manifest = read_manifest(path)
        hashes[name] = manifest["sha256"]
        if manifest["count"] == 0:  # e.g. rejection sampling kept nothing: say so, go on
            log.warning("%s is empty (its manifest counts 0 records)", path)
            sets[name] = []
            continue
        records = read_jsonl(path, "sft")
        sets[name] = [[m.model_dump() for m in r.messages] for r in records]
    if not any(sets.values()):
        raise DataError.single(data / cfg.datasets[0], "every dataset of the stage is empty")
    if not cfg.mix:
        return (
            [c for rows in sets.values() for c in rows],
            hashes,
            {k: len(v) for k, v in sets.items()},
        )
    unknown = sorted(set(cfg.mix) - set(sets))
    if unknown:
        raise ConfigError(f"mix names {unknown}, which are not among datasets {cfg.datasets}")
    merged, counts = mix_datasets(sets, cfg.mix, cfg.seed)
    return merged, hashes, counts


def _load_model(path: Path, cfg: SFTConfig, bf16: bool) -> tuple[Any, Any]:
    import torch

    from r1forge.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(path)
    model = load_model(
        path,
        dtype=torch.bfloat16 if bf16 else torch.float32,
        attn_implementation=cfg.attn_implementation,
    )
    if cfg.max_seq_len > getattr(model.config, "max_position_embeddings", cfg.max_seq_len):
        raise ConfigError(
            f"max_seq_len {cfg.max_seq_len} exceeds the model's max_position_embeddings "
            f"{model.config.max_position_embeddings}"
        )
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=cfg.lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model, tokenizer


def compile_layers(model: Any) -> None:
    """Compile each decoder layer in place: fused kernels, one graph reused by every layer."""
    for layer in model.get_decoder().layers:
        layer.compile(dynamic=False)


def fine_tune(
    recipe: Recipe,
    stage: str,
    data: Path,
    model: Path,
    output: Path,
    metrics: Path | None = None,
    resume: bool = False,
    teacher: Path | None = None,
    kd: KDConfig | None = None,
) -> dict[str, Any]:
    """Fine-tune `model` on the stage's datasets from `data`; write the result to `output`.

    With `teacher` and `kd`, the loss mixes in the KL to the teacher's next-token
    distributions (logit distillation; the two must share a tokenizer).
    """
    from r1forge.train.engine import init_distributed, use_bf16
    from r1forge.train.sft import distill_loss_module, prepare_examples, train_sft

    cfg: SFTConfig = getattr(recipe, stage)
    require_model_folder(model)
    dist = init_distributed(cfg.threads)
    conversations, hashes, mixed = load_conversations(data, cfg)
    log.info("training examples by dataset: %s", mixed)
    bf16 = use_bf16(cfg.precision, dist.device)
    net, tokenizer = _load_model(model, cfg, bf16)
    if cfg.compile and dist.device.type == "cuda":
        compile_layers(net)
    prepared = prepare_examples(conversations, tokenizer, cfg)
    loss_module = None
    if teacher is not None and kd is not None:
        plain = {"lora": None, "attn_implementation": "sdpa", "gradient_checkpointing": False}
        teacher_net, teacher_tokenizer = _load_model(teacher, cfg.model_copy(update=plain), bf16)
        if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ConfigError(
                f"logit distillation needs one tokenizer: {teacher} and {model} differ"
            )
        teacher_net.to(dist.device)
        loss_module = distill_loss_module(
            net, teacher_net, cfg.attn_implementation, kd.alpha, kd.temperature, kd.kind
        )
    _, checkpoints, tracker = open_run(recipe, stage, output, resume, dist.main, cfg.tracking)

    def on_log(row: dict[str, Any]) -> None:
        if tracker:
            tracker.log(row)
            shown = f" eval {row['eval_loss']:.4f}" if row.get("eval_loss") is not None else ""
            log.info(
                "step %d loss %.4f%s lr %.2e %.0f tok/s",
                row["step"],
                row["loss"],
                shown,
                row["lr"],
                row["tokens_per_s"],
            )

    try:
        with progress_bar(stage) as advance:
            engine, summary = train_sft(
                net,
                prepared,
                cfg,
                pad_id=tokenizer.pad_token_id,
                dist=dist,
                checkpoints=checkpoints,
                resume=resume,
                on_log=on_log,
                progress=advance,
                loss_module=loss_module,
            )
        if dist.main:
            assert tracker is not None
            rows = tracker.metrics.rows
            summary["final_loss"] = rows[-1]["loss"] if rows else None
            summary["examples_by_dataset"] = mixed
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
            plot_keys=["loss", "eval_loss", "lr", "grad_norm"],
            metrics=metrics,
            merge_lora=cfg.lora is not None,
        )
        return summary
    finally:
        if tracker is not None:
            tracker.finish({})


def run(ctx: StageContext) -> dict[str, Any]:
    return fine_tune(
        ctx.recipe,
        ctx.section or "sft_cold_start",
        ctx.inputs["data"],
        ctx.inputs["model"],
        ctx.output,
        ctx.metrics,
        ctx.resume,
    )


def describe(summary: dict[str, Any], ctx: StageContext) -> str:
    return (
        f"{ctx.section} model in {ctx.output}: steps={summary['steps']}, "
        f"final_loss={summary.get('final_loss')}, eval_loss={summary.get('final_eval_loss')}"
    )

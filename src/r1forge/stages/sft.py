"""Stages `sft_cold_start` and `sft_merged`: supervised fine-tuning of a model on SFT datasets.

Runs as one process or under torchrun / the deepspeed launcher; rank 0 alone writes. The
run folder (`<output>.run/`: checkpoints, metrics, W&B) survives a crash so `--resume`
continues exactly; the final model folder is assembled under a temp name and swapped in.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from r1forge.config import Recipe, SFTConfig, recipe_dict, save_resolved
from r1forge.data.chat import template_sha256
from r1forge.data.jsonl import read_jsonl, read_manifest
from r1forge.errors import ConfigError, DataError
from r1forge.io import atomic_dir, code_revision, write_json_atomic
from r1forge.progress import progress_bar
from r1forge.tracking import Tracker, plot_curves

log = logging.getLogger("r1forge.sft")


def run_dir_for(output: Path) -> Path:
    return output.with_name(output.name + ".run")


def load_conversations(
    data: Path, names: list[str]
) -> tuple[list[list[dict[str, str]]], dict[str, str]]:
    """Every conversation of the named datasets, and each dataset's sha256 (lineage)."""
    conversations, hashes = [], {}
    for name in names:
        path = data / name
        records = read_jsonl(path, "sft")
        hashes[name] = read_manifest(path)["sha256"]
        conversations += [[m.model_dump() for m in r.messages] for r in records]
    return conversations, hashes


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


def _export(model: Any, state: dict[str, Any], tokenizer: Any, out: Path, lora: bool) -> None:
    """Save the trained weights as a plain Hugging Face folder (LoRA merged into the base)."""
    model.load_state_dict(state)
    if lora:
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def run(
    recipe: Recipe,
    stage: str,
    data: Path,
    model: Path,
    output: Path,
    metrics: Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Fine-tune `model` on the stage's datasets from `data`; write the result to `output`."""
    from r1forge.models import read_metadata, write_metadata
    from r1forge.train.engine import full_state_dict, init_distributed, use_bf16
    from r1forge.train.sft import prepare_examples, train_sft

    cfg: SFTConfig = getattr(recipe, stage)
    if not (model / "config.json").is_file():
        raise DataError.single(model, "not a model folder (no config.json)")
    dist = init_distributed(cfg.threads)
    conversations, hashes = load_conversations(data, cfg.datasets)
    bf16 = use_bf16(cfg.precision, dist.device)
    net, tokenizer = _load_model(model, cfg, bf16)
    if cfg.compile and dist.device.type == "cuda":
        compile_layers(net)
    prepared = prepare_examples(conversations, tokenizer, cfg)
    run_dir = run_dir_for(output)
    checkpoints = run_dir / "checkpoints"
    if dist.main and not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    resume_step = None
    if resume and (checkpoints / "latest").is_file():
        resume_step = int((checkpoints / "latest").read_text().strip().removeprefix("step-"))
    tracker = (
        Tracker(run_dir, cfg.tracking, recipe_dict(recipe), f"{recipe.name}/{stage}", resume_step)
        if dist.main
        else None
    )

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
            )
        state = full_state_dict(engine)
        if dist.main:
            assert tracker is not None and state is not None
            state = {k.removeprefix("model."): v for k, v in state.items()}
            rows = tracker.metrics.rows
            summary["final_loss"] = rows[-1]["loss"] if rows else None
            tracker.finish(summary)
            parent = read_metadata(model).get("lineage", {})
            with atomic_dir(output) as out:
                _export(net, state, tokenizer, out, cfg.lora is not None)
                shutil.copy(tracker.metrics.path, out / "metrics.jsonl")
                plot_curves(
                    rows,
                    ["loss", "eval_loss", "lr", "grad_norm"],
                    out / "loss.png",
                    f"{stage}: {recipe.name}",
                )
                write_metadata(
                    out,
                    {
                        "lineage": {
                            "stage": stage,
                            "datasets": hashes,
                            "init_model": str(model),
                            "base_model": parent.get("base_model", str(model)),
                            "parent": parent,
                            "code_revision": code_revision(),
                            "chat_template_sha256": template_sha256(),
                        },
                        "metrics": summary,
                    },
                )
                save_resolved(recipe, out / "config.yaml", section=stage)
                if (run_dir / "wandb").is_dir():
                    shutil.copytree(run_dir / "wandb", out / "wandb")
            if metrics is not None:
                write_json_atomic(metrics, {stage: summary})
        return summary
    finally:
        if tracker is not None:
            tracker.finish({})

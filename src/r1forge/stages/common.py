"""What every training stage does around its loop: the run folder, tracking, and publishing
the final model folder (weights, tokenizer, lineage, metrics, curves) atomically."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from r1forge.config import Recipe, TrackingConfig, recipe_dict, save_resolved
from r1forge.data.chat import template_sha256
from r1forge.data.jsonl import read_jsonl
from r1forge.errors import DataError
from r1forge.io import atomic_dir, code_revision, sha256_file, write_json_atomic
from r1forge.tracking import Tracker, plot_curves
from r1forge.train.engine import LATEST, barrier, previous_run_dir

log = logging.getLogger(__name__)


def run_dir_for(output: Path) -> Path:
    """`<output>.run/`: checkpoints, metrics and W&B of a run, kept across crashes for --resume."""
    return output.with_name(output.name + ".run")


def require_model_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise DataError.single(path, "not a model folder (no config.json)")


def open_run(
    recipe: Recipe, stage: str, output: Path, resume: bool, main: bool, tracking: TrackingConfig
) -> tuple[Path, Path, Tracker | None]:
    """(run folder, checkpoint folder, tracker on rank 0).

    A fresh run sets an old run folder aside (`<output>.run.previous`) rather than deleting
    it: its checkpoints are dropped only once the new run has saved its first one, so a fresh
    rerun killed early loses nothing, and `--resume` then goes on from the old checkpoints.
    """
    run_dir = run_dir_for(output)
    checkpoints = run_dir / "checkpoints"
    previous = previous_run_dir(run_dir)
    if main and not resume and run_dir.exists():
        if (checkpoints / LATEST).is_file() or not previous.exists():
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(run_dir, previous)
        else:  # a fresh run killed before its first checkpoint: keep the older one set aside
            shutil.rmtree(run_dir)
    if main and resume and not (checkpoints / LATEST).is_file() and previous.is_dir():
        shutil.rmtree(run_dir, ignore_errors=True)
        os.replace(previous, run_dir)
        log.info("resuming the run set aside in %s", previous)
    barrier()
    resume_step = None
    if resume and (checkpoints / "latest").is_file():
        resume_step = int((checkpoints / "latest").read_text().strip().removeprefix("step-"))
    tracker = (
        Tracker(run_dir, tracking, recipe_dict(recipe), f"{recipe.name}/{stage}", resume_step)
        if main
        else None
    )
    return run_dir, checkpoints, tracker


def publish_model(
    engine: Any,
    dist: Any,
    recipe: Recipe,
    stage: str,
    *,
    model_in: Path,
    output: Path,
    model: Any,
    tokenizer: Any,
    tracker: Tracker | None,
    summary: dict[str, Any],
    datasets: dict[str, str],
    plot_keys: list[str],
    metrics: Path | None,
    merge_lora: bool = False,
) -> None:
    """Write the trained engine's final model folder on rank 0: weights (gathered under
    ZeRO-3; LoRA merged), tokenizer, lineage, metrics, curves, resolved config and the W&B
    run; then the DVC metrics file. Collective: every rank calls it."""
    from r1forge.models import read_metadata, write_metadata
    from r1forge.train.guards import require_finite_weights
    from r1forge.zero import dense_replica, full_state_dict, is_partitioned

    gathered = full_state_dict(engine)
    if not dist.main:
        return
    assert tracker is not None and gathered is not None
    state = {k.removeprefix("model."): v for k, v in gathered.items()}
    require_finite_weights(state, str(output))
    if is_partitioned(model):  # ZeRO-3 left the trained module's weights as empty shards
        model = dense_replica(model, "meta")  # no memory, no random init: the state is assigned
        model.load_state_dict(state, assign=True)
        model.tie_weights()
    else:
        model.load_state_dict(state)
    if merge_lora:
        model = model.merge_and_unload()
    model.config.use_cache = True
    tracker.finish(summary)
    parent = read_metadata(model_in).get("lineage", {})
    run_dir = tracker.run_dir
    with atomic_dir(output) as out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        shutil.copy(tracker.metrics.path, out / "metrics.jsonl")
        plot_curves(tracker.metrics.rows, plot_keys, out / "curves.png", f"{stage}: {recipe.name}")
        write_metadata(
            out,
            {
                "lineage": {
                    "stage": stage,
                    "datasets": datasets,
                    "init_model": str(model_in),
                    "base_model": parent.get("base_model", str(model_in)),
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
        for extra in run_dir.glob("*.jsonl"):
            if extra.name != "metrics.jsonl":
                shutil.copy(extra, out / extra.name)
    if metrics is not None:
        write_json_atomic(metrics, {stage: summary})


def dataset_path(data: Path, name: str) -> Path:
    """A recipe's dataset name under the data folder: `../x` is a sibling of `data`, whether
    `data` is a folder or a link to one (a pipeline task's artifact)."""
    return Path(os.path.normpath(data / name))


def read_prompts(path: Path) -> list[Any]:
    """A prompt dataset's records, each verifier checked against the registered ones."""
    from r1forge.rewards import VERIFIERS

    return read_jsonl(path, "prompt", verifiers=VERIFIERS)


def load_prompts(path: Path, tokenizer: Any, limit: int | None = None) -> list[Any]:
    """Prompt records as (chat-templated token ids, example dict) items."""
    from r1forge.data.schema import PromptItem

    records = read_prompts(path)[:limit]
    return [
        PromptItem(
            ids=list(
                tokenizer.apply_chat_template(
                    r.messages(), add_generation_prompt=True, tokenize=True, return_dict=True
                )["input_ids"]
            ),
            example=r.example(),
        )
        for r in records
    ]


def sample_k(engine: Any, items: list[Any], cfg: Any) -> list[Any]:
    """`cfg.k` samples of each prompt at the section's temperature, top-p and seed (a
    sampling stage: select, sample, the teacher's answers), without log-probs."""
    from r1forge.rollout import Sampling

    sampling = Sampling(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed,
        logprobs=False,
    )
    return engine.generate([item.ids for item in items], cfg.k, sampling)


def sampled_from(stage: str, model: Path, prompts: dict[str, str]) -> dict[str, Any]:
    """A sampled dataset's manifest source: the stage, the model (and its weights' sha256)
    and the prompt files' sha256s."""
    weights = model / "model.safetensors"
    return {
        "stage": stage,
        "model": str(model),
        "model_sha256": sha256_file(weights) if weights.is_file() else None,
        "prompts": prompts,
    }


def load_for_sampling(
    model: Path, precision: str, threads: int | None, engine: str, seed: int
) -> tuple[Any, Any, Any]:
    """(model on its device, tokenizer, rollout engine) for evaluation and rejection sampling."""
    import os

    import torch

    from r1forge.models import load_model, load_tokenizer
    from r1forge.rollout import make_engine

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(threads or os.cpu_count() or 1)
    bf16 = precision == "bf16" or (precision == "auto" and cuda)
    tokenizer = load_tokenizer(model)
    net = load_model(model, dtype=torch.bfloat16 if bf16 else torch.float32)
    net.to("cuda" if cuda else "cpu").eval()
    extra: dict[str, Any] = {"model_path": model, "seed": seed} if engine == "vllm" else {}
    return net, tokenizer, make_engine(engine, model=net, tokenizer=tokenizer, **extra)

"""Stage `base`: the base model every later stage starts from.

On a cluster the recipe names a real model (hub id or path): it is loaded, given single-token
`<think>`/`</think>`, and saved with its lineage. Here (model: null) a byte-level BPE tokenizer
and a ~1M-parameter Llama are trained from scratch on plain worked solutions from the task
generators, excluding every eval problem, standing in for a pre-trained base.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from r1forge.config import Recipe, save_resolved
from r1forge.data.chat import template_sha256
from r1forge.data.general import general_pair
from r1forge.data.jsonl import read_jsonl, read_manifest
from r1forge.errors import ConfigError
from r1forge.io import atomic_dir, code_revision, write_json_atomic
from r1forge.progress import progress_bar
from r1forge.stages import StageContext
from r1forge.stages.common import read_prompts
from r1forge.stages.data import draw_problems, eval_path
from r1forge.tracking import MetricsLog, plot_curves

log = logging.getLogger("r1forge.base")


def dataset_hashes(data_dir: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each named dataset (checked against its manifest), for lineage."""
    return {
        name: read_manifest(data_dir / name)["sha256"]
        for name in names
        if (data_dir / name).is_file()
    }


def pretraining_corpus(recipe: Recipe, data_dir: Path) -> tuple[list[str], int]:
    """Plain worked solutions (plus a little general text); eval problems are left out."""
    cfg = recipe.data
    held_out = {
        record.prompt[-1].content if not isinstance(record.prompt, str) else record.prompt
        for name in [*cfg.tasks, *cfg.held_out]
        for record in read_prompts(eval_path(data_dir, name))
    }
    rng = random.Random(f"{recipe.base.seed}/pretrain")
    problems = draw_problems(cfg, rng, recipe.base.corpus_size)
    kept = [p.solution_text for p in problems if p.question not in held_out]
    general = [" ".join(general_pair(rng)) for _ in range(len(kept) // 20)]
    return kept + general, len(problems) - len(kept)


def probe_accuracy(
    model: Any, tokenizer: Any, recipe: Recipe, max_new_tokens: int = 96
) -> dict[str, float]:
    """Greedy accuracy on the held-out eval problems, posed in the pre-training surface format.

    It tells whether the base learned the tasks at all (before any chat format exists).
    """
    from r1forge.models import greedy_continuations
    from r1forge.rewards import score_batch
    from r1forge.stages.data import eval_problems

    result = {}
    for task in sorted(recipe.data.tasks):
        problems = eval_problems(recipe.data, task)
        # Documents follow an end token in pre-training, so the probe starts the same way.
        prefixes = [
            tokenizer.eos_token + p.solution_text.split(" :\n")[0] + " :\n" for p in problems
        ]
        texts = greedy_continuations(model, tokenizer, prefixes, max_new_tokens)
        boxed = ["\\boxed{" + t.rpartition("answer ")[2].strip() + "}" for t in texts]
        examples = [
            {"answer": p.answer, "task": p.task, "verifier": p.verifier, "meta": p.meta}
            for p in problems
        ]
        scores = score_batch("accuracy", boxed, examples)
        result[f"probe_accuracy/{task}"] = sum(scores) / len(scores)
    return result


def _fetch_named(recipe: Recipe, out: Path) -> dict[str, Any]:
    from r1forge.data.chat import ensure_reasoning_tokens
    from r1forge.models import count_parameters, load_model, load_tokenizer

    cfg = recipe.base
    tokenizer = load_tokenizer(cfg.model, cfg.revision)
    model = load_model(cfg.model, cfg.revision)
    added = ensure_reasoning_tokens(tokenizer, model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "source_model": cfg.model,
        "revision": cfg.revision,
        "added_tokens": added,
        "parameters": count_parameters(model),
    }


def _train_tiny(recipe: Recipe, data_dir: Path, out: Path) -> dict[str, Any]:
    from r1forge.models import count_parameters, tiny_model, train_tokenizer
    from r1forge.train.guards import require_finite_metrics, require_finite_weights
    from r1forge.train.pretrain import pack, pretrain

    cfg = recipe.base
    corpus, excluded = pretraining_corpus(recipe, data_dir)
    chat_texts = [
        m.content for r in read_jsonl(data_dir / "cold_start.jsonl", "sft") for m in r.messages
    ]
    tokenizer = train_tokenizer(corpus + chat_texts, cfg.vocab_size)
    encoded = tokenizer(corpus, add_special_tokens=False)["input_ids"]
    blocks = pack(encoded, tokenizer.eos_token_id, cfg.seq_len)
    model = tiny_model(cfg.arch, tokenizer, cfg.seed)
    n_params = count_parameters(model)
    log.info(
        "tiny base: %s parameters, %s pre-training tokens in %s blocks",
        f"{n_params:,}",
        f"{blocks.numel():,}",
        len(blocks),
    )
    metrics = MetricsLog(out)
    with progress_bar("pre-training base", total=cfg.steps) as advance:

        def on_log(row: dict[str, Any]) -> None:
            metrics.log(row)
            require_finite_metrics(row, "base")
            log.info(
                "step %d loss %.4f lr %.2e %.0f tok/s",
                row["step"],
                row["loss"],
                row["lr"],
                row["tokens_per_s"],
            )

        stats = pretrain(model, blocks, cfg, on_log, advance)
    model.eval()
    require_finite_weights(model.named_parameters(), str(out))
    probe = probe_accuracy(model, tokenizer, recipe)
    log.info("held-out accuracy in the pre-training format: %s", probe)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    plot_curves(metrics.rows, ["loss", "lr"], out / "curves.png", "base pre-training")
    return {
        "parameters": n_params,
        "corpus_documents": len(corpus),
        "eval_problems_excluded": excluded,
        "corpus_tokens": int(blocks.numel()),
        "final_loss": metrics.rows[-1]["loss"],
        **probe,
        **stats,
    }


def build_base(
    recipe: Recipe, data: Path, output: Path, metrics: Path | None = None, section: str = "base"
) -> dict[str, Any]:
    """Build or fetch the base model into `output` (atomically), with lineage and metrics.

    `section` names the recipe section to build from: `base`, or `base_student` (a smaller
    base for distillation students, trained the same way on the same corpus).
    """
    if section != "base":
        chosen = getattr(recipe, section, None)
        if chosen is None:
            raise ConfigError(f"the recipe has no `{section}` section")
        recipe = recipe.model_copy(update={"base": chosen})
    with atomic_dir(output) as out:
        summary = _fetch_named(recipe, out) if recipe.base.model else _train_tiny(recipe, data, out)
        lineage = {
            "stage": section,
            "datasets": dataset_hashes(
                data, ["cold_start.jsonl", *[f"eval/{t}.jsonl" for t in sorted(recipe.data.tasks)]]
            ),
            "base_model": recipe.base.model or "r1forge-tiny",
            "code_revision": code_revision(),
            "chat_template_sha256": template_sha256(),
        }
        from r1forge.models import write_metadata

        write_metadata(out, {"lineage": lineage, "metrics": summary})
        save_resolved(recipe, out / "config.yaml", section="base")
    if metrics is not None:
        write_json_atomic(metrics, {section: summary})
    return summary


def run(ctx: StageContext) -> dict[str, Any]:
    return build_base(
        ctx.recipe, ctx.inputs["data"], ctx.output, ctx.metrics, ctx.section or "base"
    )


def describe(summary: dict[str, Any], ctx: StageContext) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict))
    return f"{ctx.section} model in {ctx.output}: {shown}"

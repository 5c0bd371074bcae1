"""Stage `sample`: rejection sampling (R1 stage 3): a checkpoint's verified reasoning as SFT data.

k samples per prompt; each is scored (accuracy, format, language consistency) and filtered
(`r1forge.rejection`); per prompt, duplicates go and the shortest accepted completions stay,
at most `max_per_prompt`; prompts outside the pass-rate window are dropped. Writes an SFT
dataset with its manifest and `<name>.stats.json`: acceptance per task and difficulty, and
how many completions each filter refused.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from r1forge.config import Recipe, SampleConfig
from r1forge.data.jsonl import read_manifest, write_jsonl
from r1forge.io import write_json_atomic
from r1forge.rejection import Candidate, pass_rate_ok, rejection_reasons, select
from r1forge.stages import StageContext
from r1forge.stages.common import (
    load_for_sampling,
    load_prompts,
    require_model_folder,
    sample_k,
    sampled_from,
)

log = logging.getLogger("r1forge.sample")


def _group_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    samples = sum(r["samples"] for r in rows)
    correct = sum(r["correct"] for r in rows)
    return {
        "prompts": len(rows),
        "samples": samples,
        "pass_rate": correct / samples if samples else 0.0,
        "accepted_samples": sum(r["accepted"] for r in rows),
        "prompts_kept": sum(r["kept"] > 0 for r in rows),
        "examples_kept": sum(r["kept"] for r in rows),
    }


def rejection_sample(
    recipe: Recipe, model: Path, data: Path, output: Path, metrics: Path | None = None
) -> dict[str, Any]:
    """Stage `sample` with the recipe's `sample` section."""
    stats = sample_dataset(recipe.sample, model, data, output)
    if metrics is not None:
        write_json_atomic(metrics, {"sample": stats})
    return stats


def sample_dataset(cfg: SampleConfig, model: Path, data: Path, output: Path) -> dict[str, Any]:
    """Sample, filter and write the accepted completions of `model` as an SFT dataset."""
    from r1forge.progress import progress_bar
    from r1forge.rewards import score_batch
    from r1forge.rewards.language import has_words

    require_model_folder(model)
    _, tokenizer, engine = load_for_sampling(
        model, cfg.precision, cfg.threads, cfg.rollout_engine, cfg.seed
    )
    records, rows, refused = [], [], Counter()
    sources = {name: read_manifest(data / name)["sha256"] for name in cfg.prompts}
    with progress_bar("rejection sampling", total=len(cfg.prompts)) as advance:
        for name in cfg.prompts:
            items = load_prompts(data / name, tokenizer, cfg.limit)
            completions = sample_k(engine, items, cfg)
            texts = [c.text for c in completions]
            examples = [items[c.prompt_index].example for c in completions]
            scores = {
                n: score_batch(n, texts, examples)
                for n in ("accuracy", "format", "language_consistency")
            }
            for p, item in enumerate(items):
                own = list(range(p * cfg.k, (p + 1) * cfg.k))
                accepted = []
                for i in own:
                    candidate = Candidate(
                        text=texts[i],
                        n_tokens=len(completions[i].token_ids),
                        truncated=completions[i].finish_reason == "length",
                        correct=scores["accuracy"][i],
                        well_formed=scores["format"][i],
                        # no word of any script (`3 + 4 = 7`): nothing to mix, so one language
                        one_language=scores["language_consistency"][i]
                        if has_words(texts[i])
                        else 1.0,
                    )
                    reasons = rejection_reasons(
                        candidate,
                        max_tokens=cfg.max_new_tokens,
                        max_paragraph_chars=cfg.max_paragraph_chars,
                        allow_code_in_think=cfg.allow_code_in_think,
                        checks=cfg.checks,
                    )
                    refused.update(reasons)
                    if not reasons:
                        accepted.append(i)
                rate = sum(scores["accuracy"][i] for i in own) / cfg.k
                kept = []
                if accepted and pass_rate_ok(rate, cfg.pass_rate):
                    chosen = select(
                        [texts[i] for i in accepted],
                        [len(completions[i].token_ids) for i in accepted],
                        cfg.max_per_prompt,
                        cfg.near_dup_threshold,
                    )
                    kept = [accepted[j] for j in chosen]
                example = item.example
                for rank, i in enumerate(kept):
                    records.append(
                        {
                            "id": f"{example['id']}-s{rank}",
                            "messages": [
                                *_prompt_messages(example),
                                {"role": "assistant", "content": texts[i]},
                            ],
                        }
                    )
                rows.append(
                    {
                        "task": example["task"],
                        "difficulty": str(example.get("difficulty", "none")),
                        "samples": cfg.k,
                        "correct": sum(scores["accuracy"][i] for i in own),
                        "accepted": len(accepted),
                        "kept": len(kept),
                    }
                )
            advance(1)
    if not records:
        log.warning("no completion passed the filters: the dataset is empty")
    manifest = write_jsonl(
        output,
        records,
        kind="sft",
        source=sampled_from("sample", model, sources),
    )
    by: dict[str, dict[str, list[dict[str, Any]]]] = {"task": {}, "difficulty": {}}
    for row in rows:
        for key in by:
            by[key].setdefault(row[key], []).append(row)
    stats = {
        **_group_stats(rows),
        "per_task": {k: _group_stats(v) for k, v in sorted(by["task"].items())},
        "per_difficulty": {k: _group_stats(v) for k, v in sorted(by["difficulty"].items())},
        "refused": dict(sorted(refused.items())),
        "output_sha256": manifest["sha256"],
    }
    write_json_atomic(output.with_suffix(".stats.json"), stats)
    return stats


def _prompt_messages(example: dict[str, Any]) -> list[dict[str, str]]:
    prompt = example["prompt"]
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def run(ctx: StageContext) -> dict[str, Any]:
    return rejection_sample(
        ctx.recipe, ctx.inputs["model"], ctx.inputs["data"], ctx.output, ctx.metrics
    )


def describe(stats: dict[str, Any], ctx: StageContext) -> str:
    refused = ", ".join(f"{k}={v}" for k, v in stats["refused"].items())
    return (
        f"{ctx.output}: {stats['examples_kept']} examples from {stats['prompts_kept']} of "
        f"{stats['prompts']} prompts (pass rate {stats['pass_rate']:.3f}; refused: {refused})"
    )

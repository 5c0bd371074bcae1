"""Stage `select`: the RL prompts worth training on, chosen by the starting model's pass rate.

GRPO learns only from groups whose rewards differ: a prompt the starting model always
solves, or never does, gives a group of equal rewards and no gradient. This stage samples
`k` answers to each RL prompt with the model RL will start from, scores them with the
accuracy verifier, and keeps the prompts whose pass rate lies in the `pass_rate` window
(by default: solved sometimes, not always; POLARIS and Skywork-OR1 filter offline the same way). The output is a prompt
dataset like any other (validated, with its manifest, whose source names the model and the
prompt files by sha256: its lineage), each record carrying its `meta.pass_rate`, and
`<name>.stats.json` with the histogram of pass rates. Ordered easiest first it is a
curriculum (GRPO's `prompt_order: file` then keeps that order).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

from r1forge.config import SelectConfig
from r1forge.data.jsonl import read_manifest, write_jsonl
from r1forge.io import write_json_atomic
from r1forge.rejection import pass_rate_ok
from r1forge.stages import StageContext
from r1forge.stages.common import (
    load_for_sampling,
    load_prompts,
    read_prompts,
    require_model_folder,
    sample_k,
    sampled_from,
)

log = logging.getLogger("r1forge.select")


def pass_rates(correct: list[float], k: int) -> list[float]:
    """Per prompt, the share of its k consecutive samples that were correct."""
    if k < 1 or len(correct) % k:
        raise ValueError(f"{len(correct)} scores do not make groups of {k}")
    return [sum(correct[i : i + k]) / k for i in range(0, len(correct), k)]


def keep_and_order(
    rates: list[float], window: tuple[float, float], order: str, seed: int
) -> list[int]:
    """Indices of the prompts whose rate lies in `window` ([a, b]), in the output order: a
    seeded shuffle, or by pass rate (ties keep the input order)."""
    kept = [i for i, rate in enumerate(rates) if pass_rate_ok(rate, window)]
    if order == "shuffle":
        random.Random(f"{seed}/select").shuffle(kept)
    elif order == "easiest_first":
        kept.sort(key=lambda i: -rates[i])
    elif order == "hardest_first":
        kept.sort(key=lambda i: rates[i])
    else:
        raise ValueError(f"unknown order {order!r}")
    return kept


def select_prompts(cfg: SelectConfig, model: Path, data: Path, output: Path) -> dict[str, Any]:
    from r1forge.errors import DataError
    from r1forge.progress import progress_bar
    from r1forge.rewards import score_batch

    require_model_folder(model)
    _, tokenizer, engine = load_for_sampling(
        model, cfg.precision, cfg.threads, cfg.rollout_engine, cfg.seed
    )
    records: list[dict[str, Any]] = []
    rates: list[float] = []
    sources = {}
    with progress_bar("pass-rate selection", total=len(cfg.prompts)) as advance:
        for name in cfg.prompts:
            sources[name] = read_manifest(data / name)["sha256"]
            raw = read_prompts(data / name)[: cfg.limit]
            items = load_prompts(data / name, tokenizer, cfg.limit)
            completions = sample_k(engine, items, cfg)
            examples = [items[c.prompt_index].example for c in completions]
            correct = score_batch("accuracy", [c.text for c in completions], examples)
            rates += pass_rates(correct, cfg.k)
            records += [r.model_dump(exclude_none=True) for r in raw]
            advance(1)
    kept = keep_and_order(rates, cfg.pass_rate, cfg.order, cfg.seed)
    if not kept:
        raise DataError.single(
            output,
            f"no prompt has a pass rate in {list(cfg.pass_rate)}: the model solves all or none "
            "of them (widen select.pass_rate or change the prompts)",
        )
    chosen = [
        {**records[i], "meta": {**(records[i].get("meta") or {}), "pass_rate": rates[i]}}
        for i in kept
    ]
    manifest = write_jsonl(
        output,
        chosen,
        kind="prompt",
        source={
            **sampled_from("select", model, sources),
            "k": cfg.k,
            "temperature": cfg.temperature,
            "pass_rate": list(cfg.pass_rate),
            "order": cfg.order,
        },
    )
    histogram = Counter(f"{rate:.3f}" for rate in rates)
    stats = {
        "prompts": len(rates),
        "kept": len(kept),
        "kept_fraction": len(kept) / len(rates),
        "mean_pass_rate": sum(rates) / len(rates),
        "kept_mean_pass_rate": sum(rates[i] for i in kept) / len(kept),
        "pass_rate_histogram": dict(sorted(histogram.items())),
        "output_sha256": manifest["sha256"],
    }
    write_json_atomic(output.with_suffix(".stats.json"), stats)
    log.info(
        "kept %d of %d prompts (pass rate in %s); mean pass rate %.3f",
        len(kept),
        len(rates),
        list(cfg.pass_rate),
        stats["mean_pass_rate"],
    )
    return stats


def run(ctx: StageContext) -> dict[str, Any]:
    """Stage `select` with the recipe's `select` section: writes the kept prompts to the output."""
    stats = select_prompts(ctx.recipe.select, ctx.inputs["model"], ctx.inputs["data"], ctx.output)
    if ctx.metrics is not None:
        write_json_atomic(ctx.metrics, {"select": stats})
    return stats


def describe(stats: dict[str, Any], ctx: StageContext) -> str:
    return (
        f"{ctx.output}: kept {stats['kept']} of {stats['prompts']} prompts (mean pass rate "
        f"{stats['mean_pass_rate']:.3f}, kept {stats['kept_mean_pass_rate']:.3f})"
    )

"""Stage `evaluate`: pass@1 over k samples, cons@k, greedy accuracy, format, language, length.

Any prompt file is an eval set (the recipe's eval sets, or a team's copy of MATH-500 or
AIME imported with `r1forge data import`). Results go to `<output>/metrics.json` in DVC's
metrics format: the overall block at the top level (with `per_task` and `per_difficulty`),
and with several files one block per file under its name, plus `eval_sets` (each file's
sha256); `<output>/samples.jsonl` keeps every scored sample.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from r1forge.config import EvalConfig, Recipe, save_resolved
from r1forge.errors import DataError
from r1forge.evaluation import report_block
from r1forge.io import atomic_dir, sha256_file, write_json_atomic
from r1forge.stages import StageContext
from r1forge.stages.common import load_for_sampling, load_prompts, require_model_folder

log = logging.getLogger("r1forge.evaluate")
MEASURED = ("accuracy", "format", "language_consistency")


def eval_files(cfg: EvalConfig, data: Path) -> list[Path]:
    """The recipe's datasets, or every eval/*.jsonl of the data folder."""
    files = [data / name for name in cfg.datasets] or sorted((data / "eval").glob("*.jsonl"))
    if not files:
        raise DataError.single(data, "no eval sets: no eval/*.jsonl and no evaluate.datasets")
    return files


def evaluate_file(path: Path, tokenizer: Any, engine: Any, cfg: EvalConfig) -> list[dict[str, Any]]:
    """One row per prompt: its k samples' scores and answers, and its greedy score."""
    from r1forge.rewards import check_runnable, score_batch
    from r1forge.rewards.parsing import extract_boxed, split_think
    from r1forge.rollout import Sampling

    items = load_prompts(path, tokenizer, cfg.limit)
    ids = [item.ids for item in items]
    examples = [item.example for item in items]
    check_runnable(MEASURED, examples, {})
    sampled = engine.generate(
        ids,
        cfg.k,
        Sampling(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=cfg.seed,
            logprobs=False,
        ),
    )
    greedy = engine.generate(
        ids, 1, Sampling(max_new_tokens=cfg.max_new_tokens, temperature=0.0, logprobs=False)
    )
    texts = [c.text for c in sampled]
    repeated = [examples[c.prompt_index] for c in sampled]
    scores = {name: score_batch(name, texts, repeated) for name in MEASURED}
    greedy_correct = score_batch("accuracy", [c.text for c in greedy], examples)
    rows = []
    for p, example in enumerate(examples):
        own = range(p * cfg.k, (p + 1) * cfg.k)
        rows.append(
            {
                "id": example["id"],
                "task": example["task"],
                "difficulty": example.get("difficulty", "none"),
                "correct": [scores["accuracy"][i] for i in own],
                "format": [scores["format"][i] for i in own],
                "language": [scores["language_consistency"][i] for i in own],
                "lengths": [len(sampled[i].token_ids) for i in own],
                "answers": [extract_boxed(split_think(texts[i]).answer) for i in own],
                "completions": [texts[i] for i in own],
                "greedy_correct": greedy_correct[p],
                "greedy_completion": greedy[p].text,
            }
        )
    return rows


def evaluate_model(
    recipe: Recipe,
    model: Path,
    data_files: list[Path],
    output: Path,
    metrics: Path | None = None,
) -> dict[str, Any]:
    """Evaluate `model` on each file; write metrics.json, samples.jsonl and config.yaml."""
    from r1forge.progress import progress_bar

    cfg = recipe.evaluate
    require_model_folder(model)
    for path in data_files:
        if not path.is_file():
            raise DataError.single(path, "eval set not found")
    _, tokenizer, engine = load_for_sampling(
        model, cfg.precision, cfg.threads, cfg.rollout_engine, cfg.seed
    )
    per_file: dict[str, list[dict[str, Any]]] = {}
    with progress_bar("evaluating", total=len(data_files)) as advance:
        for path in data_files:
            per_file[path.stem] = evaluate_file(path, tokenizer, engine, cfg)
            advance(1)
    every = [row for rows in per_file.values() for row in rows]
    report: dict[str, Any] = {
        **report_block(every),
        "model": str(model),
        # what the numbers were measured on: promotion compares models only on the same sets
        "eval_sets": {path.stem: sha256_file(path) for path in data_files},
    }
    if len(per_file) > 1:
        report.update({name: report_block(rows) for name, rows in per_file.items()})
    with atomic_dir(output) as tmp:
        write_json_atomic(tmp / "metrics.json", report)
        with (tmp / "samples.jsonl").open("w", encoding="utf-8") as f:
            for name, rows in per_file.items():
                for row in rows:
                    f.write(json.dumps({"eval_set": name, **row}, ensure_ascii=False) + "\n")
        save_resolved(recipe, tmp / "config.yaml", section="evaluate")
    if metrics is not None:
        write_json_atomic(metrics, {"evaluate": report})
    log.info(
        "%s: pass@1 %.3f, cons@%d %.3f, greedy %.3f, format %.3f over %d prompts",
        model,
        report["pass@1"],
        report["k"],
        report["cons@k"],
        report["greedy_accuracy"],
        report["format_rate"],
        report["n_prompts"],
    )
    return report


def run(ctx: StageContext) -> dict[str, Any]:
    files = ctx.options.get("files") or eval_files(ctx.recipe.evaluate, ctx.inputs["data"])
    return evaluate_model(ctx.recipe, ctx.inputs["model"], files, ctx.output, ctx.metrics)


def describe(report: dict[str, Any], ctx: StageContext) -> str:
    return (
        f"{ctx.inputs['model']}: pass@1={report['pass@1']:.3f} "
        f"cons@{report['k']}={report['cons@k']:.3f} greedy={report['greedy_accuracy']:.3f} "
        f"format={report['format_rate']:.3f} language={report['language_rate']:.3f} "
        f"mean_length={report['mean_length']:.1f} ({report['n_prompts']} prompts) "
        f"-> {ctx.output / 'metrics.json'}"
    )

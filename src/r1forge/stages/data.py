"""Stage `data`: cold-start SFT set, RL prompts, general chat set and eval sets, all validated.

Eval sets come from their own seed space and every training set is decontaminated against
them; duplicates and contaminated items are counted in `report.json`, never dropped silently.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from r1forge.config import DataConfig, Recipe, save_resolved
from r1forge.data.chat import reasoning_completion
from r1forge.data.dedup import contaminated, exact_duplicates, near_duplicates
from r1forge.data.general import general_pair
from r1forge.data.jsonl import write_jsonl
from r1forge.data.schema import PromptRecord, SFTRecord
from r1forge.data.tasks import Problem, generate
from r1forge.errors import ConfigError
from r1forge.io import atomic_dir, write_json_atomic
from r1forge.stages import StageContext

log = logging.getLogger("r1forge.data")
OVERSAMPLE = 3


def eval_path(data_dir: str | Path, task: str) -> Path:
    return Path(data_dir) / "eval" / f"{task}.jsonl"


def draw_problems(
    cfg: DataConfig, rng: random.Random, count: int, tasks: list[str] | None = None
) -> list[Problem]:
    """`count` problems, tasks drawn by weight and difficulty uniformly from each task's levels."""
    names = tasks or sorted(cfg.tasks)
    weights = [cfg.tasks[n].weight for n in names]
    problems = []
    for _ in range(count):
        task = rng.choices(names, weights)[0]
        problems.append(generate(task, rng, rng.choice(cfg.tasks[task].difficulties)))
    return problems


def eval_problems(
    cfg: DataConfig,
    task: str,
    name: str | None = None,
    levels: list[int] | None = None,
    size: int | None = None,
) -> list[Problem]:
    """The problems of eval set `name` (default: the task's own): their own seed space,
    unique, the same on every call."""
    rng = random.Random(f"{cfg.seed}/eval/{name or task}")
    levels = levels or cfg.eval_difficulties or cfg.tasks[task].difficulties
    size = size or cfg.eval_size
    problems: dict[str, Problem] = {}
    for _ in range(size * 50):
        problem = generate(task, rng, rng.choice(levels))
        problems.setdefault(problem.key, problem)
        if len(problems) == size:
            break
    return list(problems.values())


def eval_sets(cfg: DataConfig) -> dict[str, list[Problem]]:
    """Every eval set by name: one per training task, then the recipe's held-out sets."""
    sets = {task: eval_problems(cfg, task) for task in sorted(cfg.tasks)}
    for name, spec in sorted(cfg.held_out.items()):
        sets[name] = eval_problems(cfg, spec.task, name, spec.difficulties, spec.size)
    return sets


def filter_training(
    items: list[Any], text: Callable[[Any], str], eval_texts: list[str], cfg: DataConfig, want: int
) -> tuple[list[Any], dict[str, int]]:
    """Drop exact and near duplicates and eval-contaminated items; keep the first `want`."""
    texts = [text(i) for i in items]
    exact = exact_duplicates(texts)
    survivors = [k for k, dup in enumerate(exact) if not dup]
    near = near_duplicates([texts[k] for k in survivors], cfg.near_dup_threshold)
    survivors2 = [k for k, dup in zip(survivors, near, strict=True) if not dup]
    dirty = contaminated([texts[k] for k in survivors2], eval_texts, cfg.decontam_ngram)
    kept = [items[k] for k, bad in zip(survivors2, dirty, strict=True) if not bad]
    report = {
        "candidates": len(items),
        "exact_duplicates": sum(exact),
        "near_duplicates": sum(near),
        "contaminated": sum(dirty),
        "kept": min(want, len(kept)),
        "requested": want,
    }
    if len(kept) < want:
        log.warning("only %d unique clean items of %d requested (%s)", len(kept), want, report)
    return kept[:want], report


def _user(question: str, system_prompt: str | None) -> list[dict[str, str]]:
    turns = [{"role": "user", "content": question}]
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + turns


def sft_record(problem: Problem, index: int, split: str, system_prompt: str | None) -> SFTRecord:
    return SFTRecord(
        id=f"{problem.task}-{split}-{index:06d}",
        messages=[
            *_user(problem.question, system_prompt),
            {"role": "assistant", "content": reasoning_completion(problem.thought, problem.final)},
        ],
    )


def prompt_record(
    problem: Problem, index: int, split: str, system_prompt: str | None
) -> PromptRecord:
    return PromptRecord(
        id=f"{problem.task}-{split}-{index:06d}",
        prompt=_user(problem.question, system_prompt),
        answer=problem.answer,
        task=problem.task,
        verifier=problem.verifier,
        difficulty=problem.difficulty,
        meta=problem.meta or None,
    )


def build_datasets(recipe: Recipe, output: Path, metrics: Path | None = None) -> dict[str, Any]:
    """Build every dataset of the recipe into `output` (swapped in atomically when all succeed)."""
    from r1forge.data.importer import import_file

    cfg = recipe.data
    source = {"generator": "r1forge.data.tasks", "seed": cfg.seed, "tasks": sorted(cfg.tasks)}
    report: dict[str, Any] = {}
    with atomic_dir(output) as out:
        eval_texts: list[str] = []
        for name, problems in eval_sets(cfg).items():
            eval_texts += [p.question for p in problems]
            records = [
                prompt_record(
                    p, i, f"eval-{name}" if name in cfg.held_out else "eval", cfg.system_prompt
                )
                for i, p in enumerate(problems)
            ]
            write_jsonl(
                eval_path(out, name),
                records,
                kind="prompt",
                source={**source, "split": f"eval/{name}"},
            )
            requested = (cfg.held_out[name].size if name in cfg.held_out else None) or cfg.eval_size
            report[f"eval/{name}"] = {"kept": len(records), "requested": requested}

        rng = random.Random(f"{cfg.seed}/train")
        for split, size, kind in (
            ("cold_start", cfg.cold_start_size, "sft"),
            ("rl_prompts", cfg.rl_prompts_size, "prompt"),
        ):
            candidates = draw_problems(cfg, rng, size * OVERSAMPLE)
            kept, report[split] = filter_training(
                candidates, lambda p: p.question, eval_texts, cfg, size
            )
            make = sft_record if kind == "sft" else prompt_record
            records = [make(p, i, split, cfg.system_prompt) for i, p in enumerate(kept)]
            write_jsonl(
                out / f"{split}.jsonl", records, kind=kind, source={**source, "split": split}
            )

        general_rng = random.Random(f"{cfg.seed}/general")
        if cfg.general_size:
            pairs = [general_pair(general_rng) for _ in range(cfg.general_size * OVERSAMPLE)]
            unique = [
                p
                for p, dup in zip(pairs, exact_duplicates([q for q, _ in pairs]), strict=True)
                if not dup
            ]
            kept_pairs = unique[: cfg.general_size]
            report["general"] = {
                "candidates": len(pairs),
                "kept": len(kept_pairs),
                "requested": cfg.general_size,
            }
            records = [
                SFTRecord(
                    id=f"general-{i:06d}",
                    messages=[*_user(q, None), {"role": "assistant", "content": a}],
                )
                for i, (q, a) in enumerate(kept_pairs)
            ]
            write_jsonl(
                out / "general.jsonl", records, kind="sft", source={**source, "split": "general"}
            )
        if cfg.general_prompts_size:
            questions = list(
                dict.fromkeys(
                    general_pair(general_rng)[0] for _ in range(cfg.general_prompts_size * 10)
                )
            )
            questions = questions[: cfg.general_prompts_size]
            records = [
                PromptRecord(id=f"chat-{i:06d}", prompt=_user(q, None), task="chat")
                for i, q in enumerate(questions)
            ]
            write_jsonl(
                out / "general_prompts.jsonl",
                records,
                kind="prompt",
                source={**source, "split": "general_prompts"},
            )
            report["general_prompts"] = {
                "kept": len(records),
                "requested": cfg.general_prompts_size,
            }

        for spec in cfg.imports:
            manifest = import_file(
                spec.path, out / spec.output, kind=spec.kind, mapping=spec.mapping, task=spec.task
            )
            report[f"import/{spec.output}"] = {"kept": manifest["count"]}

        write_json_atomic(out / "report.json", report)
        save_resolved(recipe, out / "config.yaml", section="data")
    summary = {split: entry["kept"] for split, entry in report.items()}
    if metrics is not None:
        write_json_atomic(metrics, {"data": summary})
    return summary


def check_output(output: Path) -> None:
    """The data stage replaces its output folder whole: refuse a file, and a folder holding
    anything but a previous data stage's output (its report.json), which would be deleted."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output}: is a file; the data stage writes a folder")
    if output.is_dir() and any(output.iterdir()) and not (output / "report.json").is_file():
        raise ConfigError(
            f"--output {output}: a folder that `r1forge data` did not write (no report.json); "
            "it would be replaced whole: name a new or empty folder"
        )


def run(ctx: StageContext) -> dict[str, Any]:
    check_output(ctx.output)
    return build_datasets(ctx.recipe, ctx.output, ctx.metrics)


def describe(summary: dict[str, Any], ctx: StageContext) -> str:
    return f"datasets in {ctx.output}: " + ", ".join(f"{k}={v}" for k, v in summary.items())

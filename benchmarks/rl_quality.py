"""RL quality against a converged cold start and a peer: r1forge GRPO vs TRL's GRPOTrainer.

Per seed: one cold-start checkpoint (data shared, then base and SFT seeded), then r1forge's
GRPO (the recipe's `grpo_reasoning`, with its levers; and its `select` stage first when the
section's prompts come from it) and TRL 1.16's `GRPOTrainer` with the same settings and the
same reward functions (r1forge's own), side by side from that very checkpoint. All three
models are evaluated by `r1forge evaluate` on every held-out eval set (k samples at T=0.6,
top-p 0.95, and greedy). Seeds run side by side.

    python benchmarks/rl_quality.py --recipe recipes/quality-h200.yaml --seeds 0 1 \\
        --workdir /dev/shm/rlq --out benchmarks/results/rl_quality.json
    python benchmarks/rl_quality.py --recipe recipes/ci.yaml --seeds 0 --workdir /tmp/rlq  # CPU smoke

TRL gets the prompts the recipe's RL prompts come from (`select.prompts` when r1forge trains
on the selected set: TRL has no such stage), the same steps, prompts and samples a step,
temperature, top-p, completion length, loss type, clip range, beta, learning rate and
schedule, Adam betas, gradient clipping, precision and seed; `--trl-set KEY=VALUE` changes
any of TRL's settings on top (recorded under `config.trl_overrides`). Samples drawn are
counted on both sides (r1forge's refills and selection pass included).

`--arm NAME KEY=VALUE...` adds an r1forge arm from the same checkpoint with recipe overrides
of its own (a lever against the recipe's arm, on the same cold start and prompts); each is
evaluated and reported like `r1forge`, under its name.

Resumable: finished stages (an `r1forge.json`, or TRL's `trl.json`) are skipped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("sft", "r1forge", "trl")
# with --trl-equal-samples: TRL again, for as many steps as r1forge may draw samples
EQUAL_ARM = "trl_equal"
# a seed's result keys besides its arms' (an extra arm may not take one)
RESULT_KEYS = ("samples", "selection", "gain_points")
TRL_ARMS = ("trl", EQUAL_ARM)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "r1forge.cli", *args]


def finished(output: Path) -> bool:
    return (output / "r1forge.json").is_file() or (output / "trl.json").is_file()


def quoted(cmd: list[str]) -> str:
    return " ".join("'" + a.replace("'", "'\\''") + "'" for a in cmd)


# -- TRL ------------------------------------------------------------------------------------


def trl_config_kwargs(cfg: Any, output: Path) -> dict[str, Any]:
    """TRL GRPOConfig arguments equal to an r1forge GRPO section's settings."""
    total = cfg.prompts_per_step * cfg.group_size
    micro = min(cfg.micro_batch_size, total)
    constant = cfg.warmup_steps == 0 and cfg.min_lr_ratio == 1.0
    return {
        "output_dir": str(output / "trainer"),
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": total // micro,
        "num_generations": cfg.group_size,
        "max_completion_length": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "loss_type": cfg.loss_type,
        "epsilon": cfg.epsilon,
        "epsilon_high": cfg.epsilon_high if cfg.epsilon_high is not None else cfg.epsilon,
        "beta": cfg.beta,
        "num_iterations": cfg.mu,
        "scale_rewards": cfg.advantage_scale,
        "mask_truncated_completions": cfg.mask_truncated,
        "learning_rate": cfg.lr,
        "lr_scheduler_type": "constant" if constant else "cosine",
        "warmup_steps": cfg.warmup_steps,
        "adam_beta1": cfg.betas[0],
        "adam_beta2": cfg.betas[1],
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "max_steps": cfg.max_steps,
        "bf16": cfg.precision == "bf16",
        "seed": cfg.seed,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_num_workers": 0,
        "use_cpu": not cuda_available(),
    }


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def reward_functions(cfg: Any) -> tuple[list[Any], list[float]]:
    """r1forge's own reward functions as TRL reward functions, with the recipe's weights."""
    import json as _json

    from r1forge.rewards import score_batch

    def make(name: str) -> Any:
        def reward(
            completions: list[Any], answer: list[Any], task: list[str], **kw: Any
        ) -> list[float]:
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            examples = [
                {
                    "answer": a,
                    "task": t,
                    "verifier": v or None,
                    "meta": _json.loads(m) if m else None,
                }
                for a, t, v, m in zip(answer, task, kw["verifier"], kw["meta_json"], strict=True)
            ]
            examples = [{k: v for k, v in e.items() if v is not None} for e in examples]
            return score_batch(name, texts, examples, **cfg.reward_params.get(name, {}))

        reward.__name__ = name
        return reward

    names = list(cfg.rewards)
    return [make(n) for n in names], [cfg.rewards[n] for n in names]


def train_trl(
    recipe_path: Path,
    sets: list[str],
    data: Path,
    prompts: list[str],
    model: Path,
    output: Path,
    overrides: list[str],
) -> None:
    """TRL GRPOTrainer from `model` on the prompt files, with the recipe's grpo_reasoning
    settings (plus `overrides`, KEY=VALUE on TRL's own config); the model to `output`."""
    import yaml
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from r1forge.config import load_recipe
    from r1forge.data.jsonl import read_jsonl
    from r1forge.io import write_json_atomic
    from r1forge.models import load_tokenizer

    cfg = load_recipe(recipe_path, sets).grpo_reasoning
    rows: dict[str, list[Any]] = {
        k: [] for k in ("prompt", "answer", "task", "verifier", "meta_json")
    }
    for name in prompts:
        for record in read_jsonl(data / name, "prompt"):
            rows["prompt"].append(record.messages())
            rows["answer"].append(record.answer or "")
            rows["task"].append(record.task)
            rows["verifier"].append(record.verifier or "")
            rows["meta_json"].append(json.dumps(record.meta) if record.meta else "")
    kwargs = trl_config_kwargs(cfg, output)
    for item in overrides:
        key, _, value = item.partition("=")
        kwargs[key] = yaml.safe_load(value)
    funcs, weights = reward_functions(cfg)
    tokenizer = load_tokenizer(model)
    net = AutoModelForCausalLM.from_pretrained(
        model, dtype="float32" if not kwargs["bf16"] else "bfloat16"
    )
    log_rows: list[dict[str, Any]] = []

    class Keep(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if logs:
                log_rows.append({"step": state.global_step, **logs})

    trainer = GRPOTrainer(
        model=net,
        reward_funcs=funcs,
        args=GRPOConfig(**kwargs, reward_weights=weights),
        train_dataset=Dataset.from_dict(rows),
        processing_class=tokenizer,
        callbacks=[Keep()],
    )
    began = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - began
    trainer.save_model(str(output))
    tokenizer.save_pretrained(str(output))
    with (output / "metrics.jsonl").open("w") as f:
        for row in log_rows:
            f.write(json.dumps(row) + "\n")
    import trl

    write_json_atomic(
        output / "trl.json",
        {
            "trl_version": trl.__version__,
            "config": {k: v for k, v in kwargs.items() if k != "output_dir"},
            "reward_weights": dict(zip(cfg.rewards, weights, strict=True)),
            "prompts": prompts,
            "seconds": seconds,
            "samples_drawn": kwargs["max_steps"] * cfg.prompts_per_step * cfg.group_size,
        },
    )


# -- one seed -------------------------------------------------------------------------------


def seed_settings(seed: int) -> list[str]:
    keys = ("base.seed", "sft_cold_start.seed", "select.seed", "grpo_reasoning.seed")
    return [x for k in keys for x in ("--set", f"{k}={seed}")]


def selection_prompts(recipe: Any, data: Path) -> int:
    """How many prompts the selection pass reads: each of its files' lines, at most `limit`
    of each (no limit: all of them)."""
    counts = [
        sum(1 for line in (data / f).read_text().splitlines() if line.strip())
        for f in recipe.select.prompts
    ]
    limit = recipe.select.limit
    return sum(min(n, limit) if limit else n for n in counts)


def r1forge_sample_bound(recipe: Any, data: Path) -> int:
    """The most samples r1forge's side may draw: every step refilled up to `max_draws`, plus
    the selection pass (k samples of each prompt it reads)."""
    cfg = recipe.grpo_reasoning
    draws = cfg.dynamic_sampling.max_draws if cfg.dynamic_sampling.enabled else 1
    grpo = cfg.max_steps * draws * cfg.prompts_per_step * cfg.group_size
    selection = selection_prompts(recipe, data) * recipe.select.k if uses_selection(recipe) else 0
    return grpo + selection


def equal_sample_steps(recipe: Any, data: Path) -> int:
    """TRL steps that draw at least as many samples as r1forge's side may."""
    per_step = recipe.grpo_reasoning.prompts_per_step * recipe.grpo_reasoning.group_size
    return -(-r1forge_sample_bound(recipe, data) // per_step)


def trl_arms(args: argparse.Namespace, recipe: Any, data: Path) -> dict[str, list[str]]:
    """TRL arms and their GRPOConfig overrides: the same steps, and optionally equal samples."""
    arms = {"trl": list(args.trl_set)}
    if args.trl_equal_samples:
        arms[EQUAL_ARM] = [*args.trl_set, f"max_steps={equal_sample_steps(recipe, data)}"]
    return arms


def r1forge_arms(args: argparse.Namespace) -> dict[str, list[str]]:
    """Extra r1forge arms (`--arm NAME KEY=VALUE...`) and their recipe overrides."""
    arms: dict[str, list[str]] = {}
    for name, *overrides in args.arm:
        taken = {*ARMS, EQUAL_ARM, *RESULT_KEYS, *arms}
        if not name.isidentifier() or name in taken or name.endswith("_run"):
            raise SystemExit(f"--arm {name}: a new identifier is needed (taken: {sorted(taken)})")
        if not overrides or not all("=" in o for o in overrides):
            raise SystemExit(f"--arm {name}: give its recipe overrides as KEY=VALUE")
        arms[name] = overrides
    return arms


def uses_selection(recipe: Any) -> bool:
    return any(p.startswith("../selected/") for p in recipe.grpo_reasoning.prompts)


def seed_script(args: argparse.Namespace, recipe: Any, data: Path, work: Path, seed: int) -> str:
    """The shell script of one seed: base, SFT, then side by side the SFT's evaluation, TRL
    and (after the selection pass, which TRL does not need) r1forge's arms, each arm followed
    by its evaluation; finished steps are skipped."""
    sets = seed_settings(seed)
    common = ["--recipe", str(args.recipe), *sets, *(x for s in args.set for x in ("--set", s))]
    data_dir = work / "data"
    lines = ["set -e", f"ln -sfn {data} {data_dir}"]
    if not finished(work / "base"):
        lines.append(
            quoted(cli("base", *common, "--data", str(data_dir), "--output", str(work / "base")))
        )
    if not finished(work / "sft"):
        lines.append(
            quoted(
                cli(
                    "sft",
                    *common,
                    "--stage",
                    "sft_cold_start",
                    "--data",
                    str(data_dir),
                    "--model",
                    str(work / "base"),
                    "--output",
                    str(work / "sft"),
                )
            )
        )
    selection = None
    if uses_selection(recipe) and not (work / "selected/rl_prompts.jsonl").is_file():
        selection = quoted(
            cli(
                "select",
                *common,
                "--data",
                str(data_dir),
                "--model",
                str(work / "sft"),
                "--output",
                str(work / "selected/rl_prompts.jsonl"),
            )
        )
    eval_files = [str(f) for f in sorted((data / "eval").glob("*.jsonl"))]

    def evaluation(arm: str) -> str | None:
        if (work / f"eval_{arm}/metrics.json").is_file():
            return None
        cmd = cli(
            "evaluate", *common, "--model", str(work / arm), "--output", str(work / f"eval_{arm}")
        )
        return quoted(cmd + [x for f in eval_files for x in ("--data", f)])

    def r1forge_chain(arm: str, overrides: list[str]) -> str | None:
        if finished(work / arm):
            return evaluation(arm)
        resume = ["--resume"] if (work / f"{arm}.run/checkpoints/latest").is_file() else []
        grpo = cli(
            "grpo",
            *common,
            *(x for s in overrides for x in ("--set", s)),
            "--data",
            str(data_dir),
            "--model",
            str(work / "sft"),
            "--output",
            str(work / arm),
            *resume,
        )
        return " && ".join(
            filter(None, [quoted(grpo) + f" > {work}/{arm}.log 2>&1", evaluation(arm)])
        )

    # each chain runs its arm then evaluates it; the chains, and the SFT's evaluation, side by
    # side; r1forge's arms wait for the selection pass, TRL (which reads the whole pool) does not
    ours = [r1forge_chain("r1forge", [])]
    ours += [r1forge_chain(arm, overrides) for arm, overrides in r1forge_arms(args).items()]
    ours = [c for c in ours if c]
    if selection and ours:
        ours = [f"{selection} && ( " + " & ".join(f"( {c} )" for c in ours) + " & wait )"]
    elif selection:
        ours = [selection]
    chains = [evaluation("sft"), *ours]
    trl_prompts = recipe.select.prompts if uses_selection(recipe) else recipe.grpo_reasoning.prompts
    for arm, overrides in trl_arms(args, recipe, data).items():
        if finished(work / arm):
            chains.append(evaluation(arm))
            continue
        trl = [
            sys.executable,
            str(Path(__file__).resolve()),
            "trl",
            "--recipe",
            str(args.recipe),
            "--data",
            str(data_dir),
            "--model",
            str(work / "sft"),
            "--output",
            str(work / arm),
        ]
        trl += [x for s in [*args.set, f"grpo_reasoning.seed={seed}"] for x in ("--set", s)]
        trl += [x for p in trl_prompts for x in ("--prompts", p)]
        trl += [x for s in overrides for x in ("--trl-set", s)]
        chains.append(
            " && ".join(filter(None, [quoted(trl) + f" > {work}/{arm}.log 2>&1", evaluation(arm)]))
        )
    chains = [c for c in chains if c]
    if chains:
        lines.append(" & ".join(f"( {c} )" for c in chains) + " & wait")
    arms = ["sft", "r1forge", *r1forge_arms(args), *trl_arms(args, recipe, data)]
    lines.append(" && ".join(f"test -f {work}/eval_{arm}/metrics.json" for arm in arms))
    return "\n".join(lines)


def per_set(report: dict[str, Any], names: list[str]) -> dict[str, dict[str, float]]:
    """{eval set: {pass@1, greedy_accuracy, format_rate}} from an `r1forge evaluate` report."""
    keys = ("pass@1", "greedy_accuracy", "format_rate")
    if len(names) == 1:
        return {names[0]: {k: report[k] for k in keys}}
    return {name: {k: report[name][k] for k in keys} for name in names}


def r1forge_curve(metrics: Path) -> list[dict[str, Any]]:
    keep = (
        "step",
        "reward",
        "accuracy",
        "format_rate",
        "entropy",
        "zero_std_fraction",
        "dynamic/dropped_fraction",
        "dynamic/draws",
        "mismatch_kl",
        "entropy_coef",
        "grad_norm",
    )
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [{k: r[k] for k in r if k in keep or k.startswith("eval/")} for r in rows]


def trl_curve(metrics: Path) -> list[dict[str, Any]]:
    keep = (
        "step",
        "reward",
        "frac_reward_zero_std",
        "entropy",
        "completions/mean_length",
        "grad_norm",
    )
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [{k: r[k] for k in keep if k in r} for r in rows if "reward" in r]


def trl_run(work: Path, arm: str) -> dict[str, Any]:
    meta = json.loads((work / arm / "trl.json").read_text())
    return {
        "seconds": meta["seconds"],
        "steps": meta["config"]["max_steps"],
        "curve": trl_curve(work / arm / "metrics.jsonl"),
    }


def seed_result(
    work: Path, names: list[str], recipe: Any, extra: list[str] | None = None
) -> dict[str, Any]:
    """One seed's evaluations, run curves, samples drawn and gains over SFT; `extra` names
    the `--arm` arms (r1forge runs beside the recipe's own)."""
    ours = ["r1forge", *(extra or [])]
    trl = ["trl", *([EQUAL_ARM] if (work / f"eval_{EQUAL_ARM}/metrics.json").is_file() else [])]
    arms = ["sft", *ours, *trl]
    result: dict[str, Any] = {}
    for arm in arms:
        report = json.loads((work / f"eval_{arm}/metrics.json").read_text())
        result[arm] = per_set(report, names)
    cfg = recipe.grpo_reasoning
    per_step = cfg.prompts_per_step * cfg.group_size
    drawn: dict[str, int] = {}
    for arm in ours:
        steps = json.loads((work / arm / "r1forge.json").read_text())["metrics"]["steps"]
        curve = r1forge_curve(work / arm / "metrics.jsonl")
        draws = sum(row.get("dynamic/draws", 1.0) for row in curve if "reward" in row)
        result[f"{arm}_run"] = {"steps": steps, "curve": curve}
        drawn[arm] = int(draws * per_step)
    for arm in trl:
        result[f"{arm}_run"] = trl_run(work, arm)
    stats = work / "selected/rl_prompts.stats.json"
    selection = json.loads(stats.read_text()) if stats.is_file() else None
    result["samples"] = {
        **{arm: result[f"{arm}_run"]["steps"] * per_step for arm in trl},
        **drawn,
        "r1forge_selection": selection["prompts"] * recipe.select.k if selection else 0,
    }
    if selection:
        result["selection"] = selection
    result["gain_points"] = {
        name: {
            f"{arm}_{metric}": round(
                100 * (result[arm][name][metric] - result["sft"][name][metric]), 2
            )
            for arm in arms[1:]
            for metric in ("pass@1", "greedy_accuracy")
        }
        for name in names
    }
    return result


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "trl", "deepspeed", "r1forge"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def report_arms(report: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """A seed's arms in report order: SFT, r1forge's (the recipe's, then `--arm`'s), TRL's."""
    extra = report["config"].get("r1forge_arms", {})
    return [arm for arm in ("sft", "r1forge", *extra, *TRL_ARMS) if arm in result]


def print_table(report: dict[str, Any]) -> None:
    names = report["eval_sets"]
    for seed, result in report["seeds"].items():
        arms = report_arms(report, result)
        print(f"seed {seed}")
        heads = "".join(f"{arm:>16}" for arm in arms)
        print(f"  {'eval set':<16}{heads}  gain {' / '.join(arms[1:])} (p@1)")
        for name in names:
            cells = "".join(
                f"{result[arm][name]['pass@1']:.3f}/{result[arm][name]['greedy_accuracy']:.3f}".rjust(
                    16
                )
                for arm in arms
            )
            gains = " / ".join(
                f"{result['gain_points'][name][f'{arm}_pass@1']:+.1f}" for arm in arms[1:]
            )
            print(f"  {name:<16}{cells}  {gains}")


# (r1forge's key, TRL's key, panel title): the training curves drawn side by side
CURVES = (
    ("reward", "reward", "training reward"),
    ("entropy", "entropy", "rollout entropy"),
    ("zero_std_fraction", "frac_reward_zero_std", "share of groups without reward variance"),
)


def samples_curve(report: dict[str, Any], seed: str, arm: str) -> list[tuple[int, dict]]:
    """An arm's logged rows against the samples it had drawn by then: r1forge's count its
    refills and start after its selection pass; TRL draws one batch a step."""
    cfg = report["config"]["grpo_reasoning"]
    per_step = cfg["prompts_per_step"] * cfg["group_size"]
    result = report["seeds"][seed]
    rows = [row for row in result[f"{arm}_run"]["curve"] if "reward" in row]
    if arm in TRL_ARMS:
        return [(row["step"] * per_step, row) for row in rows]
    drawn, points = result["samples"].get("r1forge_selection", 0), []
    for row in rows:
        drawn += int(row.get("dynamic/draws", 1.0) * per_step)
        points.append((drawn, row))
    return points


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """Each arm's training curves against samples drawn (one column a seed), labelled with
    its held-out in-distribution pass@1: where an equal-budget comparison is read off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from r1forge.io import atomic_file

    seeds = sorted(report["seeds"], key=int)
    name = report["in_distribution"]
    fig, axes = plt.subplots(
        len(CURVES), len(seeds), figsize=(6.5 * len(seeds), 2.8 * len(CURVES)), squeeze=False
    )
    for column, seed in enumerate(seeds):
        result = report["seeds"][seed]
        for arm in (a for a in report_arms(report, result) if f"{a}_run" in result):
            points = samples_curve(report, seed, arm)
            label = f"{arm} (held-out pass@1 {result[arm][name]['pass@1']:.3f})"
            for row, (ours, theirs, title) in enumerate(CURVES):
                key = theirs if arm in TRL_ARMS else ours
                xy = [(x, r[key]) for x, r in points if r.get(key) is not None]
                ax = axes[row, column]
                if xy:
                    ax.plot(*zip(*xy, strict=True), linewidth=1, label=label)
                ax.set_title(f"seed {seed}: {title}", fontsize=9)
                ax.grid(alpha=0.3)
        axes[0, column].legend(fontsize=7)
        axes[-1, column].set_xlabel("samples drawn (r1forge: selection pass and refills included)")
    sft = ", ".join(
        f"seed {seed} {report['seeds'][seed]['sft'][name]['pass@1']:.3f}" for seed in seeds
    )
    fig.suptitle(f"{report['recipe']} on {report['gpu']}; cold-start SFT pass@1: {sft}")
    fig.tight_layout()
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)
    return path


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from runs of the same recipe and settings on disjoint seeds (one seed per
    device call fits its time limit); each run's date, GPU, seeds and duration under `runs`."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from recipe_quality import merged_seeds

    seeds = merged_seeds(reports, ("recipe_text", "config", "eval_sets"))
    runs = [
        run
        for r in reports
        for run in r.get("runs")
        or [{k: r[k] for k in ("date", "gpu", "seconds")} | {"seeds": sorted(r["seeds"], key=int)}]
    ]
    return {
        **reports[0],
        "seeds": seeds,
        "runs": runs,
        "date": max(r["date"] for r in reports),
        "seconds": sum(r["seconds"] for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    trl = sub.add_parser("trl", help="(internal) one TRL run")
    trl.add_argument("--recipe", type=Path, required=True)
    trl.add_argument("--data", type=Path, required=True)
    trl.add_argument("--model", type=Path, required=True)
    trl.add_argument("--output", type=Path, required=True)
    trl.add_argument("--prompts", action="append", default=[])
    trl.add_argument("--set", action="append", default=[])
    trl.add_argument("--trl-set", action="append", default=[])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes/quality-h200.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench/rl_quality")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--set", action="append", default=[], help="recipe override (both sides)")
    parser.add_argument("--trl-set", action="append", default=[], help="TRL GRPOConfig KEY=VALUE")
    parser.add_argument(
        "--trl-equal-samples",
        action="store_true",
        help=f"also run TRL ({EQUAL_ARM}) for as many steps as give it at least the samples "
        "r1forge may draw (refills and selection included)",
    )
    parser.add_argument(
        "--arm",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME KEY=VALUE",
        help="an extra r1forge arm from the same checkpoint: its name, then recipe overrides "
        "of its own (repeatable)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="draw each arm's training curves against samples drawn into this PNG",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="REPORT",
        help="combine these reports (same recipe and settings, disjoint seeds) into --out; runs nothing",
    )
    args = parser.parse_args()
    if args.merge:
        from r1forge.io import write_json_atomic

        merged = merge_reports([json.loads(path.read_text()) for path in args.merge])
        print_table(merged)
        if args.out:
            write_json_atomic(args.out, merged)
            print(f"written: {args.out}")
        if args.plot:
            print(f"written: {plot_report(merged, args.plot)}")
        return
    if args.command == "trl":
        train_trl(
            args.recipe, args.set, args.data, args.prompts, args.model, args.output, args.trl_set
        )
        return

    from r1forge.config import load_recipe
    from r1forge.io import write_json_atomic

    recipe = load_recipe(args.recipe, args.set)
    extra = r1forge_arms(args)
    for overrides in extra.values():
        load_recipe(args.recipe, [*args.set, *overrides])  # a bad override fails here, not later
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / "data"
    began = time.perf_counter()
    if not (data / "report.json").is_file():
        subprocess.run(
            cli(
                "data",
                "--recipe",
                str(args.recipe),
                *(x for s in args.set for x in ("--set", s)),
                "--output",
                str(data),
            ),
            check=True,
        )
    names = sorted(f.stem for f in (data / "eval").glob("*.jsonl"))
    procs = {}
    for seed in args.seeds:
        work = args.workdir / f"seed{seed}"
        work.mkdir(parents=True, exist_ok=True)
        log = (work / "log.txt").open("a")
        script = seed_script(args, recipe, data, work, seed)
        procs[seed] = (subprocess.Popen(["bash", "-c", script], stdout=log, stderr=log), log)
    for seed, (proc, log) in procs.items():
        if proc.wait() != 0:
            log.close()
            tail = (args.workdir / f"seed{seed}" / "log.txt").read_text()[-4000:]
            raise SystemExit(f"seed {seed} failed:\n{tail}")
        log.close()
    in_distribution = sorted(recipe.data.tasks)[0]
    report = {
        "recipe": str(
            args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe
        ),
        "recipe_text": args.recipe.read_text(),
        "eval_sets": names,
        "in_distribution": in_distribution,
        "held_out_sets": sorted(recipe.data.held_out),
        "seeds": {
            str(seed): seed_result(args.workdir / f"seed{seed}", names, recipe, list(extra))
            for seed in args.seeds
        },
        "config": {
            "overrides": args.set,
            "trl_overrides": args.trl_set,
            **({"r1forge_arms": extra} if extra else {}),
            **(
                {"trl_equal_samples_steps": equal_sample_steps(recipe, data)}
                if args.trl_equal_samples
                else {}
            ),
            "grpo_reasoning": recipe.grpo_reasoning.model_dump(mode="json"),
            "select": recipe.select.model_dump(mode="json") if uses_selection(recipe) else None,
            "evaluate": recipe.evaluate.model_dump(mode="json"),
        },
        "versions": versions(),
        "gpu": gpu_name(),
        "date": datetime.date.today().isoformat(),
        "seconds": time.perf_counter() - began,
    }
    print_table(report)
    if args.out:
        write_json_atomic(args.out, report)
        print(f"written: {args.out}")
    if args.plot:
        print(f"written: {plot_report(report, args.plot)}")


if __name__ == "__main__":
    main()

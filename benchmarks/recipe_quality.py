"""Recipe quality: does GRPO raise held-out pass@1 over the cold-start SFT model?

Runs the recipe's first stages with the `r1forge` CLI, once per seed (seeds run side by
side as separate processes): data (shared) -> base (pre-training from scratch) -> cold-start
SFT -> GRPO, and reads each GRPO run's held-out pass@1 before and after (greedy, and one
sample at R1's temperature 0.6 / top-p 0.95) on eval sets from a disjoint problem space.

    python benchmarks/recipe_quality.py --recipe recipes/quality-h200.yaml --seeds 0 1 \\
        --out benchmarks/results/recipe_quality.json
    python benchmarks/recipe_quality.py --recipe recipes/ci.yaml --seeds 0   # CPU smoke run

Resumable: run again with the same `--workdir` and finished stages are skipped, and a GRPO
run cut short (e.g. by a time limit) continues from its last checkpoint (`--resume`).

Seeds run in separate invocations (a device call fits two) are combined into one report,
summarised over all of them:

    python benchmarks/recipe_quality.py --merge seeds01.json seeds23.json --out all.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from r1forge.io import write_json_atomic


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "r1forge.cli", *args]


def finished(output: Path) -> bool:
    """A stage's output folder is only complete once its r1forge.json is there."""
    return (output / "r1forge.json").is_file()


def seed_chain(recipe: Path, data: Path, work: Path, seed: int) -> list[list[str]]:
    """The commands of one seed still to run: base, cold-start SFT, (select), GRPO, seeded
    with `seed`.

    Stages already finished in `work` are skipped; GRPO resumes from its checkpoints. The
    seed reads the shared data through its own `work/data` link, so a GRPO section that
    trains on `../selected/…` finds the seed's own selection.
    """
    from r1forge.config import load_recipe

    link = work / "data"
    if not link.exists():
        link.symlink_to(data.resolve(), target_is_directory=True)
    keys = ("base", "sft_cold_start", "select", "grpo_reasoning")
    common = ["--recipe", str(recipe), *(x for k in keys for x in ("--set", f"{k}.seed={seed}"))]
    selects = any(p.startswith("../selected/") for p in load_recipe(recipe).grpo_reasoning.prompts)
    resume = ["--resume"] if any((work / "grpo.run" / "checkpoints").glob("*")) else []
    chain = [
        (work / "base", cli("base", *common, "--data", str(link), "--output", str(work / "base"))),
        (
            work / "sft",
            cli(
                "sft",
                *common,
                "--stage",
                "sft_cold_start",
                "--data",
                str(link),
                "--model",
                str(work / "base"),
                "--output",
                str(work / "sft"),
            ),
        ),
    ]
    if selects and not (work / "selected/rl_prompts.jsonl").is_file():
        out = work / "selected/rl_prompts.jsonl"
        chain.append(
            (
                None,
                cli(
                    "select",
                    *common,
                    "--data",
                    str(link),
                    "--model",
                    str(work / "sft"),
                    "--output",
                    str(out),
                ),
            )
        )
    chain.append(
        (
            work / "grpo",
            cli(
                "grpo",
                *common,
                "--data",
                str(link),
                "--model",
                str(work / "sft"),
                "--output",
                str(work / "grpo"),
                *resume,
            ),
        )
    )
    return [cmd for output, cmd in chain if output is None or not finished(output)]


def run_seeds(recipe: Path, data: Path, workdir: Path, seeds: list[int]) -> dict[int, float]:
    """Each seed's chain as one background shell; returns seconds per seed."""
    procs = {}
    began = time.perf_counter()
    for seed in seeds:
        work = workdir / f"seed{seed}"
        work.mkdir(parents=True, exist_ok=True)
        script = (
            " && ".join(
                " ".join(f"'{a}'" for a in cmd) for cmd in seed_chain(recipe, data, work, seed)
            )
            or "true"
        )
        log = (work / "log.txt").open("a")
        procs[seed] = (subprocess.Popen(["bash", "-c", script], stdout=log, stderr=log), log)
    seconds = {}
    for seed, (proc, log) in procs.items():
        if proc.wait() != 0:
            tail = (workdir / f"seed{seed}" / "log.txt").read_text()[-4000:]
            raise SystemExit(f"seed {seed} failed:\n{tail}")
        log.close()
        seconds[seed] = time.perf_counter() - began
    return seconds


def eval_curve(metrics: Path) -> list[dict[str, float]]:
    """Held-out pass@1 at every evaluation of a GRPO run, from its metrics.jsonl."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [
        {k: v for k, v in row.items() if k == "step" or k.startswith("eval/")}
        for row in rows
        if any(k.startswith("eval/") for k in row)
    ]


def seed_result(work: Path) -> dict[str, Any]:
    grpo = json.loads((work / "grpo" / "r1forge.json").read_text())["metrics"]
    base = json.loads((work / "base" / "r1forge.json").read_text())["metrics"]
    before, after = grpo["eval_before"], grpo["eval_after"]
    result: dict[str, Any] = {
        "base": {
            k: v for k, v in base.items() if k.startswith("probe") or k in ("parameters", "seconds")
        },
        "grpo_steps": grpo["steps"],
        "eval": {},
        "eval_curve": eval_curve(work / "grpo" / "metrics.jsonl"),
    }
    for key in sorted(before):
        name = key.removeprefix("eval/")
        result["eval"][name] = {
            "sft": before[key],
            "grpo": after[key],
            "gain_points": 100 * (after[key] - before[key]),
        }
    return result


def summarize(per_seed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean pass@1 before and after, and the smallest, mean and per-seed gain, per eval mode."""
    names = sorted(next(iter(per_seed.values()))["eval"])
    return {
        name: {
            "sft_mean": statistics.mean(s["eval"][name]["sft"] for s in per_seed.values()),
            "grpo_mean": statistics.mean(s["eval"][name]["grpo"] for s in per_seed.values()),
            "gain_points_min": min(s["eval"][name]["gain_points"] for s in per_seed.values()),
            "gain_points_mean": statistics.mean(
                s["eval"][name]["gain_points"] for s in per_seed.values()
            ),
            "gain_points_by_seed": {
                seed: s["eval"][name]["gain_points"] for seed, s in per_seed.items()
            },
        }
        for name in names
    }


def print_table(per_seed: dict[str, dict[str, Any]]) -> None:
    print(f"{'eval set / mode':28} {'seed':>4} {'SFT':>7} {'GRPO':>7} {'gain':>7}")
    for name in sorted(next(iter(per_seed.values()))["eval"]):
        for seed, s in per_seed.items():
            e = s["eval"][name]
            print(f"{name:28} {seed:>4} {e['sft']:7.1%} {e['grpo']:7.1%} {e['gain_points']:+7.1f}")


def merged_seeds(reports: list[dict[str, Any]], same: tuple[str, ...]) -> dict[str, Any]:
    """The per-seed results of several reports, refusing what would mix results: reports that
    differ in any key of `same` (the recipe, the settings) or a seed in two reports.
    Shared by every benchmark whose report has `seeds`."""
    for key in same:
        if any(r[key] != reports[0][key] for r in reports):
            what = "different recipes" if key == "recipe_text" else f"different {key}"
            raise SystemExit(f"--merge: the reports were made with {what}")
    per_seed: dict[str, Any] = {}
    for report in reports:
        for seed, result in report["seeds"].items():
            if seed in per_seed:
                raise SystemExit(f"--merge: seed {seed} is in more than one report")
            per_seed[seed] = result
    return per_seed


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several runs of the same recipe on disjoint seeds.

    Each run's date, GPU, seeds and duration are kept under `runs`; the summary is over all
    seeds. Different recipes or a seed in two runs are refused: that would mix results.
    """
    per_seed = merged_seeds(reports, ("recipe_text",))
    runs = [run for r in reports for run in r.get("runs", [_run_of(r)])]
    return {
        **{k: reports[0][k] for k in ("benchmark", "recipe", "recipe_text")},
        "date": max(r["date"] for r in reports),
        "gpu": reports[0]["gpu"],
        "runs": runs,
        "seeds": per_seed,
        "summary": summarize(per_seed),
        "total_seconds": round(sum(r["total_seconds"] for r in reports), 1),
    }


def _run_of(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("date", "gpu", "total_seconds")
    return {**{k: report[k] for k in keys}, "seeds": sorted(report["seeds"], key=int)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=Path("recipes/quality-h200.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/r1forge-quality"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="REPORT",
        help="combine these reports (same recipe, disjoint seeds) into --out; runs nothing",
    )
    args = parser.parse_args()
    if args.merge:
        merged = merge_reports([json.loads(path.read_text()) for path in args.merge])
        print_table(merged["seeds"])
        if args.out:
            write_json_atomic(args.out, merged)
        return
    data = args.workdir / "data"
    began = time.perf_counter()
    if not (data / "rl_prompts.jsonl").is_file():
        subprocess.run(
            cli("data", "--recipe", str(args.recipe), "--output", str(data)),
            check=True,
            capture_output=True,
        )
    seconds = run_seeds(args.recipe, data, args.workdir, args.seeds)
    per_seed = {}
    for seed in args.seeds:
        per_seed[str(seed)] = seed_result(args.workdir / f"seed{seed}")
        per_seed[str(seed)]["seconds"] = round(seconds[seed], 1)
    import torch

    report = {
        "benchmark": "recipe_quality",
        "date": time.strftime("%Y-%m-%d"),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "recipe": str(args.recipe),
        "recipe_text": args.recipe.read_text(),
        "seeds": per_seed,
        "summary": summarize(per_seed),
        "total_seconds": round(time.perf_counter() - began, 1),
    }
    print_table(per_seed)
    if args.out:
        write_json_atomic(args.out, report)


if __name__ == "__main__":
    main()

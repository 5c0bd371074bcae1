"""Multi-GPU runs: `r1forge sft` and `r1forge grpo` with DeepSpeed ZeRO-3 on 1, 2 (, 4) GPUs.

Each run is the real CLI under the DeepSpeed launcher (gloo ranks with `--tiny` on CPU), on
a Qwen2.5-1.5B-shaped model (hidden 1536, 28 layers, 12 heads, 2 KV heads, intermediate
8960, vocab 32000, tied embeddings; random init, bf16) and the recipe's arithmetic data:

- SFT: packed 4 x 4096-token rows per micro-batch and GPU, the same global batch on every
  GPU count (gradient accumulation makes up the rest); tokens/s is the median of the steps
  after the warm-up ones.
- GRPO: 16 prompts x 8 samples a step, up to 256 new tokens (a random-init model almost
  never stops early), the static rollout engine, DAPO loss; steps/s from the median step
  time. A random model earns no rule reward, so the benchmark registers one through
  R1FORGE_PLUGINS that varies within a group (the share of even token ids), so updates
  happen and the weights move.

Checks, all in the JSON: every run's rank agreement (each rank's step and whole-weight
checksums, compared inside the run, which fails when they differ); the N-GPU loss (SFT)
and reward (GRPO) against the 1-GPU run step by step; kill-and-resume: a run SIGKILLed on
every rank after step k, then `--resume`d, against the uninterrupted run.
Scaling efficiency = rate on N GPUs / (N x rate on 1 GPU).

    python benchmarks/multi_gpu_scaling.py --gpus 1 2 --out benchmarks/results/multi_gpu_scaling.json
    python benchmarks/multi_gpu_scaling.py --parts grpo --gpus 1 2 --out ...   # one part; merged
    python benchmarks/multi_gpu_scaling.py --tiny   # CPU smoke run: tiny model, 1 and 2 ranks
    python benchmarks/multi_gpu_scaling.py --parts grpo_async --out ...   # needs 2 GPUs

`grpo_async` (issue 21) runs the GRPO part's model and config synchronously on 2 GPUs with
ZeRO-3, and asynchronously on 1 rollout + 1 train GPU at staleness 1; `speedup_vs_sync` and
each run's held-out pass@1 are in its block.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from r1forge.rewards import register

sys.path.insert(0, str(Path(__file__).parent))
from sft_throughput import QWEN15
from sft_throughput import TINY as SFT_TINY

ROOT = Path(__file__).resolve().parents[1]
REWARD = "bench_even_token_share"
TINY = {**SFT_TINY, "vocab_size": 1024}
FILLER = re.compile(r"<t(\d+)>")


@register(REWARD)
def even_token_share(completions: list[str], *_: Any, **__: Any) -> list[float]:
    """Share of the filler tokens `<tN>` with an even N: varies within a group of samples."""
    out = []
    for text in completions:
        ids = [int(n) for n in FILLER.findall(text)]
        out.append(sum(n % 2 == 0 for n in ids) / max(1, len(ids)))
    return out


def sizes(tiny: bool) -> dict[str, Any]:
    if tiny:
        return dict(
            shape=TINY,
            seq=256,
            rows=2,
            sft_steps=4,
            sft_kill=2,
            sft_warmup=1,
            grpo_steps=3,
            grpo_kill=2,
            prompts=4,
            group=4,
            new_tokens=16,
            cold_start=300,
        )
    return dict(
        shape=QWEN15,
        seq=4096,
        rows=4,
        sft_steps=8,
        sft_kill=4,
        sft_warmup=2,
        grpo_steps=6,
        grpo_kill=3,
        prompts=16,
        group=8,
        new_tokens=256,
        cold_start=3000,
    )


def write_recipe(work: Path, size: dict[str, Any]) -> Path:
    import torch
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes/ci.yaml").read_text())
    recipe["name"] = "multi-gpu-scaling"
    recipe["data"].update(cold_start_size=size["cold_start"], rl_prompts_size=256, eval_size=8)
    recipe["data"]["tasks"] = {"arithmetic": {"difficulties": [1, 2, 3]}}
    recipe["sft_cold_start"] = dict(
        seed=0,
        max_steps=size["sft_steps"],
        micro_batch_size=size["rows"],
        max_seq_len=size["seq"],
        packing="packed",
        lr=1e-4,
        warmup_steps=1,
        eval_fraction=0.0,
        eval_every=1000,
        save_every=1000,
        keep_checkpoints=1,
        log_every=1,
        zero_stage=3,
        attn_implementation="varlen" if torch.cuda.is_available() else "sdpa",
        tracking={"wandb": False},
    )
    recipe["grpo_reasoning"] = dict(
        seed=0,
        max_steps=size["grpo_steps"],
        prompts_per_step=size["prompts"],
        group_size=size["group"],
        max_new_tokens=size["new_tokens"],
        temperature=1.0,
        micro_batch_size=size["prompts"] * size["group"] // 2,
        rewards={REWARD: 1.0},
        loss_type="dapo",
        lr=1e-4,
        rollout_engine="static",
        eval_every=1000,
        eval_size=4,
        save_every=1000,
        keep_checkpoints=1,
        sample_table_every=1000,
        zero_stage=3,
        tracking={"wandb": False},
    )
    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def build_model(work: Path, recipe_path: Path, shape: dict[str, int]) -> Path:
    """Data, a tokenizer whose every id decodes (BPE on the data, then `<tN>` fillers up to
    the model's vocabulary), and the random-init Qwen2 model, saved as a model folder."""
    import torch
    from tokenizers import AddedToken
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1forge.config import load_recipe
    from r1forge.data.jsonl import read_jsonl
    from r1forge.models import train_tokenizer
    from r1forge.stages import data

    data.build_datasets(load_recipe(recipe_path), work / "data")
    texts = [
        m.content for r in read_jsonl(work / "data/cold_start.jsonl", "sft") for m in r.messages
    ]
    tokenizer = train_tokenizer(texts, 384)
    fillers = range(len(tokenizer), shape["vocab_size"])
    tokenizer.add_tokens([AddedToken(f"<t{i}>", normalized=False) for i in fillers])
    assert len(tokenizer) == shape["vocab_size"]
    torch.manual_seed(0)
    config = Qwen2Config(
        **shape,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        use_cache=False,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    out = work / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def launcher(processes: int) -> list[str]:
    """The DeepSpeed launcher on this host: one process a GPU (or, on CPU, a gloo rank)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    return [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        str(processes),
        "--master_port",
        port,
        "--no_local_rank",
        "--module",
        "r1forge.cli",
    ]


class Runner:
    """Runs `r1forge sft|grpo` on N processes and reads back what they wrote."""

    def __init__(self, work: Path, recipe: Path, model: Path):
        self.work, self.recipe, self.model = work, recipe, model
        here = str(Path(__file__).resolve().parent)
        self.env = {
            **os.environ,
            "R1FORGE_PLUGINS": Path(__file__).stem,
            "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
            "WANDB_MODE": "offline",
        }

    def run(
        self,
        command: str,
        name: str,
        processes: int,
        *sets: str,
        kill_after: int = 0,
        resume: bool = False,
    ) -> dict[str, Any]:
        stage = "sft_cold_start" if command == "sft" else "grpo_reasoning"
        out = self.work / name
        # 0 processes: one plain process (an asynchronous trainer starts its own worker)
        start = launcher(processes) if processes else [sys.executable, "-m", "r1forge.cli"]
        args = [
            *start,
            command,
            "--recipe",
            str(self.recipe),
            "--data",
            str(self.work / "data"),
            "--model",
            str(self.model),
            "--output",
            str(out),
            *(["--resume"] if resume else []),
        ]
        for item in sets:
            args += ["--set", f"{stage}.{item}"]
        if not resume:  # a fresh run: nothing left from an earlier one
            shutil.rmtree(out, ignore_errors=True)
        env = {**self.env, "R1FORGE_KILL_AFTER_STEP": str(kill_after)} if kill_after else self.env
        began = time.perf_counter()
        log = self.work / f"{name}{'-resume' if resume else ''}.log"
        with log.open("w") as sink:
            proc = subprocess.run(
                args, stdout=sink, stderr=subprocess.STDOUT, env=env, timeout=3000
            )
        seconds = time.perf_counter() - began
        print(
            f"  {name}{' --resume' if resume else ''} on {processes}: exit {proc.returncode}, {seconds:.0f} s",
            flush=True,
        )
        if kill_after:
            if proc.returncode == 0 or out.exists():
                raise RuntimeError(f"{name} was to die after step {kill_after}; see {log}")
            latest = (out.with_suffix(".run") / "checkpoints/latest").read_text().strip()
            return {"exit": proc.returncode, "checkpoint": latest, "seconds": seconds}
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}):\n{log.read_text()[-4000:]}")
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        meta = json.loads((out / "r1forge.json").read_text())["metrics"]
        shutil.rmtree(out.with_suffix(".run"), ignore_errors=True)  # checkpoints: tens of GB
        return {"rows": rows, "summary": meta, "seconds": seconds, "folder": str(out)}


def weight_diff(a: str, b: str) -> dict[str, float]:
    """Max |a - b| over all weights, and the same relative to max |a|."""
    from safetensors import safe_open

    worst, scale = 0.0, 0.0
    with (
        safe_open(Path(a) / "model.safetensors", "pt") as fa,
        safe_open(Path(b) / "model.safetensors", "pt") as fb,
    ):
        for key in list(fa.keys()):  # safe_open is not iterable
            x, y = fa.get_tensor(key).float(), fb.get_tensor(key).float()
            worst = max(worst, (x - y).abs().max().item())
            scale = max(scale, x.abs().max().item())
    return {"max_abs": worst, "max_abs_relative": worst / max(scale, 1e-30)}


def series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in rows if r.get("step", 0) > 0 and key in r]


def max_gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def add_scaling(runs: dict[str, Any], rate: str, curve: str) -> None:
    """Speedup and efficiency of each run's `rate` against the fewest GPUs, and the largest
    step-by-step gap of its `curve` (loss, reward) from that run's."""
    base = runs[min(runs, key=int)]
    for r in runs.values():
        r["speedup"] = r[rate] / base[rate]
        r["scaling_efficiency"] = r["speedup"] * base["gpus"] / r["gpus"]
        r[f"max_{curve}_diff_vs_1"] = max_gap(r[curve], base[curve])


def kill_and_resume(
    runner: Runner,
    command: str,
    gpus: int,
    k: int,
    sets: tuple[str, ...],
    straight: dict[str, Any],
    curve: str,
) -> dict[str, Any]:
    """SIGKILL every rank right after step k (a checkpoint was saved there), `--resume`, and
    compare with the uninterrupted run `straight`: its `curve` (loss, reward) and weights."""
    name = f"{command}-resumed"
    killed = runner.run(command, name, gpus, *sets, f"save_every={k}", kill_after=k)
    resumed = runner.run(command, name, gpus, *sets, f"save_every={k}", resume=True)
    values = series(resumed["rows"], curve)
    return {
        "gpus": gpus,
        "killed_after_step": k,
        "killed": killed,
        "resumed_from_step": resumed["summary"]["resumed_from_step"],
        "rank_check": resumed["summary"]["rank_check"],
        # steps 1..k ran fresh, as the uninterrupted run did: their gap is run-to-run noise
        f"{curve}_before_kill": values[:k],
        f"uninterrupted_{curve}_before_kill": straight[curve][:k],
        f"{curve}_after_resume": values[k:],
        f"uninterrupted_{curve}": straight[curve][k:],
        f"max_{curve}_diff": max_gap(values[k:], straight[curve][k:]),
        "weights_vs_uninterrupted": weight_diff(resumed["folder"], straight["folder"]),
    }


def sft_part(runner: Runner, gpus: list[int], size: dict[str, Any]) -> dict[str, Any]:
    most = max(gpus)
    runs: dict[str, Any] = {}
    for n in gpus:
        run = runner.run("sft", f"sft-{n}", n, f"gradient_accumulation={most // n}")
        timed = series(run["rows"], "tokens_per_s")[size["sft_warmup"] :]
        runs[str(n)] = {
            "gpus": n,
            "tokens_per_s": statistics.median(timed),
            "step_tokens_per_s": timed,
            "loss": series(run["rows"], "loss"),
            "rank_check": run["summary"]["rank_check"],
            "seconds": run["seconds"],
            "folder": run["folder"],
        }
    add_scaling(runs, "tokens_per_s", "loss")
    sets = ("gradient_accumulation=1",)
    resume = kill_and_resume(runner, "sft", most, size["sft_kill"], sets, runs[str(most)], "loss")
    return {"runs": runs, "kill_and_resume": resume}


def grpo_part(runner: Runner, gpus: list[int], size: dict[str, Any]) -> dict[str, Any]:
    most = max(gpus)
    runs: dict[str, Any] = {}
    for n in gpus:
        run = runner.run("grpo", f"grpo-{n}", n)
        seconds = series(run["rows"], "step_seconds")[1:]  # step 1 compiles and captures
        runs[str(n)] = {
            "gpus": n,
            "steps_per_s": 1 / statistics.median(seconds),
            "step_seconds": seconds,
            "reward": series(run["rows"], "reward"),
            "completion_length": series(run["rows"], "completion_length"),
            "rollout_tokens_per_s_per_rank": series(run["rows"], "rollout_tokens_per_s"),
            "rank_check": run["summary"]["rank_check"],
            "seconds": run["seconds"],
            "folder": run["folder"],
        }
    add_scaling(runs, "steps_per_s", "reward")
    for r in runs.values():
        r["weights_vs_1"] = weight_diff(r["folder"], runs[str(min(gpus))]["folder"])
    straight = runs[str(most)]
    resume = kill_and_resume(runner, "grpo", most, size["grpo_kill"], (), straight, "reward")
    resume["weights_moved"] = weight_diff(straight["folder"], str(runner.model))
    return {"runs": runs, "kill_and_resume": resume}


def grpo_async_part(runner: Runner, gpus: list[int], size: dict[str, Any]) -> dict[str, Any]:
    """Issue 21: the GRPO part's model and config, synchronous ZeRO-3 on 2 GPUs against one
    rollout GPU and one train GPU at staleness 1, the same steps and samples. The trainer is
    one plain process with the whole policy (ZeRO stage 0); it starts its rollout worker on
    the next GPU itself. Each run's held-out pass@1 is GRPO's own evaluation after the last
    step (a random-init model with a synthetic reward: the recipe-quality check is
    `rl_quality.py`'s task)."""

    def measured(run: dict[str, Any]) -> dict[str, Any]:
        rows = run["rows"]
        seconds = series(rows, "step_seconds")[1:]  # step 1 compiles and captures
        last_eval = [r for r in rows if any(k.startswith("eval/") for k in r)][-1]
        return {
            "steps_per_s": 1 / statistics.median(seconds),
            "step_seconds": seconds,
            "samples": size["grpo_steps"] * size["prompts"] * size["group"],
            "reward": series(rows, "reward"),
            "staleness": series(rows, "staleness"),
            "mismatch_kl": series(rows, "mismatch_kl"),
            "heldout_pass_at_1": {
                k[5:-8]: v for k, v in last_eval.items() if k.endswith("/sampled")
            },
            "seconds": run["seconds"],
        }

    sync = measured(runner.run("grpo", "grpo-sync-2", 2))
    placement = "placement={rollout_gpus: 1, train_gpus: 1, max_staleness: 1}"
    asynchronous = measured(runner.run("grpo", "grpo-async", 0, "zero_stage=0", placement))
    return {
        "sync": {"gpus": 2, "zero_stage": 3, **sync},
        "async": {
            "gpus": 2,
            "rollout_gpus": 1,
            "train_gpus": 1,
            "max_staleness": 1,
            **asynchronous,
        },
        "speedup_vs_sync": asynchronous["steps_per_s"] / sync["steps_per_s"],
    }


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    out: dict[str, Any] = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "deepspeed"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        out["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gpus", type=int, nargs="+", default=[1, 2], help="GPU (process) counts to run"
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=["sft", "grpo", "grpo_async"],
        default=["sft", "grpo"],
        help="grpo_async: synchronous 2-GPU ZeRO-3 against 1 rollout + 1 train GPU (2 GPUs)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny model, CPU ranks over gloo (smoke run)"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default: a temp dir)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON results; parts already there are kept"
    )
    args = parser.parse_args()
    size = sizes(args.tiny)
    work = args.work or Path(tempfile.mkdtemp(prefix="r1forge-multi-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    recipe = write_recipe(work, size)
    began = time.perf_counter()
    model = build_model(work, recipe, size["shape"])
    print(f"model and data ready in {time.perf_counter() - began:.0f} s ({work})", flush=True)
    runner = Runner(work, recipe, model)
    report: dict[str, Any] = (
        json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    )
    report.update(
        model=("tiny " if args.tiny else "Qwen2.5-1.5B-shaped ") + json.dumps(size["shape"]),
        config={k: v for k, v in size.items() if k != "shape"},
        zero_stage=3,
        launcher="deepspeed.launcher.runner (the `deepspeed` command), one process a GPU",
        environment=environment(),
    )
    parts = {"sft": sft_part, "grpo": grpo_part, "grpo_async": grpo_async_part}
    units = {"sft": "tokens_per_s", "grpo": "steps_per_s"}
    for part in args.parts:
        print(f"{part}:", flush=True)
        report[part] = parts[part](runner, sorted(args.gpus), size)
        report[part]["measured"] = time.strftime("%Y-%m-%d")
        if part == "grpo_async":
            block = report[part]
            for mode in ("sync", "async"):
                print(
                    f"  {mode}: {block[mode]['steps_per_s']:.3f} steps/s, held-out pass@1 {block[mode]['heldout_pass_at_1']}"
                )
            print(f"  speedup_vs_sync {block['speedup_vs_sync']:.2f}x")
            continue
        for n, r in report[part]["runs"].items():
            rate = r[units[part]]
            unit = units[part].replace("_per_s", "/s")
            print(
                f"  {n} GPU(s): {rate:,.3f} {unit}, speedup {r['speedup']:.2f}x, efficiency {r['scaling_efficiency']:.1%}"
            )
        resume = report[part]["kill_and_resume"]
        print(
            f"  kill after step {resume['killed_after_step']} + resume vs uninterrupted: weights {resume['weights_vs_uninterrupted']}"
        )
    report["scaling"] = {  # the headline figures, by GPU count
        part: {
            "rate": units[part],
            "by_gpus": {n: r[units[part]] for n, r in report[part]["runs"].items()},
            "scaling_efficiency": {
                n: r["scaling_efficiency"] for n, r in report[part]["runs"].items()
            },
        }
        for part in units
        if part in report
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(args.out)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

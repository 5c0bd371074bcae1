"""GRPO step throughput: r1forge's loop and rollout engine against TRL's GRPOTrainer, one run.

Same model (Qwen2.5-0.5B shape, random init, bf16), same batch (8 prompts x 8 samples,
64-token prompts, 256 completion tokens forced to full length), same loss (DAPO token-level,
clip 0.2, beta 0: no reference model), one GPU, neither side using vLLM. TRL samples with
transformers' `generate`; r1forge with its static-cache engine (CUDA-graph decode steps).

A second part times generation alone on that batch: transformers' `generate` with a static
cache (which it compiles) against r1forge's engine, as decode milliseconds per step, next
to the memory-bandwidth floor of a decode step (weights + KV cache read once, at the copy
bandwidth measured in the same run).

With `--lengths`, completions are not forced to full length but to lengths drawn from a
long-tailed distribution between 64 tokens and `--new-tokens` (the same lengths on both
sides: r1forge's engine stops each row at its length, TRL's `generate` is made to emit EOS
there), which is where a static batch that waits for its longest row loses.

    python benchmarks/grpo_step.py --out benchmarks/results/grpo_step.json
    python benchmarks/grpo_step.py --tiny      # a CPU smoke run of every part
    python benchmarks/grpo_step.py --only r1forge,trl --lengths --new-tokens 1024
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from sft_throughput import (
    QWEN05,
    TINY,
    build_model,
    count_params,
    placeholder_tokenizer,
    versions,
)

REWARD = "_bench_even_tokens"


def even_token_share(completions: list[str], *_: Any, **__: Any) -> list[float]:
    """A cheap reward that varies within a group: the share of even-numbered tokens."""
    out = []
    for text in completions:
        words = text.split()
        out.append(sum(w[1:].isdigit() and int(w[1:]) % 2 == 0 for w in words) / max(1, len(words)))
    return out


def random_prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(length)] for _ in range(n)]


def draw_lengths(count: int, shortest: int, longest: int, seed: int = 0) -> list[int]:
    """Long-tailed completion lengths: log-normal with its median at 1/8 of the longest,
    clipped to [shortest, longest] (a few rows hit the cap, as in R1-style sampling)."""
    rng = random.Random(seed)
    median = math.log(longest / 8)
    return [
        min(longest, max(shortest, round(math.exp(rng.gauss(median, 1.0))))) for _ in range(count)
    ]


def bench_lengths(args: argparse.Namespace) -> list[int] | None:
    """The forced completion lengths of one step (None: every row at --new-tokens)."""
    if not args.lengths:
        return None
    return draw_lengths(args.prompts * args.samples, max(1, args.new_tokens // 64), args.new_tokens)


class FullLength:
    """Wraps a rollout engine so every completion runs to its forced length (EOS ignored):
    max_new_tokens, or each row's own length when `lengths` are given."""

    def __init__(self, engine: Any, lengths: list[int] | None = None):
        self.engine, self.lengths = engine, tuple(lengths) if lengths else None

    def generate(self, prompts: list[list[int]], n: int, sampling: Any) -> list[Any]:
        forced = dataclasses.replace(sampling, ignore_eos=True, lengths=self.lengths)
        return self.engine.generate(prompts, n, forced)

    def sync_weights(self, model: Any) -> None:
        self.engine.sync_weights(model)


def run_r1forge(args: argparse.Namespace, shape: dict[str, int], tok: Any) -> dict[str, Any]:
    import torch

    from r1forge.config import GRPOConfig, TrackingConfig
    from r1forge.rewards import register
    from r1forge.rollout.static import StaticCacheEngine
    from r1forge.train.engine import init_distributed
    from r1forge.train.rl import PromptItem, train_grpo

    register(REWARD)(even_token_share)
    dist = init_distributed()
    cuda = dist.device.type == "cuda"
    model = build_model(shape, 4096, torch.bfloat16 if cuda else torch.float32, dist.device)
    model.config.use_cache = True
    steps = args.warmup + args.steps
    prompts = [
        PromptItem(ids, {"id": f"p{i}", "task": "bench", "answer": "0"})
        for i, ids in enumerate(
            random_prompts(args.prompts * steps, args.prompt_len, shape["vocab_size"])
        )
    ]
    cfg = GRPOConfig(
        max_steps=steps,
        prompts_per_step=args.prompts,
        group_size=args.samples,
        max_new_tokens=args.new_tokens,
        temperature=1.0,
        rewards={REWARD: 1.0},
        loss_type="dapo",
        beta=0.0,
        mu=1,
        micro_batch_size=args.micro_batch,
        lr=1e-6,
        precision="bf16" if cuda else "fp32",
        collapse={"stop": False},
        tracking=TrackingConfig(wandb=False),
        save_every=10**6,
        eval_every=10**6,
    )
    stamps: list[float] = []
    rows: list[dict[str, Any]] = []

    def on_log(row: dict[str, Any]) -> None:
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        rows.append(row)

    began = time.perf_counter()
    train_grpo(
        model,
        tok,
        prompts,
        {},
        cfg,
        dist=dist,
        make_engine=lambda m: FullLength(StaticCacheEngine(m, tok), bench_lengths(args)),
        reference=None,
        checkpoints=None,
        resume=False,
        on_log=on_log,
    )
    step_seconds = [b - a for a, b in zip([began, *stamps], stamps, strict=False)][args.warmup :]
    steady = rows[args.warmup :]
    completion_tokens = completion_tokens_per_step(args)
    return {
        "seconds_per_step": statistics.median(step_seconds),
        "step_seconds": step_seconds,
        "completion_tokens_per_s": completion_tokens / statistics.median(step_seconds),
        "rollout_tokens_per_s": statistics.median(r["rollout_tokens_per_s"] for r in steady),
        "completion_length": statistics.mean(r["completion_length"] for r in steady),
        "rollout_engine": "static (CUDA-graph decode)" if cuda else "static (eager)",
    }


def completion_tokens_per_step(args: argparse.Namespace) -> int:
    lengths = bench_lengths(args)
    return sum(lengths) if lengths else args.prompts * args.samples * args.new_tokens


def force_eos_at(model: Any, lengths: list[int], eos: int) -> None:
    """Make `model.generate` (as TRL calls it) end row i with EOS after exactly lengths[i]
    tokens: EOS is forbidden before and forced there, so TRL masks what follows."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class EosAt(LogitsProcessor):
        def __init__(self, width: int):
            self.width = width

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            made = input_ids.shape[1] - self.width  # tokens generated so far
            limits = torch.tensor(lengths, device=scores.device)
            limits = limits.repeat(math.ceil(scores.shape[0] / len(lengths)))[: scores.shape[0]]
            scores[:, eos] = torch.where(limits - 1 > made, float("-inf"), scores[:, eos])
            end = limits - 1 == made
            scores[end] = float("-inf")
            scores[end, eos] = 0.0
            return scores

    generate = model.generate

    def forced(*args: Any, **kwargs: Any) -> Any:
        width = (kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape[1]
        processors = kwargs.get("logits_processor") or LogitsProcessorList()
        kwargs["logits_processor"] = LogitsProcessorList([*processors, EosAt(width)])
        return generate(*args, **kwargs)

    model.generate = forced


def run_trl(args: argparse.Namespace, shape: dict[str, int], tok: Any) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    cuda = torch.cuda.is_available()
    model = build_model(
        shape, 4096, torch.bfloat16 if cuda else torch.float32, "cuda" if cuda else "cpu"
    )
    model.config.use_cache = True
    model.set_attn_implementation("sdpa")
    lengths = bench_lengths(args)
    if lengths:
        force_eos_at(model, lengths, tok.eos_token_id)
    steps = args.warmup + args.steps
    texts = [
        " ".join(f"t{t}" for t in ids)
        for ids in random_prompts(args.prompts * steps, args.prompt_len, shape["vocab_size"])
    ]
    stamps: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        config = GRPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=args.prompts * args.samples,
            num_generations=args.samples,
            max_completion_length=args.new_tokens,
            generation_kwargs={} if lengths else {"min_new_tokens": args.new_tokens},
            temperature=1.0,
            beta=0.0,
            loss_type="dapo",
            learning_rate=1e-6,
            bf16=cuda,
            max_steps=steps,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            seed=0,
            use_cpu=not cuda,
            dataloader_num_workers=0,
            shuffle_dataset=False,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[even_token_share],
            args=config,
            train_dataset=Dataset.from_dict({"prompt": texts}),
            processing_class=tok,
            callbacks=[StepTimer()],
        )
        began = time.perf_counter()
        trainer.train()
        logged = [
            r["completions/mean_length"]
            for r in trainer.state.log_history
            if "completions/mean_length" in r
        ]
    step_seconds = [b - a for a, b in zip([began, *stamps], stamps, strict=False)][args.warmup :]
    completion_tokens = completion_tokens_per_step(args)
    return {
        "seconds_per_step": statistics.median(step_seconds),
        "step_seconds": step_seconds,
        "completion_tokens_per_s": completion_tokens / statistics.median(step_seconds),
        "completion_length": statistics.mean(logged[args.warmup :]) if logged else None,
        "generation": "transformers generate (TRL defaults)",
    }


def timed(fn: Any, repeats: int, cuda: bool) -> float:
    import torch

    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def static_generate(model: Any, batch: Any, new: int, **extra: Any) -> Any:
    """transformers' `generate` at T=1 with a static cache (which it compiles): the peer."""
    import torch

    with torch.no_grad():
        return model.generate(
            input_ids=batch,
            attention_mask=torch.ones_like(batch),
            max_new_tokens=new,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            cache_implementation="static",
            use_cache=True,
            pad_token_id=0,
            **extra,
        )


def greedy_generate(model: Any, prompts: list[list[int]], new: int) -> list[list[int]]:
    """`new` greedy tokens per (equal-length) prompt from transformers' `generate`."""
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor(prompts, device=device),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
        )
    return out[:, len(prompts[0]) :].tolist()


def copy_bandwidth(device: Any) -> float | None:
    """Bytes/s of a large device-to-device copy (read + write counted)."""
    import torch

    if device.type != "cuda":
        return None
    src = torch.empty(2 * 1024**3, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), 10, True)
    return 2 * src.numel() / seconds


def run_generation(args: argparse.Namespace, shape: dict[str, int], tok: Any) -> dict[str, Any]:
    """Decode ms per step of transformers' compiled static-cache generate and of r1forge's engine."""
    import torch

    from r1forge.rollout import Sampling
    from r1forge.rollout.static import StaticCacheEngine

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model = build_model(shape, 4096, torch.bfloat16 if cuda else torch.float32, device).eval()
    model.config.use_cache = True
    rows = args.prompts * args.samples
    prompts = random_prompts(args.prompts, args.prompt_len, shape["vocab_size"], seed=1)
    batch = torch.tensor([p for p in prompts for _ in range(args.samples)], device=device)

    def hf(new: int) -> Any:
        return static_generate(model, batch, new, min_new_tokens=new)

    engine = StaticCacheEngine(model, tok)

    def ours(new: int) -> Any:
        sampling = Sampling(max_new_tokens=new, temperature=1.0, logprobs=False, ignore_eos=True)
        return engine.generate(prompts, args.samples, sampling)

    out: dict[str, Any] = {
        "rows": rows,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
    }
    for name, fn in (("transformers_static_compiled", hf), ("r1forge_static_engine", ours)):
        for _ in range(args.gen_warmup):
            fn(args.new_tokens)
            fn(1)
        full = timed(lambda fn=fn: fn(args.new_tokens), args.gen_repeats, cuda)
        prefill = timed(lambda fn=fn: fn(1), args.gen_repeats, cuda)
        out[name] = {
            "seconds": full,
            "tokens_per_s": rows * args.new_tokens / full,
            "prefill_seconds": prefill,
            "decode_ms_per_step": 1000 * (full - prefill) / (args.new_tokens - 1),
        }
    out["ratio_vs_transformers_static"] = (
        out["r1forge_static_engine"]["tokens_per_s"]
        / out["transformers_static_compiled"]["tokens_per_s"]
    )
    # the floor: each decode step reads every weight once and the KV cache it attends over
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    weight_bytes = count_params(model) * model.dtype.itemsize
    mean_context = args.prompt_len + args.new_tokens / 2
    kv_bytes = (
        (2 * config.num_hidden_layers * rows * config.num_key_value_heads * head_dim)
        * mean_context
        * model.dtype.itemsize
    )
    bandwidth = copy_bandwidth(device)
    out["floor"] = {
        "weight_bytes": weight_bytes,
        "mean_kv_bytes": kv_bytes,
        "copy_bandwidth_bytes_per_s": bandwidth,
    }
    if bandwidth:
        floor_ms = 1000 * (weight_bytes + kv_bytes) / bandwidth
        out["floor"]["decode_ms_per_step"] = floor_ms
        for name in ("transformers_static_compiled", "r1forge_static_engine"):
            out[name]["roofline_fraction"] = floor_ms / out[name]["decode_ms_per_step"]
    # the engine samples what the model says: greedy tokens agree with transformers'
    greedy = Sampling(max_new_tokens=32, temperature=0.0, logprobs=False, ignore_eos=True)
    a = [c.token_ids for c in engine.generate(prompts, 1, greedy)]
    b = greedy_generate(model, prompts, 32)
    same = sum(x == y for r, s in zip(a, b, strict=True) for x, y in zip(r, s, strict=False))
    out["greedy_token_agreement"] = same / sum(len(r) for r in b)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="CPU-sized model and batch (smoke)")
    parser.add_argument("--steps", type=int, default=5, help="timed GRPO steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=32, help="r1forge rows per backward")
    parser.add_argument("--gen-warmup", type=int, default=2)
    parser.add_argument("--gen-repeats", type=int, default=3)
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated parts to run, in this order: r1forge, trl, generation",
    )
    parser.add_argument(
        "--lengths",
        action="store_true",
        help="completions of long-tailed drawn lengths up to --new-tokens, not all full length",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    runners = {"trl": run_trl, "r1forge": run_r1forge, "generation": run_generation}
    parts = parts_to_run(args.only, list(runners))
    if args.tiny:
        args.steps, args.warmup, args.prompts, args.samples = 2, 1, 2, 4
        args.prompt_len, args.new_tokens, args.gen_warmup, args.gen_repeats = 16, 24, 1, 1
    import torch

    shape = TINY if args.tiny else QWEN05
    tok = placeholder_tokenizer(shape["vocab_size"])
    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {
        "benchmark": "grpo_step",
        "date": time.strftime("%Y-%m-%d"),
        "gpu": torch.cuda.get_device_name() if cuda else "cpu",
        "model_shape": shape,
        "parameters": count_params(build_model(shape, 4096, torch.float32, "cpu")),
        "config": {
            "prompts": args.prompts,
            "samples_per_prompt": args.samples,
            "prompt_len": args.prompt_len,
            "completion_tokens": args.new_tokens,
            "forced_full_length": not args.lengths,
            "forced_lengths": bench_lengths(args),
            "loss": "dapo, clip 0.2/0.28, beta 0, one update per batch",
            "timed_steps": args.steps,
            "warmup_steps": args.warmup,
        },
        "versions": versions(),
    }
    failed = False
    report["parts_order"] = parts
    for part in parts:
        run = runners[part]
        try:  # one part failing still leaves the others' figures
            report[part] = run(args, shape, tok)
            torch.cuda.empty_cache() if cuda else None
        except Exception as error:  # reported, and the exit status says so
            traceback.print_exc()
            report[f"{part}_error"] = repr(error)
            failed = True
            if cuda:  # a device-side assert poisons the CUDA context: report what exists
                break
        write_report(report, args.out)  # after each part: a call cut short keeps what finished
    finish(report, args.out)
    if failed:
        raise SystemExit(1)


def parts_to_run(only: str | None, parts: list[str]) -> list[str]:
    """The parts to time, in the order `--only` names them (all, in the default order, without
    it): a short device call can time the faster side first and still keep it if cut."""
    if not only:
        return parts
    named = [part.strip() for part in only.split(",") if part.strip()]
    unknown = sorted(set(named) - set(parts))
    if unknown:
        raise SystemExit(f"--only: unknown part(s) {unknown}; choose from {parts}")
    return list(dict.fromkeys(named))


def finish(report: dict[str, Any], out: Path | None) -> None:
    if "trl" in report and "r1forge" in report:
        report["ratio_vs_trl"] = (
            report["trl"]["seconds_per_step"] / report["r1forge"]["seconds_per_step"]
        )
    print(f"{'GRPO step':12} {'s/step':>8} {'completion tok/s':>17}")
    for name in ("trl", "r1forge"):
        if name in report:
            side = report[name]
            print(
                f"{name:12} {side['seconds_per_step']:8.2f} {side['completion_tokens_per_s']:17,.0f}"
            )
    if "ratio_vs_trl" in report:
        print(f"ratio r1forge / TRL (step throughput): {report['ratio_vs_trl']:.2f}x")
    gen = report.get("generation")
    if gen:
        print(f"{'generation':30} {'tok/s':>9} {'decode ms/step':>15} {'roofline':>9}")
        for name in ("transformers_static_compiled", "r1forge_static_engine"):
            g = gen[name]
            roof = g.get("roofline_fraction")
            print(
                f"{name:30} {g['tokens_per_s']:9,.0f} {g['decode_ms_per_step']:15.2f} "
                f"{(f'{roof:.1%}' if roof else '-'):>9}"
            )
        floor = gen["floor"].get("decode_ms_per_step")
        if floor:
            print(f"memory-bandwidth floor: {floor:.3f} ms a decode step")
        print(
            f"ratio engine / transformers static generate: {gen['ratio_vs_transformers_static']:.2f}x"
        )
        print(f"greedy token agreement with transformers: {gen['greedy_token_agreement']:.1%}")
    write_report(report, out)


def write_report(report: dict[str, Any], out: Path | None) -> None:
    """The JSON report, written atomically (temp file + rename); nothing without `--out`."""
    from r1forge.io import write_json_atomic

    if out:
        write_json_atomic(out, report)


if __name__ == "__main__":
    main()

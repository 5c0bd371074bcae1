"""Rollouts at the lengths users train at: completions of very different lengths, one run.

A Qwen2.5-1.5B-shaped model (random init, bf16), 16 prompts x 16 samples, 128-token prompts,
completion lengths drawn from a long-tailed (log-normal) distribution between 64 and 4096
tokens. Every side is forced to those same lengths (rows stop at their drawn length, EOS
ignored), so each produces the same useful tokens; what differs is the work around them:

- `transformers_static_compiled`: `generate` with a static cache (which it compiles), rows
  stopped by a per-row stopping criterion; the batch runs until its longest row ends;
- `previous_engine`: r1forge's static engine before continuous batching (the file given by
  `--previous-engine`, e.g. `git show 29fa76b:src/r1forge/rollout/static.py`), which also
  decodes the whole batch until its longest row ends, attending over the whole cache;
- `r1forge_static_engine`: the engine now: finished rows leave, the batch shrinks to smaller
  captured graphs, prefix sharing, attention over each row's own context only.

Reported per side: useful tokens/s (the drawn lengths summed over the wall time), decode ms
per sequential step (wall time over the longest length), and the fraction of the
memory-bandwidth floor: every sequential step reads the weights once, and each row's K/V
are read once per token it generates, at the copy bandwidth measured in the same run.

    python benchmarks/rollout_lengths.py --previous-engine prev_static.py \
        --out benchmarks/results/rollout_lengths.json
    python benchmarks/rollout_lengths.py --tiny --previous-engine prev_static.py   # CPU smoke
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from grpo_step import (
    copy_bandwidth,
    draw_lengths,
    greedy_generate,
    random_prompts,
    static_generate,
    timed,
)
from sft_throughput import QWEN15, TINY, count_params, placeholder_tokenizer, versions

SIDES = ("r1forge_static_engine", "previous_engine", "transformers_static_compiled")


def load_engine_class(path: Path) -> Any:
    """The `StaticCacheEngine` class of an engine source file, loaded without touching the
    registry (the file registers itself as "static"; the current entry is put back)."""
    from r1forge.rollout import ENGINES

    current = ENGINES.get("static")
    spec = importlib.util.spec_from_file_location("r1forge_previous_static", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    if current is not None:
        ENGINES["static"] = current
    return module.StaticCacheEngine


def build_model(shape: dict[str, int], positions: int, dtype: Any, device: Any) -> Any:
    """A random-init Qwen2 of `shape`, initialised on the device (a 1.5B model is slow on CPU)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        **shape, max_position_embeddings=positions, tie_word_embeddings=True, use_cache=True
    )
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    return model.to(dtype=dtype).eval()


def run_transformers(model: Any, prompts: list[list[int]], n: int, lengths: list[int]) -> Any:
    """A closure running compiled static-cache `generate`, each row stopped at its length."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    device = next(model.parameters()).device
    batch = torch.tensor([p for p in prompts for _ in range(n)], device=device)
    width = batch.shape[1]

    class AtLength(StoppingCriteria):
        def __init__(self, limits: list[int]):
            self.limits = torch.tensor(limits, device=device)

        def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
            return (input_ids.shape[1] - width) >= self.limits

    def run(limits: list[int]) -> Any:
        return static_generate(
            model,
            batch,
            max(lengths),  # one cache shape for warm-up and the timed run
            eos_token_id=None,
            stopping_criteria=StoppingCriteriaList([AtLength(limits)]),
        )

    return run


def run_engine(
    engine: Any, prompts: list[list[int]], n: int, lengths: list[int], forced: bool
) -> Any:
    """A closure running a static engine. The engine now takes the lengths itself; the
    previous one cannot, so it runs every row to the longest length, as it did then (and
    its warm-up is a full run: its graphs are captured per completion length)."""
    from r1forge.rollout import Sampling

    def run(limits: list[int]) -> Any:
        sampling = Sampling(
            max_new_tokens=max(lengths),
            temperature=1.0,
            logprobs=False,
            ignore_eos=True,
            lengths=tuple(limits) if forced else None,
        )
        return engine.generate(prompts, n, sampling)

    return run


def extrapolated(
    run: Any, lengths: list[int], spans: str, cuda: bool, into: dict[str, Any]
) -> float:
    """transformers' full-run time from two shorter runs of the same batch and cache shape
    (rows cut at min(length, span)): a static-cache step attends over the whole cache and
    decodes every row until the longest ends, so each step costs the same and the time is
    linear in the number of steps; fitting two spans keeps prefill out of the slope."""
    short, long = (int(x) for x in spans.split(","))
    t_short = timed(lambda: run([min(x, short) for x in lengths]), 1, cuda)
    t_long = timed(lambda: run([min(x, long) for x in lengths]), 1, cuda)
    per_step = (t_long - t_short) / (long - short)
    into["extrapolated_from"] = {"steps": [short, long], "seconds": [t_short, t_long]}
    into["seconds_per_step"] = per_step
    return t_short + per_step * (max(lengths) - short)


def warmup_lengths(count: int, longest: int, side: str) -> list[int]:
    """The warm-up run's lengths. The engine: short lengths that still walk the live batch
    down through every size (each graph captured, each shape compiled before the timed run).
    transformers: 16 steps (one batch and cache shape throughout). The previous engine: the
    full run (its graphs are captured per completion length)."""
    if side == "previous_engine":
        return [longest] * count
    if side == "transformers_static_compiled":
        return [min(longest, 16)] * count
    return [min(longest, 8 + row) for row in range(count)]


def engine_checks(
    model: Any, tok: Any, prompts: list[list[int]], previous: Path | None
) -> dict[str, Any]:
    """Does each engine sample what the model says? Greedy tokens against transformers'
    `generate` (on a random-init model in bf16 near-ties flip many late tokens, so this is a
    weak check), and the log-probs an engine reports for its own T=1 samples against a plain
    transformers forward over them (the strict check: they must match to bf16 precision)."""
    import torch

    from r1forge.rollout import Sampling
    from r1forge.rollout.static import StaticCacheEngine

    device = next(model.parameters()).device
    hf = greedy_generate(model, prompts, 32)
    # eager steps inside CUDA graphs: the same kernels, without compiling for a short check
    engines = {"r1forge_static_engine": StaticCacheEngine(model, tok, compile=False)}
    if previous is not None:
        engines["previous_engine"] = load_engine_class(previous)(model, tok, compile=False)
    greedy = Sampling(max_new_tokens=32, temperature=0.0, logprobs=False, ignore_eos=True)
    sampled = Sampling(max_new_tokens=64, temperature=1.0, ignore_eos=True, seed=7)
    out: dict[str, Any] = {}
    for name, engine in engines.items():
        tokens = [c.token_ids for c in engine.generate(prompts, 1, greedy)]
        same = [x == y for a, b in zip(tokens, hf, strict=True) for x, y in zip(a, b, strict=True)]
        gaps = []
        for c in engine.generate(prompts[:4], 2, sampled):
            ids = torch.tensor([prompts[c.prompt_index] + c.token_ids], device=device)
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, len(prompts[c.prompt_index]) - 1 : -1]
            logp = torch.log_softmax(logits.float(), -1).gather(
                -1, ids[0, -len(c.token_ids) :, None]
            )
            gaps.append((logp[:, 0].cpu() - torch.tensor(c.logprobs)).abs())
        gap = torch.cat(gaps)
        out[name] = {
            "greedy_agreement_with_transformers": sum(same) / len(same),
            "first_token_agreement_with_transformers": sum(
                a[0] == b[0] for a, b in zip(tokens, hf, strict=True)
            )
            / len(hf),
            "sampled_logprob_gap_mean": gap.mean().item(),
            "sampled_logprob_gap_max": gap.max().item(),
        }
    return out


def floor_seconds(
    model: Any, prompt_len: int, lengths: list[int], bandwidth: float | None
) -> dict[str, Any]:
    """The memory-bandwidth floor: the longest row needs max(lengths) sequential steps, each
    reading every weight once; each generated token reads its row's K/V once."""
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    weight_bytes = count_params(model) * model.dtype.itemsize
    kv_per_token = (
        2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * model.dtype.itemsize
    )
    context_tokens = sum(length * prompt_len + length * (length + 1) / 2 for length in lengths)
    mean_context = context_tokens / sum(lengths)
    out: dict[str, Any] = {
        "weight_bytes": weight_bytes,
        "kv_bytes_per_token": kv_per_token,
        "mean_context": mean_context,
        "copy_bandwidth_bytes_per_s": bandwidth,
    }
    if bandwidth:
        out["seconds"] = (max(lengths) * weight_bytes + context_tokens * kv_per_token) / bandwidth
        out["decode_ms_per_step"] = 1000 * out["seconds"] / max(lengths)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="CPU-sized model and lengths (smoke)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--shortest", type=int, default=64)
    parser.add_argument("--longest", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0, help="seed of the drawn lengths")
    parser.add_argument(
        "--previous-engine",
        type=Path,
        default=None,
        help="the engine before the change, as a source file (git show <commit>:src/r1forge/rollout/static.py)",
    )
    parser.add_argument(
        "--sides", default=",".join(SIDES), help="comma-separated subset of " + ", ".join(SIDES)
    )
    parser.add_argument(
        "--transformers-steps",
        default=None,
        help="SHORT,LONG: time transformers over that many steps only and extrapolate its full "
        "run linearly (each of its steps costs the same); for a device-time budget",
    )
    parser.add_argument(
        "--attention-kernel",
        default="auto",
        help="the r1forge engine's decode attention on GPUs: auto, flash or triton",
    )
    parser.add_argument(
        "--no-checks", dest="checks", action="store_false", help="skip the engines' sampling checks"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.tiny:
        args.prompts, args.samples, args.prompt_len, args.shortest, args.longest = 3, 4, 8, 2, 40
    import torch

    from r1forge.rollout.static import StaticCacheEngine

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    shape = TINY if args.tiny else QWEN15
    dtype = torch.bfloat16 if cuda else torch.float32
    model = build_model(shape, args.prompt_len + args.longest + 64, dtype, device)
    tok = placeholder_tokenizer(shape["vocab_size"])
    prompts = random_prompts(args.prompts, args.prompt_len, shape["vocab_size"], seed=1)
    rows = args.prompts * args.samples
    lengths = draw_lengths(rows, args.shortest, args.longest, args.seed)
    report: dict[str, Any] = {
        "benchmark": "rollout_lengths",
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit(),
        "gpu": torch.cuda.get_device_name() if cuda else "cpu",
        "model_shape": shape,
        "parameters": count_params(model),
        "config": {
            "prompts": args.prompts,
            "samples_per_prompt": args.samples,
            "prompt_len": args.prompt_len,
            "dtype": str(dtype).removeprefix("torch."),
            "sampling": "temperature 1, top-p 1, EOS ignored, each row stopped at its drawn length",
            "previous_engine": str(args.previous_engine) if args.previous_engine else None,
            "attention_kernel": args.attention_kernel,
        },
        "lengths": {
            "distribution": f"log-normal, median {args.longest // 8}, sigma 1, clipped to [{args.shortest}, {args.longest}]",
            "seed": args.seed,
            "mean": sum(lengths) / rows,
            "max": max(lengths),
            "at_cap": sum(x == args.longest for x in lengths),
            "values": lengths,
        },
        "versions": versions(),
    }
    if args.checks:
        try:
            report["checks"] = engine_checks(model, tok, prompts, args.previous_engine)
            print(f"checks: {json.dumps(report['checks'], indent=1)}", flush=True)
        except Exception as error:  # reported; the timing still runs
            traceback.print_exc()
            report["checks_error"] = repr(error)
    useful = sum(lengths)
    wanted = [s for s in args.sides.split(",") if s]
    failed = False
    for side in wanted:
        try:
            if side == "transformers_static_compiled":
                run = run_transformers(model, prompts, args.samples, lengths)
            elif side == "previous_engine":
                if args.previous_engine is None:
                    raise SystemExit("--previous-engine is needed for the previous_engine side")
                engine = load_engine_class(args.previous_engine)(model, tok)
                run = run_engine(engine, prompts, args.samples, lengths, forced=False)
            elif side == "r1forge_static_engine":
                engine = StaticCacheEngine(model, tok, attention_kernel=args.attention_kernel)
                run = run_engine(engine, prompts, args.samples, lengths, forced=True)
            else:
                raise SystemExit(f"unknown side {side!r}; known: {', '.join(SIDES)}")
            run(warmup_lengths(rows, max(lengths), side))
            report[side] = {}
            if side == "transformers_static_compiled" and args.transformers_steps:
                seconds = extrapolated(run, lengths, args.transformers_steps, cuda, report[side])
            else:
                seconds = timed(lambda run=run: run(lengths), 1, cuda)
            report[side].update(
                seconds=seconds,
                useful_tokens_per_s=useful / seconds,
                decode_ms_per_step=1000 * seconds / max(lengths),
            )
            print(f"{side}: {seconds:.2f} s, {useful / seconds:,.0f} useful tok/s", flush=True)
            save(report, args.out)  # a run cut short still leaves the sides it finished
        except Exception as error:  # one side failing still leaves the others' figures
            traceback.print_exc()
            report[f"{side}_error"] = repr(error)
            failed = True
            if side == "r1forge_static_engine" or cuda:  # nothing to compare with, or a
                break  # device-side error may have poisoned the CUDA context
        finally:
            run = engine = None
            if cuda:
                torch.cuda.empty_cache()
    report["floor"] = floor_seconds(model, args.prompt_len, lengths, copy_bandwidth(device))
    finish(report)
    save(report, args.out)
    if failed:
        raise SystemExit(1)


def save(report: dict[str, Any], out: Path | None) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")


def commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def finish(report: dict[str, Any]) -> None:
    """Ratios and the roofline fraction into the report, and the table printed."""
    ours = report.get("r1forge_static_engine")
    for side, key in (
        ("transformers_static_compiled", "ratio_vs_transformers"),
        ("previous_engine", "ratio_vs_previous_engine"),
    ):
        if ours and side in report:
            report[key] = ours["useful_tokens_per_s"] / report[side]["useful_tokens_per_s"]
    floor = report["floor"].get("seconds")
    print(f"{'side':30} {'seconds':>8} {'useful tok/s':>13} {'ms/step':>8} {'floor':>6}")
    for side in SIDES:
        if side in report:
            r = report[side]
            if floor:
                r["roofline_fraction"] = floor / r["seconds"]
            roof = f"{r['roofline_fraction']:.1%}" if floor else "-"
            print(
                f"{side:30} {r['seconds']:8.2f} {r['useful_tokens_per_s']:13,.0f} {r['decode_ms_per_step']:8.2f} {roof:>6}"
            )
    if floor:
        print(
            f"memory-bandwidth floor: {floor:.2f} s ({report['floor']['decode_ms_per_step']:.2f} ms a sequential step)"
        )
    for key in ("ratio_vs_transformers", "ratio_vs_previous_engine"):
        if key in report:
            print(f"{key}: {report[key]:.2f}x")


if __name__ == "__main__":
    main()

"""SFT training throughput: r1forge's trainer against TRL's SFTTrainer, side by side in one run.

Same model (Qwen2.5-0.5B shape, random init, bf16), same synthetic SFT data (prompt tokens
masked, lengths 128-2048), same batch (4 rows x 4096 packed tokens a step), one GPU.
TRL runs its fastest packing, `packing_strategy="wrapped"` (which ignores example
boundaries, so it does less work than correct packing); r1forge packs correctly
(first-fit decreasing, positions restart, PyTorch's varlen flash kernel over the examples'
boundaries; `--attention flex_attention` uses a block-diagonal flex-attention mask instead).

    python benchmarks/sft_throughput.py --out benchmarks/results/sft_throughput.json
    python benchmarks/sft_throughput.py --tiny   # a CPU smoke run of both sides

Prints tokens/s of both, the ratio, and MFU = 6 * N * tokens/s over 989 TFLOP/s (dense bf16
H100/H200 datasheet) and over the bf16 matmul rate measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

PEAK_BF16 = 989e12
QWEN05 = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    vocab_size=32000,
)
QWEN15 = dict(
    hidden_size=1536,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    intermediate_size=8960,
    vocab_size=32000,
)
TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=512,
)


def build_model(shape: dict[str, int], seq: int, dtype: Any, device: Any) -> Any:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        **shape, max_position_embeddings=seq, tie_word_embeddings=True, use_cache=False
    )
    return Qwen2ForCausalLM(config).to(dtype=dtype, device=device)


def synthetic_examples(n: int, vocab: int, max_len: int, seed: int = 0) -> list[Any]:
    """Random-token conversations: a prompt (no labels) then an answer (labels), 128..max_len tokens."""
    from r1forge.train.batching import IGNORE, Example

    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        length = rng.randint(min(128, max_len // 2), max_len)
        prompt = max(1, length // 4)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        examples.append(Example(ids, [IGNORE] * prompt + ids[prompt:]))
    return examples


def placeholder_tokenizer(vocab: int) -> Any:
    """A tokenizer TRL can pad and end sequences with: token i is the word `t<i>`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"t{i}": i for i in range(3, vocab)}}
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
    )


def count_params(model: Any) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def matmul_rate(device: Any) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    b = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * 20 / (time.perf_counter() - start)


def run_r1forge(
    args: argparse.Namespace, shape: dict[str, int], examples: list[Any]
) -> dict[str, Any]:
    import torch

    from r1forge.config import SFTConfig, TrackingConfig
    from r1forge.stages.sft import compile_layers
    from r1forge.train.engine import init_distributed
    from r1forge.train.sft import SFTData, train_sft

    dist = init_distributed()
    cuda = dist.device.type == "cuda"
    model = build_model(shape, args.seq, torch.bfloat16 if cuda else torch.float32, dist.device)
    impl = args.attention if cuda else "sdpa"
    if impl == "varlen":
        from r1forge.train import varlen

        varlen.register()
    model.set_attn_implementation(impl)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cuda and not args.no_compile:
        compile_layers(model)
    cfg = SFTConfig(
        max_steps=args.warmup + args.steps,
        micro_batch_size=args.rows,
        max_seq_len=args.seq,
        packing="packed",
        lr=1e-5,
        warmup_steps=1,
        eval_fraction=0.0,
        save_every=10**9,
        log_every=args.log_every,
        zero_stage=args.zero,
        precision="bf16" if cuda else "fp32",
        attn_implementation=impl,
        gradient_checkpointing=args.gradient_checkpointing,
        master_weights=args.master_weights,
        tracking=TrackingConfig(wandb=False),
    )
    rows: list[dict[str, Any]] = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    profiler, tables = None, []
    if args.profile:
        from torch.profiler import ProfilerActivity, profile, schedule

        sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        profiler = profile(
            activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []),
            schedule=schedule(wait=args.warmup, warmup=1, active=3, repeat=1),
            on_trace_ready=lambda p: tables.append(
                p.key_averages().table(sort_by=sort, row_limit=40)
            ),
        )
        profiler.start()

    def on_log(row: dict[str, Any]) -> None:
        rows.append(row)
        if profiler is not None:
            profiler.step()

    train_sft(
        model,
        SFTData(examples, []),
        cfg,
        pad_id=0,
        dist=dist,
        checkpoints=None,
        resume=False,
        on_log=on_log,
    )
    if profiler is not None:
        profiler.stop()
        print("\n".join(tables))
        if args.out:
            args.out.with_suffix(".profile.txt").write_text("\n".join(tables))
    steady = [r["tokens_per_s"] for r in rows if r["step"] > args.warmup]
    return {
        "tokens_per_s": statistics.median(steady),
        "step_tokens_per_s": steady,
        "loss_first_last": [rows[0]["loss"], rows[-1]["loss"]],
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
        "attention": impl,
        "compiled": cuda and not args.no_compile,
        "zero_stage": args.zero,
        "master_weights": args.master_weights,
    }


def run_trl(args: argparse.Namespace, shape: dict[str, int], examples: list[Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    cuda = torch.cuda.is_available()
    model = build_model(
        shape, args.seq, torch.bfloat16 if cuda else torch.float32, "cuda" if cuda else "cpu"
    )
    model.set_attn_implementation("sdpa")
    dataset = Dataset.from_dict(
        {
            "input_ids": [e.input_ids for e in examples],
            "completion_mask": [[int(t != -100) for t in e.labels] for e in examples],
        }
    )
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_end(self, _args: Any, state: Any, *_: Any, **__: Any) -> None:
            if state.global_step % args.log_every == 0:
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        config = SFTConfig(
            output_dir=tmp,
            per_device_train_batch_size=args.rows,
            max_length=args.seq,
            packing=True,
            packing_strategy="wrapped",
            bf16=cuda,
            max_steps=args.warmup + args.steps + 1,
            logging_steps=args.log_every,
            report_to="none",
            save_strategy="no",
            learning_rate=1e-5,
            gradient_checkpointing=args.gradient_checkpointing,
            optim="adamw_torch_fused" if cuda else "adamw_torch",
            dataloader_num_workers=0,
            seed=0,
            completion_only_loss=True,
            use_cpu=not cuda,
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=dataset,
            callbacks=[StepTimer()],
            processing_class=placeholder_tokenizer(shape["vocab_size"]),
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    step_tokens = args.rows * args.seq * args.log_every  # wrapped packing fills every row
    first = max(0, -(-args.warmup // args.log_every) - 1)  # first window after warm-up
    gaps = [b - a for a, b in zip(times[first:], times[first + 1 :], strict=False)]
    per_step = [step_tokens / g for g in gaps]
    return {
        "tokens_per_s": statistics.median(per_step),
        "step_tokens_per_s": per_step,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
        "packing_strategy": "wrapped",
        "gradient_checkpointing": args.gradient_checkpointing,
    }


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "deepspeed", "trl", "accelerate"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="a small CPU-sized model and batch (smoke test)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed first steps (compilation, allocator)"
    )
    parser.add_argument(
        "--log-every",
        type=int,
        default=1,
        help="steps per timing window, on both sides (each window ends with a GPU sync and a "
        "loss read-back, as logging does)",
    )
    parser.add_argument(
        "--shape",
        choices=["qwen05", "qwen15"],
        default="qwen05",
        help="model shape: Qwen2.5-0.5B (the target's) or Qwen2.5-1.5B (hidden 1536, 28 layers)",
    )
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--zero", type=int, default=0, help="ZeRO stage for r1forge (one GPU: 0)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument(
        "--master-weights",
        action="store_true",
        help="r1forge keeps fp32 master weights (DeepSpeed's bf16 mode, needs --zero 1+ to be fast); "
        "by default it updates the bf16 weights directly, as TRL does with the same bf16 model",
    )
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--attention",
        choices=["flex_attention", "varlen"],
        default="varlen",
        help="r1forge's packed attention on GPU: flex block mask or the varlen flash kernel",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print the top kernels of 3 profiled steps"
    )
    parser.add_argument("--only", choices=["r1forge", "trl"], default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="combine reports of --only runs into one (ratio included)",
    )
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    if args.tiny:
        args.seq, args.steps, args.warmup = (
            min(args.seq, 256),
            min(args.steps, 3),
            min(args.warmup, 1),
        )
    import torch

    shape = TINY if args.tiny else {"qwen05": QWEN05, "qwen15": QWEN15}[args.shape]
    examples = synthetic_examples(
        n=max(64, args.rows * (args.steps + args.warmup + 2) * 6),
        vocab=shape["vocab_size"],
        max_len=min(2048, args.seq),
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n_params = count_params(build_model(shape, args.seq, torch.float32, "cpu"))
    measured = matmul_rate(device)
    results: dict[str, Any] = {}
    if args.only in (None, "trl"):
        results["trl"] = run_trl(args, shape, examples)
        torch.cuda.empty_cache() if device.type == "cuda" else None
    if args.only in (None, "r1forge"):
        results["r1forge"] = run_r1forge(args, shape, examples)
    for side in results.values():
        side["mfu"] = 6 * n_params * side["tokens_per_s"] / PEAK_BF16
        side["mfu_vs_measured_matmul"] = (
            6 * n_params * side["tokens_per_s"] / measured if measured else None
        )
    report = {
        "benchmark": "sft_throughput",
        "date": time.strftime("%Y-%m-%d"),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model_shape": shape,
        "parameters": n_params,
        "batch": {"rows": args.rows, "seq_len": args.seq, "tokens_per_step": args.rows * args.seq},
        "timing_window_steps": args.log_every,
        "measured_bf16_matmul_flops": measured,
        "versions": versions(),
        **results,
    }
    finish(report, args.out)


def finish(report: dict[str, Any], out: Path | None) -> None:
    """Print the table (and the ratio when both sides ran) and write the JSON report."""
    sides = {k: report[k] for k in ("trl", "r1forge") if k in report}
    if len(sides) == 2:
        report["ratio_vs_trl"] = sides["r1forge"]["tokens_per_s"] / sides["trl"]["tokens_per_s"]
    print(f"{'':10} {'tokens/s':>12} {'MFU':>7} {'MFU/matmul':>11} {'peak GB':>8}")
    for name, side in sides.items():
        rel = side["mfu_vs_measured_matmul"]
        print(
            f"{name:10} {side['tokens_per_s']:12,.0f} {side['mfu']:7.1%} {(f'{rel:.1%}' if rel else '-'):>11} "
            f"{side['peak_memory_gb'] or 0:8.1f}"
        )
    if "ratio_vs_trl" in report:
        print(f"ratio r1forge / TRL (wrapped): {report['ratio_vs_trl']:.2f}x")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")


def merge(paths: list[Path], out: Path | None) -> None:
    report: dict[str, Any] = {}
    for path in paths:
        report.update(json.loads(path.read_text()))
    finish(report, out)


if __name__ == "__main__":
    main()

"""Decode attention over the static engine's cache: the varlen flash kernel against the
Triton kernel of `r1forge.rollout.decode_attention` (a GPU diagnostic for issue 20).

The profile in `results/decode_profile_h100.txt` puts ~19.5 µs a layer of a 64-row decode
step in attention: for grouped-query decoding the varlen flash kernel transposes the queries
into a head-group layout, splits each row's keys across blocks and merges them in a second
kernel. The Triton kernel runs one program per (row, KV head) over the row's keys. A window
that covers the whole cache is the third variant: it turns the flash kernel's head-group
path (and so its split-KV pass) off. On a GPU it times the three at the 0.5B shape of
`grpo_step.py --only generation` and at 1.5B shapes of `rollout_lengths.py` (many rows, and
few rows at long contexts), and sweeps the Triton kernel's launch settings:

    python benchmarks/diagnostics/decode_attention.py --out X.json  # GPU: error and µs a call
    TRITON_INTERPRET=1 python benchmarks/diagnostics/decode_attention.py --check   # CPU check
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from r1forge.rollout.decode_attention import LAUNCH, decode_attention
from r1forge.rollout.static import cached_attention, rows_index


def flash_attention(
    q: Any, keys: Any, values: Any, rows: Any, seen: Any, length: int, scale: float
) -> Any:
    """What the engine runs today: its own attention call (the varlen flash kernel on GPUs)."""
    index = rows_index(rows, seen, length, True)
    return cached_attention(q, keys, values, index, length, scale, "flash")


def flash_attention_full_window(
    q: Any, keys: Any, values: Any, rows: Any, seen: Any, length: int, scale: float
) -> Any:
    """The same kernel with a window over the whole cache: no head-group transpose, no split."""
    cu_q, cu_k, seen_k = rows_index(rows, seen, length, True)
    return torch.ops.aten._flash_attention_forward(
        q, keys, values, cu_q, cu_k, 1, length, 0.0, False, False, scale=scale,
        window_size_left=length, window_size_right=0, seqused_k=seen_k,
    )[0]  # fmt: skip


def triton_attention(
    q: Any, keys: Any, values: Any, rows: Any, seen: Any, length: int, scale: float, **launch: int
) -> Any:
    return decode_attention(q, keys, values, rows * length, seen, scale, **launch)


def reference(
    q: Any, keys: Any, values: Any, rows: Any, seen: Any, length: int, scale: float
) -> Any:
    """Row by row in float32: softmax(q k^T * scale) v over the row's visible slots."""
    kv_heads, out = keys.shape[1], []
    for b in range(q.shape[0]):
        first, n = int(rows[b]) * length, int(seen[b])
        k = keys[first : first + n].float().transpose(0, 1)
        v = values[first : first + n].float().transpose(0, 1)
        qq = q[b].float().view(kv_heads, -1, q.shape[-1])
        weights = torch.softmax(qq @ k.transpose(1, 2) * scale, -1)
        out.append((weights @ v).reshape(q.shape[1], q.shape[2]))
    return torch.stack(out).to(q.dtype)


def case(
    rows: int,
    length: int,
    heads: int,
    kv_heads: int,
    dim: int,
    device: Any,
    dtype: Any,
    least: int = 1,
):
    """Cache regions of `length` slots (one spare), the live rows sorted as the engine passes
    them, each seeing least..length of its slots: (q, keys, values, rows, seen, length)."""
    gen = torch.Generator().manual_seed(rows * 131 + dim)
    keys = torch.randn((rows + 1) * length, kv_heads, dim, generator=gen).to(device, dtype)
    values = torch.randn((rows + 1) * length, kv_heads, dim, generator=gen).to(device, dtype)
    q = torch.randn(rows, heads, dim, generator=gen).to(device, dtype)
    live = torch.randperm(rows + 1, generator=gen)[:rows].sort().values.to(device)
    seen = torch.randint(least, length + 1, (rows,), generator=gen).to(device)
    return q, keys, values, live, seen, length


def check() -> dict[str, float]:
    """The Triton kernel against the reference on CPU (run under TRITON_INTERPRET=1), float32,
    for head sizes that are and are not powers of two and groups of 1 to 7 heads."""
    errors = {}
    for rows, length, heads, kv_heads, dim in [
        (5, 128, 14, 2, 64),
        (3, 96, 4, 4, 8),
        (2, 70, 6, 2, 80),
    ]:
        args = case(rows, length, heads, kv_heads, dim, "cpu", torch.float32)
        got, want = triton_attention(*args, 0.3), reference(*args, 0.3)
        errors[f"{rows}x{heads}/{kv_heads}x{dim}"] = (got - want).abs().max().item()
    return errors


def timed_per_call(fn: Any, args: tuple, calls: int = 48, repeats: int = 20) -> float:
    """Microseconds a call, replayed from a CUDA graph of `calls` calls (as the engine runs)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn(*args)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        graph.replay()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e6 * sorted(times)[len(times) // 2] / calls


SHAPES = {
    # `grpo_step.py --only generation`: 0.5B shape, 64 rows, 384-slot regions
    "qwen05_64rows": {"rows": 64, "length": 384, "heads": 14, "kv_heads": 2, "dim": 64},
    # `rollout_lengths.py`: 1.5B shape, the full batch early on, and the long tail at the end
    "qwen15_256rows": {"rows": 256, "length": 1024, "heads": 12, "kv_heads": 2, "dim": 128},
    "qwen15_16rows_long": {
        "rows": 16,
        "length": 4224,
        "heads": 12,
        "kv_heads": 2,
        "dim": 128,
        "least": 2048,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="CPU correctness check only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.check:
        errors = check()
        print(json.dumps(errors))
        if max(errors.values()) > 1e-4:
            sys.exit("the Triton decode kernel disagrees with the reference")
        return
    if not torch.cuda.is_available():
        sys.exit("timing needs a CUDA GPU; use --check (with TRITON_INTERPRET=1) on CPU")
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    for label, shape in SHAPES.items():
        inputs = case(**shape, device="cuda", dtype=torch.bfloat16)
        scale = shape["dim"] ** -0.5
        want = reference(*inputs, scale)
        block: dict[str, Any] = {"shape": shape}
        for name, fn in (
            ("flash", flash_attention),
            ("flash_full_window", flash_attention_full_window),
        ):
            block[name] = {
                "max_abs_error": (fn(*inputs, scale).float() - want.float()).abs().max().item(),
                "us_per_call": timed_per_call(fn, (*inputs, scale)),
            }
        sweep = {}
        for block_n, warps, stages in itertools.product((32, 64, 128), (2, 4), (1, 2, 3)):
            launch = {"block_n": block_n, "num_warps": warps, "num_stages": stages}
            try:
                fn = functools.partial(triton_attention, **launch)
                error = (fn(*inputs, scale).float() - want.float()).abs().max().item()
                sweep[json.dumps(launch)] = {
                    "max_abs_error": error,
                    "us_per_call": timed_per_call(fn, (*inputs, scale)),
                }
            except Exception as e:  # a setting that does not fit the shape (shared memory)
                sweep[json.dumps(launch)] = {"error": repr(e)[:200]}
        timed_ok = {k: v for k, v in sweep.items() if "us_per_call" in v}
        best = min(timed_ok, key=lambda k: timed_ok[k]["us_per_call"])
        block["triton_default"] = sweep[json.dumps(LAUNCH)]
        block["triton_best"] = {"launch": json.loads(best), **sweep[best]}
        block["triton_sweep"] = sweep
        report[label] = block
        print(label, {k: v for k, v in block.items() if k != "triton_sweep"}, flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Decode attention over the static engine's cache: the varlen flash kernel against a
Triton kernel written for it (a GPU diagnostic for issue 20; its GPU timing is still to run).

The profile in `results/decode_profile_h100.txt` puts ~19.5 µs a layer of a 64-row decode
step in attention: for grouped-query decoding the varlen flash kernel transposes the queries
into a head-group layout, splits each row's keys across blocks and merges them in a second
kernel. The Triton kernel here runs one program per (row, KV head) that reads the row's keys
once for all query heads of its group (padded to the 16 rows a tensor-core dot needs), with
an online softmax over blocks of 64 keys. A window that covers the whole cache is the third
variant: it turns the flash kernel's head-group path (and so its split-KV pass) off.

    python benchmarks/diagnostics/decode_attention.py              # GPU: error and µs a call
    TRITON_INTERPRET=1 python benchmarks/diagnostics/decode_attention.py --check   # CPU check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import triton
import triton.language as tl

from r1forge.rollout.static import cached_attention, rows_index


@triton.jit
def _decode_attention_kernel(
    Q,
    K,
    V,
    Out,
    Starts,
    Seen,
    scale,
    stride_qb,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_ob,
    stride_oh,
    GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr,
    D: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0)
    kv_head = tl.program_id(1)
    start = tl.load(Starts + row).to(tl.int64)
    seen = tl.load(Seen + row)
    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, D_PAD)
    in_dim = d < D
    in_group = g < GROUP
    heads = kv_head * GROUP + g
    q_ptrs = Q + row * stride_qb + heads[:, None] * stride_qh + d[None, :]
    q = tl.load(q_ptrs, mask=in_group[:, None] & in_dim[None, :], other=0.0)
    best = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    total = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, D_PAD], tl.float32)
    for first in range(0, seen, BLOCK_N):
        n = first + tl.arange(0, BLOCK_N)
        visible = n < seen
        offsets = (start + n)[:, None] * stride_kt + kv_head * stride_kh + d[None, :]
        k = tl.load(K + offsets, mask=visible[:, None] & in_dim[None, :], other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale
        s = tl.where(visible[None, :], s, float("-inf"))
        new_best = tl.maximum(best, tl.max(s, 1))
        p = tl.exp(s - new_best[:, None])
        rescale = tl.exp(best - new_best)
        total = total * rescale + tl.sum(p, 1)
        v = tl.load(V + offsets, mask=visible[:, None] & in_dim[None, :], other=0.0)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
        best = new_best
    out = acc / total[:, None]
    o_ptrs = Out + row * stride_ob + heads[:, None] * stride_oh + d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=in_group[:, None] & in_dim[None, :])


def decode_attention(q: Any, keys: Any, values: Any, starts: Any, seen: Any, scale: float) -> Any:
    """Row b's query heads q[b] (heads, D) against cache slots starts[b] .. starts[b] + seen[b]
    of keys/values ((slots), kv_heads, D); returns (rows, heads, D) in q's dtype."""
    import torch

    rows, heads, dim = q.shape
    kv_heads = keys.shape[1]
    group = heads // kv_heads
    q = q.contiguous()
    out = torch.empty_like(q)
    _decode_attention_kernel[(rows, kv_heads)](
        q,
        keys,
        values,
        out,
        starts,
        seen,
        scale,
        q.stride(0),
        q.stride(1),
        keys.stride(0),
        keys.stride(1),
        out.stride(0),
        out.stride(1),
        GROUP=group,
        GROUP_PAD=max(16, triton.next_power_of_2(group)),
        D=dim,
        D_PAD=max(16, triton.next_power_of_2(dim)),
        BLOCK_N=64,
    )
    return out


def flash_attention(
    q: Any, keys: Any, values: Any, rows: Any, seen: Any, length: int, scale: float
) -> Any:
    """What the engine runs today: its own attention call (the varlen flash kernel on GPUs)."""
    return cached_attention(q, keys, values, rows_index(rows, seen, length, True), length, scale)


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
    q: Any, keys: Any, values: Any, rows: Any, seen: Any, length: int, scale: float
) -> Any:
    return decode_attention(q, keys, values, rows * length, seen, scale)


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


def case(rows: int, length: int, heads: int, kv_heads: int, dim: int, device: Any, dtype: Any):
    """Cache regions of `length` slots (one spare), the live rows sorted as the engine passes
    them, each seeing 1..length of its slots: (q, keys, values, rows, seen, length)."""
    gen = torch.Generator().manual_seed(rows * 131 + dim)
    keys = torch.randn((rows + 1) * length, kv_heads, dim, generator=gen).to(device, dtype)
    values = torch.randn((rows + 1) * length, kv_heads, dim, generator=gen).to(device, dtype)
    q = torch.randn(rows, heads, dim, generator=gen).to(device, dtype)
    live = torch.randperm(rows + 1, generator=gen)[:rows].sort().values.to(device)
    seen = torch.randint(1, length + 1, (rows,), generator=gen).to(device)
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
    # the 0.5B shape of `grpo_step.py --only generation`: 64 rows, 384-slot regions
    inputs = case(64, 384, 14, 2, 64, "cuda", torch.bfloat16)
    want = reference(*inputs, 0.125)
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    for name, fn in (
        ("flash", flash_attention),
        ("flash_full_window", flash_attention_full_window),
        ("triton", triton_attention),
    ):
        got = fn(*inputs, 0.125)
        report[name] = {
            "max_abs_error": (got.float() - want.float()).abs().max().item(),
            "us_per_call": timed_per_call(fn, (*inputs, 0.125)),
        }
        print(name, report[name], flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

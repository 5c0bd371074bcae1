"""A Triton decode-attention kernel for the static engine's cache layout (GPUs only).

For grouped-query decoding the varlen flash kernel transposes the queries into a head-group
layout, splits each row's keys across blocks and merges the parts in a second kernel: on an
H100 ~19.5 µs a layer of a 64-row, 0.5B-shape decode step (`benchmarks/results/
decode_profile_h100.txt`). This kernel runs one program per (row, KV head) that reads the
row's keys once for all query heads of its group (padded to the 16 rows a tensor-core dot
needs), with an online softmax over blocks of `block_n` cache slots. It does not split a
row's keys, so it needs enough rows to fill the GPU (`MIN_PROGRAMS`).
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

LAUNCH = {"block_n": 128, "num_warps": 4, "num_stages": 3}
"""Launch settings: the fastest (or within 0.3 µs of it) of 18 swept on an H100 at the 0.5B
and 1.5B shapes (`benchmarks/results/decode_attention_h100.json`); `launch_settings` shrinks
them where a GPU's shared memory cannot hold their K/V tiles."""

MIN_PROGRAMS = 32
"""`cached_attention`'s "auto" uses this kernel from rows x KV heads programs up (16 rows of
a 2-KV-head model: 46 µs against flash's 61 at 2-4k contexts on an H100); with fewer, one
row's keys per program leave most of the GPU idle and flash's split-KV pass wins."""


def launch_settings(dim_pad: int, element_bytes: int, shared_memory: int) -> dict[str, int]:
    """`LAUNCH`, with fewer pipeline stages, then smaller key blocks, until the K and V tiles
    of all stages fit in `shared_memory` bytes (A100: 164 KiB, L40: 100 KiB)."""
    block_n, stages = LAUNCH["block_n"], LAUNCH["num_stages"]
    while stages * block_n * dim_pad * element_bytes * 2 > shared_memory and block_n > 16:
        if stages > 2:
            stages -= 1
        else:
            block_n //= 2
    return {"block_n": block_n, "num_warps": LAUNCH["num_warps"], "num_stages": stages}


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
        s = (tl.dot(q, tl.trans(k)) * scale).to(tl.float32)  # under inductor scale is fp64
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


def decode_attention(
    q: Any,
    keys: Any,
    values: Any,
    starts: Any,
    seen: Any,
    scale: float,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> Any:
    """Row b's query heads q[b] (heads, D) against cache slots starts[b] .. starts[b] + seen[b]
    of keys/values ((slots), kv_heads, D); returns (rows, heads, D) in q's dtype. Launch
    settings default to `launch_settings` for this GPU."""
    import torch

    rows, heads, dim = q.shape
    kv_heads = keys.shape[1]
    group = heads // kv_heads
    q = q.contiguous()
    out = torch.empty_like(q)
    dim_pad = max(16, triton.next_power_of_2(dim))
    fitted = launch_settings(dim_pad, keys.element_size(), _shared_memory(keys.device))
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
        D_PAD=dim_pad,
        BLOCK_N=block_n or fitted["block_n"],
        num_warps=num_warps or fitted["num_warps"],
        num_stages=num_stages or fitted["num_stages"],
    )
    return out


def _shared_memory(device: Any) -> int:
    """Shared memory a block may opt into on `device` (plenty under Triton's CPU interpreter);
    torch.compile folds the device query into a constant."""
    import torch

    if device.type != "cuda":
        return 1 << 30
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin

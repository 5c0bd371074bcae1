"""Packed-sequence attention on PyTorch's varlen flash kernel (`torch.nn.attention.varlen`).

Packed rows hold several examples; flex attention keeps them apart with a block-sparse
mask, while the varlen flash kernel takes the examples' boundaries (cumulative lengths)
and never computes across them. Registered with transformers as attention
implementation `varlen` (CUDA only; the kernel has no CPU build).
"""

from __future__ import annotations

import inspect
from typing import Any

NAME = "varlen"


def cu_seqlens(segments: Any) -> Any:
    """Cumulative example lengths over the flattened (rows x length) batch, as int32.

    A new example starts wherever the segment id changes, and at every row start.
    """
    import torch

    rows, _length = segments.shape
    flat = (segments + torch.arange(rows, device=segments.device)[:, None] * (1 << 20)).reshape(-1)
    starts = torch.nonzero(flat[1:] != flat[:-1]).squeeze(-1) + 1
    edges = [flat.new_zeros(1), starts, flat.new_full((1,), flat.numel())]
    return torch.cat(edges).to(torch.int32)


def varlen_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    *,
    cu_seqlens: Any = None,
    max_seqlen: int | None = None,
    **_: Any,
) -> tuple[Any, None]:
    """transformers' attention-function signature: (B, H, T, D) in, (B, T, H, D) out."""
    from torch.nn.attention.varlen import varlen_attn

    if cu_seqlens is None:
        raise ValueError("varlen attention needs cu_seqlens (packed SFT batches provide them)")
    rows, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    q = query.transpose(1, 2).reshape(rows * length, heads, dim)
    k = key.transpose(1, 2).reshape(rows * length, kv_heads, dim)
    v = value.transpose(1, 2).reshape(rows * length, kv_heads, dim)
    params = inspect.signature(varlen_attn).parameters
    extra: dict[str, Any] = {"scale": scaling}
    if "window_size" in params:
        extra["window_size"] = (-1, 0)  # causal
    else:
        extra["is_causal"] = True
    if kv_heads != heads:
        if "enable_gqa" in params:
            extra["enable_gqa"] = True
        else:
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
    span = max_seqlen or length
    out = varlen_attn(q, k, v, cu_seqlens, cu_seqlens, span, span, **extra)
    return out.view(rows, length, heads, dim), None


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention)

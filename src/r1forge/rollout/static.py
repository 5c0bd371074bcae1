"""The static-cache rollout engine: r1forge's own decoder loop, built for RL rollouts.

Rollout is most of an RL step, and most of a decode step in `transformers.generate` is
host overhead: cache bookkeeping, logits processors, a Python round trip per token. R1-style
completions also differ in length by 10-50x within one batch, so a batch that decodes until
its longest row ends wastes most of its work. This engine runs the policy's own modules (so
weights are always current, LoRA included, with nothing to sync) over a preallocated cache:

- continuous batching: every row of the pool owns one cache region; a row that ends (EOS or
  its length) is harvested at the next check and a waiting sample takes its region, and the
  decode step runs over the live rows only, at the smallest of a few batch sizes that holds
  them (a CUDA graph each);
- prefix sharing: the G samples of a prompt admitted together share one prefill: the
  prompt's K/V are computed once and copied into each sample's region;
- attention reads each row's own context only: on GPUs the varlen flash kernel with
  per-row key lengths (`seqused_k`), elsewhere SDPA over the row's region with a mask;
  grouped-query attention needs no repeated K/V either way;
- sampling (temperature, top-p, Gumbel-max) and the sampled token's log-prob run on the
  device, the noise a hash of (prompt seed, sample, step, token id), so a prompt's samples
  do not depend on the batch, the rows beside them, or the rank they land on;
- on GPUs each layer's q/k/v projections run as one GEMM and gate/up as another, over
  concatenated copies of the weights refreshed in place at each call (plain `nn.Linear`
  only; a LoRA wrapper keeps its own modules): at decode batch sizes a GEMM costs about its
  launch, and this takes 11% off a 64-row step of a 0.5B model (`benchmarks/README.md`);
- the decode step (model, sampling, bookkeeping) is captured once per batch size into a CUDA
  graph and replayed; on GPUs its forward is also `torch.compile`d before capture, which
  fuses the norms, rotary and activations (a small model's decode step is kernel-bound); the
  host synchronises once every `check_every` steps, to harvest and admit.

On CPU the same step runs eagerly. Supported: Llama-family decoders (Llama, Qwen2/2.5,
Mistral without sliding window, Qwen3's q/k norms); anything else is refused by name.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from r1forge.rollout import Completion, Sampling, cut_at_eos, register_engine, sampling_module

log = logging.getLogger("r1forge.rollout")


_MASK32 = 0xFFFFFFFF


def _mul32(x: Any, c: int) -> Any:
    """(x * c) mod 2^32 for x < 2^32 held in int64, in halves so nothing overflows int64."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


def _hash32(x: Any) -> Any:
    """A 32-bit integer mixer (lowbias32): every input bit flips each output bit ~half the time."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def keyed_uniform(keys: Any, step: Any, vocab: int) -> Any:
    """Uniform (0, 1) noise (B, vocab), a pure function of (row key, step, token id).

    torch.rand would tie a row's draws to its batch and rank; hashed counters do not, and
    run inside a CUDA graph like rand does. `keys` (B,) and `step` (B,) or (1,) are int64
    tensors (each row counts its own steps under continuous batching).
    """
    import torch

    base = _hash32((keys & _MASK32) ^ _hash32(step & _MASK32))
    ids = torch.arange(vocab, device=keys.device)
    bits = _hash32(base[:, None] ^ ids[None, :])
    return ((bits >> 8).float() + 0.5) * 2.0**-24


def row_key(prompt_seed: int, sample: int) -> int:
    """The noise key of a prompt's `sample`-th completion."""
    return (prompt_seed ^ (sample * 0x9E3779B9)) & _MASK32


def sample_tokens(
    logits: Any, temperature: float, top_p: float, uniform: Any = None
) -> tuple[Any, Any]:
    """(token (B,), its log-prob under softmax(logits / T)) drawn with top-p; greedy when T <= 0.

    Gumbel-max over the kept logits draws exactly from the renormalised top-p distribution,
    from `uniform` noise shaped like `logits` (torch.rand when None) with no host
    synchronisation, so it can live inside a CUDA graph.
    """
    import torch

    logits = logits.float()
    if temperature <= 0:
        token = logits.argmax(-1)
        return token, torch.zeros_like(token, dtype=torch.float32)
    scaled = logits / temperature
    logp = torch.log_softmax(scaled, dim=-1)
    keep = scaled
    if top_p < 1.0:
        sorted_logp, order = logp.sort(dim=-1, descending=True)
        # a token stays if the mass before it is below top_p (the first always stays)
        before = sorted_logp.exp().cumsum(-1) - sorted_logp.exp()
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        keep = scaled.masked_fill(drop, float("-inf"))
    if uniform is None:
        uniform = torch.rand_like(keep)
    uniform = uniform.clamp(min=1e-20, max=1.0 - 1e-7)
    token = (keep - torch.log(-torch.log(uniform))).argmax(-1)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


@dataclass
class _Layout:
    """The decoder modules this engine drives, found by their Hugging Face names."""

    embed: Any
    layers: list[Any]
    norm: Any
    lm_head: Any
    rotary: Any
    heads: int
    kv_heads: int
    head_dim: int
    scaling: float


def _layout(model: Any) -> _Layout:
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    attn = getattr(layers[0], "self_attn", None) if layers else None
    needed = ("q_proj", "k_proj", "v_proj", "o_proj")
    if attn is None or not all(hasattr(attn, n) for n in needed) or not hasattr(base, "rotary_emb"):
        raise ValueError(
            f"the static rollout engine drives Llama-family decoders; {type(model).__name__} "
            "is not one (use rollout_engine: transformers)"
        )
    cfg = model.config
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", False):
        raise ValueError("the static rollout engine does not implement sliding-window attention")
    heads = cfg.num_attention_heads
    head_dim = getattr(attn, "head_dim", cfg.hidden_size // heads)
    return _Layout(
        embed=base.embed_tokens,
        layers=list(layers),
        norm=base.norm,
        lm_head=model.lm_head,
        rotary=base.rotary_emb,
        heads=heads,
        kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        scaling=getattr(attn, "scaling", head_dim**-0.5),
    )


@dataclass
class _FusedLayer:
    """One layer's q/k/v and gate/up weights side by side, so that each pair or triple of
    projections is one GEMM: at decode batch sizes a GEMM costs its launch more than its math."""

    qkv_weight: Any
    qkv_bias: Any
    gate_up_weight: Any


def _fusable(layer: Any) -> bool:
    """Plain linear projections only: a LoRA or quantised wrapper computes more than x @ W.T."""
    import torch

    attn, mlp = layer.self_attn, layer.mlp
    qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
    gate_up = [getattr(mlp, "gate_proj", None), getattr(mlp, "up_proj", None)]
    return (
        all(type(p) is torch.nn.Linear for p in qkv + gate_up)
        and hasattr(mlp, "act_fn")
        and len({p.bias is None for p in qkv}) == 1
        and all(p.bias is None for p in gate_up)
    )


def _fuse(layer: Any, into: _FusedLayer | None) -> _FusedLayer:
    """The layer's current weights concatenated, into `into`'s buffers when given (captured
    CUDA graphs hold their addresses, so new weights must land in the same memory)."""
    import torch

    attn, mlp = layer.self_attn, layer.mlp
    qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
    parts = [
        [p.weight for p in qkv],
        [p.bias for p in qkv] if qkv[0].bias is not None else None,
        [mlp.gate_proj.weight, mlp.up_proj.weight],
    ]
    if into is None:
        return _FusedLayer(*(torch.cat(t) if t is not None else None for t in parts))
    buffers = (into.qkv_weight, into.qkv_bias, into.gate_up_weight)
    for tensors, buffer in zip(parts, buffers, strict=True):
        if tensors is not None:
            torch.cat(tensors, out=buffer)
    return into


def _rotate(x: Any, cos: Any, sin: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


ATTENTION_KERNELS = ("auto", "flash", "triton")
"""Decode attention on GPUs: the varlen flash kernel, `decode_attention`'s Triton kernel, or
"auto": Triton where a step has enough rows to fill the GPU with it, else flash."""


def _flash_ready(x: Any) -> bool:
    """The varlen flash kernel runs on CUDA, in half precision only."""
    import torch

    return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)


def rows_index(rows: Any, seen: Any, length: int, flash: bool) -> tuple[Any, ...]:
    """What a decode step's attention needs about its rows (cache regions `rows`, each seeing
    its first `seen` slots), made once a step rather than once a layer: the varlen kernel's
    offsets and key lengths, or the regions and their masks."""
    import torch

    if flash:
        starts = (rows * length).to(torch.int32)  # rows come sorted: offsets never decrease
        cu_q = torch.arange(rows.shape[0] + 1, device=rows.device, dtype=torch.int32)
        return cu_q, torch.cat([starts, starts[-1:] + length]), seen.to(torch.int32)
    return rows, torch.arange(length, device=rows.device)[None, :] < seen[:, None]


def cached_attention(
    q: Any,
    keys: Any,
    values: Any,
    index: tuple[Any, ...],
    length: int,
    scale: float,
    kernel: str = "auto",
) -> Any:
    """Row b's query q[b] (heads, D) against its own cache slots (see `rows_index`).

    Caches are ((regions x length), kv_heads, D). On GPUs the varlen flash kernel or
    `decode_attention`'s Triton kernel (`ATTENTION_KERNELS`) reads each row's own slots only;
    elsewhere SDPA attends over the row's region, masked.
    """
    import torch
    import torch.nn.functional as F

    batch, heads, dim = q.shape
    kv_heads = keys.shape[1]
    if _flash_ready(q):
        cu_q, cu_k, seen = index
        if kernel == "auto":
            from r1forge.rollout.decode_attention import MIN_PROGRAMS

            kernel = "triton" if batch * kv_heads >= MIN_PROGRAMS else "flash"
        if kernel == "triton":
            from r1forge.rollout.decode_attention import decode_attention

            return decode_attention(q, keys, values, cu_k, seen, scale)
        out = torch.ops.aten._flash_attention_forward(
            q, keys, values, cu_q, cu_k, 1, length, 0.0, False, False, scale=scale, seqused_k=seen
        )
        return out[0]
    rows, visible = index
    k = keys.view(-1, length, kv_heads, dim)[rows].transpose(1, 2)
    v = values.view(-1, length, kv_heads, dim)[rows].transpose(1, 2)
    # fold each KV group's query heads into the query axis: no repeated K/V
    o = F.scaled_dot_product_attention(
        q.view(batch, kv_heads, heads // kv_heads, dim), k, v,
        attn_mask=visible[:, None, None, :], scale=scale,
    )  # fmt: skip
    return o.reshape(batch, heads, dim)


def packed_attention(q: Any, k: Any, v: Any, bounds: list[int], scale: float) -> Any:
    """Causal attention within each of the prompts packed back to back in q (N, heads, D) and
    k, v (N, kv_heads, D); prompt i spans [bounds[i], bounds[i+1])."""
    import torch
    import torch.nn.functional as F

    if _flash_ready(q):
        cu = torch.tensor(bounds, device=q.device, dtype=torch.int32)
        longest = max(b - a for a, b in itertools.pairwise(bounds))
        return torch.ops.aten._flash_attention_forward(
            q, k, v, cu, cu, longest, longest, 0.0, True, False, scale=scale
        )[0]
    parts = []
    for a, b in itertools.pairwise(bounds):
        qa, ka, va = (t[a:b].transpose(0, 1)[None] for t in (q, k, v))
        o = F.scaled_dot_product_attention(qa, ka, va, is_causal=True, scale=scale, enable_gqa=True)
        parts.append(o[0].transpose(0, 1))
    return torch.cat(parts)


class _Pool:
    """Device state of up to `rows` completions in flight: one cache region of `length` slots
    per row, plus a scratch row that padding entries of a batch point at (its limit is 0, so
    it never writes anything real). Per row: the token to feed next, its cache slot (`pos`),
    the index of the token it samples next (`step`), its noise key, its length limit and
    whether it sampled EOS; outputs are (rows, length), column length - 1 being scratch."""

    def __init__(self, lay: _Layout, rows: int, length: int, device: Any, dtype: Any):
        import torch

        shape = ((rows + 1) * length, lay.kv_heads, lay.head_dim)
        self.rows, self.length, self.dtype, self.device = rows, length, dtype, device
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in lay.layers]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in lay.layers]
        counters = {"device": device, "dtype": torch.long}
        self.token, self.pos, self.step, self.key, self.limit = (
            torch.zeros(rows + 1, **counters) for _ in range(5)
        )
        self.stopped = torch.zeros(rows + 1, device=device, dtype=torch.bool)
        self.out_tokens = torch.zeros((rows + 1, length), **counters)
        self.out_logp = torch.zeros((rows + 1, length), device=device, dtype=torch.float32)
        self.eos = torch.full((1,), -1, **counters)
        self.graphs: dict[tuple[int, float, float], tuple[Any, Any]] = {}


@register_engine("static")
class StaticCacheEngine:
    """Continuous batching over a preallocated KV cache, decode steps replayed as CUDA graphs."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_batch: int = 256,
        cuda_graphs: bool = True,
        compile: bool = True,
        check_every: int = 16,
        prefix_sharing: bool = True,
        fuse_projections: bool | None = None,
        attention_kernel: str = "auto",
    ):
        if attention_kernel not in ATTENTION_KERNELS:
            raise ValueError(f"attention_kernel must be one of {ATTENTION_KERNELS}")
        self.model, self.tokenizer = sampling_module(model), tokenizer
        self.max_batch, self.check_every = max_batch, check_every
        self.cuda_graphs, self.compile, self.prefix_sharing = cuda_graphs, compile, prefix_sharing
        self.fuse_projections, self.attention_kernel = fuse_projections, attention_kernel
        self._compiled: Any = None
        self._samplers: dict[tuple[float, float], Any] = {}
        self.layout = _layout(self.model)
        self._pool: _Pool | None = None
        self._fused: list[_FusedLayer] | None = None

    def sync_weights(self, model: Any) -> None:
        """The engine runs the policy's own modules (under ZeRO-3 a dense replica, refreshed in
        place so captured graphs stay valid); a new module object needs a new layout."""
        current = sampling_module(model, self.model)
        if current is not self.model:
            self.model, self.layout, self._pool = current, _layout(current), None
            self._compiled, self._fused = None, None

    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> list[Completion]:
        import torch

        seeds = sampling.prompt_seeds or [
            random.Random(f"{sampling.seed}/{i}").randrange(1 << 32) for i in range(len(prompts))
        ]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} prompt seeds for {len(prompts)} prompts")
        total = len(prompts) * n
        limits = list(sampling.lengths or [sampling.max_new_tokens] * total)
        if len(limits) != total or not all(1 <= x <= sampling.max_new_tokens for x in limits):
            raise ValueError(
                f"lengths must give each of the {total} completions 1..{sampling.max_new_tokens} "
                "tokens"
            )
        if not prompts:
            return []
        samples = [(i, row_key(seeds[i], j)) for i in range(len(prompts)) for j in range(n)]
        eos = None if sampling.ignore_eos or sampling.lengths else self.tokenizer.eos_token_id
        device = next(self.model.parameters()).device
        pool = self._pool_for(
            min(self.max_batch, total), max(map(len, prompts)) + sampling.max_new_tokens + 1, device
        )
        pool.eos.fill_(-1 if eos is None else eos)
        waiting, running = deque(range(total)), {}  # running: pool row -> sample index
        free = list(range(pool.rows - 1, -1, -1))
        out: list[Completion | None] = [None] * total
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self._refresh_fused(device)
                while waiting or running:
                    admitted = [
                        (free.pop(), waiting.popleft()) for _ in range(min(len(free), len(waiting)))
                    ]
                    if admitted:
                        self._prefill(pool, admitted, samples, limits, prompts, sampling)
                        running.update(admitted)
                    self._decode(pool, sorted(running), self.check_every, sampling)
                    for row, completion in self._harvest(
                        pool, running, samples, eos, sampling.logprobs
                    ):
                        out[running.pop(row)] = completion
                        free.append(row)
        finally:
            self.model.train(was_training)
        return [c for c in out if c is not None]

    # -- the pool ----------------------------------------------------------------------------

    def _pool_for(self, rows: int, length: int, device: Any) -> _Pool:
        """The live pool if it holds `rows` regions of `length` slots, else a new one (only one
        lives: a cache is large on real models). On GPUs sizes are rounded up, so that the
        captured graphs serve the next calls too."""
        if device.type == "cuda":
            rows = min(self.max_batch, max(8, 1 << math.ceil(math.log2(rows))))
            length = 64 * math.ceil(length / 64)
        dtype = next(self.model.parameters()).dtype
        pool = self._pool
        if pool is None or pool.rows < rows or pool.length < length or pool.dtype != dtype:
            self._pool = pool = None  # free the old cache before the new one is allocated
            pool = self._pool = _Pool(self.layout, rows, length, device, dtype)
        return pool

    def _bucket(self, pool: _Pool, live: int) -> int:
        """The batch size a decode step runs at: on GPUs the smallest power of two (at least 8,
        at most the pool) that holds the live rows, so a few captured graphs serve every mix."""
        if pool.device.type != "cuda" or not self.cuda_graphs:
            return live
        return min(pool.rows, max(8, 1 << math.ceil(math.log2(live))))

    def _refresh_fused(self, device: Any) -> None:
        """Concatenated projection weights, current as of this call (the policy's own weights
        change between calls). On by default where decode steps are CUDA graphs."""
        fuse = self.fuse_projections
        if fuse is None:
            fuse = device.type == "cuda" and self.cuda_graphs
        if not fuse or not all(_fusable(layer) for layer in self.layout.layers):
            self._fused = None
            return
        old: list[Any] = self._fused or []
        weight = self.layout.layers[0].self_attn.q_proj.weight
        if not old or old[0].qkv_weight.dtype != weight.dtype or old[0].qkv_weight.device != device:
            old = [None] * len(self.layout.layers)
        self._fused = [_fuse(layer, f) for layer, f in zip(self.layout.layers, old, strict=True)]

    # -- one admission, decode burst and harvest -----------------------------------------------

    def _layers(self, x: Any, positions: Any, attend: Any) -> Any:
        """Every decoder layer over tokens x (N, hidden) at `positions` (N,); attend(index,
        q, k, v) stores the layer's K/V and returns its attention output (N, heads, D)."""
        import torch.nn.functional as F

        lay = self.layout
        tokens = x.shape[0]
        q_width, kv_width = lay.heads * lay.head_dim, lay.kv_heads * lay.head_dim
        cos, sin = lay.rotary(x[None], positions[None])
        cos, sin = cos[0][:, None], sin[0][:, None]  # rotary made once, not once per layer
        for index, layer in enumerate(lay.layers):
            attn, fused = layer.self_attn, self._fused[index] if self._fused else None
            h = layer.input_layernorm(x)
            if fused is not None:
                q, k, v = F.linear(h, fused.qkv_weight, fused.qkv_bias).split(
                    [q_width, kv_width, kv_width], dim=-1
                )
            else:
                q, k, v = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
            q = q.reshape(tokens, lay.heads, lay.head_dim)
            k = k.reshape(tokens, lay.kv_heads, lay.head_dim)
            v = v.reshape(tokens, lay.kv_heads, lay.head_dim)
            if hasattr(attn, "q_norm"):
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            o = attend(index, q, k, v)
            x = x + attn.o_proj(o.reshape(tokens, q_width))
            h = layer.post_attention_layernorm(x)
            if fused is not None:
                gate, up = F.linear(h, fused.gate_up_weight).chunk(2, dim=-1)
                x = x + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
            else:
                x = x + layer.mlp(h)
        return x

    def _prefill(
        self,
        pool: _Pool,
        admitted: list[tuple[int, int]],
        samples: list[tuple[int, int]],
        limits: list[int],
        prompts: list[list[int]],
        sampling: Sampling,
    ) -> None:
        """Start (pool row, sample index) pairs: each distinct prompt among them (each row,
        without prefix sharing) runs once through the model, packed back to back; its K/V go
        to the regions of all its rows, and each row draws its first token from its logits."""
        import torch

        lay, device, length = self.layout, pool.device, pool.length
        groups: dict[Any, tuple[int, list[int]]] = {}  # who shares a prefill: (prompt, rows)
        for row, index in admitted:
            prompt = samples[index][0]
            groups.setdefault(prompt if self.prefix_sharing else row, (prompt, []))[1].append(row)
        owners = {row: u for u, (_, rows) in enumerate(groups.values()) for row in rows}
        ids = [prompts[prompt] for prompt, _ in groups.values()]
        bounds = [0]
        for prompt in ids:
            bounds.append(bounds[-1] + len(prompt))
        src, dst = [], []
        for u, (_, rows) in enumerate(groups.values()):
            span = range(bounds[u], bounds[u + 1])
            for row in rows:
                src += span
                dst += range(row * length, row * length + len(span))
        tokens = torch.tensor([t for prompt in ids for t in prompt], device=device)
        positions = torch.cat([torch.arange(len(p), device=device) for p in ids])
        src_t, dst_t = torch.tensor(src, device=device), torch.tensor(dst, device=device)

        def attend(index: int, q: Any, k: Any, v: Any) -> Any:
            pool.keys[index].index_copy_(0, dst_t, k[src_t].to(pool.dtype))
            pool.values[index].index_copy_(0, dst_t, v[src_t].to(pool.dtype))
            return packed_attention(q, k, v, bounds, lay.scaling)

        x = self._layers(lay.embed(tokens), positions, attend)
        last = torch.tensor(bounds[1:], device=device) - 1
        logits = lay.lm_head(lay.norm(x[last]))
        rows = [row for row, _ in admitted]
        rows_t = torch.tensor(rows, device=device)
        keys = torch.tensor([samples[index][1] for _, index in admitted], device=device)
        first, logp = self._draw(
            logits[torch.tensor([owners[r] for r in rows], device=device)],
            keys,
            torch.zeros_like(keys),
            sampling,
        )
        pool.token.index_copy_(0, rows_t, first)
        pool.pos.index_copy_(
            0, rows_t, torch.tensor([len(ids[owners[r]]) for r in rows], device=device)
        )
        pool.step.index_fill_(0, rows_t, 1)
        pool.key.index_copy_(0, rows_t, keys)
        pool.limit.index_copy_(
            0, rows_t, torch.tensor([limits[index] for _, index in admitted], device=device)
        )
        pool.stopped.index_copy_(0, rows_t, first == pool.eos)
        pool.out_tokens[rows_t, 0], pool.out_logp[rows_t, 0] = first, logp

    def _decode_logits(self, pool: _Pool, token: Any, pos: Any, slot: Any, live: Any) -> Any:
        """Logits of one new token per live row, its K/V written at `slot` first."""
        lay = self.layout
        flash = _flash_ready(pool.keys[0])
        rows = rows_index(live, pos + 1, pool.length, flash)

        def attend(index: int, q: Any, k: Any, v: Any) -> Any:
            pool.keys[index].index_copy_(0, slot, k.to(pool.dtype))
            pool.values[index].index_copy_(0, slot, v.to(pool.dtype))
            return cached_attention(
                q,
                pool.keys[index],
                pool.values[index],
                rows,
                pool.length,
                lay.scaling,
                self.attention_kernel,
            )

        return lay.lm_head(lay.norm(self._layers(lay.embed(token), pos, attend)))

    def _decode_step(self, pool: _Pool, live: Any, sampling: Sampling) -> None:
        """One token for each row in `live`: no host synchronisation. A row past its limit or
        its EOS (and the scratch row) writes only to scratch slots until it is harvested."""
        import torch

        token, pos, step = pool.token[live], pool.pos[live], pool.step[live]
        writing = (step < pool.limit[live]) & ~pool.stopped[live]
        slot = torch.where(writing, live * pool.length + pos, pool.rows * pool.length)
        forward = self._decode_logits
        if self.compile and pool.device.type == "cuda":
            if self._compiled is None:  # fuses norms, rotary and activations: fewer kernels
                self._compiled = torch.compile(self._decode_logits)
            forward = self._compiled
        logits = forward(pool, token, pos, slot, live)
        new, logp = self._sample(logits, pool.key[live], step, sampling)
        column = torch.where(writing, step, pool.length - 1)
        pool.out_tokens.index_put_((live, column), new)
        pool.out_logp.index_put_((live, column), logp)
        pool.stopped.index_copy_(0, live, pool.stopped[live] | (writing & (new == pool.eos)))
        pool.token.index_copy_(0, live, torch.where(writing, new, token))
        pool.pos.index_copy_(0, live, pos + writing)
        pool.step.index_copy_(0, live, step + writing)

    def _draw(self, logits: Any, keys: Any, step: Any, sampling: Sampling) -> tuple[Any, Any]:
        noise = None
        if sampling.temperature > 0:
            noise = keyed_uniform(keys, step, logits.shape[-1])
        return sample_tokens(logits, sampling.temperature, sampling.top_p, noise)

    def _sample(self, logits: Any, keys: Any, step: Any, sampling: Sampling) -> tuple[Any, Any]:
        """Tokens drawn with keyed noise; on GPUs compiled into a few fused kernels."""
        if not (self.compile and logits.device.type == "cuda"):
            return self._draw(logits, keys, step, sampling)
        import torch

        key = (sampling.temperature, sampling.top_p)
        if key not in self._samplers:
            self._samplers[key] = torch.compile(lambda lg, k, s: self._draw(lg, k, s, sampling))
        return self._samplers[key](logits, keys, step)

    def _decode(self, pool: _Pool, rows: list[int], steps: int, sampling: Sampling) -> None:
        """`steps` decode steps over the running rows (sorted), padded with the scratch row to
        the batch size of a captured graph."""
        import torch

        if not rows:
            return
        size = self._bucket(pool, len(rows))
        live = torch.tensor(rows + [pool.rows] * (size - len(rows)), device=pool.device)
        if pool.device.type != "cuda" or not self.cuda_graphs:
            for _ in range(steps):
                self._decode_step(pool, live, sampling)
            return
        graph, captured_live = self._graph(pool, size, sampling)
        captured_live.copy_(live)
        for _ in range(steps):
            graph.replay()

    def _graph(self, pool: _Pool, size: int, sampling: Sampling) -> tuple[Any, Any]:
        """The decode step at batch `size`, captured once. Warm-up and capture run over the
        scratch row only, so they write nothing a real row reads."""
        import torch

        key = (size, sampling.temperature, sampling.top_p)
        if key not in pool.graphs:
            live = torch.full((size,), pool.rows, device=pool.device, dtype=torch.long)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm up kernels, compilation and allocator before capture
                    self._decode_step(pool, live, sampling)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._decode_step(pool, live, sampling)
            pool.graphs[key] = (graph, live)
            log.info("captured the decode step for %d rows x %d cache slots", size, pool.length)
        return pool.graphs[key]

    def _harvest(
        self,
        pool: _Pool,
        running: dict[int, int],
        samples: list[tuple[int, int]],
        eos: int | None,
        logprobs: bool,
    ) -> list[tuple[int, Completion]]:
        """(row, completion) for each running row that sampled EOS or reached its limit."""
        import torch

        rows = sorted(running)
        if not rows:
            return []
        index = torch.tensor(rows, device=pool.device)
        state = torch.stack([pool.step[index], pool.limit[index], pool.stopped[index].long()])
        done = [
            (row, step)
            for row, step, limit, stopped in zip(rows, *state.cpu().tolist(), strict=True)
            if stopped or step >= limit
        ]
        if not done:
            return []
        width = max(step for _, step in done)
        picked = torch.tensor([row for row, _ in done], device=pool.device)
        tokens = pool.out_tokens[picked, :width].cpu().tolist()
        logps = pool.out_logp[picked, :width].cpu().tolist()
        return [
            (
                row,
                cut_at_eos(
                    samples[running[row]][0],
                    toks[:step],
                    lps[:step] if logprobs else None,
                    eos,
                    self.tokenizer,
                ),
            )
            for (row, step), toks, lps in zip(done, tokens, logps, strict=True)
        ]

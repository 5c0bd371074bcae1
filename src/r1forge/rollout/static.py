"""The static-cache rollout engine: r1forge's own decoder loop, built for RL rollouts.

Rollout is most of an RL step, and most of a decode step in `transformers.generate` is
host overhead: cache bookkeeping, logits processors, a Python round trip per token. This
engine runs the policy's own modules (so weights are always current, LoRA included, with
nothing to sync) over a preallocated KV cache:

- prompts are left-padded so every row writes the same cache slot each step;
- grouped-query attention folds a KV group's query heads into the query axis, so one SDPA
  call needs no repeated K/V;
- the rotary tables and the attention mask are made once per step, not once per layer;
- sampling (temperature, top-p, Gumbel-max) and the sampled token's log-prob run on the
  device, the noise a hash of (prompt seed, sample, step, token id), so a prompt's samples
  do not depend on the batch or rank it lands in;
- the whole decode step (model, sampling, bookkeeping) is captured once into a CUDA graph
  per (batch, length) bucket and replayed, with an EOS check every `check_every` steps as
  the only host synchronisation;
- on GPUs the decode forward is also `torch.compile`d before capture, which fuses the
  norms, rotary and activations: a small model's decode step is bound by kernel count.

On CPU the same step runs eagerly. Supported: Llama-family decoders (Llama, Qwen2/2.5,
Mistral without sliding window, Qwen3's q/k norms); anything else is refused by name.
"""

from __future__ import annotations

import logging
import math
import random
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
    run inside a CUDA graph like rand does. `keys` (B,) and `step` (1,) are int64 tensors.
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


def _rotate(x: Any, cos: Any, sin: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class _Buffers:
    """Device state of one (batch, cache length) bucket: KV cache, inputs, outputs, counters."""

    def __init__(self, lay: _Layout, rows: int, length: int, new: int, device: Any, dtype: Any):
        import torch

        shape = (rows, lay.kv_heads, length, lay.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in lay.layers]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in lay.layers]
        self.token = torch.zeros((rows, 1), device=device, dtype=torch.long)
        self.pad = torch.zeros((rows,), device=device, dtype=torch.long)
        self.row_keys = torch.zeros((rows,), device=device, dtype=torch.long)
        self.slot = torch.zeros((1,), device=device, dtype=torch.long)
        self.step = torch.zeros((1,), device=device, dtype=torch.long)
        self.out_tokens = torch.zeros((rows, new), device=device, dtype=torch.long)
        self.out_logp = torch.zeros((rows, new), device=device, dtype=torch.float32)
        self.keys_range = torch.arange(length, device=device)
        self.graph: Any = None


@register_engine("static")
class StaticCacheEngine:
    """Batched sampling over a preallocated KV cache, decode steps replayed as CUDA graphs."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        max_batch: int = 256,
        cuda_graphs: bool = True,
        compile: bool = True,
        check_every: int = 16,
    ):
        self.model, self.tokenizer = sampling_module(model), tokenizer
        self.max_batch, self.check_every = max_batch, check_every
        self.cuda_graphs, self.compile = cuda_graphs, compile
        self._compiled: Any = None
        self._samplers: dict[tuple[float, float], Any] = {}
        self.layout = _layout(self.model)
        self._buckets: dict[tuple[int, int, int, float, float], _Buffers] = {}

    def sync_weights(self, model: Any) -> None:
        """The engine runs the policy's own modules (under ZeRO-3 a dense replica, refreshed in
        place so captured graphs stay valid); a new module object needs a new layout."""
        current = sampling_module(model, self.model)
        if current is not self.model:
            self.model, self.layout, self._buckets = current, _layout(current), {}
            self._compiled = None

    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> list[Completion]:
        import torch

        seeds = sampling.prompt_seeds or [
            random.Random(f"{sampling.seed}/{i}").randrange(1 << 32) for i in range(len(prompts))
        ]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} prompt seeds for {len(prompts)} prompts")
        expanded = [
            (i, row_key(seeds[i], j), ids) for i, ids in enumerate(prompts) for j in range(n)
        ]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out: list[Completion] = []
        try:
            with torch.no_grad():
                for start in range(0, len(expanded), self.max_batch):
                    out += self._batch(expanded[start : start + self.max_batch], sampling, device)
        finally:
            self.model.train(was_training)
        return out

    # -- one batch -------------------------------------------------------------------------

    def _attend(
        self, buf: _Buffers, index: int, x: Any, rope: tuple[Any, Any], mask: Any, slots: Any
    ) -> Any:
        """One decoder layer over tokens x (B, T) written at cache `slots` (T,)."""
        import torch.nn.functional as F

        lay = self.layout
        layer = lay.layers[index]
        attn = layer.self_attn
        rows, width, _ = x.shape
        group = lay.heads // lay.kv_heads
        cos, sin = rope
        h = layer.input_layernorm(x)
        q = attn.q_proj(h).view(rows, width, lay.heads, lay.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(rows, width, lay.kv_heads, lay.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(rows, width, lay.kv_heads, lay.head_dim).transpose(1, 2)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        buf.keys[index].index_copy_(2, slots, k.to(buf.keys[index].dtype))
        buf.values[index].index_copy_(2, slots, v.to(buf.values[index].dtype))
        # fold each KV group's query heads into the query axis: no repeated K/V
        q = q.reshape(rows, lay.kv_heads, group * width, lay.head_dim)
        o = F.scaled_dot_product_attention(
            q, buf.keys[index], buf.values[index], attn_mask=mask, scale=lay.scaling
        )
        o = o.reshape(rows, lay.heads, width, lay.head_dim).transpose(1, 2)
        x = x + attn.o_proj(o.reshape(rows, width, lay.heads * lay.head_dim))
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def _logits(self, buf: _Buffers, tokens: Any, positions: Any, slots: Any) -> Any:
        """Last-position logits of tokens (B, T) at cache `slots`; rotary and mask made once."""
        lay = self.layout
        x = lay.embed(tokens)
        cos, sin = lay.rotary(x, positions)
        rope = (cos[:, None], sin[:, None])
        # a query sees keys from its row's first real token up to its own slot; a padding
        # query sees only itself, so nothing is all-masked (which would make NaNs)
        keys = buf.keys_range[None, None, :]
        visible = (keys >= buf.pad[:, None, None]) | (keys == slots[None, :, None])
        visible &= keys <= slots[None, :, None]  # (B, T, L)
        mask = visible[:, None].repeat(1, 1, lay.heads // lay.kv_heads, 1)
        for index in range(len(lay.layers)):
            x = self._attend(buf, index, x, rope, mask, slots)
        return lay.lm_head(lay.norm(x[:, -1]))

    def _decode_step(self, buf: _Buffers, sampling: Sampling) -> None:
        """Feed buf.token at buf.slot, sample the next token into the outputs: no host sync."""
        positions = (buf.slot - buf.pad)[:, None]
        forward = self._logits
        if self.compile and buf.token.device.type == "cuda":
            if self._compiled is None:  # fuses norms, rotary and activations: fewer kernels
                import torch

                self._compiled = torch.compile(self._logits, dynamic=False)
            forward = self._compiled
        logits = forward(buf, buf.token, positions, buf.slot)
        token, logp = self._sample(logits, buf.row_keys, buf.step, sampling)
        buf.out_tokens.index_copy_(1, buf.step, token[:, None])
        buf.out_logp.index_copy_(1, buf.step, logp[:, None])
        buf.token.copy_(token[:, None])
        buf.slot.add_(1)
        buf.step.add_(1)

    def _sample(self, logits: Any, keys: Any, step: Any, sampling: Sampling) -> tuple[Any, Any]:
        """Tokens drawn with keyed noise; on GPUs compiled into a few fused kernels."""

        def draw(logits: Any, keys: Any, step: Any) -> tuple[Any, Any]:
            noise = None
            if sampling.temperature > 0:
                noise = keyed_uniform(keys, step, logits.shape[-1])
            return sample_tokens(logits, sampling.temperature, sampling.top_p, noise)

        if not (self.compile and logits.device.type == "cuda"):
            return draw(logits, keys, step)
        import torch

        key = (sampling.temperature, sampling.top_p)
        if key not in self._samplers:
            self._samplers[key] = torch.compile(draw, dynamic=False)
        return self._samplers[key](logits, keys, step)

    def _bucket(self, rows: int, prompt_width: int, sampling: Sampling, device: Any) -> _Buffers:

        new = sampling.max_new_tokens
        rows_b = rows if device.type != "cuda" else max(8, 1 << math.ceil(math.log2(rows)))
        width_b = prompt_width if device.type != "cuda" else 64 * math.ceil(prompt_width / 64)
        key = (rows_b, width_b, new, sampling.temperature, sampling.top_p)
        if key not in self._buckets:
            dtype = next(self.model.parameters()).dtype
            self._buckets = {  # one live bucket: a cache is large on real models
                key: _Buffers(self.layout, rows_b, width_b + new, new, device, dtype)
            }
        return self._buckets[key]

    def _batch(
        self, items: list[tuple[int, int, list[int]]], sampling: Sampling, device: Any
    ) -> list[Completion]:
        """Rows of (prompt index, noise key, prompt ids), sampled together."""
        import torch

        pad_id, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        eos = None if sampling.ignore_eos else eos
        new = sampling.max_new_tokens
        buf = self._bucket(len(items), max(len(ids) for *_, ids in items), sampling, device)
        rows, width = buf.token.shape[0], buf.keys_range.shape[0] - new
        prompt = torch.full((rows, width), pad_id, dtype=torch.long)
        pad = torch.full((rows,), width - 1, dtype=torch.long)  # filler rows: one pad token
        keys = torch.zeros((rows,), dtype=torch.long)
        for row, (_, key, ids) in enumerate(items):
            prompt[row, width - len(ids) :] = torch.tensor(ids)
            pad[row] = width - len(ids)
            keys[row] = key
        buf.pad.copy_(pad)
        buf.row_keys.copy_(keys)
        buf.step.zero_()
        slots = torch.arange(width, device=device)
        positions = (slots[None, :] - buf.pad[:, None]).clamp(min=0)
        logits = self._logits(buf, prompt.to(device), positions, slots)
        token, logp = self._sample(logits, buf.row_keys, buf.step, sampling)
        buf.out_tokens.zero_()
        buf.out_tokens[:, 0], buf.out_logp[:, 0] = token, logp
        buf.token.copy_(token[:, None])
        buf.slot.fill_(width)
        buf.step.fill_(1)
        done = 1
        step_fn = self._graph_step(buf, sampling, device) if new > 1 else None
        while step_fn is not None and done < new:
            burst = min(self.check_every, new - done)
            for _ in range(burst):
                step_fn()
            done += burst
            if eos is not None and bool((buf.out_tokens[: len(items), :done] == eos).any(-1).all()):
                break
        tokens = buf.out_tokens[: len(items), :done].cpu()
        logps = buf.out_logp[: len(items), :done].cpu()
        return [
            cut_at_eos(
                prompt_index,
                tokens[row].tolist(),
                logps[row].tolist() if sampling.logprobs else None,
                eos,
                self.tokenizer,
            )
            for row, (prompt_index, *_) in enumerate(items)
        ]

    def _graph_step(self, buf: _Buffers, sampling: Sampling, device: Any) -> Any:
        """The decode step as a callable: a replayed CUDA graph on GPUs, eager elsewhere."""
        import torch

        if device.type != "cuda" or not self.cuda_graphs:
            return lambda: self._decode_step(buf, sampling)
        if buf.graph is None:
            # warm-up and capture each run one real step from the state prefill left, which
            # is then restored: nothing is written past the first decode slot
            live = (buf.token, buf.slot, buf.step, buf.out_tokens, buf.out_logp)
            state = [t.clone() for t in live]

            def restore() -> None:
                for tensor, saved in zip(live, state, strict=True):
                    tensor.copy_(saved)

            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm up kernels and allocator before capture
                    restore()
                    self._decode_step(buf, sampling)
            torch.cuda.current_stream().wait_stream(side)
            restore()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._decode_step(buf, sampling)
            restore()
            buf.graph = graph
            rows, slots = buf.token.shape[0], buf.keys_range.shape[0]
            log.info("captured the decode step for %d rows x %d cache slots", rows, slots)
        return buf.graph.replay

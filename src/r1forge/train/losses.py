"""Language-model losses computed only where there are labels, without full-vocabulary logits.

Only positions with a label go through the output head, in chunks, so prompt tokens and
padding cost no logits and peak memory stays at one chunk of (tokens x vocab).
"""

from __future__ import annotations

import functools
from typing import Any

from r1forge.errors import ConfigError
from r1forge.train import varlen
from r1forge.train.batching import Batch, attention_mask


def _chunk_loss_and_grad(logits: Any, targets: Any) -> tuple[Any, Any]:
    """Summed cross-entropy of one chunk and its gradient w.r.t. the logits (softmax minus
    one-hot), in float32; one fused kernel on GPUs (compiled below)."""
    import torch

    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(1, targets[:, None]).squeeze(1)
    grad = torch.exp(logits - lse[:, None])
    grad.scatter_add_(1, targets[:, None], -torch.ones_like(grad[:, :1]))
    return (lse - picked).sum(), grad


_compiled_chunk_loss: Any = None


def _chunk_kernel(device: Any) -> Any:
    global _compiled_chunk_loss
    if device.type != "cuda":
        return _chunk_loss_and_grad
    if _compiled_chunk_loss is None:
        import torch

        _compiled_chunk_loss = torch.compile(_chunk_loss_and_grad, dynamic=True)
    return _compiled_chunk_loss


@functools.cache
def _linear_cross_entropy() -> Any:
    """An autograd function: summed cross-entropy of `hidden @ weight.T`, whose gradients are
    computed chunk by chunk during the forward pass (as Liger's fused linear cross-entropy
    does), so logits are never all alive, never recomputed, and the softmax, loss and
    gradient of a chunk are one pass over its logits."""
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(
            ctx: Any, hidden: Any, weight: Any, targets: Any, chunk: int, needs_grad: bool
        ) -> Any:
            kernel = _chunk_kernel(hidden.device)
            total = hidden.new_zeros((), dtype=torch.float32)
            grad_hidden = torch.empty_like(hidden) if needs_grad else None
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs_grad else None
            for start in range(0, hidden.shape[0], chunk):
                h, y = hidden[start : start + chunk], targets[start : start + chunk]
                loss, grad_logits = kernel(h @ weight.T, y)
                total += loss
                if needs_grad:
                    grad_logits = grad_logits.to(hidden.dtype)
                    grad_hidden[start : start + chunk] = grad_logits @ weight
                    grad_weight += grad_logits.T @ h  # chunks summed in float32
            ctx.save_for_backward(grad_hidden, grad_weight)
            ctx.weight_dtype = weight.dtype
            return total

        @staticmethod
        def backward(ctx: Any, grad_output: Any) -> tuple[Any, ...]:
            grad_hidden, grad_weight = ctx.saved_tensors
            scale = grad_output.to(torch.float32)
            return (
                (grad_hidden * scale).to(grad_hidden.dtype) if ctx.needs_input_grad[0] else None,
                (grad_weight * scale).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None,
                None,
                None,
                None,
            )

    return LinearCrossEntropy


def chunked_cross_entropy_sum(hidden: Any, weight: Any, targets: Any, chunk: int = 4096) -> Any:
    """Sum of cross-entropy of `hidden @ weight.T` against `targets`, `chunk` rows at a time,
    logits upcast to float32 for a stable log-softmax; see `_linear_cross_entropy`."""
    import torch

    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return _linear_cross_entropy().apply(hidden, weight, targets, chunk, needs_grad)


def causal_lm_loss_sum(
    model: Any, batch: Batch, implementation: str, chunk: int = 2048
) -> tuple[Any, int]:
    """(sum of next-token losses over labelled tokens, number of labelled tokens) for a batch."""
    import torch

    selected, targets = labelled_hidden(model, batch, implementation)
    head = model.get_output_embeddings()
    if zero3_sharded(head.weight):  # only a call of the head module sees its weight whole
        logits = head(selected).float()
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum"), batch.n_labels
    return chunked_cross_entropy_sum(selected, head.weight, targets, chunk), batch.n_labels


def zero3_sharded(weight: Any) -> bool:
    """ZeRO-3 holds this weight as shards, gathered only inside its module's hooks (weights
    under the persistence threshold stay whole), so the fused loss cannot take it directly."""
    return hasattr(weight, "ds_id") and not getattr(weight, "ds_persist", False)


def labelled_hidden(model: Any, batch: Batch, implementation: str) -> tuple[Any, Any]:
    """(final hidden states that predict a labelled token (N, H), those tokens (N,))."""
    import torch

    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    dtype = next(head.parameters()).dtype
    if implementation == varlen.NAME:
        mask = None
        boundaries = batch.boundaries
        torch._dynamo.mark_dynamic(boundaries, 0)  # one compiled graph for any example count
        extra = {"cu_seqlens": boundaries}
    else:
        mask, extra = attention_mask(batch.segments, implementation, dtype), {}
    hidden = decoder(
        input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=mask, **extra
    ).last_hidden_state
    # the hidden state at position t predicts the token at t + 1
    selected = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, batch.label_index)
    targets = batch.labels[:, 1:].reshape(-1).index_select(0, batch.label_index)
    return selected, targets


def kl_per_position(
    student_logits: Any, teacher_logits: Any, temperature: float = 1.0, kind: str = "forward"
) -> Any:
    """KL between teacher and student next-token distributions at a temperature, per row.

    forward: KL(teacher || student), mass-covering (Hinton); reverse: KL(student ||
    teacher), mode-seeking (MiniLLM). Scaled by T^2 so gradients keep their size across T.
    """
    import torch

    s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    t = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if kind == "forward":
        kl = (t.exp() * (t - s)).sum(-1)
    elif kind == "reverse":
        kl = (s.exp() * (s - t)).sum(-1)
    else:
        raise ValueError(f"unknown KL kind {kind!r}: forward or reverse")
    return kl * temperature**2


def distillation_loss_sum(
    model: Any,
    teacher: Any,
    batch: Batch,
    implementation: str,
    *,
    alpha: float,
    temperature: float,
    kind: str,
    chunk: int = 2048,
) -> Any:
    """(1 - alpha) * next-token CE + alpha * KL to the teacher, summed over labelled tokens.

    The teacher (same tokenizer) runs without gradients; the logits of both are made a
    chunk of positions at a time, as for the plain loss.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    selected, targets = labelled_hidden(model, batch, implementation)
    weight = model.get_output_embeddings().weight
    if zero3_sharded(weight):
        raise ConfigError("distillation runs with zero_stage 0-2 (students fit one GPU)")
    with torch.no_grad():
        teacher_hidden, _ = labelled_hidden(teacher, batch, "sdpa")
        teacher_weight = teacher.get_output_embeddings().weight

    def chunk_kl(h: Any, th: Any) -> Any:
        return kl_per_position(h @ weight.T, th @ teacher_weight.T, temperature, kind).sum()

    kd = selected.new_zeros((), dtype=torch.float32)
    for start in range(0, selected.shape[0], chunk):
        h, th = selected[start : start + chunk], teacher_hidden[start : start + chunk]
        kd = kd + (
            checkpoint(chunk_kl, h, th, use_reentrant=False)
            if torch.is_grad_enabled()
            else chunk_kl(h, th)
        )
    ce = chunked_cross_entropy_sum(selected, weight, targets, chunk)
    return (1 - alpha) * ce + alpha * kd

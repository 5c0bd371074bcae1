"""Language-model losses computed only where there are labels, without full-vocabulary logits.

Only positions with a label go through the output head, in chunks, so prompt tokens and
padding cost no logits and peak memory stays at one chunk of (tokens x vocab).
"""

from __future__ import annotations

from typing import Any

from r1forge.train import varlen
from r1forge.train.batching import Batch, attention_mask


def chunked_cross_entropy_sum(hidden: Any, weight: Any, targets: Any, chunk: int = 2048) -> Any:
    """Sum of cross-entropy of `hidden @ weight.T` against `targets`, `chunk` rows at a time.

    Each chunk's logits are recomputed in backward (activation checkpointing), so they are
    never all alive at once. Logits are upcast to float32 for a stable log-softmax.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    def chunk_loss(h: Any, y: Any) -> Any:
        return F.cross_entropy((h @ weight.T).float(), y, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk):
        h, y = hidden[start : start + chunk], targets[start : start + chunk]
        total = total + (
            checkpoint(chunk_loss, h, y, use_reentrant=False)
            if torch.is_grad_enabled()
            else chunk_loss(h, y)
        )
    return total


def causal_lm_loss_sum(
    model: Any, batch: Batch, implementation: str, chunk: int = 2048
) -> tuple[Any, int]:
    """(sum of next-token losses over labelled tokens, number of labelled tokens) for a batch."""
    selected, targets = labelled_hidden(model, batch, implementation)
    head = model.get_output_embeddings()
    return chunked_cross_entropy_sum(selected, head.weight, targets, chunk), batch.n_labels


def labelled_hidden(model: Any, batch: Batch, implementation: str) -> tuple[Any, Any]:
    """(final hidden states that predict a labelled token (N, H), those tokens (N,))."""
    import torch

    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    dtype = next(head.parameters()).dtype
    if implementation == varlen.NAME:
        mask = None
        boundaries = varlen.cu_seqlens(batch.segments)
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

"""Tokenisation with assistant-only labels, sequence packing and collation.

Packed rows hold several examples; position ids restart at every example and a
block-diagonal causal mask keeps examples from attending to each other, so a packed batch
computes exactly what the examples would compute one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from r1forge.train.varlen import cu_seqlens

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_labels(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


@dataclass
class Batch:
    """A micro-batch. `segments` numbers the example each token belongs to (-1: padding);
    `label_index` lists the flat positions of (B, T-1) whose next token carries a label and
    `boundaries` the examples' cumulative lengths over the flattened batch (what the varlen
    kernel takes), both computed on the CPU so the step needs no device synchronisation."""

    input_ids: Any
    labels: Any
    position_ids: Any
    segments: Any
    label_index: Any
    boundaries: Any

    @property
    def n_labels(self) -> int:
        return int(self.label_index.numel())

    @property
    def n_tokens(self) -> int:
        return int((self.segments >= 0).sum())

    def to(self, device: Any) -> Batch:
        """On a GPU through pinned memory: a copy from pageable memory waits for the GPU to
        drain, which would leave it idle while the host prepares the next step."""
        import torch

        if torch.device(device).type == "cuda":
            return Batch(*(t.pin_memory().to(device, non_blocking=True) for t in self.tensors()))
        return Batch(*(t.to(device) for t in self.tensors()))

    def tensors(self) -> tuple[Any, ...]:
        return (
            self.input_ids,
            self.labels,
            self.position_ids,
            self.segments,
            self.label_index,
            self.boundaries,
        )


def tokenize_conversation(messages: list[dict[str, str]], tokenizer: Any, max_len: int) -> Example:
    """Token ids of a chat, with labels only on assistant turns (the chat template marks them)."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = list(out["input_ids"])[:max_len]
    mask = list(out["assistant_masks"])[:max_len]
    labels = [t if m else IGNORE for t, m in zip(ids, mask, strict=True)]
    return Example(ids, labels)


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: group example indices into rows of at most `capacity` tokens."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        size = lengths[index]
        if size > capacity:
            raise ValueError(f"example of {size} tokens exceeds the row capacity {capacity}")
        for row, free in enumerate(room):
            if size <= free:
                rows[row].append(index)
                room[row] -= size
                break
        else:
            rows.append([index])
            room.append(capacity - size)
    return rows


def collate(rows: Sequence[Sequence[Example]], pad_id: int, length: int | None = None) -> Batch:
    """Concatenate each row's examples (positions restart per example) and right-pad rows.

    With one example a row this is ordinary padded batching; with one row and no `length`
    it is the padding-free layout. The first label of every example is ignored, so no
    token is ever predicted across an example boundary.
    """
    import torch

    width = length or max(sum(len(e.input_ids) for e in row) for row in rows)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    segments = torch.full(shape, -1, dtype=torch.long)
    for r, row in enumerate(rows):
        cursor = 0
        for s, example in enumerate(row):
            n = len(example.input_ids)
            if cursor + n > width:
                raise ValueError(f"row of {cursor + n} tokens exceeds length {width}")
            ids[r, cursor : cursor + n] = torch.tensor(example.input_ids)
            labels[r, cursor : cursor + n] = torch.tensor(example.labels)
            labels[r, cursor] = IGNORE
            positions[r, cursor : cursor + n] = torch.arange(n)
            segments[r, cursor : cursor + n] = s
            cursor += n
    label_index = (labels[:, 1:] != IGNORE).reshape(-1).nonzero().squeeze(1)
    return Batch(ids, labels, positions, segments, label_index, cu_seqlens(segments))


def attention_mask(segments: Any, implementation: str, dtype: Any) -> Any:
    """The mask that keeps packed examples apart: causal within a segment, nothing across.

    sdpa/eager take a 4-D additive float mask; flex_attention takes a BlockMask.
    Padding tokens attend only to themselves (their outputs carry no label).
    """
    import torch

    if implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        def same_segment_causal(b, h, q, k):
            return (segments[b, q] == segments[b, k]) & (k <= q)

        batch, length = segments.shape
        return create_block_mask(
            same_segment_causal, batch, None, length, length, device=segments.device
        )
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    allowed = (segments[:, :, None] == segments[:, None, :]) & causal
    allowed |= torch.eye(length, dtype=torch.bool, device=segments.device)
    zero = torch.zeros((), dtype=dtype, device=segments.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]

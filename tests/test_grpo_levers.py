"""The RL levers against hand-computed values (issue 17): dynamic sampling, the loss variants'
own normalisers, truncated importance sampling and the mismatch KL, entropy control, the
prompt stream; and an exact resume of a run with dynamic sampling's refill draws."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from r1forge.config import GRPOConfig
from r1forge.rollout import Completion
from r1forge.train.grpo import (
    LOSS_VARIANTS,
    BatchSize,
    informative_groups,
    mismatch_kl,
    next_entropy_coef,
    policy_loss,
    tis_weights,
)
from r1forge.train.rl import (
    PromptItem,
    PromptStream,
    Rollouts,
    advantage_phase,
    filter_phase,
)

from .conftest import ROOT, child_env


def test_informative_groups() -> None:
    assert informative_groups([1, 0, 1, 1, 0.5, 0.5], 2) == [True, False, False]
    assert informative_groups([0.2, 0.2, 0.2], 3) == [False]
    with pytest.raises(ValueError, match="groups of 2"):
        informative_groups([1, 0, 1], 2)


# rows: two tokens of term -1 (advantage 1), one token of term -3 (advantage 3)
LOGP = torch.zeros(2, 3)
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
ADV = torch.tensor([1.0, 3.0])


@pytest.mark.parametrize(
    ("loss_type", "expected"),
    [
        # grpo: sequence means -1 and -3, summed, over 4 sequences in the whole batch
        ("grpo", (-1 - 3) / 4),
        # dapo: token sum -5 over the batch's 10 tokens
        ("dapo", -5 / 10),
        # dr_grpo: token sum -5 over 4 sequences x a 6-token budget
        ("dr_grpo", -5 / 24),
    ],
)
def test_each_variant_divides_by_its_own_normaliser_of_the_whole_batch(
    loss_type: str, expected: float
) -> None:
    whole = BatchSize(sequences=4, tokens=10.0, max_tokens=6)
    loss, _ = policy_loss(LOGP, LOGP, None, ADV, MASK, loss_type=loss_type, batch=whole)  # type: ignore[arg-type]
    assert loss.item() == pytest.approx(expected)


@pytest.mark.parametrize("loss_type", sorted(LOSS_VARIANTS))
def test_micro_batches_sum_to_the_whole_batch_loss(loss_type: str) -> None:
    torch.manual_seed(0)
    logp = torch.randn(6, 5)
    old = logp + 0.05 * torch.randn(6, 5)
    adv = torch.randn(6)
    mask = (torch.rand(6, 5) > 0.3).float()
    mask[:, 0] = 1
    whole = BatchSize(sequences=6, tokens=float(mask.sum()), max_tokens=5)
    full, _ = policy_loss(logp, old, None, adv, mask, loss_type=loss_type, batch=whole)  # type: ignore[arg-type]
    parts = sum(
        policy_loss(
            logp[s : s + 2],
            old[s : s + 2],
            None,
            adv[s : s + 2],
            mask[s : s + 2],
            loss_type=loss_type,
            batch=whole,  # type: ignore[arg-type]
        )[0]
        for s in range(0, 6, 2)
    )
    assert float(parts) == pytest.approx(float(full), abs=1e-6)


def test_tis_weights_cap_and_the_mismatch_kl() -> None:
    trainer = torch.log(torch.tensor([[0.5, 0.4, 0.9]]))
    rollout = torch.log(torch.tensor([[0.5, 0.1, 0.6]]))
    weights, capped = tis_weights(trainer, rollout, cap=2.0)
    assert torch.allclose(weights, torch.tensor([[1.0, 2.0, 1.5]]))  # 0.4/0.1 = 4 capped at 2
    assert capped.tolist() == [[False, True, False]]
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # k3 per token with r = log(p_trainer / p_rollout): 0 and 4 - log 4 - 1
    assert mismatch_kl(trainer, rollout, mask) == pytest.approx((4 - math.log(4) - 1) / 2)
    assert mismatch_kl(trainer, trainer, mask) == 0.0


def test_importance_weights_and_entropy_bonus_enter_each_term() -> None:
    logp = torch.zeros(1, 2)
    weights = torch.tensor([[2.0, 0.5]])
    entropy = torch.tensor([[1.0, 3.0]])
    # terms: -1*2 - 0.1*1 and -1*0.5 - 0.1*3, averaged over 2 tokens (dapo)
    loss, _ = policy_loss(
        logp,
        logp,
        None,
        torch.tensor([1.0]),
        torch.ones(1, 2),
        loss_type="dapo",
        is_weights=weights,
        entropy=entropy,
        entropy_coef=0.1,
    )
    assert loss.item() == pytest.approx((-2.1 - 0.8) / 2)
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp, logp, None, torch.tensor([1.0]), torch.ones(1, 2), entropy_coef=0.1)


def test_entropy_bonus_gradient_raises_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    logp_all = torch.log_softmax(logits, -1)
    entropy = -(logp_all.exp() * logp_all).sum(-1, keepdim=True)
    logp = logp_all[:, :1]
    loss, _ = policy_loss(
        logp,
        logp.detach(),
        None,
        torch.tensor([0.0]),
        torch.ones(1, 1),
        entropy=entropy,
        entropy_coef=1.0,
    )
    loss.backward()
    stepped = logits.detach() - 0.1 * logits.grad
    after = torch.log_softmax(stepped, -1)
    assert float(-(after.exp() * after).sum()) > float(entropy.detach())


def test_adaptive_entropy_coefficient() -> None:
    assert next_entropy_coef(0.001, 0.1, 0.2, 1e-4, 0.005) == pytest.approx(0.0011)
    assert next_entropy_coef(0.001, 0.3, 0.2, 1e-4, 0.005) == pytest.approx(0.0009)
    assert next_entropy_coef(0.005, 0.1, 0.2, 1e-4, 0.005) == 0.005  # capped
    assert next_entropy_coef(0.00005, 0.3, 0.2, 1e-4, 0.005) == 0.0  # never negative
    assert next_entropy_coef(0.002, 0.0, None, 1e-4, 0.005) == 0.002  # no target: fixed


def test_prompt_stream_is_the_step_order_and_a_curriculum_keeps_the_file_order() -> None:
    import random

    stream = PromptStream(10, 4, seed=3, order="shuffle", rank=0, world=1)
    epoch0 = list(range(10))
    random.Random("3/prompts/0").shuffle(epoch0)
    epoch1 = list(range(10))
    random.Random("3/prompts/1").shuffle(epoch1)
    assert [stream.take() for _ in range(3)] == [epoch0[:4], epoch0[4:8], epoch1[:4]]
    assert stream.draws == 3
    ranks = [PromptStream(10, 4, 3, "shuffle", rank, 2).take() for rank in (0, 1)]
    assert ranks == [epoch0[0:4:2], epoch0[1:4:2]]
    curriculum = PromptStream(10, 4, 3, "file", 0, 1)
    assert [curriculum.take() for _ in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]
    with pytest.raises(Exception, match="exceeds"):
        PromptStream(3, 4, 0, "shuffle", 0, 1)


def draws_of(rewards_by_draw: list[list[float]], group: int) -> tuple[list[int], object]:
    """A draw function returning hand-set rewards; records which draws were made."""
    made: list[int] = []

    def draw(index: int) -> Rollouts:
        made.append(index)
        totals = rewards_by_draw[index]
        n = len(totals) // group
        items = [PromptItem([index, g], {"id": f"d{index}g{g}"}) for g in range(n)]
        completions = [Completion(r // group, [1], "x", "stop") for r in range(len(totals))]
        return Rollouts(items, completions, totals, {"accuracy": totals}, group)

    return made, draw


def test_dynamic_sampling_refills_caps_and_tops_up_with_masked_filler() -> None:
    cfg = GRPOConfig(group_size=2, prompts_per_step=3)
    # draw 0: groups (1,0) (1,1) (0,0); draw 1: (0,1) (1,1) (1,0)
    rewards = [[1, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]]
    made, draw = draws_of(rewards, 2)
    off = filter_phase(draw, cfg, quota=3)  # off: the first draw as it is
    assert made == [0] and off.real_groups == 3 and off.first_draw_zero_std == pytest.approx(2 / 3)

    on = GRPOConfig(
        group_size=2, prompts_per_step=3, dynamic_sampling={"enabled": True, "max_draws": 3}
    )
    made, draw = draws_of(rewards, 2)
    batch = filter_phase(draw, on, quota=3)
    assert made == [0, 1] and batch.draws == 2 and batch.real_groups == 3
    assert [i.example["id"] for i in batch.train.items] == ["d0g0", "d1g0", "d1g2"]
    assert batch.drawn.groups == 6

    capped = GRPOConfig(
        group_size=2, prompts_per_step=3, dynamic_sampling={"max_draws": 2, "enabled": True}
    )
    made, draw = draws_of([rewards[0], rewards[2]], 2)
    short = filter_phase(draw, capped, quota=3)
    assert made == [0, 1] and short.real_groups == 1
    # topped up with the first draw's dropped groups, whose advantages are then zero
    assert [i.example["id"] for i in short.train.items] == ["d0g0", "d0g1", "d0g2"]
    advantages = advantage_phase(short, capped)
    assert advantages[2:].abs().sum() == 0 and advantages[0] > 0 > advantages[1]


def grpo_cli(ci_data: Path, ci_base: Path, out: Path, plugin: Path, *settings: str, **kw):
    args = [
        "grpo",
        "--recipe",
        str(ROOT / "recipes/ci.yaml"),
        "--data",
        str(ci_data),
        "--model",
        str(ci_base),
        "--output",
        str(out),
    ]
    for setting in settings:
        args += ["--set", setting]
    env = {"PYTHONPATH": str(plugin), "R1FORGE_PLUGINS": "half_informative", **kw.get("env", {})}
    return subprocess.run(
        [sys.executable, "-m", "r1forge.cli", *args, *kw.get("extra", ())],
        capture_output=True,
        text=True,
        timeout=900,
        env=child_env(env),
    )


PLUGIN = '''
from r1forge.rewards import register


@register("half_informative")
def half_informative(completions, examples, **_):
    """Varies within a group only for prompts whose id ends in an even digit."""
    return [
        float(len(c) % 2) if int(e["id"][-1]) % 2 == 0 else 0.5
        for c, e in zip(completions, examples)
    ]
'''


@pytest.mark.slow
def test_dynamic_sampling_resumes_exactly_with_its_refill_draws(
    ci_data: Path, ci_base: Path, tmp_path: Path
) -> None:
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "half_informative.py").write_text(PLUGIN)
    settings = (
        "grpo_reasoning.max_steps=4",
        "grpo_reasoning.save_every=2",
        "grpo_reasoning.rewards={half_informative: 1.0}",
        "grpo_reasoning.dynamic_sampling={enabled: true, max_draws: 3}",
        "grpo_reasoning.entropy={coef: 0.001, target: 9.0}",
        "grpo_reasoning.lr=1e-3",
    )
    straight = grpo_cli(ci_data, ci_base, tmp_path / "straight", plugin, *settings)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = grpo_cli(
        ci_data,
        ci_base,
        tmp_path / "resumed",
        plugin,
        *settings,
        env={"R1FORGE_KILL_AFTER_STEP": "3"},
    )
    assert killed.returncode == -9
    resumed = grpo_cli(
        ci_data, ci_base, tmp_path / "resumed", plugin, *settings, extra=("--resume",)
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (load_file(tmp_path / run / "model.safetensors") for run in ("straight", "resumed"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    rows = {
        run: [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("straight", "resumed")
    }
    steps = [r for r in rows["straight"] if "reward" in r]
    assert any(r["dynamic/draws"] > 1 for r in steps)  # refills happened
    assert all(0 < r["dynamic/dropped_fraction"] < 1 for r in steps)
    assert all(r["grad_norm"] > 0 for r in steps)  # informative groups: a gradient, measured
    # the entropy stays below the target (at most ln 384 < 9 nats), so the bonus grows
    assert steps[1]["entropy_coef"] > 0.001
    last = [r for r in rows["resumed"] if r.get("step") == 4 and "reward" in r][-1]
    assert last["dynamic/draws"] == steps[-1]["dynamic/draws"]
    assert last["entropy_coef"] == pytest.approx(steps[-1]["entropy_coef"])


def test_gradient_norm_of_the_accumulated_gradient() -> None:
    from r1forge.train.rl import gradient_norm

    layer = torch.nn.Linear(2, 1, bias=False)
    assert gradient_norm(layer) is None  # nothing accumulated yet
    layer.weight.grad = torch.tensor([[3.0, 4.0]])
    assert gradient_norm(layer) == pytest.approx(5.0)

"""GRPO's advantages and policy-loss variants against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from r1forge.train.grpo import group_advantages, k3_kl, policy_loss

S = math.sqrt(0.5)  # sample std of [1, 0]


def close(t: torch.Tensor, values: list[float]) -> bool:
    return torch.allclose(t, torch.tensor(values), atol=1e-6)


def test_group_scale() -> None:
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2, "group")
    a = 0.5 / (S + 1e-4)
    assert close(adv, [a, -a, -a, a])


def test_batch_scale() -> None:
    # group means 0.5 and 0; batch sample std of [1, 0, 0, 0] is 0.5
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 2, "batch")
    a = 0.5 / (0.5 + 1e-4)
    assert close(adv, [a, -a, 0.0, 0.0])


def test_no_scale_is_dr_grpo() -> None:
    adv = group_advantages(torch.tensor([3.0, 1.0, 2.0, 2.0, 2.0, 5.0]), 3, "none")
    assert close(adv, [1.0, -1.0, 0.0, -1.0, -1.0, 2.0])


def test_identical_rewards_give_zero_advantage() -> None:
    for scale in ("group", "batch", "none"):
        assert close(group_advantages(torch.tensor([0.7, 0.7, 0.7]), 3, scale), [0.0, 0.0, 0.0])
    assert close(group_advantages(torch.tensor([1.0, 0.0]), 1, "group"), [0.0, 0.0])


def test_advantage_shape_errors() -> None:
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.tensor([1.0, 2.0, 3.0]), 2)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.tensor([1.0, 2.0]), 2, "rank")  # type: ignore[arg-type]


def test_unclipped_ratio_one() -> None:
    logp = torch.zeros(1, 2)
    loss, stats = policy_loss(logp, logp, None, torch.tensor([2.0]), torch.ones(1, 2))
    assert loss.item() == pytest.approx(-2.0)
    assert (
        stats["clip_fraction"] == 0.0
        and stats["kl"] == 0.0
        and stats["ratio_mean"] == pytest.approx(1.0)
    )


def test_clipping_positive_and_negative_advantages() -> None:
    old = torch.zeros(1, 2)
    # ratio 1.5 then 1.0 with advantage +1: the first term clips to 1.2
    logp = torch.tensor([[math.log(1.5), 0.0]])
    loss, stats = policy_loss(logp, old, None, torch.tensor([1.0]), torch.ones(1, 2), epsilon=0.2)
    assert loss.item() == pytest.approx(-(1.2 + 1.0) / 2)
    assert stats["clip_fraction"] == pytest.approx(0.5)
    # ratio 0.5 with advantage -1: min(-0.5, -0.8) = -0.8, so the term is +0.8 and it clipped
    logp = torch.tensor([[math.log(0.5)]])
    loss, stats = policy_loss(logp, torch.zeros(1, 1), None, torch.tensor([-1.0]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.8)
    assert stats["clip_fraction"] == 1.0
    # ratio 1.5 with advantage -1 is not clipped (the pessimistic unclipped term is taken)
    logp = torch.tensor([[math.log(1.5)]])
    loss, stats = policy_loss(logp, torch.zeros(1, 1), None, torch.tensor([-1.0]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(1.5) and stats["clip_fraction"] == 0.0


def test_epsilon_high_widens_the_upper_clip() -> None:
    logp = torch.tensor([[math.log(1.25)]])
    old, adv, mask = torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1)
    loss, stats = policy_loss(logp, old, None, adv, mask, epsilon=0.2)
    assert loss.item() == pytest.approx(-1.2) and stats["clip_fraction"] == 1.0
    loss, stats = policy_loss(logp, old, None, adv, mask, epsilon=0.2, epsilon_high=0.28)
    assert loss.item() == pytest.approx(-1.25) and stats["clip_fraction"] == 0.0


@pytest.mark.parametrize(
    ("loss_type", "expected"), [("grpo", -2.0), ("dapo", -5 / 3), ("dr_grpo", -5 / 6)]
)
def test_aggregations(loss_type: str, expected: float) -> None:
    # ratio 1: token terms are -advantage; row 0 has 2 tokens of -1, row 1 one token of -3
    logp = torch.zeros(2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    loss, _ = policy_loss(logp, logp, None, torch.tensor([1.0, 3.0]), mask, loss_type=loss_type)  # type: ignore[arg-type]
    assert loss.item() == pytest.approx(expected)


def test_k3_kl_and_beta() -> None:
    logp = torch.zeros(1, 2)
    ref = torch.full((1, 2), math.log(2.0))
    k3 = 2.0 - math.log(2.0) - 1.0
    assert torch.allclose(k3_kl(logp, ref), torch.full((1, 2), k3))
    loss, stats = policy_loss(logp, logp, ref, torch.tensor([0.0]), torch.ones(1, 2), beta=0.1)
    assert loss.item() == pytest.approx(0.1 * k3)
    assert stats["kl"] == pytest.approx(k3)
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, logp, None, torch.tensor([0.0]), torch.ones(1, 2), beta=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        policy_loss(logp, logp, None, torch.tensor([0.0]), torch.ones(1, 2), loss_type="ppo")  # type: ignore[arg-type]


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_group_with_identical_rewards_has_zero_gradient(loss_type: str) -> None:
    torch.manual_seed(0)
    logp = torch.randn(3, 4, requires_grad=True)
    old = logp.detach() + 0.1 * torch.randn(3, 4)
    adv = group_advantages(torch.tensor([1.0, 1.0, 1.0]), 3)
    loss, _ = policy_loss(logp, old, None, adv, torch.ones(3, 4), loss_type=loss_type)  # type: ignore[arg-type]
    loss.backward()
    assert torch.count_nonzero(logp.grad) == 0

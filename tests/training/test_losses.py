"""The stages' losses against hand-computed values and their defining properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mxbai_rerank.training import _losses


def test_pointwise_is_binary_cross_entropy_with_balanced_positives() -> None:
    scores, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    plain = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(1 - 1 / (1 + math.exp(1.0)))
              + math.log(1 - 1 / (1 + math.exp(-0.5)))) / 3  # fmt: skip
    assert _losses.pointwise_loss(scores, labels).item() == pytest.approx(plain, rel=1e-5)
    weighted = _losses.pointwise_loss(scores, labels, pos_weight=2.0).item()
    assert weighted == pytest.approx(plain + (-math.log(1 / (1 + math.exp(-2.0)))) / 3, rel=1e-5)


def test_contrastive_is_cross_entropy_on_column_zero_with_padding_masked() -> None:
    scores = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, -9.0], [1.0, 5.0, 5.0]])
    mask = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    loss = _losses.contrastive_loss(scores, mask, temperature=0.5)
    # Row 3 has no negative and is left out; row 2's padded column does not count.
    expected = (F.cross_entropy(torch.tensor([[6.0, 2.0, 0.0]]), torch.tensor([0]))
                + F.cross_entropy(torch.tensor([[0.0, 4.0]]), torch.tensor([0]))) / 2  # fmt: skip
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    only_padding = torch.tensor([[1.0, 0.0]], requires_grad=True)
    zero = _losses.contrastive_loss(only_padding, torch.tensor([[True, False]]))
    assert zero.item() == 0.0 and zero.requires_grad


def test_dpo_starts_at_log2_and_only_the_change_from_the_reference_counts() -> None:
    chosen, rejected = torch.tensor([4.0, -1.0]), torch.tensor([1.0, 2.0])
    at_reference = _losses.dpo_loss(chosen, rejected, chosen, rejected, beta=0.1)
    assert at_reference.item() == pytest.approx(math.log(2), rel=1e-6)
    # A shift of both scores changes nothing; widening the gap over the reference lowers the loss.
    shifted = _losses.dpo_loss(chosen + 3, rejected + 3, chosen, rejected, beta=0.1)
    assert shifted.item() == pytest.approx(math.log(2), rel=1e-6)
    better = _losses.dpo_loss(chosen + 1, rejected - 1, chosen, rejected, beta=0.5)
    assert better.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.5 * 2))), rel=1e-5)


def test_margin_loss() -> None:
    loss = _losses.margin_loss(torch.tensor([3.0, 0.0]), torch.tensor([1.0, 0.5]), margin=1.0)
    assert loss.item() == pytest.approx((0.0 + 1.5) / 2)


def test_grpo_rewards_and_group_normalised_advantages() -> None:
    samples = torch.tensor([[1, 0, 7, 1], [1, 1, 1, 1]])
    rewards = _losses.grpo_rewards(samples, torch.tensor([True, False]), positive_id=1, negative_id=0, invalid=-1.0)
    assert rewards.tolist() == [[1.0, 0.0, -1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    advantages = _losses.grpo_advantages(rewards)
    assert advantages[0].mean().abs() < 1e-6 and advantages[0].std(unbiased=False) == pytest.approx(1.0, rel=1e-3)
    assert advantages[1].abs().max() == 0.0  # every draw earned the same: no signal


def test_grpo_loss_raises_good_answers_clips_and_penalises_kl() -> None:
    logp = torch.log(torch.tensor([[0.5, 0.5]])).requires_grad_(True)
    advantages = torch.tensor([[1.0, -1.0]])
    kl = torch.zeros(1)
    loss = _losses.grpo_loss(logp, logp.detach(), advantages, kl)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert logp.grad is not None and logp.grad[0, 0] < 0 < logp.grad[0, 1]  # descent raises the good draw
    # A ratio already above 1 + clip with a positive advantage gives no gradient.
    new = torch.log(torch.tensor([[0.9]])).requires_grad_(True)
    _losses.grpo_loss(new, torch.log(torch.tensor([[0.5]])), torch.tensor([[1.0]]), kl, clip=0.2).backward()
    assert new.grad is not None and new.grad.abs().max() == 0.0
    penalised = _losses.grpo_loss(logp, logp.detach(), advantages, torch.tensor([2.0]), kl_beta=0.5)
    assert penalised.item() == pytest.approx(1.0, abs=1e-6)
    weighted = _losses.grpo_loss(
        torch.zeros(2, 1),
        torch.zeros(2, 1),
        torch.tensor([[1.0], [3.0]]),
        torch.zeros(2),
        weights=torch.tensor([0.25, 0.75]),
    )
    assert weighted.item() == pytest.approx(-(0.25 * 1.0 + 0.75 * 3.0))


def test_exact_kl_matches_torch() -> None:
    torch.manual_seed(0)
    policy, reference = torch.randn(3, 11).log_softmax(-1), torch.randn(3, 11).log_softmax(-1)
    kl = _losses.exact_kl(policy, reference)
    expected = F.kl_div(reference, policy, log_target=True, reduction="none").sum(-1)
    assert torch.allclose(kl, expected, atol=1e-6)
    assert _losses.exact_kl(policy, policy).abs().max() < 1e-6

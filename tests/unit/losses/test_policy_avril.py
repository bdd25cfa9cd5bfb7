"""MiniLLM's and X-KD's per-token pieces against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses.avril import gaussian_kl_to_prior, gaussian_nll, implied_rewards
from distill.losses.kd import reinforce_term
from distill.losses.policy import (
    clipped_policy_gradient,
    discounted_future,
    importance_weights,
    leave_one_out_advantage,
)
from distill.models.forward import TokenView


def test_discounted_future_return_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the 99 is padding
    # R_{t+1}: t=0: γ·2 + γ²·3; t=1: γ·3; t=2: 0
    g = 0.5
    expected = torch.tensor([[g * 2 + g * g * 3, g * 3, 0.0, 0.0]])
    assert torch.allclose(discounted_future(rewards, mask, g, length_norm=False), expected)
    # length_norm divides by the number of output tokens after t: 2, 1, (0 -> 1)
    assert torch.allclose(discounted_future(rewards, mask, g, length_norm=True), expected / torch.tensor([[2.0, 1.0, 1.0, 1.0]]))


def test_importance_weights():
    log_q, log_p = torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.6]))
    # w = q / (0.8 q + 0.2 p): 0.5/0.45, 0.2/0.28
    expected = torch.tensor([0.5 / 0.45, 0.2 / 0.28])
    assert torch.allclose(importance_weights(log_q, log_p, 0.2, clip=10.0), expected)
    assert torch.allclose(importance_weights(log_q, log_p, 0.2, clip=1.0), expected.clamp(max=1.0))
    assert torch.equal(importance_weights(log_q, log_p, 0.0, clip=10.0), torch.ones(2))


def test_clipped_policy_gradient_value_and_gradient():
    log_q = torch.tensor([math.log(0.3)], requires_grad=True)
    loss = clipped_policy_gradient(log_q, log_q.detach(), torch.tensor([2.0]), clip_ratio=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(-2.0)  # ratio 1 at the sampling policy
    assert log_q.grad.item() == pytest.approx(-2.0)  # ∂(−A·ratio)/∂log q = −A


def test_reinforce_term_is_minus_advantage_times_tempered_log_prob():
    logits = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]], requires_grad=True)
    view = TokenView(logits, torch.tensor([[0], [1]]), torch.ones(2, 1))
    term = reinforce_term(view, torch.tensor([1.0, -2.0]), weight=0.5, sampling_temperature=0.5)
    # T = 0.5: q_T(0 | row 0) = e^4 / (e^4 + 1); row 1 is uniform whatever T
    log_q0 = 4.0 - math.log(math.exp(4.0) + 1.0)
    expected = torch.tensor([[-1.0 * log_q0], [2.0 * math.log(0.5)]])
    assert torch.allclose(term.per_token, expected) and term.weight == 0.5


def test_leave_one_out_advantage_by_hand():
    rewards = torch.tensor([1.0, 0.0])
    # A window of 4 samples with Σr = 2: the others' means are (2−1)/3 and (2−0)/3
    advantage = leave_one_out_advantage(rewards, torch.tensor(2.0), torch.tensor(4.0))
    assert torch.allclose(advantage, torch.tensor([1.0 - 1.0 / 3.0, 0.0 - 2.0 / 3.0]))
    # One sample in the whole window: no baseline, the advantage is the reward itself
    single = leave_one_out_advantage(torch.tensor([0.7]), torch.tensor(0.7), torch.tensor(1.0))
    assert torch.allclose(single, torch.tensor([0.7]))


def test_revision_1_td_rewards_sarsa_and_soft():
    logits = torch.tensor([[[1.0, 3.0], [2.0, 0.0], [5.0, 5.0]]])
    targets = torch.tensor([[1, 0, 1]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third position is padding
    # Q(s_t, y_t) = 3, 2; sarsa: δ_0 = 3 − γ·2, δ_1 = 2 (last output token), padding 5 − 0
    sarsa = implied_rewards(logits, targets, mask, "logits", kd_temperature=1.0, gamma=0.9, td_target="sarsa")
    assert torch.allclose(sarsa[:, :2], torch.tensor([[3 - 0.9 * 2, 2.0]]))
    soft = implied_rewards(logits, targets, mask, "logits", kd_temperature=2.0, gamma=1.0, td_target="soft")
    # τ = 2: Q = logits / 2; δ_0 = 1.5 − logsumexp(1, 0)
    assert soft[0, 0].item() == pytest.approx(1.5 - math.log(math.e + 1.0), rel=1e-6)
    with pytest.raises(ValueError):
        implied_rewards(logits, targets, mask, "logits", 1.0, 1.0, td_target="q-learning")


def test_gaussian_nll_and_kl_by_hand():
    value, mu, log_sigma = torch.tensor(1.0), torch.tensor(0.0), torch.tensor(math.log(2.0))
    assert gaussian_nll(value, mu, log_sigma).item() == pytest.approx(0.5 * math.log(2 * math.pi) + math.log(2.0) + 1 / 8)
    # KL(N(1, 4) || N(0, 1)) = log(1/2) + (4 + 1)/2 − 1/2
    assert gaussian_kl_to_prior(torch.tensor(1.0), log_sigma, 1.0).item() == pytest.approx(math.log(0.5) + 2.5 - 0.5)
    assert gaussian_kl_to_prior(torch.tensor(0.0), torch.tensor(0.0), 1.0).item() == pytest.approx(0.0)

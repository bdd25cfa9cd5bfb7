"""X-KD revision 2 pieces (docs/design.md, X-KD) on hand-computed values and invariances, as pure functions."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses.avril import implied_rewards, sequence_returns, student_consistency


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 5, generator=g)
    targets = torch.randint(0, 5, (2, 4), generator=g)
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])  # a prompt position, padding
    potential = torch.randn(2, 4, generator=g)
    return logits, targets, mask, potential


def test_logprob_rewards_are_the_log_probabilities_of_the_taken_tokens():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    delta = implied_rewards(logits, torch.tensor([[0, 1]]), torch.ones(1, 2), "logprob", kd_temperature=2.0)
    expected = torch.tensor([[1.0 - math.log(math.e + 1.0), math.log(0.5)]])  # τ = 2: z/τ = (1, 0) and (0, 0)
    assert torch.allclose(delta, expected)


def test_shaped_rewards_add_the_potential_difference_and_stop_after_the_last_token():
    logits = torch.zeros(1, 3, 2)  # log π = log ½ everywhere
    potential = torch.tensor([[1.0, 2.0, 4.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third position is padding: Φ = 0 after the last output
    delta = implied_rewards(logits, torch.zeros(1, 3, dtype=torch.long), mask, "shaped", gamma=0.5, potential=potential)
    half = math.log(0.5)
    assert torch.allclose(delta[:, :2], torch.tensor([[half + 1.0 - 0.5 * 2.0, half + 2.0]]))


@pytest.mark.parametrize("q_form", ["logprob", "shaped"])
def test_per_state_logit_shifts_change_no_reward_and_no_gradient(q_form):
    """Softmax ignores a constant added to one state's logits; revision 2's rewards must too."""
    logits, targets, mask, potential = _case()
    shift = 20.0 * torch.randn(2, 4, 1)
    results = []
    for offset in (0.0, shift):
        z = logits.clone().requires_grad_(True)
        delta = implied_rewards(z + offset, targets, mask, q_form, gamma=0.9, potential=potential)
        mu, log_sigma = torch.randn(2, 4, generator=torch.Generator().manual_seed(1)), torch.zeros(2, 4)
        loss = (student_consistency(delta, mu, log_sigma, 1.0) * mask).sum()
        loss.backward()
        results.append((delta * mask, z.grad))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-4)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-4)


def test_revision_1_logits_rewards_move_with_per_state_shifts():
    """Why revision 1 was replaced: δ moves by c(s_t) − γ·c(s_{t+1}) although the policy did not change."""
    logits, targets, mask, _ = _case()
    shift = torch.zeros(2, 4, 1)
    shift[0, 1] = 20.0
    before = implied_rewards(logits, targets, mask, "logits", gamma=0.9)
    after = implied_rewards(logits + shift, targets, mask, "logits", gamma=0.9)
    assert torch.allclose(after[0, 1] - before[0, 1], torch.tensor(20.0))  # c(s_1)
    assert torch.allclose(after[0, 0] - before[0, 0], torch.tensor(-0.9 * 20.0))  # −γ·c(s_1) at the state before
    assert torch.allclose(torch.softmax(logits + shift, -1), torch.softmax(logits, -1), atol=1e-6)  # same policy


def test_the_alpha_term_gradient_is_reverse_kl_in_expectation():
    """μ = log p, σ = 1 fixed: the Monte Carlo mean of ∇[−log N(log q(y); log p(y), 1)] over y ~ q is ∇KL(q ‖ p)."""
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, generator=g), torch.randn(6, generator=g)
    samples = 200_000
    z = student.clone().requires_grad_(True)
    y = torch.multinomial(torch.softmax(student, -1), samples, replacement=True, generator=g)
    log_p = torch.log_softmax(teacher, -1)[y]
    delta = implied_rewards(z.expand(samples, 1, 6), y[:, None], torch.ones(samples, 1), "logprob")
    student_consistency(delta, log_p[:, None], torch.zeros(samples, 1), 1.0).mean().backward()
    exact = z.detach().clone().requires_grad_(True)
    q = torch.softmax(exact, -1)
    (q * (torch.log_softmax(exact, -1) - torch.log_softmax(teacher, -1))).sum().backward()
    assert torch.allclose(z.grad, exact.grad, atol=4e-3), (z.grad, exact.grad)
    assert exact.grad.abs().max() > 0.05  # a gradient worth matching


def test_the_student_term_never_trains_the_head_and_its_weight_is_floored():
    delta = torch.tensor([[0.5]], requires_grad=True)
    mu, log_sigma = torch.tensor([[0.0]], requires_grad=True), torch.tensor([[math.log(0.01)]], requires_grad=True)
    loss = student_consistency(delta, mu, log_sigma, min_std=1.0).sum()
    loss.backward()
    assert mu.grad is None and log_sigma.grad is None  # stop-gradient on μ and σ
    assert delta.grad.item() == pytest.approx(0.5)  # (δ − μ)/max(σ, 1)² with σ = 0.01 floored to 1


def test_sequence_returns_average_the_rewards_of_each_output():
    delta = torch.tensor([[1.0, 2.0, 9.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert torch.allclose(sequence_returns(delta, mask), torch.tensor([1.5, 4.0]))


def test_logprob_sarsa_subtracts_the_next_demonstrated_log_probability():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0], [1.0, 1.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # nothing follows the second token
    targets = torch.tensor([[0, 1, 0]])
    delta = implied_rewards(logits, targets, mask, "logprob", gamma=0.5, td_target="sarsa")
    first, second = 2.0 - math.log(math.exp(2.0) + 1.0), math.log(0.5)
    assert torch.allclose(delta[:, :2], torch.tensor([[first - 0.5 * second, second]]))
    assert torch.equal(implied_rewards(logits, targets, mask, "logprob"), implied_rewards(
        logits, targets, mask, "logprob", td_target="none"))
    with pytest.raises(ValueError, match="does not apply"):
        implied_rewards(logits, targets, mask, "logprob", td_target="soft")


def test_logprob_sarsa_is_shift_invariant():
    logits, targets, mask, _ = _case(3)
    shifted = logits + 20.0 * torch.randn(*logits.shape[:-1], 1, generator=torch.Generator().manual_seed(4))
    plain = implied_rewards(logits, targets, mask, "logprob", gamma=0.9, td_target="sarsa")
    assert torch.allclose(plain, implied_rewards(shifted, targets, mask, "logprob", gamma=0.9, td_target="sarsa"),
                          atol=1e-4)


def test_masked_correlation_on_hand_values():
    from distill.losses.avril import masked_correlation

    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the masked outlier does not count
    assert math.isclose(float(masked_correlation(x, -2 * x, mask)), -1.0, abs_tol=1e-6)
    assert float(masked_correlation(x, torch.ones_like(x), mask)) == 0.0  # constant: 0, not NaN


def _fit_head(prior_std: float, steps: int = 3000):
    """A linear reward head fitted by X-KD's η and KL terms (η = 1) to fixed δ^T spread over [−10, 0]."""
    from distill.losses.avril import gaussian_kl_to_prior, gaussian_nll
    from distill.models.reward_head import RewardHead

    g = torch.Generator().manual_seed(0)
    features = torch.randn(512, 8, generator=g)
    delta = -10.0 * torch.sigmoid(features @ torch.randn(8, generator=g))  # smooth in the features: learnable
    torch.manual_seed(0)
    head = RewardHead(8, hidden=32)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        mu, log_sigma = head(features)
        loss = (gaussian_nll(delta, mu, log_sigma) + gaussian_kl_to_prior(mu, log_sigma, prior_std)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        mu, _ = head(features)
    return delta, mu


def test_the_default_prior_lets_the_head_track_teacher_log_probabilities_down_to_minus_ten():
    """Revision 3: with η = 1 the head's optimum is clip(δ^T, −σ0, σ0). The default σ0 covers δ^T ∈ [−10, 0]
    (corr ≥ 0.95, no plateau); revision 2's σ0 = 1 saturates at −1, the flaw this default removes."""
    import yaml

    from tests.conftest import REPO

    default = yaml.safe_load((REPO / "conf" / "method" / "xkd.yaml").read_text())["prior_std"]
    delta, mu = _fit_head(default)
    corr = float(torch.corrcoef(torch.stack([delta, mu]))[0, 1])
    low = delta < -8
    assert corr >= 0.95 and float(mu[low].mean()) < -7.0, (corr, float(mu[low].mean()))
    delta, mu = _fit_head(1.0)
    assert float(mu.min()) > -1.5  # the plateau of revision 2's prior

"""Every divergence against hand-computed values and an independent float64 reference (docs/design.md, Divergences)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from distill.config import config_dir
from distill.errors import ConfigError
from distill.losses import divergences as D


def _ref_log(logits, tau):
    return torch.log_softmax(logits.double() / tau, -1)


def _kl(log_a, log_b):
    a = log_a.exp()
    return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a)).sum(-1)


def _mix(log_a, log_b, w):
    return torch.log(w * log_a.exp() + (1 - w) * log_b.exp())


def reference(name, student, teacher, tau=1.0, beta=0.5, skew=0.1, normalize=False):
    """Straight from the definitions (docs/methods.md), float64, whole vocabulary at once."""
    log_q, log_p = _ref_log(student, tau), _ref_log(teacher, tau)
    if name == "fkl":
        return _kl(log_p, log_q)
    if name == "rkl":
        return _kl(log_q, log_p)
    if name == "jsd":
        log_m = _mix(log_p, log_q, beta)
        value = beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)
        return value / (beta * (1 - beta)) if normalize else value
    if name == "tvd":
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    if name == "skl":
        return _kl(log_p, _mix(log_p, log_q, skew))
    if name == "srkl":
        return _kl(log_q, _mix(log_q, log_p, skew))
    raise ValueError(name)


def ours(name, student, teacher, tau=1.0, beta=0.5, skew=0.1, normalize=False, chunk_size=3):
    if name == "jsd":
        return D.jsd(student, teacher, beta=beta, normalize=normalize, kd_temperature=tau, chunk_size=chunk_size)
    if name in ("skl", "srkl"):
        return getattr(D, name)(student, teacher, skew=skew, kd_temperature=tau, chunk_size=chunk_size)
    return getattr(D, name)(student, teacher, kd_temperature=tau, chunk_size=chunk_size)


# Every divergence the config offers (conf/divergence/*.yaml), not a hand-kept list: a new one needs a reference
# above and hand-computed values below before this file passes.
NAMES = sorted(p.stem for p in (Path(config_dir()) / "divergence").glob("*.yaml"))


def test_the_config_offers_exactly_the_implemented_divergences():
    assert set(NAMES) == set(D.NAMES)
    assert set(HAND) == set(NAMES)

# p = [1/2, 1/2] (teacher), q = [1/4, 3/4] (student), worked by hand.
P, Q = [0.5, 0.5], [0.25, 0.75]
HAND = {
    "fkl": 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75),
    "rkl": 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5),
    # β = 0.5: M = [3/8, 5/8]
    "jsd": 0.5 * (0.5 * math.log(0.5 / 0.375) + 0.5 * math.log(0.5 / 0.625))
    + 0.5 * (0.25 * math.log(0.25 / 0.375) + 0.75 * math.log(0.75 / 0.625)),
    "tvd": 0.5 * (0.25 + 0.25),
    # skew 0.1: M = 0.1 p + 0.9 q = [0.275, 0.725]
    "skl": 0.5 * math.log(0.5 / 0.275) + 0.5 * math.log(0.5 / 0.725),
    # skew 0.1: M = 0.1 q + 0.9 p = [0.475, 0.525]
    "srkl": 0.25 * math.log(0.25 / 0.475) + 0.75 * math.log(0.75 / 0.525),
}


@pytest.mark.parametrize("name", NAMES)
def test_hand_computed_two_token_vocabulary(name):
    student = torch.tensor([[math.log(q) for q in Q]])
    teacher = torch.tensor([[math.log(p) for p in P]])
    assert ours(name, student, teacher).item() == pytest.approx(HAND[name], rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_values_and_gradients_match_float64_reference(name, tau):
    torch.manual_seed(1)
    student = (3 * torch.randn(2, 5, 11)).requires_grad_()
    teacher = 3 * torch.randn(2, 5, 11)
    weights = torch.rand(2, 5)
    value = ours(name, student, teacher, tau=tau)
    assert value.dtype == torch.float32 and value.shape == (2, 5)
    (value * weights).sum().backward()
    ref_student = student.detach().double().requires_grad_()
    ref = reference(name, ref_student, teacher, tau=tau)
    (ref * weights.double()).sum().backward()
    assert torch.allclose(value.double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(student.grad.double(), ref_student.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_zero_on_identical_inputs_and_non_negative(name):
    logits = torch.randn(3, 4, 9)
    assert torch.allclose(ours(name, logits, logits), torch.zeros(3, 4), atol=1e-6)
    assert (ours(name, torch.randn(3, 4, 9), torch.randn(3, 4, 9)) >= -1e-7).all()


@pytest.mark.parametrize("name", NAMES)
def test_chunked_equals_unchunked(name, monkeypatch):
    monkeypatch.setattr(D, "REFERENCE_VOCAB", 13)  # chunk_size rows exactly at this vocabulary: real chunks
    student, teacher = torch.randn(4, 6, 13), torch.randn(4, 6, 13)
    whole = ours(name, student, teacher, chunk_size=10_000)
    for chunk in (1, 5, 24):
        assert D.rows_per_chunk(chunk, 13) == chunk
        assert torch.allclose(ours(name, student, teacher, chunk_size=chunk), whole, atol=1e-6, rtol=1e-6)


def test_a_chunk_holds_the_same_memory_at_any_vocabulary():
    assert D.rows_per_chunk(64, 32_768) == 64
    assert D.rows_per_chunk(64, 432) == 64 * 32_768 // 432  # 4 854 rows: one chunk for a tiny preset's batch
    assert D.rows_per_chunk(64, 151_936) == 64  # never fewer than chunk_size


@pytest.mark.parametrize("name", NAMES)
def test_minus_inf_logits_give_finite_values_and_gradients(name):
    student, teacher = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    student[..., -2:] = float("-inf")  # masked vocabulary entries, the same in both models
    teacher[..., -2:] = float("-inf")
    student.requires_grad_()
    value = ours(name, student, teacher)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(student.grad).all()
    assert (student.grad[..., -2:] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_bf16_inputs_give_float32_outputs(name):
    out = ours(name, torch.randn(2, 3, 8).bfloat16(), torch.randn(2, 3, 8).bfloat16())
    assert out.dtype == torch.float32


def test_jsd_half_is_symmetric():
    a, b = torch.randn(3, 7), torch.randn(3, 7)
    assert torch.allclose(D.jsd(a, b, beta=0.5), D.jsd(b, a, beta=0.5), atol=1e-6)


def test_normalized_jsd_endpoints_are_fkl_and_rkl_and_the_family_is_continuous():
    student, teacher = torch.randn(4, 9), torch.randn(4, 9)
    assert torch.equal(D.jsd(student, teacher, beta=0.0, normalize=True), D.fkl(student, teacher))
    assert torch.equal(D.jsd(student, teacher, beta=1.0, normalize=True), D.rkl(student, teacher))
    near0 = D.jsd(student, teacher, beta=1e-4, normalize=True)
    near1 = D.jsd(student, teacher, beta=1 - 1e-4, normalize=True)
    assert torch.allclose(near0, D.fkl(student, teacher), rtol=1e-2, atol=1e-3)
    assert torch.allclose(near1, D.rkl(student, teacher), rtol=1e-2, atol=1e-3)
    # normalized = plain / (β(1−β)) inside the interval
    assert torch.allclose(D.jsd(student, teacher, beta=0.3, normalize=True),
                          D.jsd(student, teacher, beta=0.3) / 0.21, rtol=1e-5)


def test_plain_jsd_vanishes_at_the_ends_which_is_why_normalize_exists():
    student, teacher = torch.randn(4, 9), torch.randn(4, 9)
    assert D.jsd(student, teacher, beta=1e-4).max() < 1e-2 * D.fkl(student, teacher).max()


@pytest.mark.parametrize("beta", [0.0, 1.0, -0.1, 1.5])
def test_beta_outside_open_interval_without_normalize_is_a_config_error(beta):
    with pytest.raises(ConfigError, match="beta"):
        D.jsd(torch.zeros(1, 3), torch.zeros(1, 3), beta=beta)
    with pytest.raises(ConfigError, match="beta"):
        D.Divergence("jsd", 1.0, 16, beta=beta)


def test_divergence_spec_validates_before_use():
    with pytest.raises(ConfigError, match="skew"):
        D.Divergence("skl", 1.0, 16, skew=1.0)
    with pytest.raises(ConfigError, match="kd_temperature"):
        D.Divergence("fkl", 0.0, 16)
    with pytest.raises(ConfigError, match="divergence.name must be one of"):
        D.Divergence("l2", 1.0, 16)
    spec = D.Divergence("jsd", 2.0, 4, beta=0.1)
    student, teacher = torch.randn(5, 7), torch.randn(5, 7)
    assert torch.equal(spec(student, teacher), D.jsd(student, teacher, beta=0.1, kd_temperature=2.0, chunk_size=4))


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        D.fkl(torch.zeros(1, 3), torch.zeros(1, 4))


def test_second_backward_through_the_same_graph_is_refused():
    student = torch.randn(3, 5, requires_grad=True)
    value = D.fkl(student, torch.randn(3, 5)).sum()
    value.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):  # the gradient buffer was consumed
        value.backward()


def test_no_gradient_buffer_without_student_gradient():
    with torch.no_grad():
        assert D.jsd(torch.randn(4, 6), torch.randn(4, 6), beta=0.5).shape == (4,)


@pytest.mark.parametrize("name", ["fkl", "rkl", "jsd", "tvd", "skl", "srkl"])
def test_identical_distributions_give_exactly_zero_value_and_gradient(name):
    """A student that is its teacher must stay put: a gradient of float32 rounding size (~1e-7, from Σp ≠ 1)
    becomes a full-size step under Adam. Issue 15."""
    from distill.losses.divergences import Divergence

    divergence = Divergence(name=name, kd_temperature=1.0, chunk_size=16, beta=0.3 if name == "jsd" else None,
                            skew=0.1 if name in ("skl", "srkl") else None)
    teacher = 3.0 * torch.randn(40, 300, generator=torch.Generator().manual_seed(0))
    student = teacher.clone().requires_grad_(True)
    value = divergence(student, teacher)
    value.sum().backward()
    assert torch.count_nonzero(value) == 0 and torch.count_nonzero(student.grad) == 0


def test_uld_needs_cross_tokenizer_and_a_known_mode():
    base = {"name": "fkl", "kd_temperature": 1.0, "chunk_size": 4, "beta": None, "normalize": False, "skew": None}
    with pytest.raises(ConfigError, match="needs divergence.cross_tokenizer=true"):
        D.Divergence.from_config({**base, "uld": "all"})
    with pytest.raises(ConfigError, match="divergence.uld"):
        D.Divergence.from_config({**base, "cross_tokenizer": True, "uld": "some"})
    assert D.Divergence.from_config({**base, "cross_tokenizer": True, "uld": "unmatched"}).uld == "unmatched"

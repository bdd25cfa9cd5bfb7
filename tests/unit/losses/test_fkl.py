import math

import pytest
import torch

from distill.errors import ConfigError
from distill.losses.divergences import fkl


def reference_fkl(student_logits, teacher_logits, tau=1.0):
    """KL(p||q) straight from the formula, float64, full materialisation."""
    log_q = torch.log_softmax(student_logits.double() / tau, -1)
    log_p = torch.log_softmax(teacher_logits.double() / tau, -1)
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def test_hand_computed_two_token_vocabulary():
    # p = [1/2, 1/2], q = [1/4, 3/4]: KL = 1/2 ln(2) + 1/2 ln(2/3)
    student = torch.tensor([[0.0, math.log(3.0)]])
    teacher = torch.tensor([[0.0, 0.0]])
    expected = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    assert fkl(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_zero_on_identical_and_non_negative():
    logits = torch.randn(3, 5, 11)
    assert torch.allclose(fkl(logits, logits), torch.zeros(3, 5), atol=1e-6)
    assert (fkl(torch.randn(3, 5, 11), torch.randn(3, 5, 11)) >= 0).all()


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
def test_values_and_gradients_match_float64_reference(tau):
    torch.manual_seed(0)
    student = torch.randn(2, 7, 13, requires_grad=True)
    teacher = torch.randn(2, 7, 13)
    weights = torch.rand(2, 7)
    ours = fkl(student, teacher, kd_temperature=tau, chunk_size=3)
    assert ours.dtype == torch.float32 and ours.shape == (2, 7)
    (ours * weights).sum().backward()
    ref_student = student.detach().double().requires_grad_()
    ref = reference_fkl(ref_student, teacher, tau)
    (ref * weights.double()).sum().backward()
    assert torch.allclose(ours.double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(student.grad.double(), ref_student.grad, rtol=1e-4, atol=1e-6)


def test_chunk_size_does_not_change_results():
    student, teacher = torch.randn(4, 9, 17), torch.randn(4, 9, 17)
    whole = fkl(student, teacher, chunk_size=10_000)
    for chunk in (1, 5, 36):
        assert torch.equal(fkl(student, teacher, chunk_size=chunk), whole)


def test_minus_inf_logits_give_finite_values_and_gradients():
    student = torch.randn(2, 3, 6)
    teacher = torch.randn(2, 3, 6)
    student[..., -1] = float("-inf")
    teacher[..., -1] = float("-inf")
    student.requires_grad_()
    value = fkl(student, teacher)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(student.grad).all()


def test_bf16_inputs_give_float32_outputs():
    out = fkl(torch.randn(2, 4, 8).bfloat16(), torch.randn(2, 4, 8).bfloat16())
    assert out.dtype == torch.float32


def test_bad_arguments():
    with pytest.raises(ConfigError):
        fkl(torch.zeros(1, 3), torch.zeros(1, 3), kd_temperature=0.0)
    with pytest.raises(ValueError):
        fkl(torch.zeros(1, 3), torch.zeros(1, 4))

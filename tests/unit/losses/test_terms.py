"""The one weighted total of loss terms, on hand-computed values."""

import torch

from distill.losses.terms import LossTerms, Term


def test_terms_reduce_over_their_own_count_and_combine_by_weight():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    ptx_mask = torch.tensor([[0.0, 1.0, 1.0]])
    terms = LossTerms({"kd": Term(torch.tensor([[1.0, 3.0, 100.0]]), mask, weight=0.5),
                       "ptx": Term(torch.tensor([[7.0, 2.0, 4.0]]), ptx_mask, weight=2.0, count_key="ptx_loss_mask")})
    counts = {"loss_mask": torch.tensor(4.0), "ptx_loss_mask": torch.tensor(3.0)}  # the window's tokens, not the batch's
    reduced = terms.reduced(counts)
    assert torch.allclose(reduced["kd"], torch.tensor(1.0))  # (1 + 3) / 4; the masked 100 never counts
    assert torch.allclose(reduced["ptx"], torch.tensor(2.0))  # (2 + 4) / 3
    assert torch.allclose(terms.total(reduced), torch.tensor(0.5 * 1.0 + 2.0 * 2.0))


def test_gradients_flow_through_the_total():
    values = torch.tensor([[2.0, 4.0]], requires_grad=True)
    terms = LossTerms({"ce": Term(values, torch.ones(1, 2), weight=3.0)})
    terms.total(terms.reduced({"loss_mask": torch.tensor(2.0)})).backward()
    assert torch.allclose(values.grad, torch.tensor([[1.5, 1.5]]))


def test_uld_is_the_l1_distance_of_the_sorted_probabilities_zero_padded():
    from distill.losses.kd import uld_values

    student = torch.tensor([[0.5, 0.3, 0.2]])
    teacher = torch.tensor([[0.6, 0.4]])  # a smaller vocabulary: padded with a zero
    assert torch.allclose(uld_values(student, teacher), torch.tensor([0.1 + 0.1 + 0.2]))
    assert torch.allclose(uld_values(teacher, teacher), torch.tensor([0.0]))

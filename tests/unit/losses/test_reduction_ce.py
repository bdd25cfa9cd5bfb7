import math

import torch

from distill.losses.ce import token_nll
from distill.losses.reduction import reduce_tokens


def test_reduce_tokens_divides_masked_sum_by_step_count():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    # masked sum = 2 + 3 + 4 = 9; the step's N may exceed this batch's 3 tokens
    assert reduce_tokens(per_token, mask, 3) == 3.0
    assert reduce_tokens(per_token, mask, torch.tensor(6.0)) == 1.5


def test_reduce_tokens_ignores_values_under_the_mask_even_if_inf_or_nan():
    per_token = torch.tensor([[float("inf"), 2.0, float("nan")]])
    mask = torch.tensor([[0.0, 1.0, 0.0]])
    assert reduce_tokens(per_token, mask, 1) == 2.0


def test_token_nll_matches_hand_computed_log_softmax():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # softmax = [1/4, 3/4]
    targets = torch.tensor([[1]])
    assert torch.allclose(token_nll(logits, targets), torch.tensor([[-math.log(0.75)]]))
    assert token_nll(logits.bfloat16(), targets).dtype == torch.float32

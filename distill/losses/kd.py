"""Loss terms shared by the methods: cross-entropy, divergence to the teacher, REINFORCE.

Each returns a ``Term`` (per-token values + the mask they live on); methods
combine them, and the loop reduces each once (SPEC §3).
"""

from __future__ import annotations

import torch

from distill.losses.ce import token_nll
from distill.losses.divergences import Divergence
from distill.losses.terms import Term
from distill.models.forward import TokenView


def ce_term(view: TokenView, weight: float = 1.0) -> Term:
    return Term(token_nll(view.logits, view.targets), view.mask, weight)


def shared_vocabulary(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop padding rows when two same-tokenizer models pad their output layers differently."""
    size = min(student_logits.size(-1), teacher_logits.size(-1))
    return student_logits[..., :size], teacher_logits[..., :size]


def divergence_term(divergence: Divergence, view: TokenView, teacher_logits: torch.Tensor, weight: float = 1.0) -> Term:
    """D(p, q) per output token; the teacher logits come from the batch's single teacher pass."""
    student, teacher = shared_vocabulary(view.logits, teacher_logits)
    return Term(divergence(student, teacher), view.mask, weight)


def target_log_probs(view: TokenView, temperature: float = 1.0) -> torch.Tensor:
    """log q_T(y_t | s_t) of the tokens in the batch, [B, L], with q_T = softmax(z / T)."""
    return -token_nll(view.logits / temperature, view.targets)


def reinforce_term(view: TokenView, advantage: torch.Tensor, weight: float, sampling_temperature: float) -> Term:
    """REINFORCE: −A·log q_T(y_t) on every output token; ``advantage`` is one detached scalar per sequence.

    The samples were drawn from q_T = softmax(z / T), so the score function is
    ∇ log q_T, not that of the T = 1 model (SPEC §5): otherwise the estimate
    of ∇ E_{q_T}[r] is biased at T ≠ 1.
    """
    advantage = advantage.detach().to(view.logits.device)
    return Term(-advantage[:, None] * target_log_probs(view, sampling_temperature), view.mask, weight)

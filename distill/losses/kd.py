"""Loss terms shared by the methods: cross-entropy, divergence to the teacher, REINFORCE.

Each returns a ``Term`` (per-token values + the mask they live on); methods
combine them, and the loop reduces each once (docs/design.md, Reduction).
"""

from __future__ import annotations

import torch

from distill.losses.ce import token_nll
from distill.losses.divergences import Divergence
from distill.losses.sparse import (
    SparseTeacher,
    fused_grad_l1_bound,
    fused_sparse_divergence,
    grad_l1_bound,
    sparse_divergence,
)
from distill.losses.terms import Term
from distill.models.forward import TokenView


def ce_term(view: TokenView, weight: float = 1.0) -> Term:
    return Term(_nll(view, 1.0), view.mask, weight)


def _nll(view: TokenView, temperature: float) -> torch.Tensor:
    """−log q_T(y_t) per token, from logits or (fused view) from the projection's input and weight."""
    if view.fused:
        from distill.losses.fused_linear import fused_cross_entropy

        return fused_cross_entropy(view.head_input, view.head_weight, view.targets, view.mask, temperature)
    return token_nll(view.logits / temperature if temperature != 1.0 else view.logits, view.targets)


def shared_vocabulary(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop padding rows when two same-tokenizer models pad their output layers differently."""
    size = min(student_logits.size(-1), teacher_logits.size(-1))
    return student_logits[..., :size], teacher_logits[..., :size]


def divergence_term(divergence: Divergence, view: TokenView, teacher: torch.Tensor | TokenView,
                    weight: float = 1.0) -> Term:
    """D(p, q) per output token. ``teacher``: its logits from the batch's single teacher pass, or, with a fused
    student view, the teacher's fused view (``distill.data.trajectories.teacher_target``)."""
    if isinstance(teacher, SparseTeacher):  # a cached teacher: its support plus one tail bucket
        if view.fused:
            values = fused_sparse_divergence(divergence, view.head_input, view.head_weight, teacher, view.mask)
            return Term(values, view.mask, weight)
        return Term(sparse_divergence(divergence, view.logits, teacher), view.mask, weight)
    if view.fused:
        size = min(view.head_weight.size(0), teacher.head_weight.size(0))  # padded output layers (see below)
        values = divergence.fused(view.head_input, view.head_weight[:size], teacher.head_input,
                                  teacher.head_weight[:size], view.mask)
        return Term(values, view.mask, weight)
    student, teacher_logits = shared_vocabulary(view.logits, teacher)
    return Term(divergence(student, teacher_logits), view.mask, weight)


def sparse_stats(divergence: Divergence, view: TokenView, teacher, mask: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
    """With a sparse teacher (a cache, or another tokenizer): the mean over the compared tokens (``mask``, default
    the view's) of the certified gradient-error bound and of the teacher's tail mass (docs/methods.md, "Sparse
    teachers"); nothing for a dense teacher."""
    if not isinstance(teacher, SparseTeacher):
        return {}
    mask = view.mask if mask is None else mask
    tokens = mask.sum().clamp(min=1)
    bound = fused_grad_l1_bound(divergence, view.head_input, view.head_weight, teacher, mask) if view.fused \
        else grad_l1_bound(divergence, view.logits.detach(), teacher)
    bound = torch.where(mask > 0, bound, torch.zeros_like(bound))  # inf · 0 would be NaN
    return {"sparse/grad_l1_bound": bound.sum() / tokens,
            "sparse/tail_mass": (teacher.log_tail.exp() * mask).sum() / tokens}


ALIGNED = "aligned_loss_mask"  # another tokenizer: the positions both tokenisations start a token at (their own N)


def aligned(term: Term, batch: dict) -> Term:
    """With a teacher of another tokenizer, the KD term over the aligned positions only, counted by their own N."""
    if ALIGNED not in batch:
        return term
    return Term(term.per_token, batch[ALIGNED], term.weight, count_key=ALIGNED)


def uld_values(student_ranked: torch.Tensor, teacher_ranked: torch.Tensor) -> torch.Tensor:
    """Universal Logit Distillation (Boizard et al., 2024): per position, the L1 distance between the two
    probability vectors sorted in decreasing order, the shorter padded with zeros (no vocabulary mapping)."""
    width = max(student_ranked.size(-1), teacher_ranked.size(-1))
    pad = lambda t: torch.nn.functional.pad(t, (0, width - t.size(-1)))  # noqa: E731
    return (pad(student_ranked) - pad(teacher_ranked.to(student_ranked.dtype))).abs().sum(-1)


def cross_terms(divergence: Divergence, view: TokenView, teacher, batch: dict, ctx, weight: float = 1.0
                ) -> dict[str, Term]:
    """The KD terms of a run: the divergence (over aligned positions when the tokenizers differ), and with
    ``divergence.uld`` the ULD term beside it (``unmatched``: the two buckets' own distributions) or instead of
    it (``all``)."""
    kd = {"kd": aligned(divergence_term(divergence, view, teacher, weight), batch)} if divergence.uld != "all" else {}
    if divergence.uld is None:
        return kd
    logits = view.logits[..., :ctx.cross.student_vocab].float() / divergence.kd_temperature
    probs = torch.softmax(logits, -1)
    if divergence.uld == "unmatched":
        probs = probs[..., ctx.cross.unmapped("student", probs.device)]
    values = uld_values(probs.sort(-1, descending=True).values, batch["teacher_uld"])
    return {**kd, "uld": Term(values, batch[ALIGNED], weight, count_key=ALIGNED)}


def kd_stats(divergence: Divergence, view: TokenView, teacher, batch: dict) -> dict[str, torch.Tensor]:
    """``sparse_stats`` over the compared positions, and the aligned fraction when tokenizers differ."""
    stats = sparse_stats(divergence, view, teacher, batch.get(ALIGNED))
    if ALIGNED in batch:  # how much of the text both tokenisations share a boundary on
        stats["cross/aligned_fraction"] = batch[ALIGNED].sum() / view.mask.sum().clamp(min=1)
    return stats


def target_log_probs(view: TokenView, temperature: float = 1.0) -> torch.Tensor:
    """log q_T(y_t | s_t) of the tokens in the batch, [B, L], with q_T = softmax(z / T)."""
    return -_nll(view, temperature)


def reinforce_term(view: TokenView, advantage: torch.Tensor, weight: float, sampling_temperature: float) -> Term:
    """REINFORCE: −A·log q_T(y_t) on every output token; ``advantage`` is one detached scalar per sequence.

    The samples were drawn from q_T = softmax(z / T), so the score function is
    ∇ log q_T, not that of the T = 1 model (docs/design.md, Methods): otherwise the estimate
    of ∇ E_{q_T}[r] is biased at T ≠ 1.
    """
    advantage = advantage.detach().to(view.mask.device)
    return Term(-advantage[:, None] * target_log_probs(view, sampling_temperature), view.mask, weight)

"""Divergences against a sparse teacher: a kept support S of teacher tokens plus one tail bucket.

A cached teacher keeps, per position, the log-probabilities of a support S (the top k, or the smallest set whose
tail mass is at most ε) and the log of the mass outside it, p_tail. The student stays dense. The loss is the
divergence between the (|S| + 1)-outcome distributions (p_S, p_tail) and (q_S, q_tail), q_tail being the
student's mass outside S. Every divergence here is an f-divergence, so by data processing the sparse value never
exceeds the dense one, and with p_tail = 0 (and so nothing of the teacher's outside S) the two are equal.

What the tail bucket cannot know is how the teacher spreads p_tail over the tokens outside S, so the gradient
differs from the dense one. ``grad_l1_bound`` gives, per position, an upper bound on the L1 distance between the
two gradients with respect to the student's logits, over every teacher tail of mass p_tail that the cache allows
(each tail probability between the teacher's smallest and its smallest kept one); derivations in
docs/methods.md, "Sparse teachers". It is a certificate: tests check it against dense gradients on random and
adversarial tails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from distill.losses.divergences import Divergence

NEG_INF = float("-inf")


@dataclass
class SparseTeacher:
    """Cached teacher distributions at the student's positions ([..., k] support, [...] per position)."""

    ids: torch.Tensor  # long [..., k]; -1 marks an empty slot (ragged supports)
    log_probs: torch.Tensor  # float [..., k]: log p of each kept token (-inf in empty slots)
    log_tail: torch.Tensor  # float [...]: log of the teacher's mass outside the support (-inf when none)
    log_min: torch.Tensor | None = None  # float [...]: the teacher's smallest log p over the vocabulary
    vocab_size: int | None = None  # the teacher's output width: a student padded wider is compared over these


def _in_support(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """[..., V] bool: the token is one of the position's kept tokens."""
    valid = ids >= 0
    marks = torch.zeros(*ids.shape[:-1], vocab + 1, dtype=torch.bool, device=ids.device)
    marks.scatter_(-1, torch.where(valid, ids, vocab), True)  # empty slots mark the spare column
    return marks[..., :vocab]


def _shared(student_logits: torch.Tensor, teacher: SparseTeacher) -> torch.Tensor:
    """A student output layer padded wider than the teacher's is compared over the teacher's tokens (as the dense
    path's shared vocabulary does)."""
    size = teacher.vocab_size
    return student_logits[..., :size] if size is not None and size < student_logits.size(-1) else student_logits


def student_outcomes(student_logits: torch.Tensor, ids: torch.Tensor, kd_temperature: float):
    """(log q_S [..., k], log q_tail [...]) at ``kd_temperature``, differentiable in the logits; -inf in empty
    slots, and for the tail when the support holds every token the student can give mass to."""
    scaled = student_logits.float() / kd_temperature
    log_z = torch.logsumexp(scaled, -1, keepdim=True)
    valid = ids >= 0
    kept = torch.gather(scaled, -1, ids.clamp(min=0)) - log_z
    log_q_support = torch.where(valid, kept, torch.full_like(kept, NEG_INF))
    outside = scaled.masked_fill(_in_support(ids, scaled.size(-1)), NEG_INF)
    empty = torch.isneginf(outside).all(-1, keepdim=True)
    # an empty tail gets -inf with no gradient path (logsumexp over only -inf has a NaN gradient)
    tail = torch.logsumexp(torch.where(empty, torch.zeros_like(outside), outside), -1, keepdim=True) - log_z
    log_q_tail = torch.where(empty, torch.full_like(tail, NEG_INF), tail)
    return log_q_support, log_q_tail.squeeze(-1)


def sparse_divergence(divergence: Divergence, student_logits: torch.Tensor, teacher: SparseTeacher) -> torch.Tensor:
    """Per-position divergence between (p_S, p_tail) and (q_S, q_tail); the same kernels as the dense path."""
    log_q_support, log_q_tail = student_outcomes(_shared(student_logits, teacher), teacher.ids,
                                                 divergence.kd_temperature)
    log_q = torch.cat([log_q_support, log_q_tail.unsqueeze(-1)], -1)
    log_p = torch.cat([teacher.log_probs.float(), teacher.log_tail.float().unsqueeze(-1)], -1).to(log_q.device)
    # The outcomes are already log-probabilities at the run's temperature: the kernels see them at τ = 1. Their
    # gradient reaches the logits through student_outcomes, which carries the 1/τ.
    return replace(divergence, kd_temperature=1.0)(log_q, log_p)


def _lipschitz_factor(divergence: Divergence) -> float | None:
    """L1 bound per unit of Σ_tail |p_v − r_v·p_tail| (docs/methods.md): 1 for fkl (its Δ is 0), 2·max|ψ'| for
    the others; None where no constant exists (rkl: the bound needs the teacher's smallest probability)."""
    name, beta, skew = divergence.name, divergence.beta, divergence.skew
    if name == "jsd" and divergence.normalize and beta in (0.0, 1.0):
        name = "fkl" if beta == 0.0 else "rkl"
    if name == "fkl":
        return 1.0
    if name == "skl":
        return 2.0
    if name == "jsd":
        factor = 2.0 * beta
        return factor / (beta * (1.0 - beta)) if divergence.normalize else factor
    if name == "srkl":
        return 2.0 * (1.0 - skew) / (4.0 * skew) if skew > 0 else None
    return None


def _teacher_only_bound(divergence: Divergence, teacher: SparseTeacher) -> torch.Tensor | None:
    """The bound where it needs only the teacher's tail mass (every divergence with a Lipschitz constant):
    Σ_tail |p_v − r_v·p_tail| ≤ 2·p_tail. None for tvd and rkl, whose bounds read the student's distribution."""
    factor = _lipschitz_factor(divergence)
    if factor is None or divergence.name == "tvd":
        return None
    return factor * 2.0 * teacher.log_tail.float().exp() / divergence.kd_temperature


@torch.no_grad()
def grad_l1_bound(divergence: Divergence, student_logits: torch.Tensor, teacher: SparseTeacher) -> torch.Tensor:
    """Per position, an upper bound on ‖∇_z D_sparse − ∇_z D_dense‖₁ over every teacher tail the cache allows
    (z: the student's logits). 0 where the tail mass is 0; inf where nothing bounds it (rkl without the
    teacher's smallest probability)."""
    fixed = _teacher_only_bound(divergence, teacher)
    if fixed is not None:  # no pass over the student's vocabulary
        return fixed.to(student_logits.device)
    tau = divergence.kd_temperature
    student_logits = _shared(student_logits, teacher)
    if divergence.name == "tvd":
        _, log_q_tail = student_outcomes(student_logits, teacher.ids, tau)
        p_tail = teacher.log_tail.float().to(log_q_tail.device).exp()
        return 2.0 * torch.minimum(p_tail, log_q_tail.exp()) / tau
    return _rkl_bound(student_logits, teacher, tau)


def _rkl_bound(student_logits, teacher: SparseTeacher, tau: float) -> torch.Tensor:
    """rkl: 2·Σ_tail q_v·max over p_v ∈ [p_min, p_hi] of |log(r_v·p_tail / p_v)|, r_v = q_v / q_tail."""
    scaled = student_logits.float() / tau
    log_q = scaled - torch.logsumexp(scaled, -1, keepdim=True)
    outside = ~_in_support(teacher.ids, scaled.size(-1))
    log_q_tail = torch.logsumexp(log_q.masked_fill(~outside, NEG_INF), -1)  # -inf when the support holds every token
    if teacher.log_min is None:
        bound = torch.full_like(log_q_tail, math.inf)
        return torch.where(torch.isneginf(log_q_tail), torch.zeros_like(bound), bound)
    log_p_tail = teacher.log_tail.float().to(log_q.device)
    kept = torch.where(teacher.ids >= 0, teacher.log_probs.float(), torch.full_like(teacher.log_probs.float(), math.inf))
    log_hi = torch.minimum(kept.amin(-1), log_p_tail)  # a tail token has p ≤ the smallest kept one, and ≤ p_tail
    log_lo = teacher.log_min.float().to(log_q.device)
    log_target = log_q - log_q_tail.unsqueeze(-1) + log_p_tail.unsqueeze(-1)  # log(r_v·p_tail)
    spread = torch.maximum((log_target - log_lo.unsqueeze(-1)).abs(), (log_target - log_hi.unsqueeze(-1)).abs())
    terms = torch.where(outside, log_q.exp() * spread, torch.zeros_like(spread))
    bound = 2.0 * terms.nan_to_num(nan=0.0).sum(-1) / tau
    return torch.where(torch.isneginf(log_q_tail), torch.zeros_like(bound), bound)


def _flat(teacher: SparseTeacher, mask: torch.Tensor):
    """The cached rows and the mask flattened over positions: ([N, k], [N, k], [N], [N] | None, [N], vocab)."""
    k = teacher.ids.size(-1)
    low = None if teacher.log_min is None else teacher.log_min.reshape(-1)
    return (teacher.ids.reshape(-1, k), teacher.log_probs.reshape(-1, k), teacher.log_tail.reshape(-1), low,
            mask.reshape(-1), teacher.vocab_size)


def _rows(flat, rows: torch.Tensor) -> SparseTeacher:
    ids, values, tail, low, _, vocab = flat
    return SparseTeacher(ids[rows], values[rows], tail[rows], None if low is None else low[rows], vocab)


class _FusedSparse(torch.autograd.Function):
    """The sparse divergence from the student's hidden states and output projection, a chunk of masked rows of
    logits at a time (never [tokens × V] at once); backward recomputes each chunk's logits."""

    @staticmethod
    def forward(ctx, hidden, weight, divergence, chunk_size, flat):
        values = torch.zeros(hidden.size(0), dtype=torch.float32, device=hidden.device)
        rows = flat[4].nonzero().squeeze(-1)
        for start in range(0, rows.numel(), chunk_size):
            chunk = rows[start:start + chunk_size]
            values[chunk] = sparse_divergence(divergence, (hidden[chunk] @ weight.T).float(), _rows(flat, chunk))
        ctx.save_for_backward(hidden, weight, rows)
        ctx.divergence, ctx.chunk_size, ctx.flat = divergence, chunk_size, flat
        return values

    @staticmethod
    def backward(ctx, grad_values):
        hidden, weight, rows = ctx.saved_tensors
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for start in range(0, rows.numel(), ctx.chunk_size):
            chunk = rows[start:start + ctx.chunk_size]
            part = hidden[chunk]
            logits = (part @ weight.T).float().requires_grad_(True)
            with torch.enable_grad():
                sparse_divergence(ctx.divergence, logits, _rows(ctx.flat, chunk)).backward(grad_values[chunk])
            grad_logits = logits.grad.to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[chunk] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight += grad_logits.T @ part
        return grad_hidden, grad_weight, None, None, None


def fused_sparse_divergence(divergence: Divergence, hidden: torch.Tensor, weight: torch.Tensor,
                            teacher: SparseTeacher, mask: torch.Tensor) -> torch.Tensor:
    """``sparse_divergence`` per position [leading shape] from hidden states and the output projection; 0 where
    ``mask`` is 0 (those rows are never computed)."""
    flat = _flat(teacher, mask)
    values = _FusedSparse.apply(hidden.reshape(-1, hidden.size(-1)), weight, divergence, divergence.chunk_size,
                                flat)
    return values.view(mask.shape)


@torch.no_grad()
def fused_grad_l1_bound(divergence: Divergence, hidden: torch.Tensor, weight: torch.Tensor,
                        teacher: SparseTeacher, mask: torch.Tensor) -> torch.Tensor:
    """``grad_l1_bound`` from hidden states and the projection, a chunk of masked rows at a time; 0 elsewhere."""
    fixed = _teacher_only_bound(divergence, teacher)
    if fixed is not None:  # no logits needed
        fixed = fixed.to(hidden.device)
        return torch.where(mask.bool(), fixed, torch.zeros_like(fixed))
    flat = _flat(teacher, mask)
    flat_hidden = hidden.reshape(-1, hidden.size(-1))
    bound = torch.zeros(flat_hidden.size(0), dtype=torch.float32, device=hidden.device)
    rows = flat[4].nonzero().squeeze(-1)
    for start in range(0, rows.numel(), divergence.chunk_size):
        chunk = rows[start:start + divergence.chunk_size]
        bound[chunk] = grad_l1_bound(divergence, (flat_hidden[chunk] @ weight.T).float(), _rows(flat, chunk))
    return bound.view(mask.shape)

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
    """Teacher distributions at the student's positions as a support plus one tail bucket. The support of a
    position is ``shared_ids`` (when given) followed by its own ``ids``; ``log_probs`` holds one column per
    support slot in that order."""

    ids: torch.Tensor  # long [..., j]: each position's own support; -1 marks an empty slot (ragged supports)
    log_probs: torch.Tensor  # float [..., s + j]: log p of each kept token (-inf in empty slots)
    log_tail: torch.Tensor  # float [...]: log of the teacher's mass outside the support (-inf when none)
    log_min: torch.Tensor | None = None  # float [...]: the teacher's smallest log p over the vocabulary
    vocab_size: int | None = None  # the teacher's output width: a student padded wider is compared over these
    # long [s]: support every position shares (another tokenizer's matched tokens), kept once: per position it
    # would cost [positions × s] int64 index tensors, several times the logits at an LLM vocabulary
    shared_ids: torch.Tensor | None = None

    @property
    def support_ids(self) -> torch.Tensor:
        """[..., s + j]: every position's whole support, materialised (for inspection, not the loss)."""
        if self.shared_ids is None:
            return self.ids
        shared = self.shared_ids.to(self.ids.device).expand(*self.ids.shape[:-1], self.shared_ids.numel())
        return torch.cat([shared, self.ids], -1)


def _valid(ids: torch.Tensor, shared: torch.Tensor | None) -> torch.Tensor:
    """[..., s + j] bool: the slot holds a token."""
    if shared is None:
        return ids >= 0
    shared = (shared.to(ids.device) >= 0).expand(*ids.shape[:-1], shared.numel())
    return torch.cat([shared, ids >= 0], -1) if ids.size(-1) else shared


def _in_support(ids: torch.Tensor, vocab: int, shared: torch.Tensor | None = None) -> torch.Tensor:
    """[..., V] bool (or [V] when only ``shared`` marks anything): the token is one of the position's kept
    tokens."""
    def marks(index: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*index.shape[:-1], vocab + 1, dtype=torch.bool, device=index.device)
        return out.scatter_(-1, torch.where(index >= 0, index, vocab), True)[..., :vocab]  # empty slots: spare column

    if shared is None:
        return marks(ids)
    common = marks(shared.to(ids.device))
    return common | marks(ids) if ids.size(-1) else common


def _support_values(scaled: torch.Tensor, ids: torch.Tensor, shared: torch.Tensor | None) -> torch.Tensor:
    """[..., s + j]: ``scaled`` at each support slot (token 0 in empty slots: the caller masks them)."""
    own = torch.gather(scaled, -1, ids.clamp(min=0))
    if shared is None:
        return own
    common = scaled.index_select(-1, shared.to(scaled.device).clamp(min=0))
    return torch.cat([common, own], -1) if ids.size(-1) else common


def _shared(student_logits: torch.Tensor, teacher: SparseTeacher) -> torch.Tensor:
    """A student output layer padded wider than the teacher's is compared over the teacher's tokens (as the dense
    path's shared vocabulary does)."""
    size = teacher.vocab_size
    return student_logits[..., :size] if size is not None and size < student_logits.size(-1) else student_logits


class _Outcomes(torch.autograd.Function):
    """log q over the support slots and the tail bucket, with a hand-written backward: one pass over the
    vocabulary for the gradient (autograd through gather, masks and two logsumexps would make several).
    With q = softmax(z / τ), S the support and g the upstream gradients:
    ∂/∂z_v = (1/τ)·(Σ_i g_i·[v = s_i] + g_tail·[v ∉ S]·q_v / q_tail − (Σ_i g_i + g_tail)·q_v)."""

    @staticmethod
    def forward(ctx, logits, ids, shared, kd_temperature):
        log_q = (logits.float() / kd_temperature).log_softmax(-1)
        valid = _valid(ids, shared)
        support = _support_values(log_q, ids, shared).masked_fill(~valid, NEG_INF)
        tail = log_q.masked_fill_(_in_support(ids, log_q.size(-1), shared), NEG_INF).logsumexp(-1)
        ctx.save_for_backward(logits, ids, tail, *(() if shared is None else (shared,)))
        ctx.kd_temperature = kd_temperature
        return support, tail

    @staticmethod
    def backward(ctx, grad_support, grad_tail):
        logits, ids, tail, *rest = ctx.saved_tensors
        shared, tau = (rest[0] if rest else None), ctx.kd_temperature
        grad_support = grad_support.masked_fill(~_valid(ids, shared), 0.0)  # empty slots carry no gradient
        empty = torch.isneginf(tail)
        grad_tail, tail = grad_tail.masked_fill(empty, 0.0), tail.masked_fill(empty, 0.0)  # nor an empty tail
        log_q = (logits.float() / tau).log_softmax(-1)
        outside = ~_in_support(ids, log_q.size(-1), shared)
        grad = (log_q - tail.unsqueeze(-1)).exp_().mul_(grad_tail.unsqueeze(-1)).mul_(outside)
        grad.sub_(log_q.exp_().mul_((grad_support.sum(-1) + grad_tail).unsqueeze(-1)))
        s = 0 if shared is None else shared.numel()
        if shared is not None:
            grad.index_add_(-1, shared.to(grad.device).clamp(min=0), grad_support[..., :s])
        if ids.size(-1):
            grad.scatter_add_(-1, ids.clamp(min=0), grad_support[..., s:])
        return grad.div_(tau).to(logits.dtype), None, None, None


def student_outcomes(student_logits: torch.Tensor, ids: torch.Tensor, kd_temperature: float,
                     shared: torch.Tensor | None = None):
    """(log q_S [..., s + j], log q_tail [...]) at ``kd_temperature``, differentiable in the logits; -inf in
    empty slots, and for the tail when the support holds every token the student can give mass to (no gradient
    reaches the logits through either). The support: ``shared`` (every position's) then ``ids`` (each
    position's own), as in ``SparseTeacher``."""
    return _Outcomes.apply(student_logits, ids, shared, kd_temperature)


def sparse_divergence(divergence: Divergence, student_logits: torch.Tensor, teacher: SparseTeacher) -> torch.Tensor:
    """Per-position divergence between (p_S, p_tail) and (q_S, q_tail); the same kernels as the dense path."""
    log_q_support, log_q_tail = student_outcomes(_shared(student_logits, teacher), teacher.ids,
                                                 divergence.kd_temperature, teacher.shared_ids)
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
        _, log_q_tail = student_outcomes(student_logits, teacher.ids, tau, teacher.shared_ids)
        p_tail = teacher.log_tail.float().to(log_q_tail.device).exp()
        return 2.0 * torch.minimum(p_tail, log_q_tail.exp()) / tau
    return _rkl_bound(student_logits, teacher, tau)


def _rkl_bound(student_logits, teacher: SparseTeacher, tau: float) -> torch.Tensor:
    """rkl: 2·Σ_tail q_v·max over p_v ∈ [p_min, p_hi] of |log(r_v·p_tail / p_v)|, r_v = q_v / q_tail."""
    scaled = student_logits.float() / tau
    log_q = scaled - torch.logsumexp(scaled, -1, keepdim=True)
    outside = ~_in_support(teacher.ids, scaled.size(-1), teacher.shared_ids)
    log_q_tail = torch.logsumexp(log_q.masked_fill(~outside, NEG_INF), -1)  # -inf when the support holds every token
    if teacher.log_min is None:
        bound = torch.full_like(log_q_tail, math.inf)
        return torch.where(torch.isneginf(log_q_tail), torch.zeros_like(bound), bound)
    log_p_tail = teacher.log_tail.float().to(log_q.device)
    valid = _valid(teacher.ids, teacher.shared_ids)
    kept = torch.where(valid, teacher.log_probs.float(), torch.full_like(teacher.log_probs.float(), math.inf))
    log_hi = torch.minimum(kept.amin(-1), log_p_tail)  # a tail token has p ≤ the smallest kept one, and ≤ p_tail
    log_lo = teacher.log_min.float().to(log_q.device)
    log_target = log_q - log_q_tail.unsqueeze(-1) + log_p_tail.unsqueeze(-1)  # log(r_v·p_tail)
    spread = torch.maximum((log_target - log_lo.unsqueeze(-1)).abs(), (log_target - log_hi.unsqueeze(-1)).abs())
    terms = torch.where(outside, log_q.exp() * spread, torch.zeros_like(spread))
    bound = 2.0 * terms.nan_to_num(nan=0.0).sum(-1) / tau
    return torch.where(torch.isneginf(log_q_tail), torch.zeros_like(bound), bound)


def _flat(teacher: SparseTeacher, mask: torch.Tensor):
    """The cached rows and the mask flattened over positions: ([N, j], [N, s + j], [N], [N] | None, [N], vocab,
    shared [s] | None)."""
    low = None if teacher.log_min is None else teacher.log_min.reshape(-1)
    return (teacher.ids.flatten(0, -2), teacher.log_probs.flatten(0, -2), teacher.log_tail.reshape(-1), low,
            mask.reshape(-1), teacher.vocab_size, teacher.shared_ids)


def _rows(flat, rows: torch.Tensor) -> SparseTeacher:
    ids, values, tail, low, _, vocab, shared = flat
    return SparseTeacher(ids[rows], values[rows], tail[rows], None if low is None else low[rows], vocab, shared)


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

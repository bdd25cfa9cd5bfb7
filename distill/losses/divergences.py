"""Token-level divergences between student and teacher distributions (SPEC §4).

Pure functions on logits, student first, teacher second; the teacher is a
fixed target (no gradient). They return per-token float32 values [..., ] of
the leading shape and are computed chunk by chunk over tokens, in log space,
both forward and backward: the gradient w.r.t. the student logits is written
in closed form and recomputed per chunk, so no [tokens × vocab] intermediate
larger than one chunk is ever alive, whatever the vocabulary.
"""

from __future__ import annotations

import torch

from distill.errors import ConfigError


def _log_probs(logits: torch.Tensor, kd_temperature: float) -> torch.Tensor:
    return torch.log_softmax(logits.float() / kd_temperature, dim=-1)


def _fkl_chunk(zs: torch.Tensor, zt: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(p‖q) per row and its gradient w.r.t. the student logits, (q − p)/τ."""
    log_q, log_p = _log_probs(zs, tau), _log_probs(zt, tau)
    p = log_p.exp()
    # p·(log p − log q) with 0·log 0 = 0: masked vocab entries (−inf logits) contribute nothing.
    value = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)
    return value, (log_q.exp() - p) / tau


class _ChunkedDivergence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits, teacher_logits, chunk_fn, tau, chunk_size):
        shape = student_logits.shape[:-1]
        zs = student_logits.reshape(-1, student_logits.size(-1))
        zt = teacher_logits.reshape(-1, teacher_logits.size(-1))
        values = torch.empty(zs.size(0), dtype=torch.float32, device=zs.device)
        for start in range(0, zs.size(0), chunk_size):
            values[start : start + chunk_size] = chunk_fn(zs[start : start + chunk_size], zt[start : start + chunk_size], tau)[0]
        ctx.save_for_backward(student_logits, teacher_logits)
        ctx.chunk_fn, ctx.tau, ctx.chunk_size = chunk_fn, tau, chunk_size
        return values.view(shape)

    @staticmethod
    def backward(ctx, grad_values):
        student_logits, teacher_logits = ctx.saved_tensors
        zs = student_logits.reshape(-1, student_logits.size(-1))
        zt = teacher_logits.reshape(-1, teacher_logits.size(-1))
        g = grad_values.reshape(-1, 1).float()
        grad = torch.empty_like(zs)
        for start in range(0, zs.size(0), ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            grad[rows] = (g[rows] * ctx.chunk_fn(zs[rows], zt[rows], ctx.tau)[1]).to(grad.dtype)
        return grad.view_as(student_logits), None, None, None, None


def _check(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kd_temperature: float, chunk_size: int) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ")
    if kd_temperature <= 0:
        raise ConfigError(f"divergence.kd_temperature must be > 0, got {kd_temperature}")
    if chunk_size < 1:
        raise ConfigError(f"divergence.chunk_size must be >= 1, got {chunk_size}")


def fkl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kd_temperature: float = 1.0,
        chunk_size: int = 1024) -> torch.Tensor:
    """Forward KL, KL(p‖q) = Σ_v p (log p − log q), per token, float32."""
    _check(student_logits, teacher_logits, kd_temperature, chunk_size)
    return _ChunkedDivergence.apply(student_logits, teacher_logits.detach(), _fkl_chunk, kd_temperature, chunk_size)

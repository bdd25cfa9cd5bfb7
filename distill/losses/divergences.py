"""Token-level divergences between student and teacher distributions (docs/design.md, Divergences).

Pure functions on logits, student first, teacher second; the teacher is a
fixed target (no gradient). Each returns per-token float32 values of the
leading shape. They are computed chunk by chunk over tokens, in log space,
and the gradient w.r.t. the student logits has a closed form written in the
same pass: besides the inputs, only the gradient buffer (which backward must
return anyway) and one chunk of temporaries are alive, whatever the vocabulary.

Gradient form. With a = log q (q the student distribution at temperature τ)
and f a divergence, ∂f/∂z_j = (h_j − q_j Σ_v h_v) / τ where h_v = ∂f/∂a_v.
Each ``_*_chunk`` returns (f, h); ``_ChunkedDivergence`` does the rest.
Derivations: docs/methods.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distill.errors import ConfigError
from distill.fields import build, check_choice, check_count, check_field_types, check_range
from distill.losses.fused_linear import fused_divergence
from distill.losses.logspace import check_kernel_settings, log_probs


def _xlogy_diff(weight: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """weight·(log_a − log_b) with 0·(anything) = 0, so −inf logits contribute nothing."""
    # In place on the one new buffer: at LLM vocabularies every extra [rows × V] allocation costs on CPU
    # about as much as the arithmetic in it.
    return (log_a - log_b).mul_(weight).masked_fill_(weight <= 0, 0.0)


def _log_mix(log_x: torch.Tensor, log_y: torch.Tensor, weight_x: float) -> torch.Tensor:
    """log(w·x + (1−w)·y) in log space; exactly log x where x = y (w·x + (1−w)·x = x, without rounding)."""
    mixed = torch.logaddexp(log_x + math.log(weight_x), log_y + math.log1p(-weight_x))
    return torch.where(log_x == log_y, log_x, mixed)


# Each h below drops a multiple of q that cancels in ∂f/∂z = (h − q Σh)/τ when Σq = 1: the gradient is the
# same, but at p = q it is exactly 0 instead of the float32 rounding of Σp (~1e-7), which Adam would turn
# into full-size steps (a student that already is its teacher must stay put).


def _fkl_chunk(log_q, log_p, _):
    p = log_p.exp()
    return _xlogy_diff(p, log_p, log_q).sum(-1), log_q.exp() - p  # −p + q


def _rkl_chunk(log_q, log_p, _):
    q = log_q.exp()
    term = _xlogy_diff(q, log_q, log_p)
    return term.sum(-1), term  # q(log q − log p) + q − q


def _jsd_chunk(log_q, log_p, beta):
    p, q = log_p.exp(), log_q.exp()
    log_m = _log_mix(log_p, log_q, beta)
    value = beta * _xlogy_diff(p, log_p, log_m).sum(-1) + (1 - beta) * _xlogy_diff(q, log_q, log_m).sum(-1)
    return value, (1 - beta) * _xlogy_diff(q, log_q, log_m)


def _tvd_chunk(log_q, log_p, _):
    p, q = log_p.exp(), log_q.exp()
    return 0.5 * (p - q).abs().sum(-1), 0.5 * q * torch.sign(q - p)


def _skl_chunk(log_q, log_p, skew):
    p, q = log_p.exp(), log_q.exp()
    log_m = _log_mix(log_p, log_q, skew)  # M = λp + (1−λ)q
    # −(1−λ)·p·q/M, plus (1−λ)·q: (1−λ)·q·(1 − p/M)
    h = torch.where(p > 0, (1 - skew) * q * (1 - (log_p - log_m).exp()), (1 - skew) * q)
    return _xlogy_diff(p, log_p, log_m).sum(-1), h


def _srkl_chunk(log_q, log_p, skew):
    q = log_q.exp()
    log_m = _log_mix(log_q, log_p, skew)  # M = λq + (1−λ)p
    ratio = (log_q - log_m).exp()  # q/M <= 1/λ, finite
    # q(log q − log M + 1) − λ·q·q/M, minus (1−λ)·q: q(log q − log M) + λ·q·(1 − q/M)
    h = torch.where(q > 0, q * (log_q - log_m) + skew * q * (1 - ratio), torch.zeros_like(q))
    return _xlogy_diff(q, log_q, log_m).sum(-1), h


class _ChunkedDivergence(torch.autograd.Function):
    """Values chunk by chunk; the gradient is formed in the same pass (no recomputation).

    The forward pass writes the per-token values and, when the student needs
    a gradient, the unit gradient ∂f/∂z into one buffer shaped like the
    logits; backward scales it in place by the upstream per-token gradient.
    Peak memory is the inputs, that one buffer and one chunk of temporaries.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, chunk_fn, param, tau, chunk_size, scale):
        zs = student_logits.reshape(-1, student_logits.size(-1))
        zt = teacher_logits.reshape(-1, teacher_logits.size(-1))
        values = torch.empty(zs.size(0), dtype=torch.float32, device=zs.device)
        unit_grad = torch.empty_like(zs) if ctx.needs_input_grad[0] else None
        chunk_rows = rows_per_chunk(chunk_size, zs.size(-1))
        for start in range(0, zs.size(0), chunk_rows):
            rows = slice(start, start + chunk_rows)
            log_q = log_probs(zs[rows], tau)
            value, h = chunk_fn(log_q, log_probs(zt[rows], tau), param)
            values[rows] = value * scale
            if unit_grad is not None:
                _unit_grad(h, log_q, scale / tau, unit_grad[rows])
        ctx.save_for_backward(unit_grad)
        ctx.logits_shape = student_logits.shape
        return values.view(student_logits.shape[:-1])

    @staticmethod
    def backward(ctx, grad_values):
        (unit_grad,) = ctx.saved_tensors
        # In place: a second backward through this graph is refused by autograd's version check.
        grad = unit_grad.mul_(grad_values.reshape(-1, 1).to(unit_grad.dtype))
        return grad.view(ctx.logits_shape), None, None, None, None, None, None


REFERENCE_VOCAB = 32_768  # chunk_size counts rows at this vocabulary width


def rows_per_chunk(chunk_size: int, vocab: int) -> int:
    """Rows per chunk: ``chunk_size`` at a 32 768-token vocabulary, proportionally more at smaller ones (the same
    memory per chunk). Each row's value and gradient are computed within its row, so results do not depend on it;
    at a 432-token vocabulary, 64-row chunks spent more time in per-chunk overhead than in arithmetic."""
    return max(chunk_size, chunk_size * REFERENCE_VOCAB // max(vocab, 1))


def _unit_grad(h: torch.Tensor, log_q: torch.Tensor, factor: float, out: torch.Tensor) -> None:
    """(h − q·Σh)·factor into ``out`` (rows of the gradient buffer), in place on the chunk's own h and log q (both
    fresh, neither needed again): no [rows × V] temporary beyond them, and none at all when ``out`` is float32."""
    q_sums = log_q.exp_().mul_(h.sum(-1, keepdim=True))
    if out.dtype == h.dtype:
        torch.sub(h, q_sums, out=out)
        if factor != 1.0:
            out.mul_(factor)
    else:
        out.copy_(h.sub_(q_sums).mul_(factor))


def _apply(chunk_fn, student_logits, teacher_logits, param, kd_temperature, chunk_size, scale=1.0):
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ")
    check_kernel_settings(chunk_size, kd_temperature)
    return _ChunkedDivergence.apply(student_logits, teacher_logits.detach(), chunk_fn, param, kd_temperature,
                                    chunk_size, scale)


def fkl(student_logits, teacher_logits, kd_temperature: float = 1.0, chunk_size: int = 64):
    """Forward KL, KL(p‖q) = Σ_v p (log p − log q)."""
    return _apply(_fkl_chunk, student_logits, teacher_logits, None, kd_temperature, chunk_size)


def rkl(student_logits, teacher_logits, kd_temperature: float = 1.0, chunk_size: int = 64):
    """Reverse KL, KL(q‖p) = Σ_v q (log q − log p)."""
    return _apply(_rkl_chunk, student_logits, teacher_logits, None, kd_temperature, chunk_size)


def jsd(student_logits, teacher_logits, beta: float, normalize: bool = False, kd_temperature: float = 1.0,
        chunk_size: int = 64):
    """Generalised JSD(β) of the GKD paper: β·KL(p‖M) + (1−β)·KL(q‖M), M = βp + (1−β)q.

    β→0 behaves like forward KL and β→1 like reverse KL, but plain JSD(β)
    vanishes at both ends. ``normalize`` divides by β(1−β), which is
    continuous on [0, 1] with fkl at β=0 and rkl at β=1 (computed exactly).
    """
    chunk_fn, param, scale = _jsd_kernel(beta, normalize)
    return _apply(chunk_fn, student_logits, teacher_logits, param, kd_temperature, chunk_size, scale)


def _jsd_kernel(beta: float, normalize: bool) -> tuple:
    """(chunk function, its parameter, value scale) of JSD(β): the one place its endpoints are decided.
    Normalised, β = 0 and β = 1 are exactly fkl and rkl, not limits approached through β(1−β) → 0."""
    if normalize:
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"divergence.beta must be in [0, 1] with normalize=true, got {beta}")
        if beta in (0.0, 1.0):
            return (_fkl_chunk, None, 1.0) if beta == 0.0 else (_rkl_chunk, None, 1.0)
        return _jsd_chunk, beta, 1.0 / (beta * (1.0 - beta))
    if not 0.0 < beta < 1.0:
        raise ConfigError(f"divergence.beta must be in (0, 1), got {beta}; use divergence.normalize=true for the endpoints")
    return _jsd_chunk, beta, 1.0


def tvd(student_logits, teacher_logits, kd_temperature: float = 1.0, chunk_size: int = 64):
    """Total variation distance, ½ Σ_v |p − q|."""
    return _apply(_tvd_chunk, student_logits, teacher_logits, None, kd_temperature, chunk_size)


def _check_skew(skew: float) -> None:
    if not 0.0 <= skew < 1.0:
        raise ConfigError(f"divergence.skew must be in [0, 1), got {skew}")


def skl(student_logits, teacher_logits, skew: float = 0.1, kd_temperature: float = 1.0, chunk_size: int = 64):
    """Skew KL of DistiLLM, KL(p ‖ λp + (1−λ)q); λ = ``skew``."""
    _check_skew(skew)
    return _apply(_skl_chunk, student_logits, teacher_logits, skew, kd_temperature, chunk_size)


def srkl(student_logits, teacher_logits, skew: float = 0.1, kd_temperature: float = 1.0, chunk_size: int = 64):
    """Skew reverse KL of DistiLLM, KL(q ‖ λq + (1−λ)p); λ = ``skew``."""
    _check_skew(skew)
    return _apply(_srkl_chunk, student_logits, teacher_logits, skew, kd_temperature, chunk_size)


NAMES = ("fkl", "rkl", "jsd", "tvd", "skl", "srkl")
ULD_MODES = ("unmatched", "all")


@dataclass(frozen=True)
class Divergence:
    """A ``conf/divergence/*.yaml`` choice bound to its parameters; call it on (student, teacher) logits."""

    name: str
    kd_temperature: float
    chunk_size: int
    beta: float | None = None
    normalize: bool = False
    skew: float | None = None
    cross_tokenizer: bool = False  # compared across tokenizers (distill.data.cross_tokenizer); the kernels ignore it
    uld: str | None = None  # across tokenizers: "unmatched" adds ULD over the buckets, "all" replaces D by ULD

    def __post_init__(self) -> None:
        """Every parameter checked before any model loads; errors name ``divergence.KEY``."""
        check_field_types(self, "divergence")
        check_choice("divergence", "name", self.name, NAMES)
        check_range("divergence", "kd_temperature", self.kd_temperature, 0.0, low_open=True)
        check_count("divergence", "chunk_size", self.chunk_size)
        if self.name == "jsd":
            if self.beta is None:
                raise ConfigError("divergence.beta is required for jsd; set divergence.beta=...")
            if self.normalize:
                check_range("divergence", "beta", self.beta, 0.0, 1.0)
            elif not 0.0 < self.beta < 1.0:  # NaN fails too
                raise ConfigError(f"divergence.beta must be in (0, 1), got {self.beta}; use divergence.normalize=true "
                                  "for the endpoints")
        if self.uld is not None:
            check_choice("divergence", "uld", self.uld, ULD_MODES)
            if not self.cross_tokenizer:
                raise ConfigError(f"divergence.uld={self.uld} compares two tokenizers' distributions; it needs "
                                  "divergence.cross_tokenizer=true")
        if self.name in ("skl", "srkl"):
            if self.skew is None:
                raise ConfigError(f"divergence.skew is required for {self.name}; set divergence.skew=...")
            _check_skew(self.skew)

    @classmethod
    def from_config(cls, values: dict) -> "Divergence":
        """From the ``divergence`` block; an unknown key (``+divergence.foo=1``) is named."""
        return build(cls, values, "divergence")

    def _kernel(self) -> tuple:
        """(chunk function, its parameter, value scale) of this divergence, as ``__call__`` picks them."""
        if self.name == "jsd":
            return _jsd_kernel(self.beta, self.normalize)
        chunks = {"fkl": _fkl_chunk, "rkl": _rkl_chunk, "tvd": _tvd_chunk, "skl": _skl_chunk, "srkl": _srkl_chunk}
        return chunks[self.name], self.skew, 1.0

    def fused(self, student_hidden, student_weight, teacher_hidden, teacher_weight, mask) -> torch.Tensor:
        """The same per-token values from hidden states and output projections (distill.losses.fused_linear)."""
        chunk_fn, param, scale = self._kernel()
        return fused_divergence(chunk_fn, student_hidden, student_weight, teacher_hidden, teacher_weight, mask,
                                param, self.kd_temperature, self.chunk_size, scale)

    def __call__(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        common = {"kd_temperature": self.kd_temperature, "chunk_size": self.chunk_size}
        if self.name == "jsd":
            return jsd(student_logits, teacher_logits, beta=self.beta, normalize=self.normalize, **common)
        if self.name in ("skl", "srkl"):
            fn = skl if self.name == "skl" else srkl
            return fn(student_logits, teacher_logits, skew=self.skew, **common)
        return {"fkl": fkl, "rkl": rkl, "tvd": tvd}[self.name](student_logits, teacher_logits, **common)

"""Divergences and cross-entropy from hidden states and output projections, never forming full logits.

The unfused path (``distill.losses.divergences``) receives [tokens × vocab] logits from both models: at a
151 936-entry vocabulary that is 1.2 GB per model for 2 048 float32 tokens, plus the student logits' gradient.
Here the student's last hidden states ``h_s`` [N, d_s] and projection ``W_s`` [V, d_s] (the teacher's likewise)
go in; logits exist one chunk of rows at a time, forward and backward, and only masked-in rows are computed.

Per chunk, with the unit gradient g = ∂f/∂z_s = (h − q Σh)·scale/τ of the divergence's closed form
(``divergences._*_chunk``): ∂f/∂h_s = g W_s and ∂f/∂W_s = Σ_rows gᵀ h_s. Forward computes the values and both
gradients for the per-token upstream weights being the mask (what ``reduce_tokens`` gives, times one scalar:
the term's weight / N); backward then only rescales them. If the upstream gradient is not proportional to the
mask (another reduction), backward recomputes chunk by chunk with the true per-token weights: always exact.
The first backward scales the saved weight gradient in place and hands it over (a scaled copy would be a second
[V × d] buffer at the peak); a later backward through the same graph (``retain_graph=True``) recomputes it.
Values at masked-out rows are 0 and so are their gradients, as on the unfused path (masked logits are zeroed).
"""

from __future__ import annotations

import torch

from distill.losses.logspace import check_kernel_settings, log_probs


def _ce_chunk(log_q: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """−log q(y) and h = ∂/∂(log q) = −onehot(y)."""
    h = torch.zeros_like(log_q)
    h.scatter_(1, targets[:, None], -1.0)
    return -log_q.gather(1, targets[:, None]).squeeze(1), h


class _Spec:
    """What one call computes: a divergence chunk function (with the teacher) or cross-entropy (targets)."""

    def __init__(self, chunk_fn, param, tau: float, scale: float, chunk_size: int, teacher_weight, targets):
        self.chunk_fn, self.param, self.tau, self.scale, self.chunk_size = chunk_fn, param, tau, scale, chunk_size
        self.teacher_weight, self.targets = teacher_weight, targets
        self.buffers: dict = {}  # reused [V × rows] buffers of one forward or recompute (freed after it)

    def chunk(self, rows: torch.Tensor, student_hidden, student_weight, log_p):
        """(values, unit gradient ∂f/∂z_s) for the given rows and the teacher's log-probabilities there (None
        for cross-entropy); the logits live only here. Each weight is already in its hidden states' dtype (bf16
        under autocast: one copy per call, as autocast makes per matmul)."""
        log_q = self._log_probs("student", student_hidden[rows], student_weight)
        if self.targets is not None:
            value, h = _ce_chunk(log_q, self.targets[rows])
        else:
            value, h = self.chunk_fn(log_q, log_p, self.param)
        # (h − q Σh)·scale/τ in place: h is the chunk function's own fresh tensor and log q is not needed again.
        sums = h.sum(-1, keepdim=True)
        grad = h.sub_(log_q.exp_().mul_(sums)).mul_(self.scale / self.tau)
        return value * self.scale, grad

    def _log_probs(self, role: str, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """float32 log-probabilities of ``hidden · weightᵀ`` [rows × V], in this call's reused buffers.

        The product is computed as (weight · hiddenᵀ)ᵀ: with few rows and a large vocabulary the GEMM is faster
        with the vocabulary as its long side, and the result is a transposed view that every elementwise op and
        reduction downstream keeps (the backward GEMMs read it without a copy). The buffers are reused across
        chunks because a fresh [rows × V] CPU buffer costs page faults as slow as the arithmetic done in it."""
        rows, vocab = hidden.size(0), weight.size(0)
        logits = torch.mm(weight, hidden.T, out=self._buffer(role, rows, vocab, hidden)).T
        if logits.dtype != torch.float32:
            logits = self._buffer(role + "32", rows, vocab, hidden, torch.float32).T.copy_(logits)
        return log_probs(logits, self.tau, work=self._buffer("work", rows, vocab, hidden, torch.float32).T)

    def _buffer(self, name: str, rows: int, vocab: int, like: torch.Tensor, dtype=None) -> torch.Tensor:
        """A contiguous [V × rows] tensor (``like``'s device, ``dtype`` or its dtype) from this call's buffer
        ``name``, grown when a chunk needs more."""
        dtype = dtype or like.dtype
        buffer = self.buffers.get((name, dtype))
        if buffer is None or buffer.numel() < vocab * rows:
            buffer = self.buffers[(name, dtype)] = torch.empty(vocab * max(rows, self.chunk_size), dtype=dtype,
                                                               device=like.device)
        return buffer[: vocab * rows].view(vocab, rows)


TEACHER_CHUNKS = 2  # student chunks per teacher projection (see _chunks)


def _chunks(spec: _Spec, mask: torch.Tensor, teacher_hidden):
    """(rows, the teacher's log-probabilities there or None) for each chunk of masked-in rows. The teacher's
    projection, the widest GEMM, runs for two chunks at once: this CPU's GEMM is 20–30 % less efficient with 64
    rows than with 128, and the cost is one more [64 × V] buffer."""
    if spec.targets is not None:
        yield from ((rows, None) for rows in _row_chunks(mask, spec.chunk_size))
        return
    for block in _row_chunks(mask, spec.chunk_size * TEACHER_CHUNKS):
        log_p = spec._log_probs("teacher", teacher_hidden[block], spec.teacher_weight)
        for start in range(0, block.numel(), spec.chunk_size):
            yield block[start : start + spec.chunk_size], log_p[start : start + spec.chunk_size]


def _row_chunks(mask: torch.Tensor, chunk_size: int):
    active = mask.nonzero().squeeze(1)
    return [active[start : start + chunk_size] for start in range(0, active.numel(), chunk_size)]


class _FusedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_hidden, weight, teacher_hidden, mask, spec: _Spec):
        student_weight = weight.to(student_hidden.dtype)
        if teacher_hidden is not None:
            spec.teacher_weight = spec.teacher_weight.to(teacher_hidden.dtype)
        values = torch.zeros(student_hidden.size(0), dtype=torch.float32, device=student_hidden.device)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.zeros_like(student_hidden, dtype=torch.float32) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        for rows, log_p in _chunks(spec, mask, teacher_hidden):
            value, grad = spec.chunk(rows, student_hidden, student_weight, log_p)
            values[rows] = value
            grad = grad.to(student_hidden.dtype)
            if need_h:  # per token: backward scales each row; (Wᵀ · gradᵀ)ᵀ reads grad's layout as it is
                grad_h[rows] = (student_weight.T @ grad.T).T.float()
            if need_w:  # summed over rows, weighted by the mask: valid for an upstream gradient ∝ mask
                # Σ_r m_r g_rᵀ h_r, the weights on the small [rows × d] side: no second [rows × V] buffer
                grad_w.addmm_(grad.T.float(), student_hidden[rows].float() * mask[rows, None])
        spec.buffers.clear()
        ctx.save_for_backward(student_hidden, student_weight, teacher_hidden, mask, grad_h)
        # Kept outside the saved tensors: backward consumes it in place, which a saved tensor's version check
        # would refuse on any later backward through the graph.
        ctx.spec, ctx.weight_dtype, ctx.grad_w = spec, weight.dtype, grad_w
        return values

    @staticmethod
    def backward(ctx, grad_values):
        student_hidden, student_weight, teacher_hidden, mask, grad_h = ctx.saved_tensors
        grad_values = grad_values.float()
        grad_w = None
        if ctx.needs_input_grad[1]:
            saved, ctx.grad_w = ctx.grad_w, None  # consumed: a later backward (retain_graph) recomputes
            factor = _common_factor(grad_values, mask)
            if factor is None or saved is None:  # not a masked mean, or not the first backward
                grad_w = _recomputed_weight_grad(ctx.spec, student_hidden, student_weight, teacher_hidden, mask,
                                                 grad_values)
            else:  # in place: a scaled copy would hold a second [V × d] float32 buffer at the peak
                grad_w = saved.mul_(factor)
            grad_w = grad_w.to(ctx.weight_dtype)
        if grad_h is not None:
            grad_h = (grad_h * grad_values[:, None]).to(student_hidden.dtype)
        return grad_h, grad_w, None, None, None


def _common_factor(grad_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """c with grad_values = c·mask on every masked-in row (a masked mean's upstream gradient), else None."""
    active = mask > 0
    if not active.any():
        return grad_values.new_zeros(())
    ratios = grad_values[active] / mask[active]
    factor = ratios[0]
    if torch.equal(ratios, factor.expand_as(ratios)):
        return factor
    return None


def _recomputed_weight_grad(spec: _Spec, student_hidden, student_weight, teacher_hidden, mask, grad_values):
    grad_w = torch.zeros_like(student_weight, dtype=torch.float32)
    for rows, log_p in _chunks(spec, mask, teacher_hidden):
        _, grad = spec.chunk(rows, student_hidden, student_weight, log_p)
        grad_w.addmm_(grad.T.float(), student_hidden[rows].float() * grad_values[rows, None])
    spec.buffers.clear()
    return grad_w


def _flat(hidden: torch.Tensor) -> torch.Tensor:
    return hidden.reshape(-1, hidden.size(-1))


def fused_divergence(chunk_fn, student_hidden: torch.Tensor, student_weight: torch.Tensor,
                     teacher_hidden: torch.Tensor, teacher_weight: torch.Tensor, mask: torch.Tensor, param=None,
                     kd_temperature: float = 1.0, chunk_size: int = 64, scale: float = 1.0) -> torch.Tensor:
    """Per-token divergence [leading shape] from (hidden, projection) pairs; 0 where ``mask`` is 0.

    ``chunk_fn`` is one of ``divergences._*_chunk`` (student log q first, teacher log p second). The teacher is a
    fixed target: its hidden states and weight get no gradient.
    """
    check_kernel_settings(chunk_size, kd_temperature)
    if student_weight.size(0) != teacher_weight.size(0):
        raise ValueError(f"student vocabulary {student_weight.size(0)} != teacher vocabulary {teacher_weight.size(0)}")
    spec = _Spec(chunk_fn, param, kd_temperature, scale, chunk_size, teacher_weight.detach(), None)
    values = _FusedLinear.apply(_flat(student_hidden), student_weight, _flat(teacher_hidden).detach(),
                                mask.reshape(-1).float(), spec)
    return values.view(mask.shape)


def fused_cross_entropy(student_hidden: torch.Tensor, student_weight: torch.Tensor, targets: torch.Tensor,
                        mask: torch.Tensor, temperature: float = 1.0, chunk_size: int = 64) -> torch.Tensor:
    """Per-token −log q_T(y) [leading shape], q_T = softmax(h Wᵀ / T), from hidden states and the projection;
    0 where ``mask`` is 0."""
    check_kernel_settings(chunk_size, temperature)
    spec = _Spec(None, None, temperature, 1.0, chunk_size, None, targets.reshape(-1).clamp(min=0))
    values = _FusedLinear.apply(_flat(student_hidden), student_weight, None, mask.reshape(-1).float(), spec)
    return values.view(mask.shape)

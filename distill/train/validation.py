"""Validation loss: token-mean cross-entropy of the student on held-out dataset outputs."""

from __future__ import annotations

import torch

from distill.data.collate import Encoded, collate
from distill.losses.kd import ce_term
from distill.models.forward import token_view


@torch.no_grad()
def validation_loss(ctx, data: list[Encoded], batch_size: int, max_batches: int, autocast) -> float:
    ctx.student.eval()
    total, count = 0.0, 0.0
    for start in range(0, min(len(data), batch_size * max_batches), batch_size):
        batch = collate(data[start : start + batch_size], ctx.tokenizer.pad_token_id, ctx.encoder_decoder)
        batch = {k: v.to(ctx.device) for k, v in batch.items()}
        with autocast():
            view = token_view(ctx.student, batch, fused=ctx.fused_linear)
            nll = ce_term(view).per_token.detach()
        total += float((nll * view.mask).sum())
        count += float(view.mask.sum())
    ctx.student.train()
    return total / max(count, 1.0)

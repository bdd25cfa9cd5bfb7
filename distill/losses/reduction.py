"""The one reduction every loss goes through (docs/design.md, Reduction).

Per-token losses are summed over output tokens and divided by N, the number
of output tokens in the whole optimizer step (all micro-batches of the
accumulation window, counted after on-policy generation). Dividing by the
window's N rather than each micro-batch's own count is what makes
micro-batch 8 × accumulation 1 and 2 × 4 give the same update.
"""

from __future__ import annotations

import torch


def reduce_tokens(per_token: torch.Tensor, mask: torch.Tensor, num_tokens: torch.Tensor | float) -> torch.Tensor:
    """Σ m_t ℓ_t / N in float32; ``num_tokens`` is the step's N, not this batch's."""
    # where, not multiply: an inf/NaN at a masked position (padding) must not leak in as 0·inf.
    return torch.where(mask > 0, per_token.float() * mask, 0.0).sum() / num_tokens

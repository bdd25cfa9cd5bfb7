"""Per-token cross-entropy (negative log-likelihood of the target token)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B, L] float32 −log softmax(logits)[target]; reduce with ``reduce_tokens``."""
    flat = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), reduction="none")
    return flat.view(targets.shape)

"""What a method hands the training loop: named per-token loss terms."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossTerms:
    """Per-token terms on one micro-batch, all [B, L] and aligned with ``mask``.

    The loop reduces each term once (``reduce_tokens``) with the step's token
    count, logs it as ``loss/<name>``, and minimises Σ weight · term.
    """

    mask: torch.Tensor
    terms: dict[str, torch.Tensor]
    weights: dict[str, float] = field(default_factory=dict)

    def weight(self, name: str) -> float:
        return self.weights.get(name, 1.0)

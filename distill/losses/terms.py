"""What a method hands the training loop: named per-token loss terms."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Term:
    """One loss term on a micro-batch, [B, L] per-token values in the target-aligned view.

    The loop reduces it once, Σ mask·per_token / N (``reduce_tokens``), where N
    is the number of tokens under the batch mask named by ``count_key``
    summed over the whole accumulation window (SPEC §3); logs it as
    ``loss/<name>``; and adds ``weight`` × it to the minimised total.
    """

    per_token: torch.Tensor
    mask: torch.Tensor
    weight: float = 1.0
    count_key: str = "loss_mask"


@dataclass
class LossTerms:
    terms: dict[str, Term]
    # Diagnostics logged as their mean over micro-batches (e.g. the reward head's μ/σ), never optimised.
    stats: dict[str, torch.Tensor] = field(default_factory=dict)

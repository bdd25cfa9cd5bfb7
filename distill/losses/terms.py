"""What a method hands the training loop: named per-token loss terms."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from distill.losses.reduction import reduce_tokens


@dataclass
class Term:
    """One loss term on a micro-batch, [B, L] per-token values in the target-aligned view.

    The loop reduces it once, Σ mask·per_token / N (``reduce_tokens``), where N
    is the number of tokens under the batch mask named by ``count_key``
    summed over the whole accumulation window (docs/design.md, Reduction); logs it as
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

    def reduced(self, counts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each term reduced once, Σ mask·per_token / N, N = ``counts[term.count_key]`` (the window's tokens)."""
        return {name: reduce_tokens(t.per_token, t.mask, counts[t.count_key]) for name, t in self.terms.items()}

    def total(self, reduced: dict[str, torch.Tensor]) -> torch.Tensor:
        """The minimised loss: Σ weight × reduced term (the one place terms are combined)."""
        device = next(iter(reduced.values())).device if reduced else None
        loss = torch.zeros((), device=device)
        for name, value in reduced.items():  # in order, one at a time: the sum is the same float everywhere
            loss = loss + self.terms[name].weight * value
        return loss

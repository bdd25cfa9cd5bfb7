"""SFT: cross-entropy on the dataset's outputs (SPEC §5).

Also the recipe that bootstraps tiny teachers and SFT-initialised students.
"""

from __future__ import annotations

from distill.losses.ce import token_nll
from distill.losses.terms import LossTerms
from distill.models.forward import token_view


class SFT:
    needs_teacher = False

    def trajectories(self, batch, ctx):
        """The dataset's own outputs; nothing is generated."""
        return batch

    def loss_terms(self, batch, ctx) -> LossTerms:
        view = token_view(ctx.student, batch)
        return LossTerms(mask=view.mask, terms={"ce": token_nll(view.logits, view.targets)})

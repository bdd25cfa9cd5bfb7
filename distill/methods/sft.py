"""SFT: cross-entropy on the dataset's outputs (docs/design.md, Methods).

Also the recipe that bootstraps tiny teachers and SFT-initialised students.
"""

from __future__ import annotations

from distill.losses.kd import ce_term
from distill.losses.terms import LossTerms
from distill.methods.base import Method
from distill.models.forward import token_view


class SFT(Method):
    fuses_linear = True  # its losses come from hidden states when the run fuses
    needs_teacher = False
    prompts_only = False  # trains on the dataset's targets: never on unlabelled prompts

    def trajectories(self, items, ctx):
        """The dataset's own outputs; nothing is generated."""
        return ctx.collate(items)

    def loss_terms(self, batch, ctx) -> LossTerms:
        return LossTerms({"ce": ce_term(token_view(ctx.student, batch, fused=ctx.fused_linear))})

"""Word-level supervised KD (Hinton et al., 2015; Kim & Rush, 2016): D(p, q) on the dataset's outputs.

Loss per output token: D(p, q) from the divergence group, plus ``ce_weight`` × CE
on the dataset token (docs/design.md, Methods).
"""

from __future__ import annotations

from distill.data.trajectories import teacher_forward, teacher_target
from distill.fields import check_range
from distill.losses.divergences import Divergence
from distill.losses.kd import ce_term, cross_terms, kd_stats
from distill.losses.terms import LossTerms
from distill.methods.base import Method
from distill.models.forward import token_view


class SupervisedKD(Method):
    fuses_linear = True  # its losses come from hidden states when the run fuses
    reads_teacher_cache = True  # the teacher's distributions over the dataset's targets never change
    cross_tokenizer = True  # the dataset's text is re-tokenised for a teacher with another tokenizer
    needs_teacher = True
    prompts_only = False  # the divergence is taken on the dataset's outputs

    def __init__(self, divergence: dict, ce_weight: float):
        check_range("method", "ce_weight", ce_weight, 0.0)
        self.divergence = Divergence.from_config(divergence)
        self.ce_weight = ce_weight

    def trajectories(self, items, ctx):
        batch = ctx.collate(items)
        teacher_forward(ctx, batch, fused=ctx.fused_linear, items=items,
                        kd_temperature=self.divergence.kd_temperature, uld=self.divergence.uld)
        return batch

    def loss_terms(self, batch, ctx) -> LossTerms:
        view = token_view(ctx.student, batch, fused=ctx.fused_linear)
        teacher = teacher_target(ctx, batch)
        terms = cross_terms(self.divergence, view, teacher, batch, ctx)
        if self.ce_weight > 0:
            terms["ce"] = ce_term(view, self.ce_weight)
        return LossTerms(terms, kd_stats(self.divergence, view, teacher, batch))

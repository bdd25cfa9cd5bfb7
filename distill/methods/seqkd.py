"""Sequence-level KD (Kim & Rush, 2016): cross-entropy on the teacher's own outputs.

The teacher's outputs for every training prompt are generated once per
(teacher, task split, decoding settings) and cached on disk (docs/design.md, Methods);
training then needs no teacher pass at all.
"""

from __future__ import annotations

from distill.data.trajectories import teacher_outputs
from distill.fields import check_count
from distill.losses.kd import ce_term
from distill.losses.terms import LossTerms
from distill.methods.base import Method
from distill.models.forward import token_view
from distill.models.generation import Decoding


class SeqKD(Method):
    fuses_linear = True  # its losses come from hidden states when the run fuses
    needs_teacher = True
    prompts_only = True  # the teacher writes the targets: any prompt will do

    def __init__(self, teacher_decoding: dict, generation_batch_size: int):
        self.teacher_decoding = Decoding.from_config(teacher_decoding, "method.teacher_decoding")
        check_count("method", "generation_batch_size", generation_batch_size)
        self.generation_batch_size = generation_batch_size

    def setup(self, ctx, train_items, progress: bool, used=None):
        """Replace the dataset's outputs by the teacher's (cached; only the examples the run uses)."""
        return teacher_outputs(ctx, train_items, self.teacher_decoding, self.generation_batch_size, progress, used)

    def trajectories(self, items, ctx):
        return ctx.collate(items)

    def loss_terms(self, batch, ctx) -> LossTerms:
        return LossTerms({"ce": ce_term(token_view(ctx.student, batch, fused=ctx.fused_linear))})

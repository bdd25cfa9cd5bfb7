"""Generalized KD (Agarwal et al., 2024): divergence on a mix of on-policy and fixed outputs.

For each optimizer step (one coin for every micro-batch of the accumulation
window, as in the GKD paper's Algorithm 1), with probability ``lmbda`` the
outputs are sampled from the current student (no gradient through
sampling); otherwise they are the dataset's, or the teacher's cached outputs
with ``seq_kd``. The loss is the divergence D(p, q) on those output tokens.
λ=0 with fkl is supervised KD; λ=1 is fully on-policy.

GKD + RL: with ``alpha`` < 1 the student also maximises a sequence reward
from the task metric on its own samples, (1−α)·E[r(y)] − α·E[D], through
REINFORCE on log q_T (the tempered policy the samples came from) with a
leave-one-out baseline over the whole optimizer step. Rewards always compare
with the dataset's reference, also when ``seq_kd`` replaced the targets.
α=1 (default) is pure distillation.
"""

from __future__ import annotations

import torch

from distill.data.trajectories import gkd_outputs, teacher_forward, teacher_outputs, teacher_target
from distill.fields import check_choice, check_count, check_range
from distill.losses.divergences import Divergence
from distill.losses.kd import cross_terms, kd_stats, reinforce_term
from distill.losses.policy import leave_one_out_advantage
from distill.losses.terms import LossTerms
from distill.methods.base import SUM_PREFIX, WINDOW_PREFIX, Method
from distill.models.forward import token_view
from distill.models.generation import Decoding, cut_at_eos

METRICS = ("accuracy", "rouge", "bleu")  # the task metrics GKD+RL turns into sequence rewards


class GKD(Method):
    fuses_linear = True  # its losses come from hidden states when the run fuses
    needs_teacher = True

    def __init__(self, divergence: dict, lmbda: float, seq_kd: bool, sampling_temperature: float, max_new_tokens: int,
                 alpha: float, reward_metric: str, teacher_decoding: dict, generation_batch_size: int):
        check_range("method", "lmbda", lmbda, 0.0, 1.0)
        check_range("method", "alpha", alpha, 0.0, 1.0)
        check_range("method", "sampling_temperature", sampling_temperature, 0.0, low_open=True)
        check_count("method", "max_new_tokens", max_new_tokens)
        check_count("method", "generation_batch_size", generation_batch_size)
        check_choice("method", "reward_metric", reward_metric, METRICS)
        self.divergence = Divergence.from_config(divergence)
        self.lmbda, self.seq_kd, self.alpha, self.reward_metric = lmbda, seq_kd, alpha, reward_metric
        self.sampling = Decoding("sample", max_new_tokens, 1, sampling_temperature)
        self.teacher_decoding = Decoding.from_config(teacher_decoding, "method.teacher_decoding")
        self.generation_batch_size = generation_batch_size

    @property
    def cross_tokenizer(self) -> bool:
        """Another tokenizer for the teacher: dataset targets and the student's own samples are re-tokenised for
        it each step; the teacher's own outputs (seq_kd) would need the reverse, not built."""
        return not self.seq_kd

    @property
    def reads_teacher_cache(self) -> bool:
        """Off-policy pure distillation (λ = 0, α = 1): fixed targets, so cached teacher distributions serve it."""
        return self.lmbda == 0.0 and self.alpha == 1.0

    @property
    def prompts_only(self) -> bool:
        """Learns from prompts alone when every output is the student's (λ = 1) or the teacher's (seq_kd),
        and no reward needs a reference."""
        return (self.lmbda == 1.0 or self.seq_kd) and self.alpha == 1.0

    def setup(self, ctx, train_items, progress: bool, used=None):
        if not self.seq_kd:
            return train_items
        return teacher_outputs(ctx, train_items, self.teacher_decoding, self.generation_batch_size, progress, used)

    def trajectories(self, items, ctx):
        batch, on_policy = gkd_outputs(ctx, items, self.lmbda, self.sampling.max_new_tokens,
                                       self.sampling.sampling_temperature)
        teacher_forward(ctx, batch, fused=ctx.fused_linear, items=items,
                        kd_temperature=self.divergence.kd_temperature, uld=self.divergence.uld)
        if on_policy and self.alpha < 1.0:
            batch.update(self._rewards(batch, items, ctx))
        return batch

    def _rewards(self, batch, items, ctx) -> dict[str, torch.Tensor]:
        """Sequence rewards against the dataset's references, and their window totals for the baseline."""
        from distill.metrics import sequence_rewards  # rouge-score/sacrebleu: loaded only for GKD+RL

        decode = lambda rows: ctx.tokenizer.batch_decode(rows, skip_special_tokens=True)
        samples = cut_at_eos(batch["generated"], ctx.tokenizer.eos_token_id)  # the text metric needs the host
        references = [i.reference.strip() if i.reference is not None else decode([i.target_ids])[0] for i in items]
        rewards = torch.tensor(sequence_rewards(self.reward_metric, decode(samples), references),
                               dtype=torch.float32, device=ctx.device)
        # The trainer sums SUM_PREFIX entries over the whole optimizer step (WINDOW_PREFIX in every micro-batch).
        return {"rewards": rewards, SUM_PREFIX + "reward": rewards.sum(), SUM_PREFIX + "sequences": torch.tensor(
            float(len(items)), device=ctx.device)}

    def loss_terms(self, batch, ctx) -> LossTerms:
        view = token_view(ctx.student, batch, fused=ctx.fused_linear)
        teacher = teacher_target(ctx, batch)
        terms = cross_terms(self.divergence, view, teacher, batch, ctx, weight=self.alpha)
        stats = {"frac_on_policy": batch["on_policy"], **kd_stats(self.divergence, view, teacher, batch)}
        if "rewards" in batch:
            advantage = leave_one_out_advantage(batch["rewards"], batch[WINDOW_PREFIX + "reward"],
                                                 batch[WINDOW_PREFIX + "sequences"])
            terms["pg"] = reinforce_term(view, advantage, 1.0 - self.alpha, self.sampling.sampling_temperature)
            stats["reward"] = batch["rewards"].mean()
        return LossTerms(terms, stats)

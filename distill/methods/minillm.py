"""MiniLLM (Gu et al., 2024): reverse-KL policy optimisation of the student.

Outputs are sampled per token from (1−α)·q + α·p (``teacher_mix`` = α), with
importance weights w_t = q/((1−α)q + αp) (detached, clipped) correcting to
the student's own distribution. The gradient of KL(q‖p) splits in two:
  * single-step: the exact per-step reverse KL Σ_v q log(q/p), differentiable
    (term ``loss/single_step``);
  * long-horizon: a policy gradient on R_{t+1} = Σ_{t'>t} γ^{t'−t} r_{t'} with
    r_t = log p(y_t) − log q(y_t), divided by the remaining length when
    ``length_norm`` (term ``loss/pg``); optionally PPO-clipped (``clip_ratio``).
Plus ``ptx_weight`` × CE on the dataset's outputs (term ``loss/ptx``).

Temperature and dropout. Outputs are sampled at ``sampling_temperature`` T
from the student in eval mode. Everything that describes the sampling
policy, held fixed in the update (importance weights, rewards r_t, the
ratio's denominator), is that policy's own log q_T(y_t) and log p_T(y_t),
recorded while sampling: the distribution actually sampled from, never a
T = 1 or dropout-perturbed re-evaluation. The gradient flows through the
train-mode forward at the same T (log q_T in the ratio, KL(q_T‖p_T) in the
single-step term), so the estimator is that of ∇ KL(q_T ‖ p_T) (unbiased with
teacher_mix = 0, γ = 1 and no length normalisation; tested at T = 0.7).
"""

from __future__ import annotations

from distill.data.trajectories import mixture_samples
from distill.fields import check_count, check_range
from distill.losses.divergences import rkl
from distill.losses.kd import ce_term, shared_vocabulary, target_log_probs
from distill.losses.policy import clipped_policy_gradient, discounted_future, importance_weights
from distill.losses.terms import LossTerms, Term
from distill.methods.base import Method
from distill.models.forward import TokenView, token_view


class MiniLLM(Method):
    needs_teacher = True
    # The teacher decodes token by token beside the student (mixture sampling): a sharded teacher is held
    # gathered for the whole generation, like the student (distill.train.distributed.gathered).
    teacher_decodes = True

    def __init__(self, teacher_mix: float, sampling_temperature: float, max_new_tokens: int, gamma: float,
                 length_norm: bool, importance_clip: float, clip_ratio: float | None, ptx_weight: float,
                 chunk_size: int):
        check_range("method", "teacher_mix", teacher_mix, 0.0, 1.0, high_open=True)
        check_range("method", "sampling_temperature", sampling_temperature, 0.0, low_open=True)
        check_count("method", "max_new_tokens", max_new_tokens)
        check_range("method", "gamma", gamma, 0.0, 1.0)
        check_range("method", "importance_clip", importance_clip, 0.0, low_open=True)
        if clip_ratio is not None:
            check_range("method", "clip_ratio", clip_ratio, 0.0, low_open=True)
        check_range("method", "ptx_weight", ptx_weight, 0.0)
        check_count("method", "chunk_size", chunk_size)
        self.teacher_mix, self.sampling_temperature, self.max_new_tokens = teacher_mix, sampling_temperature, max_new_tokens
        self.gamma, self.length_norm, self.importance_clip = gamma, length_norm, importance_clip
        self.clip_ratio, self.ptx_weight, self.chunk_size = clip_ratio, ptx_weight, chunk_size

    @property
    def prompts_only(self) -> bool:
        """Samples its own outputs; only the ptx term needs dataset targets."""
        return self.ptx_weight == 0

    def trajectories(self, items, ctx):
        # The teacher's logits come from the mixture sampling itself: no second teacher pass.
        batch = mixture_samples(ctx, items, self.max_new_tokens, self.sampling_temperature, self.teacher_mix)
        if self.ptx_weight > 0:
            dataset = ctx.collate(items)
            batch.update({f"ptx_{k}": v for k, v in dataset.items()})
        return batch

    def loss_terms(self, batch, ctx) -> LossTerms:
        view = token_view(ctx.student, batch)  # full logits: the importance weights and the mixture need them
        student, teacher = shared_vocabulary(view.logits, batch["teacher_logits"])
        temperature = self.sampling_temperature
        log_q = target_log_probs(TokenView(student, view.targets, view.mask), temperature)  # differentiable
        sampled_log_q, sampled_log_p = batch["sample_log_q"], batch["sample_log_p"]  # the sampling policy, fixed
        weights = importance_weights(sampled_log_q, sampled_log_p, self.teacher_mix, self.importance_clip)
        single_step = weights * rkl(student, teacher, kd_temperature=temperature, chunk_size=self.chunk_size)
        future = discounted_future(sampled_log_p - sampled_log_q, view.mask, self.gamma, self.length_norm)
        # One update per sample: the ratio q_θ/q_sampling is 1 in value up to dropout (the clip only
        # bites with dropout or reused samples); its gradient is ∇ log q_T.
        pg = weights * clipped_policy_gradient(log_q, sampled_log_q, future, self.clip_ratio)
        terms = {"single_step": Term(single_step, view.mask), "pg": Term(pg, view.mask)}
        if self.ptx_weight > 0:
            ptx = {k[4:]: v for k, v in batch.items() if k.startswith("ptx_")}
            term = ce_term(token_view(ctx.student, ptx), self.ptx_weight)
            terms["ptx"] = Term(term.per_token, term.mask, term.weight, count_key="ptx_loss_mask")
        stats = {"importance_weight": (weights * view.mask).sum() / view.mask.sum().clamp(min=1)}
        return LossTerms(terms, stats)

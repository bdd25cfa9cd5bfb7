"""X-KD, Experiential KD (Cai & Yuan, 2026; SPEC §6): AVRIL-style reward modelling plus a KD base.

The student's logits are its Q-values, Q_θ(s_t, ·) = z_S/τ. A small reward
head φ reads detached state features and outputs N(μ_t, σ_t²). On the batch's
trajectory the TD-implied rewards δ^S (student) and δ^T (teacher, detached)
are scored under that Gaussian:
    L = L_base + α·[−log N(δ^S; μ, σ²)] + η·[−log N(δ^T; μ, σ²)] + KL(N(μ, σ²) ‖ N(0, σ0²))
The η term makes the reward explain the teacher (its "environment"); the α
term keeps the student's policy consistent with that reward. ``base`` picks
L_base and the trajectories: sft or seqkd (sequence level), supervised_kd or
gkd (divergence based). With α = 0 the student's gradient is the base's.
"""

from __future__ import annotations

import torch

from distill.data.trajectories import student_samples, teacher_forward, teacher_outputs
from distill.errors import ConfigError
from distill.losses.avril import gaussian_kl_to_prior, gaussian_nll, td_rewards
from distill.losses.divergences import Divergence
from distill.losses.kd import ce_term, divergence_term, shared_vocabulary
from distill.losses.terms import LossTerms, Term
from distill.models.forward import token_view
from distill.models.generation import Decoding
from distill.models.keyed_random import step_coin
from distill.models.reward_head import RewardHead

BASES = ("sft", "seqkd", "supervised_kd", "gkd")


class XKD:
    needs_teacher = True

    def __init__(self, base: str, divergence: dict, lmbda: float, sampling_temperature: float, max_new_tokens: int,
                 ce_weight: float, teacher_decoding: dict, generation_batch_size: int, alpha: float,
                 teacher_reward_weight: float, gamma: float, td_target: str, prior_std: float, reward_head: dict):
        if base not in BASES:
            raise ConfigError(f"method.base must be one of {list(BASES)}, got {base!r}")
        if not 0.0 <= lmbda <= 1.0:
            raise ConfigError(f"method.lmbda must be in [0, 1], got {lmbda}")
        if td_target not in ("sarsa", "soft"):
            raise ConfigError(f"method.td_target must be sarsa or soft, got {td_target!r}")
        if reward_head["features"] not in ("teacher", "student"):
            raise ConfigError(f"method.reward_head.features must be teacher or student, got {reward_head['features']!r}")
        if alpha < 0 or teacher_reward_weight < 0 or prior_std <= 0:
            raise ConfigError("method.alpha and method.teacher_reward_weight must be >= 0 and method.prior_std > 0")
        self.base, self.divergence, self.lmbda, self.ce_weight = base, Divergence(**divergence), lmbda, ce_weight
        self.sampling = Decoding("sample", max_new_tokens, 1, sampling_temperature)
        self.teacher_decoding, self.generation_batch_size = Decoding(**teacher_decoding), generation_batch_size
        self.alpha, self.eta, self.gamma, self.td_target, self.prior_std = alpha, teacher_reward_weight, gamma, td_target, prior_std
        self.head_settings = reward_head

    def setup(self, ctx, train_items, progress: bool, used=None):
        """Create the reward head (sized from the feature model) and, for base=seqkd, the teacher's outputs."""
        source = ctx.teacher if self.head_settings["features"] == "teacher" else ctx.student
        ctx.extra_modules["reward_head"] = RewardHead(
            source.config.hidden_size, self.head_settings["hidden"], ctx.student.config.vocab_size,
            self.head_settings["action_dim"], self.head_settings["state_action"]).to(ctx.device)
        if self.base == "seqkd":
            return teacher_outputs(ctx, train_items, self.teacher_decoding, self.generation_batch_size, progress, used)
        return train_items

    def trajectories(self, items, ctx):
        on_policy = self.base == "gkd" and step_coin(ctx.seed, ctx.step, self.lmbda, "gkd_on_policy")
        if on_policy:
            batch = student_samples(ctx, items, self.sampling.max_new_tokens, self.sampling.sampling_temperature)
        else:
            batch = ctx.collate(items)
        teacher_forward(ctx, batch, hidden=self.head_settings["features"] == "teacher")
        batch["on_policy"] = torch.tensor(float(on_policy), device=ctx.device)
        return batch

    def _base_terms(self, view, batch) -> dict[str, Term]:
        if self.base in ("sft", "seqkd"):
            return {"ce": ce_term(view)}
        terms = {"kd": divergence_term(self.divergence, view, batch["teacher_logits"])}
        if self.base == "supervised_kd" and self.ce_weight > 0:
            terms["ce"] = ce_term(view, self.ce_weight)
        return terms

    def loss_terms(self, batch, ctx) -> LossTerms:
        student_features = self.head_settings["features"] == "student"
        view = token_view(ctx.student, batch, output_hidden=student_features)
        terms = self._base_terms(view, batch)
        features = view.hidden if student_features else batch["teacher_hidden"]
        mu, log_sigma = ctx.extra_modules["reward_head"](features, view.targets)
        tau = self.divergence.kd_temperature
        student_logits, teacher_logits = shared_vocabulary(view.logits, batch["teacher_logits"])
        delta_s = td_rewards(student_logits, view.targets, view.mask, tau, self.gamma, self.td_target)
        delta_t = td_rewards(teacher_logits, view.targets, view.mask, tau, self.gamma, self.td_target).detach()
        terms["td_student"] = Term(gaussian_nll(delta_s, mu, log_sigma), view.mask, self.alpha)
        terms["td_teacher"] = Term(gaussian_nll(delta_t, mu, log_sigma), view.mask, self.eta)
        terms["reward_kl"] = Term(gaussian_kl_to_prior(mu, log_sigma, self.prior_std), view.mask)
        count = view.mask.sum().clamp(min=1)
        stats = {"reward/mu": (mu * view.mask).sum() / count, "reward/sigma": (log_sigma.exp() * view.mask).sum() / count,
                 "frac_on_policy": batch["on_policy"]}
        return LossTerms(terms, stats)

"""X-KD, Experiential KD (Cai & Yuan, 2026), this project's revision 2 (SPEC §6; derivation in docs/methods.md).

AVRIL (Chan & van der Schaar, 2021) adapted to distillation: a reward head
q_φ(r | s, a) = N(μ, σ²) models the teacher's reward, and the student is kept
consistent with it. On the batch's trajectory, with implied rewards δ of the
Q mapping ``q_form`` (``distill.losses.avril``; δ^S from the student,
δ^T from the teacher, detached):
    L = L_base + α·[−log N(δ^S; sg μ, max(sg σ, σ_min)²)]   (student consistent with the reward)
               + η·[−log N(δ^T; μ, σ²)]                    (the reward explains the teacher)
               + KL(N(μ, σ²) ‖ N(0, σ0²))
The head (and, for ``shaped``, the potential head Φ) is trained by the η and
KL terms only; the α term trains the student only. ``reward_level=sequence``
uses one Gaussian per output on prompt features and the mean δ over its
tokens. ``base`` picks L_base and the trajectories: sft or seqkd (sequence
level), supervised_kd or gkd (divergence based). With α = 0 the student's
gradient is the base's.
"""

from __future__ import annotations

import torch

from distill.data.trajectories import student_samples, teacher_forward, teacher_outputs
from distill.errors import ConfigError
from distill.fields import check_choice, check_count, check_keys, check_range
from distill.losses.avril import (Q_FORMS, gaussian_kl_to_prior, gaussian_nll, implied_rewards, sequence_returns,
                                  student_consistency)
from distill.losses.divergences import Divergence
from distill.losses.kd import ce_term, divergence_term, shared_vocabulary
from distill.losses.terms import LossTerms, Term
from distill.models.forward import token_view
from distill.models.generation import Decoding
from distill.models.keyed_random import step_coin
from distill.models.reward_head import PotentialHead, RewardHead

BASES = ("sft", "seqkd", "supervised_kd", "gkd")


class XKD:
    needs_teacher = True

    def __init__(self, base: str, divergence: dict, lmbda: float, sampling_temperature: float, max_new_tokens: int,
                 ce_weight: float, teacher_decoding: dict, generation_batch_size: int, alpha: float,
                 teacher_reward_weight: float, gamma: float, q_form: str, reward_level: str, min_reward_std: float,
                 prior_std: float, reward_head: dict, td_target: str = "sarsa"):
        _validate(base, lmbda, q_form, reward_level, td_target, reward_head, alpha, teacher_reward_weight, prior_std,
                  min_reward_std)
        check_range("method", "sampling_temperature", sampling_temperature, 0.0, low_open=True)
        check_count("method", "max_new_tokens", max_new_tokens)
        check_range("method", "ce_weight", ce_weight, 0.0)
        check_count("method", "generation_batch_size", generation_batch_size)
        check_range("method", "gamma", gamma, 0.0, 1.0)
        self.base, self.divergence, self.lmbda = base, Divergence.from_config(divergence), lmbda
        self.ce_weight = ce_weight
        self.sampling = Decoding("sample", max_new_tokens, 1, sampling_temperature)
        self.teacher_decoding = Decoding.from_config(teacher_decoding, "method.teacher_decoding")
        self.generation_batch_size = generation_batch_size
        self.alpha, self.eta, self.gamma, self.prior_std = alpha, teacher_reward_weight, gamma, prior_std
        self.q_form, self.reward_level, self.min_std, self.td_target = q_form, reward_level, min_reward_std, td_target
        self.head_settings = reward_head

    @property
    def prompts_only(self) -> bool:
        """As its base: teacher outputs (seqkd) or fully on-policy samples (gkd, λ = 1) need no targets."""
        return self.base == "seqkd" or (self.base == "gkd" and self.lmbda == 1.0)

    def setup(self, ctx, train_items, progress: bool, used=None):
        """Create the heads (sized from the feature model) and, for base=seqkd, the teacher's outputs."""
        source = ctx.teacher if self.head_settings["features"] == "teacher" else ctx.student
        width, hidden = source.config.hidden_size, self.head_settings["hidden"]
        ctx.extra_modules["reward_head"] = RewardHead(width, hidden).to(ctx.device)
        if self.q_form == "shaped":
            ctx.extra_modules["potential_head"] = PotentialHead(width, hidden).to(ctx.device)
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
        if self.reward_level == "sequence":  # one term per output: counted over the window's sequences
            batch["sequence_loss_mask"] = (batch["loss_mask"].sum(1, keepdim=True) > 0).float()
        return batch

    def _base_terms(self, view, batch) -> dict[str, Term]:
        if self.base in ("sft", "seqkd"):
            return {"ce": ce_term(view)}
        terms = {"kd": divergence_term(self.divergence, view, batch["teacher_logits"])}
        if self.base == "supervised_kd" and self.ce_weight > 0:
            terms["ce"] = ce_term(view, self.ce_weight)
        return terms

    def _features(self, view, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(state features at the position predicting y_t, action features at y_t's own position)."""
        if self.head_settings["features"] == "student":
            return view.hidden, view.action_hidden
        return batch["teacher_hidden"], batch["teacher_action_hidden"]

    def loss_terms(self, batch, ctx) -> LossTerms:
        # Full logits (never ctx.fused_linear): the implied rewards need log q and log p over the whole vocabulary.
        view = token_view(ctx.student, batch, output_hidden=self.head_settings["features"] == "student")
        terms = self._base_terms(view, batch)
        state, action = self._features(view, batch)
        potential = ctx.extra_modules["potential_head"](state) if self.q_form == "shaped" else None
        student_logits, teacher_logits = shared_vocabulary(view.logits, batch["teacher_logits"])
        rewards = lambda logits, phi: implied_rewards(logits, view.targets, view.mask, self.q_form,  # noqa: E731
                                                      self.divergence.kd_temperature, self.gamma, phi, self.td_target)
        # The α term trains the student only: Φ enters δ^S detached; δ^T is the teacher's, fixed.
        delta_s = rewards(student_logits, None if potential is None else potential.detach())
        delta_t = rewards(teacher_logits.detach(), potential)
        if self.reward_level == "token":
            mu, log_sigma = ctx.extra_modules["reward_head"](action)
            mask, count = view.mask, "loss_mask"
        else:
            mu, log_sigma = ctx.extra_modules["reward_head"](_prompt_features(state, view.mask))
            delta_s, delta_t = sequence_returns(delta_s, view.mask)[:, None], sequence_returns(delta_t, view.mask)[:, None]
            mu, log_sigma, mask, count = mu[:, None], log_sigma[:, None], batch["sequence_loss_mask"], "sequence_loss_mask"
        terms["td_student"] = Term(student_consistency(delta_s, mu, log_sigma, self.min_std), mask, self.alpha, count)
        terms["td_teacher"] = Term(gaussian_nll(delta_t, mu, log_sigma), mask, self.eta, count)
        terms["reward_kl"] = Term(gaussian_kl_to_prior(mu, log_sigma, self.prior_std), mask, 1.0, count)
        n = mask.sum().clamp(min=1)
        stats = {"reward/mu": (mu * mask).sum() / n, "reward/sigma": (log_sigma.exp() * mask).sum() / n,
                 "reward/delta_teacher": (delta_t.detach() * mask).sum() / n, "frac_on_policy": batch["on_policy"]}
        return LossTerms(terms, stats)


def _prompt_features(state: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, H] the state features that have seen the prompt only: at the row predicting the first output token."""
    first = mask.argmax(dim=1)
    return state[torch.arange(state.size(0), device=state.device), first]


def _validate(base, lmbda, q_form, reward_level, td_target, head, alpha, eta, prior_std, min_std) -> None:
    if base not in BASES:
        raise ConfigError(f"method.base must be one of {list(BASES)}, got {base!r}")
    check_range("method", "lmbda", lmbda, 0.0, 1.0)
    if q_form not in Q_FORMS:
        raise ConfigError(f"method.q_form must be one of {list(Q_FORMS)}, got {q_form!r}")
    if reward_level not in ("token", "sequence"):
        raise ConfigError(f"method.reward_level must be token or sequence, got {reward_level!r}")
    if td_target not in ("sarsa", "soft"):
        raise ConfigError(f"method.td_target must be sarsa or soft (q_form=logits only), got {td_target!r}")
    check_keys(head, ("features", "hidden"), "method.reward_head", required=("features", "hidden"))
    check_choice("method.reward_head", "features", head["features"], ("teacher", "student"))
    check_count("method.reward_head", "hidden", head["hidden"], low=0)
    check_range("method", "alpha", alpha, 0.0)
    check_range("method", "teacher_reward_weight", eta, 0.0)
    check_range("method", "prior_std", prior_std, 0.0, low_open=True)
    check_range("method", "min_reward_std", min_std, 0.0, low_open=True)

"""X-KD, Experiential KD (Cai & Yuan, 2026), this project's revision 3 (derivation in docs/methods.md).

AVRIL (Chan & van der Schaar, 2021) adapted to distillation: a reward head
q_φ(r | s, a) = N(μ, σ²) models the teacher's reward, and the student is kept
consistent with it. On the batch's trajectory, with implied rewards δ of the
Q mapping ``q_form`` (``distill.losses.avril``; δ^S from the student,
δ^T from the teacher, detached):
    L = L_base + α·[−log N(δ^S; sg μ, max(sg σ, σ_min)²)]   (student consistent with the reward)
               + η·[−log N(δ^T; μ, σ²)]                    (the reward explains the teacher)
               + KL(N(μ, σ²) ‖ N(0, σ0²))
The head (and, for ``shaped``, the potential head Φ) is trained by the η and
KL terms only; the α term trains the student only. With η = 1 the head's
optimum is μ* = clip(δ^T, −σ0, σ0) (docs/methods.md): σ0 must exceed the
range of δ^T or the reward saturates where the teacher disagrees most
(revision 2's σ0 = 1 did exactly that). ``reward_level=sequence`` uses one
Gaussian per output on prompt features and the mean δ over its tokens.
``base`` picks L_base and the trajectories: sft or seqkd (sequence level),
supervised_kd or gkd (divergence based). With α = 0 the student's gradient
is the base's.

``reward_source`` makes the α term testable against what it may reduce to:
``head`` (the above), ``oracle`` (μ := δ^T, σ := ``oracle_std``, no head:
the best reward model there could be) and ``rkl`` (the closed-form control:
α·KL(q‖p) per token over the vocabulary, the α term's expectation with
μ = log p, σ = 1, on-policy tokens and q_form=logprob; no head).

Diagnostics (stats in metrics.jsonl): ``reward/corr_mu_delta_teacher``
(did the head learn δ^T?), ``reward/inv_var_eff`` (the α term's mean weight
1/max(σ, σ_min)²) and, every ``diagnostics_every`` steps,
``grad_ratio/alpha_to_base`` = ‖∇θ α-term‖ / ‖∇θ L_base‖ (does it act?).
"""

from __future__ import annotations

import math

import torch

from distill.data.trajectories import gkd_outputs, teacher_forward, teacher_outputs
from distill.errors import ConfigError
from distill.fields import check_choice, check_count, check_keys, check_range
from distill.losses.avril import (
    Q_FORMS,
    TD_TARGETS,
    gaussian_kl_to_prior,
    gaussian_nll,
    gradient_norm_ratio,
    implied_rewards,
    masked_correlation,
    sequence_returns,
    student_consistency,
)
from distill.losses.divergences import Divergence, rkl
from distill.losses.kd import ce_term, divergence_term, shared_vocabulary
from distill.losses.terms import LossTerms, Term
from distill.methods.base import Method
from distill.models.forward import token_view
from distill.models.generation import Decoding
from distill.models.reward_head import PotentialHead, RewardHead

BASES = ("sft", "seqkd", "supervised_kd", "gkd")
REWARD_SOURCES = ("head", "oracle", "rkl")


class XKD(Method):
    needs_teacher = True

    def __init__(self, base: str, divergence: dict, lmbda: float, sampling_temperature: float, max_new_tokens: int,
                 ce_weight: float, teacher_decoding: dict, generation_batch_size: int, alpha: float,
                 teacher_reward_weight: float, gamma: float, q_form: str, reward_level: str, min_reward_std: float,
                 prior_std: float, reward_head: dict, td_target: str | None = None, reward_source: str = "head",
                 oracle_std: float = 1.0, diagnostics_every: int = 0):
        _validate(base, lmbda, q_form, reward_level, td_target, reward_head, alpha, teacher_reward_weight, prior_std,
                  min_reward_std)
        check_choice("method", "reward_source", reward_source, REWARD_SOURCES)
        if reward_source != "head" and q_form == "shaped":
            raise ConfigError(f"method.reward_source={reward_source} has no head to train the potential Φ of "
                              "q_form=shaped; use q_form=logprob")
        check_range("method", "oracle_std", oracle_std, 0.0, low_open=True)
        check_count("method", "diagnostics_every", diagnostics_every, low=0)
        self.reward_source, self.oracle_std, self.diagnostics_every = reward_source, oracle_std, diagnostics_every
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
    def _uses_features(self) -> bool:
        """Hidden states feed a head: the reward head, or the potential Φ of q_form=shaped."""
        return self.reward_source == "head" or self.q_form == "shaped"

    @property
    def prompts_only(self) -> bool:
        """As its base: teacher outputs (seqkd) or fully on-policy samples (gkd, λ = 1) need no targets."""
        return self.base == "seqkd" or (self.base == "gkd" and self.lmbda == 1.0)

    def setup(self, ctx, train_items, progress: bool, used=None):
        """Create the heads (sized from the feature model) and, for base=seqkd, the teacher's outputs."""
        source = ctx.teacher if self.head_settings["features"] == "teacher" else ctx.student
        width, hidden = source.config.hidden_size, self.head_settings["hidden"]
        if self.reward_source == "head":  # the oracle and the closed-form control have no reward model
            ctx.extra_modules["reward_head"] = RewardHead(width, hidden).to(ctx.device)
        if self.q_form == "shaped":
            ctx.extra_modules["potential_head"] = PotentialHead(width, hidden).to(ctx.device)
        if self.base == "seqkd":
            return teacher_outputs(ctx, train_items, self.teacher_decoding, self.generation_batch_size, progress, used)
        return train_items

    def trajectories(self, items, ctx):
        if self.base == "gkd":  # GKD's own coin and samples
            batch, _ = gkd_outputs(ctx, items, self.lmbda, self.sampling.max_new_tokens,
                                   self.sampling.sampling_temperature)
        else:
            batch = ctx.collate(items)
            batch["on_policy"] = torch.tensor(0.0, device=ctx.device)
        teacher_forward(ctx, batch, hidden=self._uses_features and self.head_settings["features"] == "teacher")
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
        terms, stats = self._terms(batch, ctx)
        if self.diagnostics_every and (ctx.step + 1) % self.diagnostics_every == 0 and torch.is_grad_enabled():
            # On a graph of its own: the chunked divergence's backward runs once per graph (in place, to save
            # a [tokens × V] buffer), and the training backward still has to run through this one.
            probe, _ = self._terms(batch, ctx)
            alpha = probe["rkl" if self.reward_source == "rkl" else "td_student"]
            base = [term for name, term in probe.items() if name in self._base_names]
            stats["grad_ratio/alpha_to_base"] = gradient_norm_ratio([alpha], base, list(ctx.student.parameters()))
        return LossTerms(terms, stats)

    @property
    def _base_names(self) -> tuple[str, ...]:
        return ("ce",) if self.base in ("sft", "seqkd") else ("kd", "ce")

    def _terms(self, batch, ctx) -> tuple[dict[str, Term], dict[str, torch.Tensor]]:
        # Full logits (never ctx.fused_linear): the implied rewards need log q and log p over the whole vocabulary.
        view = token_view(ctx.student, batch, output_hidden=self._uses_features and self.head_settings["features"] == "student")
        terms = self._base_terms(view, batch)
        student_logits, teacher_logits = shared_vocabulary(view.logits, batch["teacher_logits"])
        if self.reward_source == "rkl":
            values = rkl(student_logits, teacher_logits.detach(), kd_temperature=self.divergence.kd_temperature,
                         chunk_size=self.divergence.chunk_size)
            terms["rkl"] = Term(values, view.mask, self.alpha)
            return terms, {"frac_on_policy": batch["on_policy"]}
        reward_terms, stats = self._reward_terms(view, batch, ctx, student_logits, teacher_logits)
        terms.update(reward_terms)
        return terms, stats

    def _reward_terms(self, view, batch, ctx, student_logits, teacher_logits) -> tuple[dict, dict]:
        """The α term and, with a head, the η and KL terms that train it; the head's diagnostics."""
        state, action = self._features(view, batch) if self._uses_features else (None, None)
        potential = ctx.extra_modules["potential_head"](state) if self.q_form == "shaped" else None
        rewards = lambda logits, phi: implied_rewards(logits, view.targets, view.mask, self.q_form,  # noqa: E731
                                                      self.divergence.kd_temperature, self.gamma, phi, self.td_target)
        # The α term trains the student only: Φ enters δ^S detached; δ^T is the teacher's, fixed.
        delta_s = rewards(student_logits, None if potential is None else potential.detach())
        delta_t = rewards(teacher_logits.detach(), potential)
        mask, count = view.mask, "loss_mask"
        if self.reward_level == "sequence":
            delta_s, delta_t = sequence_returns(delta_s, view.mask)[:, None], sequence_returns(delta_t, view.mask)[:, None]
            mask, count = batch["sequence_loss_mask"], "sequence_loss_mask"
        if self.reward_source == "oracle":
            mu, log_sigma = delta_t.detach(), torch.full_like(delta_t, math.log(self.oracle_std))
        elif self.reward_level == "token":
            mu, log_sigma = ctx.extra_modules["reward_head"](action)
        else:
            mu, log_sigma = (v[:, None] for v in ctx.extra_modules["reward_head"](_prompt_features(state, view.mask)))
        terms = {"td_student": Term(student_consistency(delta_s, mu, log_sigma, self.min_std), mask, self.alpha, count)}
        if self.reward_source == "head":
            terms["td_teacher"] = Term(gaussian_nll(delta_t, mu, log_sigma), mask, self.eta, count)
            terms["reward_kl"] = Term(gaussian_kl_to_prior(mu, log_sigma, self.prior_std), mask, 1.0, count)
        n = mask.sum().clamp(min=1)
        sigma_eff = torch.clamp(log_sigma.detach(), min=math.log(self.min_std)).exp()
        stats = {"reward/mu": (mu.detach() * mask).sum() / n, "reward/sigma": (log_sigma.detach().exp() * mask).sum() / n,
                 "reward/delta_teacher": (delta_t.detach() * mask).sum() / n,
                 "reward/corr_mu_delta_teacher": masked_correlation(mu, delta_t, mask),
                 "reward/inv_var_eff": (sigma_eff.pow(-2) * mask).sum() / n, "frac_on_policy": batch["on_policy"]}
        return terms, stats


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
    if td_target is not None and td_target not in TD_TARGETS[q_form]:
        raise ConfigError(f"method.td_target={td_target!r} does not apply to q_form={q_form}; use one of "
                          f"{', '.join(TD_TARGETS[q_form])} or null (its default, {TD_TARGETS[q_form][0]})")
    check_keys(head, ("features", "hidden"), "method.reward_head", required=("features", "hidden"))
    check_choice("method.reward_head", "features", head["features"], ("teacher", "student"))
    check_count("method.reward_head", "hidden", head["hidden"], low=0)
    check_range("method", "alpha", alpha, 0.0)
    check_range("method", "teacher_reward_weight", eta, 0.0)
    check_range("method", "prior_std", prior_std, 0.0, low_open=True)
    check_range("method", "min_reward_std", min_std, 0.0, low_open=True)

"""X-KD revision 2 invariants through the real method and models (docs/design.md, X-KD)."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses.reduction import reduce_tokens
from distill.models.forward import token_view
from distill.train.loop import _window_totals

from .test_estimators import EOS, PROMPT, VOCAB, _ctx, _flat_grad
from .test_methods import xkd


class _Shifted(torch.nn.Module):
    """The wrapped model with a per-position constant added to all logits: same policy, other Q-values."""

    def __init__(self, model, seed: int):
        super().__init__()
        self.model, self.seed = model, seed

    def forward(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        g = torch.Generator().manual_seed(self.seed)
        out.logits = out.logits + 20.0 * torch.randn(*out.logits.shape[:-1], 1, generator=g)
        return out

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


def _terms_and_grads(method, ctx, items, shift: bool):
    if "reward_head" not in ctx.extra_modules:
        method.setup(ctx, items, progress=False)
    torch.manual_seed(0)
    with torch.no_grad():
        batch = method.trajectories(items, ctx)
    counts = _window_totals([batch])
    if shift:
        g = torch.Generator().manual_seed(7)
        batch["teacher_logits"] = batch["teacher_logits"] + 20.0 * torch.randn(
            *batch["teacher_logits"].shape[:-1], 1, generator=g)
        student, ctx.student = ctx.student, _Shifted(ctx.student, 3)
    out = method.loss_terms(batch, ctx)
    if shift:
        ctx.student = student
    values = {name: reduce_tokens(t.per_token, t.mask, counts[t.count_key]) for name, t in out.terms.items()}
    params = dict(ctx.student.named_parameters())
    params.update({f"{m}.{n}": p for m, module in ctx.extra_modules.items() for n, p in module.named_parameters()})
    for p in params.values():
        p.grad = None
    sum(out.terms[name].weight * value for name, value in values.items()).backward()
    return {k: v.detach() for k, v in values.items()}, {k: p.grad.clone() for k, p in params.items() if p.grad is not None}


@pytest.mark.parametrize("q_form, level, td", [("logprob", "token", None), ("shaped", "token", None),
                                               ("logprob", "sequence", None), ("shaped", "sequence", None),
                                               ("logprob", "token", "sarsa")])
def test_per_state_logit_shifts_change_no_term_and_no_gradient(make_ctx, items, q_form, level, td):
    ctx = make_ctx()
    method = xkd(base="supervised_kd", alpha=0.5, q_form=q_form, reward_level=level, td_target=td)
    plain_values, plain_grads = _terms_and_grads(method, ctx, items, shift=False)
    shifted_values, shifted_grads = _terms_and_grads(method, ctx, items, shift=True)
    for name in plain_values:
        assert torch.allclose(plain_values[name], shifted_values[name], rtol=1e-4, atol=1e-4), name
    assert plain_grads.keys() == shifted_grads.keys()
    for name in plain_grads:
        assert torch.allclose(plain_grads[name], shifted_grads[name], rtol=1e-3, atol=1e-5), name


def test_revision_1_q_values_are_not_shift_invariant(make_ctx, items):
    """q_form=logits (revision 1): the same policy with shifted logits changes the student's TD term."""
    ctx = make_ctx()
    method = xkd(base="supervised_kd", alpha=0.5, q_form="logits")
    plain, _ = _terms_and_grads(method, ctx, items, shift=False)
    shifted, _ = _terms_and_grads(method, ctx, items, shift=True)
    assert not torch.allclose(plain["td_student"], shifted["td_student"], rtol=1e-2)


@pytest.mark.parametrize("q_form", ["logprob", "shaped"])
def test_the_heads_learn_from_eta_and_kl_only_and_the_student_from_alpha_only(make_ctx, items, q_form):
    for term, trains_student, trains_heads in (("td_student", True, False), ("td_teacher", False, True),
                                               ("reward_kl", False, True)):
        ctx = make_ctx()
        method = xkd(base="supervised_kd", alpha=1.0, q_form=q_form)
        method.setup(ctx, items, progress=False)
        with torch.no_grad():
            batch = method.trajectories(items, ctx)
        counts = _window_totals([batch])
        picked = method.loss_terms(batch, ctx).terms[term]
        reduce_tokens(picked.per_token, picked.mask, counts[picked.count_key]).backward()
        student = [p.grad for p in ctx.student.parameters()]
        heads = [p.grad for m in ctx.extra_modules.values() for p in m.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in student) == trains_student, term
        assert any(g is not None and g.abs().sum() > 0 for g in heads) == trains_heads, term


def test_sequence_level_has_one_term_per_output(make_ctx, items):
    ctx = make_ctx()
    method = xkd(base="supervised_kd", reward_level="sequence")
    method.setup(ctx, items, progress=False)
    with torch.no_grad():
        batch = method.trajectories(items, ctx)
    counts = _window_totals([batch])
    out = method.loss_terms(batch, ctx)
    assert int(counts["sequence_loss_mask"]) == len(items)
    assert all(out.terms[t].per_token.shape == (len(items), 1) for t in ("td_student", "td_teacher", "reward_kl"))


class _FixedHead(torch.nn.Module):
    """μ = the teacher's log p of each sampled token, σ = 1: the reward X-KD's head is meant to learn."""

    def __init__(self):
        super().__init__()
        self.mu = None

    def forward(self, features):
        return self.mu, torch.zeros_like(self.mu)


def test_on_policy_alpha_term_gradient_matches_alpha_times_reverse_kl():
    """docs/design.md, X-KD: with μ = log p and σ = 1, E over on-policy y of the α-term gradient = α·∇KL(q ‖ p)."""
    ctx, alpha = _ctx(), 0.5
    method = xkd(base="gkd", lmbda=1.0, alpha=alpha, max_new_tokens=1)
    from distill.data.collate import Encoded

    items = [Encoded(PROMPT, [5, EOS], index=i) for i in range(4000)]
    method.setup(ctx, items[:1], progress=False)
    ctx.extra_modules["reward_head"] = head = _FixedHead()
    with torch.no_grad():
        batch = method.trajectories(items, ctx)
    counts = _window_totals([batch])
    targets = batch["input_ids"][:, 1:]
    head.mu = torch.log_softmax(batch["teacher_logits"].float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    term = method.loss_terms(batch, ctx).terms["td_student"]
    ctx.student.zero_grad()
    (term.weight * reduce_tokens(term.per_token, term.mask, counts[term.count_key])).backward()
    estimate = _flat_grad(ctx.student)
    ctx.student.zero_grad()
    with torch.no_grad():
        p = torch.log_softmax(ctx.teacher(input_ids=torch.tensor([PROMPT])).logits[0, -1], -1)
    log_q = torch.log_softmax(ctx.student(input_ids=torch.tensor([PROMPT])).logits[0, -1], -1)
    (alpha * (log_q.exp() * (log_q - p)).sum()).backward()
    exact = _flat_grad(ctx.student)
    cosine = float(estimate @ exact / (estimate.norm() * exact.norm()))
    assert cosine > 0.97 and math.isclose(float(estimate.norm()), float(exact.norm()), rel_tol=0.1), (cosine,)
    assert VOCAB == 6


def _one_batch(method, ctx, items, step: int = 0):
    method.setup(ctx, items, progress=False)
    ctx.step = step
    with torch.no_grad():
        batch = method.trajectories(items, ctx)
    return batch, _window_totals([batch])


def test_the_oracle_arm_uses_the_teachers_implied_reward_and_has_no_head(make_ctx, items):
    from distill.losses.avril import gaussian_nll, implied_rewards

    ctx = make_ctx()
    method = xkd(base="supervised_kd", alpha=0.5, reward_source="oracle", oracle_std=2.0, min_reward_std=1.0)
    batch, _ = _one_batch(method, ctx, items)
    out = method.loss_terms(batch, ctx)
    assert ctx.extra_modules == {} and set(out.terms) == {"kd", "td_student"}
    view = token_view(ctx.student, batch)
    delta_s = implied_rewards(view.logits, view.targets, view.mask, "logprob")
    delta_t = implied_rewards(batch["teacher_logits"], view.targets, view.mask, "logprob")
    expected = gaussian_nll(delta_s, delta_t, torch.full_like(delta_t, math.log(2.0)))
    assert torch.allclose(out.terms["td_student"].per_token, expected, atol=1e-5)
    assert float(out.stats["reward/corr_mu_delta_teacher"]) == pytest.approx(1.0, abs=1e-5)
    assert float(out.stats["reward/inv_var_eff"]) == pytest.approx(0.25)


def test_the_closed_form_control_is_the_base_plus_alpha_reverse_kl(make_ctx, items):
    from distill.losses.divergences import rkl

    ctx = make_ctx()
    method = xkd(base="supervised_kd", alpha=0.3, reward_source="rkl")
    batch, _ = _one_batch(method, ctx, items)
    out = method.loss_terms(batch, ctx)
    view = token_view(ctx.student, batch)
    assert ctx.extra_modules == {} and set(out.terms) == {"kd", "rkl"} and out.terms["rkl"].weight == 0.3
    assert torch.allclose(out.terms["rkl"].per_token, rkl(view.logits, batch["teacher_logits"]), atol=1e-6)


@pytest.mark.parametrize("source", ["head", "rkl"])
def test_the_gradient_ratio_is_logged_every_n_steps_and_is_the_ratio_of_norms(make_ctx, items, source):
    ctx = make_ctx()
    method = xkd(base="supervised_kd", alpha=0.5, reward_source=source, diagnostics_every=5)
    batch, _ = _one_batch(method, ctx, items, step=3)
    assert "grad_ratio/alpha_to_base" not in method.loss_terms(batch, ctx).stats
    ctx.step = 4  # the 5th step
    out = method.loss_terms(batch, ctx)
    name = "rkl" if source == "rkl" else "td_student"
    norms = []
    for term in (out.terms[name], out.terms["kd"]):
        ctx.student.zero_grad()
        (term.weight * (term.per_token * term.mask).sum() / term.mask.sum()).backward(retain_graph=True)
        norms.append(_flat_grad(ctx.student).norm())
    ratio = float(out.stats["grad_ratio/alpha_to_base"])
    assert ratio > 0 and ratio == pytest.approx(float(norms[0] / norms[1]), rel=1e-4)


def test_reward_sources_without_a_head_refuse_the_shaped_q(make_ctx):
    from distill.errors import ConfigError

    with pytest.raises(ConfigError, match="reward_source=oracle has no head"):
        xkd(q_form="shaped", reward_source="oracle")
    with pytest.raises(ConfigError, match="td_target='soft' does not apply to q_form=logprob"):
        xkd(td_target="soft")

"""Method invariants (issue: every method exact and comparable): equivalences, masks, normalisation."""

from __future__ import annotations

import pytest
import torch

from distill.losses.divergences import rkl
from distill.losses.reduction import reduce_tokens
from distill.methods.gkd import GKD
from distill.methods.minillm import MiniLLM
from distill.methods.seqkd import SeqKD
from distill.methods.sft import SFT
from distill.methods.supervised_kd import SupervisedKD
from distill.methods.xkd import XKD
from distill.models.forward import token_view

from .conftest import DECODING, DIVERGENCE


def gkd(**kw):
    args = dict(divergence=DIVERGENCE, lmbda=0.0, seq_kd=False, sampling_temperature=1.0, max_new_tokens=6, alpha=1.0,
                reward_metric="accuracy", teacher_decoding=DECODING, generation_batch_size=4)
    return GKD(**{**args, **kw})


def xkd(**kw):
    args = dict(base="supervised_kd", divergence=DIVERGENCE, lmbda=0.0, sampling_temperature=1.0, max_new_tokens=6,
                ce_weight=0.0, teacher_decoding=DECODING, generation_batch_size=4, alpha=0.1, teacher_reward_weight=1.0,
                gamma=1.0, td_target="sarsa", prior_std=1.0,
                reward_head={"features": "teacher", "hidden": 0, "state_action": False, "action_dim": 4})
    return XKD(**{**args, **kw})


def minillm(**kw):
    args = dict(teacher_mix=0.2, sampling_temperature=1.0, max_new_tokens=6, gamma=1.0, length_norm=True,
                importance_clip=3.0, clip_ratio=None, ptx_weight=1.0, chunk_size=7)
    return MiniLLM(**{**args, **kw})


def loss_and_grads(method, ctx, items, seed=0):
    """Σ weight·term over one batch (N = its own tokens) and the student's gradients."""
    if hasattr(method, "setup"):
        items = method.setup(ctx, items, progress=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        batch = method.trajectories(items, ctx)
    out = method.loss_terms(batch, ctx)
    counts = {k: v.sum().clamp(min=1) for k, v in batch.items() if k.endswith("loss_mask")}
    loss = sum(t.weight * reduce_tokens(t.per_token, t.mask, counts[t.count_key]) for t in out.terms.values())
    ctx.student.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in ctx.student.named_parameters() if p.grad is not None}
    return loss.detach(), grads, out, batch


def assert_same_grads(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=1e-5), name


def test_gkd_with_lambda_zero_and_fkl_is_supervised_kd(make_ctx, items):
    ctx = make_ctx()
    loss_g, grads_g, _, _ = loss_and_grads(gkd(lmbda=0.0), ctx, items)
    loss_s, grads_s, _, _ = loss_and_grads(SupervisedKD(DIVERGENCE, 0.0), ctx, items)
    assert torch.equal(loss_g, loss_s)
    assert_same_grads(grads_g, grads_s, atol=0)


@pytest.mark.parametrize("base, base_method", [
    ("sft", lambda: SFT()),
    ("seqkd", lambda: SeqKD(DECODING, 4)),
    ("supervised_kd", lambda: SupervisedKD(DIVERGENCE, 0.0)),
    ("gkd", lambda: gkd(lmbda=1.0)),
])
def test_xkd_with_alpha_zero_gives_the_student_its_base_gradient(make_ctx, items, base, base_method):
    ctx = make_ctx()
    _, grads_base, _, _ = loss_and_grads(base_method(), ctx, items, seed=3)
    _, grads_x, out, _ = loss_and_grads(xkd(base=base, alpha=0.0, lmbda=1.0), ctx, items, seed=3)
    assert {"td_student", "td_teacher", "reward_kl"} <= set(out.terms)
    assert_same_grads(grads_base, grads_x)


def test_reward_head_changes_nothing_in_the_student_when_alpha_and_eta_are_zero(make_ctx, items):
    ctx = make_ctx()
    method = xkd(alpha=0.0, teacher_reward_weight=0.0)
    _, first, _, _ = loss_and_grads(method, ctx, items)
    head = ctx.extra_modules["reward_head"]
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p))
    torch.manual_seed(0)
    with torch.no_grad():
        batch = method.trajectories(items, ctx)
    out = method.loss_terms(batch, ctx)
    n = batch["loss_mask"].sum()
    loss = sum(t.weight * reduce_tokens(t.per_token, t.mask, n) for t in out.terms.values())
    ctx.student.zero_grad()
    loss.backward()
    assert_same_grads(first, {n_: p.grad for n_, p in ctx.student.named_parameters() if p.grad is not None})


def test_xkd_alpha_moves_the_student_and_eta_trains_only_the_head(make_ctx, items):
    ctx = make_ctx()
    _, with_alpha, _, _ = loss_and_grads(xkd(alpha=1.0), ctx, items)
    _, without, _, _ = loss_and_grads(xkd(alpha=0.0), ctx, items)
    assert any(not torch.allclose(with_alpha[k], without[k]) for k in with_alpha)
    head = ctx.extra_modules["reward_head"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


METHODS = {
    "sft": lambda: SFT(),
    "supervised_kd": lambda: SupervisedKD(DIVERGENCE, 0.5),
    "seqkd": lambda: SeqKD(DECODING, 4),
    "gkd": lambda: gkd(lmbda=0.0),
    "xkd": lambda: xkd(),
    "minillm": lambda: minillm(),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_masked_positions_never_contribute(make_ctx, items, name):
    """Teacher logits and token ids at prompt/padding positions can be anything: the loss does not move."""
    ctx = make_ctx()
    method = METHODS[name]()
    loss, _, out, batch = loss_and_grads(method, ctx, items)
    noisy = dict(batch)
    if "teacher_logits" in batch:
        mask = out.terms[next(iter(out.terms))].mask.bool()
        noise = 100 * torch.randn_like(batch["teacher_logits"])
        noisy["teacher_logits"] = torch.where(mask[..., None], batch["teacher_logits"], noise)
    pad = batch["attention_mask"] == 0
    noisy["input_ids"] = torch.where(pad, torch.randint_like(batch["input_ids"], 4, 50), batch["input_ids"])
    out2 = method.loss_terms(noisy, ctx)
    for term_name, term in out.terms.items():
        other = out2.terms[term_name]
        assert torch.allclose((term.per_token * term.mask).sum(), (other.per_token * other.mask).sum(), atol=1e-5), term_name


def test_minillm_without_teacher_mix_has_unit_weights_and_single_step_is_rkl(make_ctx, items):
    ctx = make_ctx()
    method = minillm(teacher_mix=0.0, ptx_weight=0.0)
    _, _, out, batch = loss_and_grads(method, ctx, items)
    assert out.stats["importance_weight"].item() == pytest.approx(1.0)
    view = token_view(ctx.student, batch)
    expected = rkl(view.logits, batch["teacher_logits"])
    assert torch.allclose(out.terms["single_step"].per_token, expected, atol=1e-6)


DETERMINISTIC = ["sft", "supervised_kd", "seqkd", "gkd", "xkd"]


def _trainer(method, ctx, items, micro, accum, tmp_path):
    from distill.train.loop import Trainer

    from .test_accumulation import _settings

    if hasattr(method, "setup"):
        items = method.setup(ctx, items, progress=False)
    return Trainer(method, ctx, items, [], _settings(micro, accum), tmp_path / f"{micro}x{accum}", 0, None, {})


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_micro_batch_times_accumulation_for_every_method(make_ctx, items, tmp_path, name):
    grads = {}
    for micro, accum in ((4, 1), (2, 2)):
        ctx = make_ctx()
        totals = _trainer(METHODS[name](), ctx, items, micro, accum, tmp_path).train_step(0)
        params = list(ctx.student.named_parameters()) + [(f"extra.{n}", p) for m in ctx.extra_modules.values()
                                                         for n, p in m.named_parameters()]
        grads[(micro, accum)] = (float(totals["loss"]), {n: p.grad.clone() for n, p in params if p.grad is not None})
    (loss_a, grads_a), (loss_b, grads_b) = grads.values()
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert_same_grads(grads_a, grads_b)


def test_token_count_is_taken_after_on_policy_generation(make_ctx, items, tmp_path, monkeypatch):
    import distill.data.trajectories as trajectories

    eos = items[0].target_ids[-1]
    # The student "samples" two tokens and EOS, then padding (pad != eos in the tiny tokenizer).
    monkeypatch.setattr(trajectories, "decode", lambda model, prompts, *a, **k: torch.tensor(
        [[5, 6, eos, 0, 0]] * prompts["input_ids"].size(0)))
    ctx = make_ctx()
    totals = _trainer(gkd(lmbda=1.0), ctx, items, 2, 2, tmp_path).train_step(0)
    assert int(totals["tokens"]) == 3 * len(items) != sum(len(i.target_ids) for i in items)


def test_reward_head_gradients_never_throttle_the_student_through_clipping(make_ctx, items, tmp_path):
    """The head is clipped on its own: a huge η changes the head's norm, not the student's clipped update."""
    grads = []
    for eta in (0.0, 1000.0):
        ctx = make_ctx()
        trainer = _trainer(xkd(alpha=0.0, teacher_reward_weight=eta), ctx, items, 4, 1, tmp_path)
        trainer.s = dataclasses_replace(trainer.s, max_grad_norm=0.01)  # force clipping on the student
        totals = trainer.train_step(0)
        grads.append(({n: p.grad.clone() for n, p in ctx.student.named_parameters()}, float(totals["grad_norm/reward_head"])))
    (student_a, head_a), (student_b, head_b) = grads
    assert head_b > 100 * max(head_a, 1e-6)
    assert_same_grads(student_a, student_b)


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_gkd_rl_adds_a_reward_term_on_on_policy_batches(make_ctx, items):
    ctx = make_ctx()
    _, _, out, batch = loss_and_grads(gkd(lmbda=1.0, alpha=0.5), ctx, items)
    assert set(out.terms) == {"kd", "pg"}
    assert out.terms["kd"].weight == 0.5 and out.terms["pg"].weight == 0.5
    assert batch["rewards"].shape == (len(items),) and ((batch["rewards"] == 0) | (batch["rewards"] == 1)).all()
    _, _, off_policy, _ = loss_and_grads(gkd(lmbda=0.0, alpha=0.5), ctx, items)
    assert set(off_policy.terms) == {"kd"}  # the reward needs the student's own samples

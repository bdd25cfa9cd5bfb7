"""Method invariants (issue: every method exact and comparable): equivalences, masks, normalisation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from distill.losses.divergences import rkl
from distill.methods.gkd import GKD
from distill.methods.minillm import MiniLLM
from distill.methods.seqkd import SeqKD
from distill.methods.sft import SFT
from distill.methods.supervised_kd import SupervisedKD
from distill.methods.xkd import XKD
from distill.models.forward import token_view
from distill.train.loop import _window_totals

from .conftest import DECODING, DIVERGENCE, batch_loss


def gkd(**kw):
    args = dict(divergence=DIVERGENCE, lmbda=0.0, seq_kd=False, sampling_temperature=1.0, max_new_tokens=6, alpha=1.0,
                reward_metric="accuracy", teacher_decoding=DECODING, generation_batch_size=4)
    return GKD(**{**args, **kw})


def xkd(**kw):
    args = dict(base="supervised_kd", divergence=DIVERGENCE, lmbda=0.0, sampling_temperature=1.0, max_new_tokens=6,
                ce_weight=0.0, teacher_decoding=DECODING, generation_batch_size=4, alpha=0.1, teacher_reward_weight=1.0,
                gamma=1.0, q_form="logprob", reward_level="token", min_reward_std=1.0, prior_std=1.0,
                reward_head={"features": "teacher", "hidden": 0})
    return XKD(**{**args, **kw})


def minillm(**kw):
    args = dict(teacher_mix=0.2, sampling_temperature=1.0, max_new_tokens=6, gamma=1.0, length_norm=True,
                importance_clip=3.0, clip_ratio=None, ptx_weight=1.0, chunk_size=7)
    return MiniLLM(**{**args, **kw})


def loss_and_grads(method, ctx, items, seed=0):
    """Σ weight·term over one batch (N = its own tokens) and the student's gradients."""
    items = method.setup(ctx, items, progress=False)
    torch.manual_seed(seed)
    ctx.seed = seed
    loss, out, batch, _ = batch_loss(method, ctx, items)
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
    loss = out.total(out.reduced(_window_totals([batch])))
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

    items = method.setup(ctx, items, progress=False)
    return Trainer(method, ctx, items, [], _settings(micro, accum), tmp_path / f"{micro}x{accum}", 0, None, {})


ON_POLICY = {
    "gkd_on_policy": lambda: gkd(lmbda=1.0),
    "gkd_mixed": lambda: gkd(lmbda=0.5),
    "gkd_rl": lambda: gkd(lmbda=1.0, alpha=0.5),
    "gkd_rl_pure": lambda: gkd(lmbda=1.0, alpha=0.0),
    "minillm": lambda: minillm(),
    "xkd_gkd": lambda: xkd(base="gkd", lmbda=1.0),
}


def _varied_rewards(metric, predictions, references):
    """A reward that varies between samples (0/1 accuracy of random students is almost always 0)."""
    return [float(sum((i + 1) * ord(ch) for i, ch in enumerate(p)) % 11) for p in predictions]


def _step_grads(method, make_ctx, items, tmp_path, micro, accum):
    ctx = make_ctx()
    totals = _trainer(method, ctx, items, micro, accum, tmp_path).train_step(0)
    params = list(ctx.student.named_parameters()) + [(f"extra.{n}", p) for m in ctx.extra_modules.values()
                                                     for n, p in m.named_parameters()]
    return float(totals["loss"]), {n: p.grad.clone() for n, p in params if p.grad is not None}, totals


@pytest.mark.parametrize("name", DETERMINISTIC + sorted(ON_POLICY))
def test_micro_batch_times_accumulation_for_every_method(make_ctx, items, tmp_path, monkeypatch, name):
    """docs/design.md, Reduction: 4×1, 2×2 and 1×4 give one update, on-policy methods included: samples are keyed by
    (seed, step, example), the GKD coin is one per step, GKD+RL's baseline spans the window."""
    import distill.metrics

    monkeypatch.setattr(distill.metrics, "sequence_rewards", _varied_rewards)
    build = METHODS.get(name) or ON_POLICY[name]
    (loss_a, grads_a, totals_a), *rest = [_step_grads(build(), make_ctx, items, tmp_path, m, a)
                                          for m, a in ((4, 1), (2, 2), (1, 4))]
    for loss_b, grads_b, _ in rest:
        assert loss_b == pytest.approx(loss_a, rel=1e-5, abs=1e-6)
        assert_same_grads(grads_a, grads_b, atol=1e-6)
    if name.startswith("gkd_rl"):
        assert float(totals_a["loss/pg"]) != 0.0  # the rewards did vary: the test can tell the baselines apart


def test_gkd_rl_baseline_survives_micro_batch_one(make_ctx, items, tmp_path, monkeypatch):
    """Issue 10.1: with a per-micro-batch mean baseline, micro-batch 1 gave advantage 0 and no RL gradient."""
    import distill.metrics

    monkeypatch.setattr(distill.metrics, "sequence_rewards", _varied_rewards)
    _, grads, _ = _step_grads(gkd(lmbda=1.0, alpha=0.0), make_ctx, items, tmp_path, 1, 4)
    assert sum(float(g.abs().sum()) for g in grads.values()) > 1e-4


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
        trainer.settings = dataclasses_replace(trainer.settings, max_grad_norm=0.01)  # force clipping on the student
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


def test_gkd_rl_with_seq_kd_scores_rewards_against_the_dataset_reference(make_ctx, items, monkeypatch):
    """Issue 10.2: seq_kd replaces the targets with teacher outputs; rewards still compare with the dataset."""
    import distill.metrics

    seen = []
    monkeypatch.setattr(distill.metrics, "sequence_rewards",
                        lambda metric, predictions, references: seen.extend(references) or [0.0] * len(predictions))
    ctx = make_ctx()
    loss_and_grads(gkd(lmbda=1.0, alpha=0.5, seq_kd=True), ctx, items)
    assert seen == [item.reference.strip() for item in items]
    teacher_texts = ctx.tokenizer.batch_decode([i.target_ids for i in gkd(seq_kd=True).setup(ctx, items, False)],
                                               skip_special_tokens=True)
    assert seen != [t.strip() for t in teacher_texts]  # the random teacher's outputs are not the references


def _noisy_student(model):
    """Puts +inf / NaN into the student's logits at padding positions, as an fp16 overflow would."""
    original = model.forward

    def forward(*args, **kwargs):
        out = original(*args, **kwargs)
        if kwargs.get("use_cache") or kwargs.get("encoder_outputs") is not None:
            return out  # decoding steps: the poisoned rows are what a batch forward pads
        key = "decoder_attention_mask" if model.config.is_encoder_decoder else "attention_mask"
        pad = kwargs[key] == 0
        if not model.config.is_encoder_decoder:
            pad[:, 0] = True  # a prompt position: masked too
        pad = pad[..., None]
        noise = torch.where(torch.rand_like(out.logits) < 0.5, torch.inf, torch.nan)
        # Added, not substituted: the gradient flows back through these rows as through a real overflow.
        out.logits = out.logits + torch.where(pad, noise, 0.0)
        return out

    model.forward = forward
    return model


@pytest.mark.parametrize("name", sorted(METHODS))
def test_non_finite_logits_at_masked_positions_give_the_clean_loss_and_gradient(make_ctx, items, name):
    """Issue 10.6: masked positions contribute exactly zero, forward and backward (no 0·inf = NaN)."""
    eos = items[0].target_ids[-1]
    items = [dataclasses.replace(it, target_ids=it.target_ids[: 2 + 3 * i] + [eos]) for i, it in enumerate(items)]
    clean = loss_and_grads(METHODS[name](), make_ctx(), items)
    ctx = make_ctx()
    _noisy_student(ctx.student)
    noisy = loss_and_grads(METHODS[name](), ctx, items)
    assert torch.isfinite(noisy[0]) and torch.allclose(noisy[0], clean[0], atol=1e-6)
    assert_same_grads(noisy[1], clean[1])


def test_minillm_weights_and_rewards_come_from_the_sampling_policy_not_dropout(make_ctx, items):
    """Issue 10.5: with dropout, two train-mode forwards differ; the fixed quantities of the update must not."""
    ctx = make_ctx()
    for module in ctx.student.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    method = minillm(teacher_mix=0.3)
    torch.manual_seed(0)
    with torch.no_grad():
        batch = method.trajectories(items, ctx)
    _window_totals([batch])
    stats = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        stats.append(float(method.loss_terms(batch, ctx).stats["importance_weight"]))
    assert stats[0] == stats[1]
    # and they are the eval-mode student's own: q_T of the drawn tokens at the sampling temperature
    ctx.student.eval()
    with torch.no_grad():
        view = token_view(ctx.student, batch)
    log_q = torch.log_softmax(view.logits, -1).gather(-1, view.targets[..., None]).squeeze(-1)
    mask = view.mask.bool()
    assert torch.allclose(batch["sample_log_q"][mask], log_q[mask], atol=1e-5)


def test_an_example_twice_in_one_window_gets_two_independent_samples(make_ctx, items, tmp_path, monkeypatch):
    """Review of issue 10: keys by (step, example) gave both copies one sample, biasing GKD+RL's baseline."""
    import distill.data.trajectories as trajectories

    seen = []
    real = trajectories.decode
    monkeypatch.setattr(trajectories, "decode", lambda *a, keys=None, **k: seen.append(keys) or real(*a, keys=keys, **k))
    ctx = make_ctx()
    trainer = _trainer(gkd(lmbda=1.0), ctx, items[:2], 2, 3, tmp_path)  # a window of 6 slots over 2 examples
    trainer.train_step(0)
    keys = torch.cat(seen)
    assert keys.size(0) == 6 and len({tuple(k.tolist()) for k in keys}) == 6


def osd(**kw):
    from distill.methods.osd import OSD

    args = dict(divergence=DIVERGENCE, num_proposals=3, update_interval=4, positions="mismatch",
                sampling_temperature=None, max_new_tokens=8, replay_size=0, update=True)
    return OSD(**{**args, **kw})


@pytest.mark.parametrize("positions", ["mismatch", "all", "anchored"])
def test_osd_trains_on_the_kept_positions_with_the_verification_logits(make_ctx, items, positions):
    """The update batch: served outputs, mask on the kept positions, the target's logits there (no second pass)."""
    ctx = make_ctx()
    if positions == "anchored":  # a draft that is the target: its proposals are accepted, weighted 0.25
        import copy

        ctx.student = copy.deepcopy(ctx.teacher).train()
    method = osd(positions=positions)
    with torch.no_grad():
        batch = method.trajectories(items, ctx)
    records = batch.pop("log_records")
    assert [r["request"] for r in records] == [i.index for i in items]
    assert all(0.0 <= r["acceptance_rate"] <= 1.0 for r in records if r["acceptance_rate"] is not None)
    with torch.no_grad():
        full = token_view(ctx.teacher, batch)  # the target's own forward over the served sequences
    view_mask = token_view(ctx.student, batch).mask.bool()
    assert view_mask.any()
    assert torch.allclose(batch["teacher_logits"][view_mask], full.logits[view_mask], atol=1e-4)
    weights = token_view(ctx.student, batch).mask
    if positions in ("all", "anchored"):
        assert int(view_mask.sum()) == sum(r["tokens"] for r in records)
    if positions in ("mismatch", "anchored"):  # one correction or bonus token per verification round, weight 1
        assert int((weights == 1).sum()) == sum(r["target_forwards"] for r in records)
    if positions == "anchored":  # the accepted ones at anchor_weight
        assert set(weights[view_mask].unique().tolist()) <= {0.25, 1.0}
        accepted = sum(r["tokens"] - r["target_forwards"] for r in records)
        assert accepted > 0 and int((weights == 0.25).sum()) == accepted
    out = method.loss_terms(batch, ctx)
    assert out.terms["kd"].per_token.shape == view_mask.shape


def test_osd_bad_settings_are_refused():
    from distill.errors import ConfigError

    for bad in ({"num_proposals": 0}, {"update_interval": 0}, {"positions": "some"}, {"replay_size": -1}):
        with pytest.raises(ConfigError):
            osd(**bad)

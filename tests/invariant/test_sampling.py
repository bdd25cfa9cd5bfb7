"""Our decoding loop and the on-policy batch it feeds: equal to HF generate, one teacher pass per batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from distill.data.collate import collate_prompts, generated_batch
from distill.data.trajectories import mixture_samples, student_samples, teacher_forward
from distill.models.forward import token_view
from distill.models.generation import Decoding, cut_at_eos, generate_ids
from distill.models.sampling import decode, generated_mask

from distill.methods.seqkd import SeqKD
from distill.methods.sft import SFT
from distill.methods.supervised_kd import SupervisedKD

from .conftest import DECODING, DIVERGENCE
from .test_methods import gkd, minillm, xkd


def _prompts(ctx, items):
    return collate_prompts(items, ctx.tokenizer.pad_token_id, ctx.encoder_decoder)


def _hf_greedy(model, prompts, max_new_tokens, tokenizer):
    out = model.generate(**prompts, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return out[:, 1:] if model.config.is_encoder_decoder else out[:, prompts["input_ids"].size(1):]


def test_greedy_decoding_equals_hf_generate(make_ctx, items):
    ctx = make_ctx()
    prompts = _prompts(ctx, items)
    for model in (ctx.student.eval(), ctx.teacher):
        ours = decode(model, prompts, 12, ctx.tokenizer.eos_token_id, ctx.tokenizer.pad_token_id, check_every=4)
        reference = _hf_greedy(model, prompts, 12, ctx.tokenizer)
        assert cut_at_eos(ours, ctx.tokenizer.eos_token_id) == cut_at_eos(reference, ctx.tokenizer.eos_token_id)


def test_sampling_is_seeded_and_covers_num_samples(make_ctx, items):
    ctx = make_ctx()
    prompts = _prompts(ctx, items)
    decoding = Decoding("sample", 10, sampling_temperature=1.5, num_samples=3)
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(generate_ids(ctx.student.eval(), prompts, decoding, ctx.tokenizer.eos_token_id, ctx.tokenizer.pad_token_id))
    assert runs[0].size(0) == 3 * len(items)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_sampling_follows_the_temperature_scaled_distribution():
    """Gumbel-max draws match softmax(z / T): a 3-token vocabulary, 20 000 draws."""
    from distill.models.sampling import _pick

    logits = torch.tensor([[2.0, 1.0, 0.0]]).expand(20000, 3)
    generator = torch.Generator().manual_seed(0)
    draws = _pick(logits, 0.5, generator)
    freq = torch.bincount(draws, minlength=3).float() / draws.numel()
    assert torch.allclose(freq, torch.softmax(logits[0] / 0.5, -1), atol=0.01)


def test_rows_end_at_their_first_eos_and_padding_follows():
    new = torch.tensor([[5, 1, 7, 7], [5, 6, 7, 8], [1, 9, 9, 9]])
    mask = generated_mask(new, eos_id=1)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_generated_batch_gives_the_same_logits_as_a_right_padded_collate(make_ctx, items):
    """Left-padded prompts + outputs built on the device == the host collate of the same sequences."""
    ctx = make_ctx()
    prompts = _prompts(ctx, items)
    new = torch.tensor([[9, 10, 11, ctx.tokenizer.eos_token_id, 12]] * len(items))
    on_device = generated_batch(prompts, new, ctx.tokenizer.eos_token_id, ctx.tokenizer.pad_token_id, ctx.encoder_decoder)
    host = ctx.collate([dataclasses.replace(i, target_ids=[9, 10, 11, ctx.tokenizer.eos_token_id]) for i in items])
    a, b = token_view(ctx.teacher, on_device), token_view(ctx.teacher, host)
    assert int(a.mask.sum()) == int(b.mask.sum()) == 4 * len(items)
    picked_a = a.logits[a.mask.bool()]
    picked_b = b.logits[b.mask.bool()]
    assert torch.equal(a.targets[a.mask.bool()], b.targets[b.mask.bool()])
    assert torch.allclose(picked_a, picked_b, atol=1e-5)


def test_mixture_sampling_keeps_the_teacher_logits_of_a_full_forward(make_ctx, items):
    ctx = make_ctx()
    torch.manual_seed(0)
    with torch.no_grad():
        batch = mixture_samples(ctx, items, 8, 1.0, teacher_mix=0.3)
        kept = batch.pop("teacher_logits")
        teacher_forward(ctx, batch)
    mask = token_view(ctx.student, batch).mask.bool()
    assert kept.shape == batch["teacher_logits"].shape
    assert torch.allclose(kept[mask], batch["teacher_logits"][mask], atol=1e-5)


def test_on_policy_batch_needs_no_host_round_trip(make_ctx, items):
    ctx = make_ctx()
    torch.manual_seed(0)
    with torch.no_grad():
        batch = student_samples(ctx, items, 8, 1.0)
    assert batch["input_ids"].device == ctx.device and batch["loss_mask"].sum() > 0
    view = token_view(ctx.student, batch)
    assert view.mask.shape == view.targets.shape


class _CountingTeacher(torch.nn.Module):
    """Counts the teacher's passes: a call without a KV cache starts a pass, cached steps continue one."""

    def __init__(self, model):
        super().__init__()
        self.model, self.passes = model, 0

    def forward(self, *args, cache=None, **kwargs):
        if cache is None:
            self.passes += 1
        return self.model(*args, cache=cache, **kwargs)

    def __getattr__(self, name):  # everything else (config, get_encoder, ...) is the wrapped model's
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


METHODS = {  # name: (method, teacher passes per batch)
    "sft": (lambda: SFT(), 0),
    "seqkd": (lambda: SeqKD(DECODING, 4), 0),
    "supervised_kd": (lambda: SupervisedKD(DIVERGENCE, 0.5), 1),
    "gkd_on_policy": (lambda: gkd(lmbda=1.0), 1),
    "gkd_rl": (lambda: gkd(lmbda=1.0, alpha=0.5), 1),
    "minillm": (lambda: minillm(), 1),
    "xkd_gkd": (lambda: xkd(base="gkd", lmbda=1.0), 1),
    "xkd_seqkd": (lambda: xkd(base="seqkd"), 1),
}


@pytest.mark.parametrize("name", METHODS)
def test_the_teacher_runs_once_per_batch(make_ctx, items, name):
    build, expected = METHODS[name]
    ctx = make_ctx()
    method = build()
    if hasattr(method, "setup"):
        items = method.setup(ctx, items, progress=False)  # SeqKD's cached outputs are made here, once per run
    ctx.teacher = _CountingTeacher(ctx.teacher)
    for _ in range(2):
        before = ctx.teacher.passes
        with torch.no_grad():
            batch = method.trajectories(items, ctx)
        method.loss_terms(batch, ctx)
        assert ctx.teacher.passes - before == expected

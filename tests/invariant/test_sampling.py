"""Our decoding loop and the on-policy batch it feeds: equal to HF generate, one teacher pass per batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from distill.data.collate import collate_prompts, generated_batch
from distill.data.trajectories import mixture_samples, student_samples, teacher_forward
from distill.methods.seqkd import SeqKD
from distill.methods.sft import SFT
from distill.methods.supervised_kd import SupervisedKD
from distill.models.forward import token_view
from distill.models.generation import Decoding, cut_at_eos, generate_ids
from distill.models.sampling import decode, generated_mask
from distill.train.loop import _window_totals

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
    items = method.setup(ctx, items, progress=False)  # SeqKD's cached outputs are made here, once per run
    ctx.teacher = _CountingTeacher(ctx.teacher)
    for _ in range(2):
        before = ctx.teacher.passes
        with torch.no_grad():
            batch = method.trajectories(items, ctx)
        _window_totals([batch])
        method.loss_terms(batch, ctx)
        assert ctx.teacher.passes - before == expected


def _prompt_signature(prompt_ids) -> int:
    return sum(prompt_ids) % 50 + 2


def test_teacher_outputs_give_k_samples_per_prompt_aligned_with_their_prompt(make_ctx, items, monkeypatch):
    """Issue 10.3: num_samples = k gives k outputs per prompt, each generated from its own prompt."""
    import distill.data.trajectories as trajectories

    def fake_generate(model, prompts, decoding, eos_id, pad_id, keys=None):
        # Output row i·k + j = [signature of prompt i, j + 2, EOS]: any misalignment shows.
        signature = (prompts["input_ids"] * prompts["attention_mask"]).sum(1) % 50 + 2
        k = decoding.num_samples
        sample = torch.arange(k).repeat(signature.size(0)) + 2
        return torch.stack([signature.repeat_interleave(k), sample, torch.full_like(sample, eos_id)], 1)

    monkeypatch.setattr(trajectories, "generate_ids", fake_generate)
    ctx = make_ctx()
    eos = ctx.tokenizer.eos_token_id
    expanded = trajectories.teacher_outputs(ctx, items, Decoding("sample", 6, sampling_temperature=1.0, num_samples=3),
                                            batch_size=3, progress=False)
    assert len(expanded) == 3 * len(items)
    for position, item in enumerate(expanded):
        prompt, sample = items[position // 3], position % 3
        assert item.prompt_ids == prompt.prompt_ids and item.reference == prompt.reference
        assert item.target_ids == [_prompt_signature(prompt.prompt_ids), sample + 2, eos]
        assert item.index == position  # the new training set's positions key its random streams
    assert len({_prompt_signature(i.prompt_ids) for i in items}) > 1  # prompts differ: misalignment would show


def test_teacher_outputs_sampled_k_times_are_reproducible_and_distinct(make_ctx, items):
    from distill.data.trajectories import teacher_outputs

    ctx = make_ctx()
    decoding = Decoding("sample", 6, sampling_temperature=1.5, num_samples=4)
    first = teacher_outputs(ctx, items, decoding, 3, False)
    again = teacher_outputs(dataclasses.replace(ctx, cache_dir=ctx.cache_dir / "other"), items, decoding, 3, False)
    assert [i.target_ids for i in first] == [i.target_ids for i in again]  # keyed: not the global RNG's state


def test_teacher_output_cache_follows_the_weights_and_dtype_not_the_path(make_ctx, items):
    """Issue 10.7: a retrained teacher (same path, new weights) or another dtype never reuses stale outputs."""
    from distill.data.trajectories import teacher_outputs

    ctx = make_ctx()
    decoding = Decoding("greedy", 6)
    first = teacher_outputs(ctx, items, decoding, 4, False)
    assert teacher_outputs(ctx, items, decoding, 4, False) == first  # unchanged teacher: the cache is reused
    cached = lambda: sorted(p.name for p in (ctx.cache_dir / "teacher_outputs").glob("*.jsonl"))
    assert len(cached()) == 1
    with torch.no_grad():
        for p in ctx.teacher.parameters():
            p.add_(0.5 * torch.randn_like(p))
    retrained = teacher_outputs(ctx, items, decoding, 4, False)
    assert len(cached()) == 2
    fresh = teacher_outputs(dataclasses.replace(ctx, cache_dir=ctx.cache_dir / "fresh"), items, decoding, 4, False)
    assert [i.target_ids for i in retrained] == [i.target_ids for i in fresh]
    ctx.teacher.to(torch.bfloat16)
    teacher_outputs(ctx, items, decoding, 4, False)
    assert len(cached()) == 3


def test_teacher_outputs_are_generated_only_for_the_examples_a_run_uses(make_ctx, items, monkeypatch):
    """Issue 14.9: a 30-step seqkd run generated outputs for all 20 000 prompts; a longer run then adds the rest."""
    import distill.data.trajectories as trajectories

    generated = []
    real = trajectories._generate
    monkeypatch.setattr(trajectories, "_generate", lambda model, ctx, chunk, *a: generated.extend(chunk) or real(
        model, ctx, chunk, *a))
    ctx = make_ctx()
    decoding = Decoding("greedy", 6)
    short = trajectories.teacher_outputs(ctx, items, decoding, 4, False, used=lambda n: {1, 3})
    assert [i for i, item in enumerate(short) if item.target_ids is not None] == [1, 3]
    assert [g.prompt_ids for g in generated] == [items[1].prompt_ids, items[3].prompt_ids]
    generated.clear()
    longer = trajectories.teacher_outputs(ctx, items, decoding, 4, False)  # every example: only 0 and 2 are new
    assert [g.prompt_ids for g in generated] == [items[0].prompt_ids, items[2].prompt_ids]
    assert [longer[i].target_ids for i in (1, 3)] == [short[i].target_ids for i in (1, 3)]

"""docs/design.md, Reduction: the update depends on the optimizer step's examples, not on how they are split."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distill.data.collate import Encoded
from distill.methods.sft import SFT
from distill.train.loop import Context, Trainer, TrainerSettings

PAD, EOS = 0, 1


def _settings(micro: int, accum: int) -> TrainerSettings:
    return TrainerSettings(device="cpu", precision="fp32", max_steps=2, micro_batch_size=micro, grad_accum_steps=accum,
                           lr=1e-2, weight_decay=0.0, adam_betas=(0.9, 0.999), warmup_steps=0, lr_schedule="constant",
                           min_lr_ratio=1.0, max_grad_norm=1e9, log_every=1, eval_every=100, eval_batches=1,
                           save_every=100, keep_checkpoints=1, resume=False, progress=False)


class _Tok:
    pad_token_id, eos_token_id = PAD, EOS


def _data(n: int = 8) -> list[Encoded]:
    g = torch.Generator().manual_seed(0)
    # Very different target lengths per example: a per-micro-batch mean would weight them differently.
    return [Encoded(torch.randint(2, 30, (3 + i % 3,), generator=g).tolist(),
                    torch.randint(2, 30, (1 + 4 * (i % 4),), generator=g).tolist() + [EOS]) for i in range(n)]


def _model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=30, n_positions=64, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=EOS))


def _after_one_step(model, micro: int, accum: int, tmp_path) -> dict:
    model = copy.deepcopy(model)
    ctx = Context(model, None, _Tok(), False, torch.device("cpu"), {})
    trainer = Trainer(SFT(), ctx, _data(), [], _settings(micro, accum), tmp_path / f"{micro}x{accum}", seed=0,
                      logger_settings=None, config={})
    totals = trainer.train_step(0)
    # Compare gradients, not Adam's first step: Adam's update is ~lr·sign(g), which turns
    # rounding noise in gradients that are zero in exact arithmetic into full-size steps.
    return {"loss": float(totals["loss"]), "grads": {k: p.grad.clone() for k, p in model.named_parameters()}}


@pytest.mark.parametrize("micro, accum", [(2, 2), (1, 4)])
def test_micro_batch_times_accumulation_gives_the_same_update(tmp_path, micro, accum):
    base = _model()
    whole = _after_one_step(base, 4, 1, tmp_path)
    split = _after_one_step(base, micro, accum, tmp_path)
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    for name, value in whole["grads"].items():
        assert torch.allclose(split["grads"][name], value, atol=1e-6, rtol=1e-4), name
    # The per-micro-batch mean (the common bug) would not pass: make sure the data can tell them apart.
    lengths = [len(d.target_ids) for d in _data()[:4]]
    assert len(set(lengths)) > 1

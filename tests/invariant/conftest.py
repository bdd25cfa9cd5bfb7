"""Tiny teacher/student pairs sharing a tokenizer, and method objects built like the CLI builds them."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

from distill.data.collate import encode
from distill.data.tasks import Example
from distill.models.tokenizer import build_tokenizer
from distill.train.loop import Context

TEXTS = [f"Question: Ava has {a} pens. Next, Ava gets {b} more pens.\nAnswer: {a} + {b} = {a + b}\n#### {a + b}"
         for a in range(1, 12) for b in range(1, 9)]

DIVERGENCE = {"name": "fkl", "kd_temperature": 1.0, "chunk_size": 7, "beta": None, "normalize": False, "skew": None}
DECODING = {"strategy": "greedy", "max_new_tokens": 6, "num_beams": 1, "sampling_temperature": None, "num_samples": 1}


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return build_tokenizer(TEXTS, 120, tmp_path_factory.mktemp("tok"))


def _gpt2(tokenizer, width, seed):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=width, n_layer=1, n_head=2,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=tokenizer.pad_token_id,
                                      eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id))


def _t5(tokenizer, width, seed):
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=8, d_ff=2 * width, num_layers=1,
                                               num_heads=2, dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               decoder_start_token_id=tokenizer.pad_token_id))


@pytest.fixture(params=["decoder", "t5"])
def make_ctx(request, tokenizer, tmp_path):
    """A fresh Context (student seed 0, teacher seed 1) for each call."""
    build = _gpt2 if request.param == "decoder" else _t5

    def make():
        return Context(build(tokenizer, 16, 0), build(tokenizer, 24, 1).eval(), tokenizer, request.param == "t5",
                       torch.device("cpu"), {}, cache_dir=tmp_path)

    return make


def batch_loss(method, ctx, items):
    """One batch through a method as the trainer runs it (N = this batch's tokens): (loss, terms, batch, counts);
    the student's gradients are those of this loss alone."""
    from distill.train.loop import _window_totals

    with torch.no_grad():
        batch = method.trajectories(items, ctx)
    counts = _window_totals([batch])
    terms = method.loss_terms(batch, ctx)
    loss = terms.total(terms.reduced(counts))
    ctx.student.zero_grad()
    loss.backward()
    return loss, terms, batch, counts


@pytest.fixture
def items(tokenizer):
    examples = [Example(t.split("\nAnswer:")[0] + "\nAnswer:", " " + t.split("\nAnswer: ")[1]) for t in TEXTS[:8:2]]
    return encode(tokenizer, examples, 64, 32)

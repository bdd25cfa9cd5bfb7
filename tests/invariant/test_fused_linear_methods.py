"""fused_linear (issue 13): each method that uses it gives the unfused path's loss and gradients, to float
precision, on a decoder-only and a T5 pair; models it cannot serve are named, and true where it cannot work is refused."""

from __future__ import annotations

import pytest

from distill.errors import ConfigError
from distill.methods.seqkd import SeqKD
from distill.methods.sft import SFT
from distill.methods.supervised_kd import SupervisedKD
from distill.models.forward import fused_head_unsupported, fused_linear_choice

from .conftest import DECODING, DIVERGENCE
from .test_methods import gkd, loss_and_grads

JSD = {**DIVERGENCE, "name": "jsd", "beta": 0.4}
METHODS = {
    "sft": lambda: SFT(),
    "seqkd": lambda: SeqKD(DECODING, 4),
    "supervised_kd": lambda: SupervisedKD(DIVERGENCE, 0.5),
    "supervised_kd_jsd": lambda: SupervisedKD(JSD, 0.0),
    "gkd_on_policy": lambda: gkd(lmbda=1.0),
    "gkd_rl": lambda: gkd(lmbda=1.0, alpha=0.5),  # the REINFORCE term: per-sequence weights, the recomputing path
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_fused_path_gives_the_unfused_loss_and_gradients(make_ctx, items, name):
    ctx = make_ctx()
    loss, grads, _, _ = loss_and_grads(METHODS[name](), ctx, items)
    ctx.fused_linear = True
    fused_loss, fused_grads, out, _ = loss_and_grads(METHODS[name](), ctx, items)
    assert fused_loss == pytest.approx(float(loss), rel=1e-5)
    assert grads.keys() == fused_grads.keys()
    for key in grads:
        scale = grads[key].abs().max().clamp(min=1e-8)
        assert float((grads[key] - fused_grads[key]).abs().max() / scale) <= 1e-4, key


def test_what_cannot_be_fused_is_named_and_true_is_refused_there(make_ctx):
    ctx = make_ctx()
    assert fused_head_unsupported(ctx.student) is None
    assert fused_linear_choice("auto", ctx.student, ctx.teacher) == (
        False, f"vocabulary {ctx.student.config.vocab_size} < 16384: full logits are small")
    assert fused_linear_choice(True, ctx.student, ctx.teacher)[0]
    assert fused_linear_choice(False, ctx.student, ctx.teacher) == (False, "fused_linear=false")
    # a method that needs full logits never fuses, and the log line says so (not "fused")
    assert fused_linear_choice("auto", ctx.student, ctx.teacher, unfusable="the method needs full logits") == (
        False, "the method needs full logits")
    with pytest.raises(ConfigError, match="the method needs full logits"):
        fused_linear_choice(True, ctx.student, ctx.teacher, unfusable="the method needs full logits")


def test_the_methods_that_fuse_are_the_fused_suites_methods():
    from distill.methods.minillm import MiniLLM
    from distill.methods.osd import OSD
    from distill.methods.xkd import XKD

    assert all(type(build()).fuses_linear for build in METHODS.values())
    assert not (MiniLLM.fuses_linear or XKD.fuses_linear or OSD.fuses_linear)


def test_an_encoder_decoder_family_other_than_t5_is_named():
    from transformers import BartConfig, BartForConditionalGeneration

    bart = BartForConditionalGeneration(BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                                                   encoder_attention_heads=2, decoder_attention_heads=2,
                                                   encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64))
    assert fused_head_unsupported(bart) == "bart: only t5, mt5 among encoder-decoder models"
    with pytest.raises(ConfigError, match="fused_linear=true is not possible here .student: bart: only t5"):
        fused_linear_choice(True, bart, None)

"""distill.models.forward: the target-aligned token view of one forward pass."""

from __future__ import annotations

import pytest
import torch

from distill.data.collate import collate, encode
from distill.data.tasks import Example
from distill.models.forward import token_view

EXAMPLES = [
    Example("Question: Ava has 3 pens. Next, Ava gets 4 more pens.\nAnswer:", " 3 + 4 = 7\n#### 7"),
    Example("Question: 2 * 3?\nAnswer:", " #### 6"),
    Example("Question: Ben has 12 coins. Next, Ben gives away 5 coins. How many?\nAnswer:", " 12 - 5 = 7\n#### 7"),
]


@pytest.fixture(scope="module")
def encoded(tiny_tokenizer):
    return encode(tiny_tokenizer, EXAMPLES, max_source_length=64, max_target_length=32)


@pytest.fixture(scope="module")
def gpt2(tiny_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=128, vocab_size=len(tiny_tokenizer),
                        pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
                        bos_token_id=tiny_tokenizer.bos_token_id)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def t5(tiny_tokenizer):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, vocab_size=len(tiny_tokenizer),
                      decoder_start_token_id=tiny_tokenizer.pad_token_id, pad_token_id=tiny_tokenizer.pad_token_id,
                      eos_token_id=tiny_tokenizer.eos_token_id)
    return T5ForConditionalGeneration(config).eval()


def test_decoder_only_view_is_target_aligned(gpt2, encoded, tiny_tokenizer):
    batch = collate(encoded, tiny_tokenizer.pad_token_id, encoder_decoder=False)
    with torch.no_grad():
        view = token_view(gpt2, batch)
    B, L = batch["input_ids"].shape
    assert view.logits.shape == (B, L - 1, len(tiny_tokenizer))
    assert torch.equal(view.targets, batch["input_ids"][:, 1:])
    assert view.mask.shape == (B, L - 1)
    assert view.mask.dtype.is_floating_point
    n_targets = sum(len(e.target_ids) for e in encoded)
    assert int(view.mask.sum()) == n_targets == int(batch["loss_mask"].sum())
    assert view.hidden is None
    # the masked-in targets are exactly the output tokens, EOS included
    for i, item in enumerate(encoded):
        assert view.targets[i][view.mask[i].bool()].tolist() == item.target_ids


def test_decoder_only_logits_equal_the_models_own_next_token_logits(gpt2, encoded, tiny_tokenizer):
    batch = collate(encoded, tiny_tokenizer.pad_token_id, encoder_decoder=False)
    with torch.no_grad():
        view = token_view(gpt2, batch, output_hidden=True)
        for i, item in enumerate(encoded):
            sequence = torch.tensor([item.prompt_ids + item.target_ids])
            alone = gpt2(input_ids=sequence, output_hidden_states=True)
            n_prompt, n = len(item.prompt_ids), sequence.shape[1]
            # position p of the unpadded run predicts token p + 1
            for t in range(n_prompt, n):  # every target token
                row = t - 1
                assert view.mask[i, row] == 1
                assert view.targets[i, row] == sequence[0, t]
                torch.testing.assert_close(view.logits[i, row], alone.logits[0, t - 1], atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(view.hidden[i, row], alone.hidden_states[-1][0, t - 1], atol=1e-5, rtol=1e-5)
    assert view.hidden.shape == (*view.targets.shape, gpt2.config.n_embd)


def test_seq2seq_view_is_target_aligned(t5, encoded, tiny_tokenizer):
    batch = collate(encoded, tiny_tokenizer.pad_token_id, encoder_decoder=True)
    with torch.no_grad():
        view = token_view(t5, batch, output_hidden=True)
    B, T = batch["labels"].shape
    assert view.logits.shape == (B, T, len(tiny_tokenizer))
    assert torch.equal(view.targets, batch["labels"])
    assert torch.equal(view.mask, batch["loss_mask"].float())
    assert int(view.mask.sum()) == sum(len(e.target_ids) for e in encoded) == int(batch["loss_mask"].sum())
    assert view.hidden.shape == (B, T, t5.config.d_model)


def test_seq2seq_logits_equal_the_models_own_logits(t5, encoded, tiny_tokenizer):
    batch = collate(encoded, tiny_tokenizer.pad_token_id, encoder_decoder=True)
    start = t5.config.decoder_start_token_id
    with torch.no_grad():
        view = token_view(t5, batch, output_hidden=True)
        for i, item in enumerate(encoded):
            n = len(item.target_ids)
            # teacher forcing by hand: decoder input is start token + all but the last target
            decoder_input = torch.tensor([[start] + item.target_ids[:-1]])
            alone = t5(input_ids=torch.tensor([item.prompt_ids]), decoder_input_ids=decoder_input, output_hidden_states=True)
            torch.testing.assert_close(view.logits[i, :n], alone.logits[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(view.hidden[i, :n], alone.decoder_hidden_states[-1][0], atol=1e-5, rtol=1e-5)
            assert view.mask[i, :n].tolist() == [1.0] * n
            assert view.mask[i, n:].sum() == 0


def test_decoder_only_view_is_differentiable(gpt2, encoded, tiny_tokenizer):
    batch = collate(encoded, tiny_tokenizer.pad_token_id, encoder_decoder=False)
    view = token_view(gpt2, batch)
    log_probs = torch.log_softmax(view.logits, dim=-1).gather(-1, view.targets.unsqueeze(-1)).squeeze(-1)
    loss = -(log_probs * view.mask).sum() / view.mask.sum()
    loss.backward()
    grads = [p.grad for p in gpt2.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    gpt2.zero_grad(set_to_none=True)


def _t5_with(tiny_tokenizer, tied: bool):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(1)
    config = T5Config(d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, vocab_size=len(tiny_tokenizer),
                      decoder_start_token_id=tiny_tokenizer.pad_token_id, pad_token_id=tiny_tokenizer.pad_token_id,
                      eos_token_id=tiny_tokenizer.eos_token_id, tie_word_embeddings=tied)
    return T5ForConditionalGeneration(config).eval()


@pytest.mark.parametrize("arch", ["gpt2", "t5_tied", "t5_untied"])
def test_fused_view_projects_to_the_full_views_logits(arch, gpt2, encoded, tiny_tokenizer):
    """head_input · head_weightᵀ = the unfused view's logits on every output row; T5's d_model^-0.5 scaling
    of a tied head is inside head_input, and the real head is back in place after the forward."""
    model = gpt2 if arch == "gpt2" else _t5_with(tiny_tokenizer, tied=arch == "t5_tied")
    batch = collate(encoded, tiny_tokenizer.pad_token_id, encoder_decoder=arch != "gpt2")
    head = model.get_output_embeddings()
    with torch.no_grad():
        full, fused = token_view(model, batch), token_view(model, batch, fused=True)
    assert fused.fused and fused.logits is None
    assert model.get_output_embeddings() is head and fused.head_weight is head.weight
    assert torch.equal(fused.targets, full.targets) and torch.equal(fused.mask, full.mask)
    rows = full.mask.bool()
    projected = fused.head_input @ fused.head_weight.T
    torch.testing.assert_close(projected[rows], full.logits[rows], rtol=1e-5, atol=1e-5)
    # the two T5 variants differ exactly by the scaling, so the test can tell whether it was applied
    if arch != "gpt2":
        assert model.config.scale_decoder_outputs is (arch == "t5_tied")

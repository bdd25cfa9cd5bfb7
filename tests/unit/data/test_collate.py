"""distill.data.collate: encoding, batch layout and loss masks for both architectures."""

from __future__ import annotations

import pytest
import torch

from distill.data.collate import Encoded, collate, collate_prompts, encode
from distill.data.tasks import Example

PAD, EOS = 0, 1


def rows(t: torch.Tensor) -> list[list[int]]:
    return t.tolist()


@pytest.fixture
def items() -> list[Encoded]:
    return [
        Encoded(prompt_ids=[10, 11, 12], target_ids=[20, 21, EOS]),
        Encoded(prompt_ids=[13], target_ids=[22, EOS]),
        Encoded(prompt_ids=[14, 15], target_ids=[EOS]),
    ]


def test_causal_collate_layout_and_masks(items):
    batch = collate(items, PAD, encoder_decoder=False)
    assert set(batch) == {"input_ids", "attention_mask", "loss_mask"}
    P = PAD
    assert rows(batch["input_ids"]) == [
        [10, 11, 12, 20, 21, EOS],
        [13, 22, EOS, P, P, P],
        [14, 15, EOS, P, P, P],
    ]
    assert rows(batch["attention_mask"]) == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]]
    # prompt 0, target (EOS included) 1, padding 0
    assert rows(batch["loss_mask"]) == [[0, 0, 0, 1, 1, 1], [0, 1, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0]]
    for key in batch:
        assert batch[key].dtype == torch.long


def test_causal_masks_select_exactly_the_targets(items):
    batch = collate(items, PAD, encoder_decoder=False)
    mask = batch["loss_mask"].bool()
    for i, item in enumerate(items):
        assert batch["input_ids"][i][mask[i]].tolist() == item.target_ids
    assert int(batch["loss_mask"].sum()) == sum(len(it.target_ids) for it in items)
    assert (batch["loss_mask"] <= batch["attention_mask"]).all()


def test_seq2seq_collate_layout_and_masks(items):
    batch = collate(items, PAD, encoder_decoder=True)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "loss_mask"}
    P = PAD
    assert rows(batch["input_ids"]) == [[10, 11, 12], [13, P, P], [14, 15, P]]
    assert rows(batch["attention_mask"]) == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert rows(batch["labels"]) == [[20, 21, EOS], [22, EOS, P], [EOS, P, P]]
    assert rows(batch["loss_mask"]) == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]


def test_pad_id_is_used_for_padding(items):
    pad = 99
    causal = collate(items, pad, encoder_decoder=False)
    assert rows(causal["input_ids"])[1][3:] == [pad, pad, pad]
    seq2seq = collate(items, pad, encoder_decoder=True)
    assert rows(seq2seq["labels"])[2] == [EOS, pad, pad]
    assert rows(seq2seq["input_ids"])[1] == [13, pad, pad]


def test_collate_prompts_left_pads_for_decoder_only(items):
    batch = collate_prompts(items, PAD, encoder_decoder=False)
    assert set(batch) == {"input_ids", "attention_mask"}
    P = PAD
    assert rows(batch["input_ids"]) == [[10, 11, 12], [P, P, 13], [P, 14, 15]]
    assert rows(batch["attention_mask"]) == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]


def test_collate_prompts_right_pads_for_encoder_decoder(items):
    batch = collate_prompts(items, PAD, encoder_decoder=True)
    P = PAD
    assert rows(batch["input_ids"]) == [[10, 11, 12], [13, P, P], [14, 15, P]]
    assert rows(batch["attention_mask"]) == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]


def test_single_item_batches_have_no_padding():
    item = Encoded([3, 4], [5, EOS])
    assert rows(collate([item], PAD, False)["attention_mask"]) == [[1, 1, 1, 1]]
    assert rows(collate_prompts([item], PAD, False)["input_ids"]) == [[3, 4]]


# ---------------------------------------------------------------------------
# encode with the real tiny tokenizer


def test_encode_short_examples_are_untouched(tiny_tokenizer):
    examples = [Example("Question: Ava has 3 pens.\nAnswer:", " #### 3"), Example("Q", "ok")]
    encoded = encode(tiny_tokenizer, examples, max_source_length=128, max_target_length=32)
    assert len(encoded) == 2
    for enc, ex in zip(encoded, examples):
        assert enc.prompt_ids == tiny_tokenizer(ex.source)["input_ids"]
        assert enc.target_ids == tiny_tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
        assert tiny_tokenizer.decode(enc.prompt_ids) == ex.source
        assert tiny_tokenizer.decode(enc.target_ids[:-1]) == ex.target
        assert tiny_tokenizer.eos_token_id not in enc.prompt_ids


def test_encode_empty_list(tiny_tokenizer):
    assert encode(tiny_tokenizer, [], 8, 8) == []


@pytest.mark.parametrize("max_source_length", [32, 64])
def test_encode_truncation_keeps_prompt_head_and_tail(tiny_tokenizer, max_source_length):
    body = " ".join(f"Ava has {i} pens." for i in range(60))
    source = f"Question: {body}\nAnswer:"
    full = tiny_tokenizer(source)["input_ids"]
    assert len(full) > 2 * max_source_length
    [enc] = encode(tiny_tokenizer, [Example(source, " 7")], max_source_length, max_target_length=16)
    prompt = enc.prompt_ids
    assert len(prompt) == max_source_length
    # head + tail of the original, with the middle cut out
    L = max_source_length
    cuts = [h for h in range(1, L) if prompt == full[:h] + full[h - L:]]
    assert cuts, "prompt is not a head of the original followed by its tail"
    assert any(L - h < L // 2 for h in cuts), "most of the budget goes to the head"
    # the template's cue survives, so the model still knows what to write
    assert tiny_tokenizer.decode(prompt).endswith("\nAnswer:")
    assert tiny_tokenizer.decode(prompt).startswith("Question: Ava has 0")


@pytest.mark.parametrize("max_target_length", [1, 2, 5])
def test_encode_target_truncation_ends_in_eos(tiny_tokenizer, max_target_length):
    target = " 12 + 30 = 42\n#### 42"
    full = tiny_tokenizer(target, add_special_tokens=False)["input_ids"]
    assert len(full) >= max_target_length
    [enc] = encode(tiny_tokenizer, [Example("Q", target)], max_source_length=8, max_target_length=max_target_length)
    assert len(enc.target_ids) == max_target_length
    assert enc.target_ids[-1] == tiny_tokenizer.eos_token_id
    assert enc.target_ids[:-1] == full[: max_target_length - 1]


def test_encode_then_collate_marks_target_tokens(tiny_tokenizer):
    examples = [Example("Question: 1 + 1?\nAnswer:", " #### 2"), Example("Question: 10 * 3?\nAnswer:", " 10 * 3 = 30\n#### 30")]
    encoded = encode(tiny_tokenizer, examples, 64, 32)
    pad = tiny_tokenizer.pad_token_id
    causal = collate(encoded, pad, encoder_decoder=False)
    seq2seq = collate(encoded, pad, encoder_decoder=True)
    for i, ex in enumerate(examples):
        marked = causal["input_ids"][i][causal["loss_mask"][i].bool()].tolist()
        assert tiny_tokenizer.decode(marked) == ex.target + tiny_tokenizer.eos_token
        labels = seq2seq["labels"][i][seq2seq["loss_mask"][i].bool()].tolist()
        assert labels == marked
        real = causal["input_ids"][i][causal["attention_mask"][i].bool()].tolist()
        assert tiny_tokenizer.decode(real) == ex.source + ex.target + tiny_tokenizer.eos_token


@pytest.mark.parametrize("max_source_length", [4, 5, 8, 17])
def test_encode_prompt_never_exceeds_its_budget(tiny_tokenizer, max_source_length):
    source = "Question: " + "Ava has 3 pens. " * 20 + "\nAnswer:"
    full = tiny_tokenizer(source)["input_ids"]
    [enc] = encode(tiny_tokenizer, [Example(source, " 3")], max_source_length, 8)
    assert len(enc.prompt_ids) == max_source_length
    assert enc.prompt_ids[0] == full[0] and enc.prompt_ids[-1] == full[-1]


@pytest.mark.parametrize("max_source_length", [1, 2, 3])
def test_encode_tiny_prompt_budget_is_respected(tiny_tokenizer, max_source_length):
    source = "Question: " + "Ava has 3 pens. " * 5 + "\nAnswer:"
    [enc] = encode(tiny_tokenizer, [Example(source, " 3")], max_source_length, 8)
    assert len(enc.prompt_ids) <= max_source_length

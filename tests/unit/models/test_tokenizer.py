"""distill.models.tokenizer: deterministic, cached byte-level BPE with single-digit tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import distill.models.tokenizer as tokmod
from distill.models.tokenizer import SPECIAL_TOKENS, build_tokenizer, tokenizer_key

VOCAB = 400


def test_same_texts_in_two_cache_dirs_give_identical_tokenizers(tiny_corpus, tmp_path):
    a = build_tokenizer(tiny_corpus, VOCAB, tmp_path / "a")
    b = build_tokenizer(tiny_corpus, VOCAB, tmp_path / "b")
    assert a.get_vocab() == b.get_vocab()
    assert len(a) == len(b)
    text = "Ava has 12 apples. Next, Ava gets 7 more apples."
    assert a(text)["input_ids"] == b(text)["input_ids"]
    # the two trainings produced byte-identical tokenizer files
    [file_a] = (tmp_path / "a" / "tokenizers").glob("*/tokenizer.json")
    [file_b] = (tmp_path / "b" / "tokenizers").glob("*/tokenizer.json")
    assert file_a.read_bytes() == file_b.read_bytes()


TRAIN_IN_SUBPROCESS = """
import hashlib, json, sys
from distill.models.tokenizer import _train
texts = json.load(sys.stdin)
print(hashlib.sha256(_train(texts, %d).to_str().encode()).hexdigest())
""" % VOCAB


def test_training_is_deterministic_across_processes(tiny_corpus, repo_root):
    """The cache is keyed by text only, so training must not depend on hash seeds or thread counts."""
    digests = set()
    for hash_seed, threads in (("1", "1"), ("2", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "RAYON_NUM_THREADS": threads}
        done = subprocess.run([sys.executable, "-c", TRAIN_IN_SUBPROCESS], input=json.dumps(tiny_corpus), cwd=repo_root,
                              env=env, capture_output=True, text=True, check=True)
        digests.add(done.stdout.strip())
    assert len(digests) == 1, digests


def test_second_call_loads_from_cache_without_retraining(tiny_corpus, tmp_path, monkeypatch):
    calls = []
    real_train = tokmod._train

    def counting_train(texts, vocab_size):
        calls.append(vocab_size)
        return real_train(texts, vocab_size)

    monkeypatch.setattr(tokmod, "_train", counting_train)
    first = build_tokenizer(tiny_corpus, VOCAB, tmp_path)
    assert calls == [VOCAB]

    def no_training(texts, vocab_size):
        raise AssertionError("retrained although the cache holds this tokenizer")

    monkeypatch.setattr(tokmod, "_train", no_training)
    second = build_tokenizer(tiny_corpus, VOCAB, tmp_path)
    assert second.get_vocab() == first.get_vocab()
    # a different corpus or vocab size is a different cache entry, so it trains
    with pytest.raises(AssertionError, match="retrained"):
        build_tokenizer(tiny_corpus + ["one more text"], VOCAB, tmp_path)
    with pytest.raises(AssertionError, match="retrained"):
        build_tokenizer(tiny_corpus, VOCAB + 1, tmp_path)


def test_cache_key_depends_on_texts_and_vocab_size():
    base = tokenizer_key(["ab", "c"], 100)
    assert tokenizer_key(["ab", "c"], 100) == base
    assert tokenizer_key(["ab", "c"], 101) != base
    assert tokenizer_key(["a", "bc"], 100) != base  # text boundaries count
    assert tokenizer_key(["c", "ab"], 100) != base


@pytest.mark.parametrize(
    "text",
    [
        "Ava has 12 apples.\nNext, Ava gets 345 more apples.\n#### 357",
        "  leading and trailing spaces  ",
        "tabs\tand\r\nwindows newlines\n\n",
        "Grüße aus München — «quotes» and emoji 🎉🧮",
        "日本語のテキストと中文",
        "never seen in training: zyxwvut QQQ ~`|^",
        "",
        "0.5 -3 1,000,000 3.14159",
    ],
)
def test_lossless_round_trip(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text
    assert tiny_tokenizer.unk_token_id not in ids, "byte-level BPE never needs <unk>"


def test_every_digit_is_its_own_token(tiny_tokenizer):
    vocab = tiny_tokenizer.get_vocab()
    digit_ids = []
    for d in "0123456789":
        ids = tiny_tokenizer(d, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"digit {d} is not a single token"
        assert tiny_tokenizer.decode(ids) == d
        assert d in vocab
        digit_ids.append(ids[0])
    assert len(set(digit_ids)) == 10
    # no merged multi-digit token exists in the vocabulary
    assert not [t for t in vocab if sum(ch.isdigit() for ch in t) > 1]


@pytest.mark.parametrize("number", ["10", "20", "357", "1234567890", "000", "x42y"])
def test_numbers_split_into_single_digits(tiny_tokenizer, number):
    ids = tiny_tokenizer(number, add_special_tokens=False)["input_ids"]
    pieces = [tiny_tokenizer.decode([i]) for i in ids]
    assert "".join(pieces) == number
    digits = [p for p in pieces if any(ch.isdigit() for ch in p)]
    assert digits == [ch for ch in number if ch.isdigit()], pieces


def test_digits_split_inside_arith_text(tiny_tokenizer):
    text = "Ben has 17 coins. Next, Ben gets 20 more coins."
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    digit_tokens = [tiny_tokenizer.decode([i]) for i in ids if any(c.isdigit() for c in tiny_tokenizer.decode([i]))]
    assert digit_tokens == ["1", "7", "2", "0"]


def test_special_tokens_exist(tiny_tokenizer):
    vocab = tiny_tokenizer.get_vocab()
    for attr, token in SPECIAL_TOKENS.items():
        assert getattr(tiny_tokenizer, attr) == token
        token_id = getattr(tiny_tokenizer, f"{attr}_id")
        assert token_id is not None and vocab[token] == token_id
        # a special token is one id, not spelled out byte by byte
        assert tiny_tokenizer(token, add_special_tokens=False)["input_ids"] == [token_id]
    ids = {tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id, tiny_tokenizer.unk_token_id, tiny_tokenizer.bos_token_id}
    assert len(ids) == 4
    assert tiny_tokenizer.pad_token_id != tiny_tokenizer.eos_token_id


def test_vocabulary_size_bounded_by_setting(tiny_tokenizer):
    assert 256 + len(SPECIAL_TOKENS) < len(tiny_tokenizer) <= 400

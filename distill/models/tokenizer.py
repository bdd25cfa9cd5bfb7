"""A small deterministic tokenizer for the tiny presets, built from task text and cached.

Byte-level BPE (lossless: any text round-trips, so BLEU/ROUGE see exactly
what the model wrote) with every digit its own token, which keeps arithmetic
learnable for small models. Teacher and student presets share one tokenizer:
the cache key depends only on the training text and the tokenizer settings.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

from distill.io import atomic_dir, build_once

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "bos_token": "<s>"}


def tokenizer_key(texts: list[str], vocab_size: int) -> str:
    digest = hashlib.sha256(f"bpe-bytelevel-digits:v1:{vocab_size}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def _train(texts: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def build_tokenizer(texts: list[str], vocab_size: int, cache_dir: str | Path):
    """The cached tokenizer for these texts, training it first if needed."""
    from transformers import PreTrainedTokenizerFast

    path = Path(cache_dir) / "tokenizers" / tokenizer_key(texts, vocab_size)

    def build() -> None:
        log.info("building tiny tokenizer (vocab %d) from %d texts -> %s", vocab_size, len(texts), path)
        fast = PreTrainedTokenizerFast(tokenizer_object=_train(texts, vocab_size), **SPECIAL_TOKENS)
        with atomic_dir(path) as tmp:
            fast.save_pretrained(tmp)

    build_once(path / "tokenizer.json", build)  # a second writer would replace the dir under a reader
    return PreTrainedTokenizerFast.from_pretrained(str(path))

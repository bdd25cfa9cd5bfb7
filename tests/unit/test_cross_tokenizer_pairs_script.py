"""scripts/cross_tokenizer_pairs.py: a tiktoken rank file becomes the same byte-level BPE, and the pair figures
count what the alignment and the vocabulary map say."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cross_tokenizer_pairs.py"


def _script():
    spec = importlib.util.spec_from_file_location("cross_tokenizer_pairs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_tiktoken_rank_file_becomes_the_same_bpe(tmp_path):
    """Every byte, then "ab" (rank 256), " c" (257), "abc" (258), "<|endoftext|>" appended: BPE must merge
    "ab" before "abc", and keep the rank as the id."""
    tokens = [bytes([b]) for b in range(256)] + [b"ab", b" c", b"abc"]
    path = tmp_path / "toy.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {rank}\n" for rank, t in enumerate(tokens)))
    tokenizer = _script().tiktoken_tokenizer(path, pattern=r" ?[a-z]+|\s+|[^\sa-z]+")
    assert tokenizer("abc")["input_ids"] == [258]
    assert tokenizer("ab c abd")["input_ids"] == [256, 257, 32, 256, ord("d")]  # " abd": " " then "ab" "d"
    assert tokenizer.decode(tokenizer("xab\u00e9 c")["input_ids"]) == "xab\u00e9 c"  # bytes of é round-trip
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.pad_token_id == tokenizer.eos_token_id == 259


def test_pair_figures_of_two_tiny_tokenizers():
    script = _script()
    texts, train = script.texts_for("arith", 50)
    small, large = script.load("tiny:300", train), script.load("tiny:400", train)
    same = script.figures(small, small, texts)
    assert same["aligned_fraction"] == 1.0 and same["one_to_one"] == len(small) and same["unmapped"] == 0
    other = script.figures(large, small, texts)  # every 400-token text starts with one of the 300's tokens
    assert 0.5 < other["aligned_fraction"] < 1.0
    assert other["one_to_one"] + other["projected"] + other["unmapped"] == len(large)

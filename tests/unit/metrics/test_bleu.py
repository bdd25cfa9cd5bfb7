"""BLEU: hand-computed cases and agreement with sacrebleu on real WMT14 data."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from distill.metrics import corpus_bleu, sentence_bleu

REF = "the cat sat on the mat"


def test_identical_is_100_and_disjoint_is_0():
    assert corpus_bleu([REF], [REF]) == pytest.approx(100.0)
    assert sentence_bleu(REF, [REF]) == pytest.approx(100.0)
    assert corpus_bleu(["alpha beta gamma delta"], [REF]) == 0.0
    assert sentence_bleu("alpha beta gamma delta", [REF]) == 0.0


def test_corpus_bleu_hand_computed():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat" (both 6 tokens, BP=1)
    # 1-grams: the(clipped 1), cat, sat, on, mat -> 5/6
    # 2-grams: the cat, cat sat, sat on (not on the, the mat) -> 3/5
    # 3-grams: the cat sat, cat sat on -> 2/4
    # 4-grams: the cat sat on -> 1/3
    # BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** 0.25 = 53.73
    got = corpus_bleu([REF], ["the cat sat on a mat"])
    assert got == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-9)
    assert round(got, 2) == 53.73


def test_corpus_bleu_brevity_penalty():
    # hyp "the cat sat on the" (5 tokens) is a prefix of the 6-token ref:
    # all precisions are 1, BP = exp(1 - 6/5) -> 81.87
    got = corpus_bleu(["the cat sat on the"], [REF])
    assert got == pytest.approx(100 * math.exp(1 - 6 / 5), abs=1e-9)


def test_13a_tokenizer_on_detokenized_text():
    # 13a splits off punctuation, so detokenized and pre-tokenized forms match.
    assert corpus_bleu(["Hello, world. It works!"], ["Hello , world . It works !"]) == pytest.approx(100.0)


def test_sentence_bleu_multiple_references():
    refs = ["a completely different sentence here", REF]
    assert sentence_bleu(REF, refs) == pytest.approx(100.0)
    assert sentence_bleu("the cat sat on a mat", refs) == pytest.approx(
        sacrebleu.sentence_bleu("the cat sat on a mat", refs).score, abs=1e-9
    )


def test_bleu_errors():
    with pytest.raises(TypeError):
        sentence_bleu(REF, REF)
    with pytest.raises(ValueError):
        sentence_bleu(REF, [])
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        corpus_bleu([REF], [REF, REF])
    with pytest.raises(ValueError, match="at least one"):
        corpus_bleu([], [])


def _drop_every_fourth_word(text: str) -> str:
    """Deterministic degraded 'translation': remove every 4th word."""
    return " ".join(w for i, w in enumerate(text.split()) if i % 4 != 3)


def test_bleu_matches_sacrebleu_on_wmt(wmt_rows):
    refs = [row["de"] for row in wmt_rows]
    preds = [_drop_every_fourth_word(r) for r in refs]
    expected = sacrebleu.corpus_bleu(preds, [refs]).score
    got = corpus_bleu(preds, refs)
    assert got == pytest.approx(expected, abs=1e-9)
    assert 0 < got < 100
    for p, r in zip(preds[:10], refs[:10]):
        assert sentence_bleu(p, [r]) == pytest.approx(sacrebleu.sentence_bleu(p, [r]).score, abs=1e-9)


def test_bleu_source_copy_scores_low_on_wmt(wmt_rows):
    # Copying the English source is a poor German translation.
    refs = [row["de"] for row in wmt_rows]
    preds = [row["en"] for row in wmt_rows]
    got = corpus_bleu(preds, refs)
    assert got == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)
    assert got < corpus_bleu([_drop_every_fourth_word(r) for r in refs], refs)

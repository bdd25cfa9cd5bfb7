"""ROUGE: hand-computed cases and agreement with rouge_score on real XSum data."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from distill.metrics import rouge, rouge_fmeasures, rouge_per_example
from distill.metrics.rouge import ROUGE_TYPES, _scorer


def test_rouge_hand_computed_prefix():
    # pred "the cat sat" vs ref "the cat sat on the mat"
    # ROUGE-1: overlap 3; P=3/3, R=3/6 -> F=2*1*0.5/1.5=2/3
    # ROUGE-2: pred bigrams {the cat, cat sat}=2, ref bigrams=5, overlap 2;
    #          P=1, R=2/5 -> F=2*0.4/1.4=4/7
    # ROUGE-L: LCS "the cat sat"=3; P=1, R=1/2 -> F=2/3
    got = rouge(["the cat sat"], ["the cat sat on the mat"])
    assert got["rouge1"] == pytest.approx(200 / 3, abs=1e-9)
    assert got["rouge2"] == pytest.approx(400 / 7, abs=1e-9)
    assert got["rougeL"] == pytest.approx(200 / 3, abs=1e-9)
    assert round(got["rouge1"], 2) == 66.67


def test_rouge_hand_computed_reordered():
    # pred "mat the sat cat" vs ref "the cat sat on the mat"
    # ROUGE-1: all 4 pred unigrams occur in ref; P=1, R=4/6 -> F=0.8
    # ROUGE-2: pred bigrams {mat the, the sat, sat cat} none in ref -> 0
    # ROUGE-L: LCS=2 ("the sat" or "the cat"); P=2/4, R=2/6 -> F=2/5
    got = rouge(["mat the sat cat"], ["the cat sat on the mat"])
    assert got == pytest.approx({"rouge1": 80.0, "rouge2": 0.0, "rougeL": 40.0}, abs=1e-9)


def test_rouge_identical_and_disjoint():
    assert rouge(["a quick test"], ["a quick test"]) == pytest.approx(
        {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    )
    assert rouge(["alpha beta"], ["gamma delta"]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_rouge_uses_stemmer():
    # Porter stemming maps running->run and cats->cat, so these match fully;
    # an unstemmed scorer gives 0, proving the stemmer is on.
    preds, refs = ["running cats"], ["run cat"]
    assert rouge(preds, refs) == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})
    plain = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
    assert plain.score(refs[0], preds[0])["rouge1"].fmeasure == 0.0


def test_rouge_ignores_case_and_punctuation():
    assert rouge(["The Cat, sat!"], ["the cat sat"])["rouge2"] == pytest.approx(100.0)


def test_rouge_mean_over_examples():
    # Example 1 is the prefix case (R1 = 2/3), example 2 is identical (R1 = 1).
    preds = ["the cat sat", "hello world"]
    refs = ["the cat sat on the mat", "hello world"]
    per = rouge_per_example(preds, refs)
    assert [set(p) for p in per] == [set(ROUGE_TYPES)] * 2
    assert per[0]["rouge1"] == pytest.approx(200 / 3)
    assert per[1]["rouge1"] == pytest.approx(100.0)
    assert rouge(preds, refs)["rouge1"] == pytest.approx((200 / 3 + 100) / 2)
    raw = rouge_fmeasures(preds, refs)
    assert raw[0]["rouge2"] == pytest.approx(4 / 7)


def test_rouge_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        rouge([], [])


def test_scorer_is_cached():
    assert _scorer() is _scorer()


def _lead_sentence(document: str) -> str:
    """Lead baseline: first line/sentence of the document."""
    first_line = document.strip().split("\n")[0]
    return first_line.split(". ")[0]


def test_rouge_matches_rouge_score_on_xsum(xsum_rows):
    refs = [row["summary"] for row in xsum_rows]
    preds = [_lead_sentence(row["document"]) for row in xsum_rows]
    direct = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected_per = [direct.score(r, p) for p, r in zip(preds, refs)]

    per = rouge_per_example(preds, refs)
    for got, exp in zip(per, expected_per):
        for key in ROUGE_TYPES:
            assert got[key] == pytest.approx(100 * exp[key].fmeasure, abs=1e-9)

    corpus = rouge(preds, refs)
    for key in ROUGE_TYPES:
        mean = 100 * sum(e[key].fmeasure for e in expected_per) / len(expected_per)
        assert corpus[key] == pytest.approx(mean, abs=1e-9)
    # The lead baseline is a real, imperfect summary: strictly between 0 and 100.
    assert 0 < corpus["rouge2"] < corpus["rouge1"] < 100


def test_rouge_reference_against_itself_is_100(xsum_rows):
    refs = [row["summary"] for row in xsum_rows]
    assert rouge(refs, refs) == pytest.approx({k: 100.0 for k in ROUGE_TYPES})

"""Several correct outputs per prompt: multi-reference scores, Distinct-n and pass@k on hand-computed values."""

from __future__ import annotations

import math

import pytest
import sacrebleu

from distill.metrics import distinct_n, pass_at_k, score, sequence_rewards

LONG = ["the small red dog runs quickly into the big green park today",
        "an old grey cat sleeps on the warm roof of the quiet house"]


def test_bleu_counts_a_match_with_any_listed_reference():
    other = "an old cat sleeps on a roof"
    assert score("bleu", LONG, [[LONG[0], "x y z"], [other, LONG[1]]])["bleu"] == pytest.approx(100.0)
    single = score("bleu", LONG, [LONG[0], other])["bleu"]
    assert single < 100.0 and single == pytest.approx(sacrebleu.corpus_bleu(LONG, [[LONG[0], other]]).score)


def test_rouge_takes_the_best_reference_and_accuracy_any_reference():
    rouge = score("rouge", ["a b c d"], [["x y z", "a b c d"]])
    assert rouge["rouge1"] == pytest.approx(100.0)
    assert score("accuracy", ["#### 4"], [["#### 3", "#### 4"]])["accuracy"] == 100.0
    assert sequence_rewards("accuracy", ["#### 4", "#### 5"], [["#### 3", "#### 4"], "#### 4"]) == [1.0, 0.0]
    assert sequence_rewards("bleu", [LONG[1]], [[LONG[0], LONG[1]]])[0] == pytest.approx(1.0)


def test_distinct_n_by_hand():
    assert distinct_n([["a b", "a c"]], 1) == pytest.approx(3 / 4)  # a, b, a, c: 3 distinct of 4
    assert distinct_n([["a b", "a b"]], 2) == pytest.approx(1 / 2)
    assert distinct_n([["a b c", "d e f"], ["x", "x"]], 2) == pytest.approx(1.0)  # the second prompt has no bigram
    assert distinct_n([["x"]], 2) == 0.0


def test_pass_at_k_is_the_unbiased_estimator():
    # n = 3 samples, c = 1 correct: pass@1 = 1/3, pass@2 = 1 − C(2,2)/C(3,2) = 2/3, pass@3 = 1
    assert pass_at_k([[True, False, False]], 1) == pytest.approx(100 / 3)
    assert pass_at_k([[True, False, False]], 2) == pytest.approx(200 / 3)
    assert pass_at_k([[True, False, False], [False, False, False]], 3) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="at least k samples"):
        pass_at_k([[True]], 2)
    assert not math.isnan(pass_at_k([[False, False]], 2))

"""Self-BLEU over k samples per prompt."""

from __future__ import annotations

import pytest
import sacrebleu

from distill.metrics import self_bleu


def test_identical_samples_score_100():
    samples = [["the cat sat on the mat"] * 3, ["a dog barked loudly at night"] * 2]
    assert self_bleu(samples) == pytest.approx(100.0)


def test_fully_different_samples_score_0():
    samples = [["alpha beta gamma", "delta epsilon zeta", "eta theta iota"]]
    assert self_bleu(samples) == pytest.approx(0.0, abs=1e-9)


def test_average_over_prompts():
    # One prompt of identical samples (100) and one of disjoint samples (0).
    samples = [["same words here", "same words here"], ["one two three", "four five six"]]
    assert self_bleu(samples) == pytest.approx(50.0)


def test_matches_definition_with_sacrebleu():
    group = ["the cat sat on the mat", "the cat sat on a mat", "a cat was on the mat"]
    expected = sum(
        sacrebleu.sentence_bleu(s, group[:i] + group[i + 1:]).score for i, s in enumerate(group)
    ) / 3
    got = self_bleu([group])
    assert got == pytest.approx(expected, abs=1e-9)
    assert 0 < got < 100


def test_rejects_too_few_samples():
    with pytest.raises(ValueError, match="k>=2 samples per prompt; prompt 1 has 1"):
        self_bleu([["a b", "a c"], ["only one"]])
    with pytest.raises(ValueError, match="bare string"):
        self_bleu(["not a list of samples"])
    with pytest.raises(ValueError, match="at least one prompt"):
        self_bleu([])

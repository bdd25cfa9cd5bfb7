"""Dispatch by metric name (score) and per-example RL rewards (sequence_rewards)."""

from __future__ import annotations

import pytest

from distill.metrics import (
    METRIC_KEYS,
    accuracy,
    corpus_bleu,
    rouge,
    score,
    sequence_rewards,
)

PREDS = {
    "rouge": ["the cat sat", "hello world"],
    "bleu": ["the cat sat on the mat", "alpha beta gamma delta"],
    "accuracy": ["#### 18", "The answer is 7."],
}
REFS = {
    "rouge": ["the cat sat on the mat", "hello world"],
    "bleu": ["the cat sat on the mat", "the dog ran in the park"],
    "accuracy": ["#### 18", "#### 8"],
}


def test_metric_keys():
    assert METRIC_KEYS == {
        "rouge": ("rouge1", "rouge2", "rougeL"),
        "bleu": ("bleu",),
        "accuracy": ("accuracy",),
    }


@pytest.mark.parametrize("metric", sorted(METRIC_KEYS))
def test_score_keys_match_metric_keys(metric):
    assert tuple(score(metric, PREDS[metric], REFS[metric])) == METRIC_KEYS[metric]


def test_score_dispatches_to_implementations():
    assert score("rouge", PREDS["rouge"], REFS["rouge"]) == rouge(PREDS["rouge"], REFS["rouge"])
    assert score("bleu", PREDS["bleu"], REFS["bleu"]) == {
        "bleu": corpus_bleu(PREDS["bleu"], REFS["bleu"])
    }
    assert score("accuracy", PREDS["accuracy"], REFS["accuracy"]) == {"accuracy": 50.0}
    assert accuracy(PREDS["accuracy"], REFS["accuracy"]) == 50.0


@pytest.mark.parametrize("fn", [score, sequence_rewards])
def test_validation_errors(fn):
    with pytest.raises(ValueError, match=r"unknown metric 'meteor'.*accuracy.*bleu.*rouge"):
        fn("meteor", ["a"], ["a"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        fn("rouge", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        fn("bleu", [], [])


def test_sequence_rewards_rouge_is_rouge2_fmeasure():
    # Example 1: ROUGE-2 F = 4/7 (see test_rouge); example 2 identical -> 1.
    rewards = sequence_rewards("rouge", PREDS["rouge"], REFS["rouge"])
    assert rewards == pytest.approx([4 / 7, 1.0])


def test_sequence_rewards_bleu_is_sentence_bleu_scaled():
    rewards = sequence_rewards("bleu", PREDS["bleu"], REFS["bleu"])
    assert rewards == pytest.approx([1.0, 0.0])
    partial = sequence_rewards("bleu", ["the cat sat on a mat"], ["the cat sat on the mat"])[0]
    assert 0.0 < partial < 1.0


def test_sequence_rewards_accuracy_is_binary():
    rewards = sequence_rewards("accuracy", PREDS["accuracy"], REFS["accuracy"])
    assert rewards == [1.0, 0.0]
    assert all(type(r) is float for r in rewards)


def test_item_scores_by_hand():
    from distill.metrics import item_scores

    assert item_scores("accuracy", PREDS["accuracy"], REFS["accuracy"]) == [{"correct": 100.0}, {"correct": 0.0}]
    assert item_scores("accuracy", ["#### 8"], [["#### 7", "#### 8"]]) == [{"correct": 100.0}]  # any listed answer
    bleu = item_scores("bleu", PREDS["bleu"], REFS["bleu"])
    assert bleu[0] == {"bleu": pytest.approx(100.0)} and bleu[1]["bleu"] == pytest.approx(0.0)  # exact / no overlap
    rouge_items = item_scores("rouge", PREDS["rouge"], REFS["rouge"])
    # "the cat sat" against 6 reference words: unigram P = 1, R = 1/2, F = 2/3; bigrams P = 1, R = 2/5, F = 4/7
    assert rouge_items[0]["rouge1"] == pytest.approx(200 / 3) and rouge_items[0]["rouge2"] == pytest.approx(400 / 7)
    assert rouge_items[1] == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}

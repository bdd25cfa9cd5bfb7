"""Evaluation metrics: pure functions on strings, dispatched by metric name.

``score`` gives the corpus-level numbers reported per task; ``sequence_rewards``
gives per-example rewards in [0, 1] for RL-style distillation methods.
"""

from __future__ import annotations

from distill.metrics.bleu import corpus_bleu, sentence_bleu
from distill.metrics.diversity import distinct_n, self_bleu
from distill.metrics.gsm8k import accuracy, extract_answer, is_correct
from distill.metrics.rouge import rouge, rouge_fmeasures, rouge_per_example

METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "rouge": ("rouge1", "rouge2", "rougeL"),
    "bleu": ("bleu",),
    "accuracy": ("accuracy",),
}

__all__ = [
    "METRIC_KEYS",
    "accuracy",
    "corpus_bleu",
    "distinct_n",
    "extract_answer",
    "is_correct",
    "item_scores",
    "pass_at_k",
    "rouge",
    "rouge_fmeasures",
    "rouge_per_example",
    "score",
    "self_bleu",
    "sentence_bleu",
    "sequence_rewards",
]


def _validate(metric: str, predictions: list[str], references: list[str]) -> None:
    """Fail early with a clear message rather than deep inside a scorer."""
    if metric not in METRIC_KEYS:
        raise ValueError(
            f"unknown metric {metric!r}; expected one of {sorted(METRIC_KEYS)}"
        )
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references"
        )
    if not predictions:
        raise ValueError(f"cannot score {metric!r} on an empty list of predictions")


def score(metric: str, predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus-level scores (0-100) keyed as in ``METRIC_KEYS[metric]``."""
    _validate(metric, predictions, references)
    if metric == "rouge":
        return rouge(predictions, references)
    if metric == "bleu":
        return {"bleu": corpus_bleu(predictions, references)}
    return {"accuracy": accuracy(predictions, references)}


def sequence_rewards(
    metric: str, predictions: list[str], references: list[str]
) -> list[float]:
    """Per-example rewards in [0, 1]: ROUGE-2 F, sentence BLEU/100, or 0/1 correctness; a reference may be a
    list of every correct output."""
    _validate(metric, predictions, references)
    lists = [[r] if isinstance(r, str) else list(r) for r in references]
    if metric == "rouge":
        return [ex["rouge2"] for ex in rouge_fmeasures(predictions, references)]
    if metric == "bleu":
        return [sentence_bleu(p, refs) / 100.0 for p, refs in zip(predictions, lists)]
    return [float(any(is_correct(p, r) for r in refs)) for p, refs in zip(predictions, lists)]


def item_scores(metric: str, predictions: list[str], references: list) -> list[dict[str, float]]:
    """Each output's own score (0-100), for finding which examples a method got right without re-scoring:
    ``correct`` (accuracy; any listed reference), sentence ``bleu``, or ``rouge1/2/L`` F-measures."""
    _validate(metric, predictions, references)
    lists = [[r] if isinstance(r, str) else list(r) for r in references]
    if metric == "rouge":
        return rouge_per_example(predictions, references)
    if metric == "bleu":
        return [{"bleu": sentence_bleu(p, refs)} for p, refs in zip(predictions, lists)]
    return [{"correct": 100.0 * any(is_correct(p, r) for r in refs)} for p, refs in zip(predictions, lists)]


def pass_at_k(correct: list[list[bool]], k: int) -> float:
    """pass@k (0-100): the chance that at least one of k samples is correct, estimated without bias from
    n >= k samples per prompt as 1 − C(n−c, k)/C(n, k) (Chen et al., 2021), averaged over prompts."""
    from math import comb

    if not correct:
        raise ValueError("pass_at_k needs at least one prompt")
    total = 0.0
    for group in correct:
        n, c = len(group), sum(map(bool, group))
        if n < k:
            raise ValueError(f"pass_at_k with k={k} needs at least k samples per prompt, got {n}")
        total += 1.0 - comb(n - c, k) / comb(n, k)
    return 100.0 * total / len(correct)

"""Evaluation metrics: pure functions on strings, dispatched by metric name.

``score`` gives the corpus-level numbers reported per task; ``sequence_rewards``
gives per-example rewards in [0, 1] for RL-style distillation methods.
"""

from __future__ import annotations

from distill.metrics.bleu import corpus_bleu, sentence_bleu
from distill.metrics.diversity import self_bleu
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
    "extract_answer",
    "is_correct",
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
    """Per-example rewards in [0, 1]: ROUGE-2 F, sentence BLEU/100, or 0/1 correctness."""
    _validate(metric, predictions, references)
    if metric == "rouge":
        return [ex["rouge2"] for ex in rouge_fmeasures(predictions, references)]
    if metric == "bleu":
        return [sentence_bleu(p, [r]) / 100.0 for p, r in zip(predictions, references)]
    return [float(is_correct(p, r)) for p, r in zip(predictions, references)]

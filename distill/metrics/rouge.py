"""ROUGE for summarisation (XSum), via Google's ``rouge_score`` package.

Scores are the F-measure with Porter stemming, as in the product spec, so
numbers are comparable with published XSum results.
"""

from __future__ import annotations

import functools

from rouge_score import rouge_scorer

ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL")


@functools.lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    """Build the scorer once; construction loads the stemmer and tokenizer."""
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge_fmeasures(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """Per-example F-measures in [0, 1] (unscaled; used for RL rewards)."""
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references"
        )
    scorer = _scorer()
    out = []
    for pred, ref in zip(predictions, references):
        # rouge_score's signature is score(target, prediction); several references: the best of each type.
        scores = scorer.score(ref, pred) if isinstance(ref, str) else scorer.score_multi(list(ref), pred)
        out.append({key: scores[key].fmeasure for key in ROUGE_TYPES})
    return out


def rouge_per_example(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """Per-example F-measures ×100, for per-example reports and error analysis."""
    return [
        {key: 100.0 * value for key, value in example.items()}
        for example in rouge_fmeasures(predictions, references)
    ]


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus ROUGE: mean per-example F-measure ×100 for rouge1/rouge2/rougeL."""
    if not predictions:
        raise ValueError("rouge needs at least one prediction/reference pair")
    per_example = rouge_fmeasures(predictions, references)
    n = len(per_example)
    return {
        key: 100.0 * sum(example[key] for example in per_example) / n
        for key in ROUGE_TYPES
    }

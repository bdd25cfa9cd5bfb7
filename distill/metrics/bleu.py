"""BLEU for translation (WMT14 en-de), via ``sacrebleu``.

sacrebleu is used directly on detokenized text with its default 13a
tokenizer, so scores match the standard reported WMT numbers.
"""

from __future__ import annotations

import functools

import sacrebleu
from sacrebleu.metrics import BLEU


@functools.lru_cache(maxsize=1)
def _sentence_metric() -> BLEU:
    """Sentence-level BLEU with effective order, as ``sacrebleu.sentence_bleu``."""
    return BLEU(effective_order=True)


def corpus_bleu(predictions: list[str], references: list[str] | list[list[str]]) -> float:
    """Corpus BLEU (0-100, as sacrebleu reports). Each reference is a string, or a list of every correct
    rendering (multi-reference BLEU: n-gram matches against any of them, the closest length for the brevity
    penalty; sacrebleu takes reference streams, padded with None where a prediction has fewer)."""
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references"
        )
    if not predictions:
        raise ValueError("corpus_bleu needs at least one prediction/reference pair")
    lists = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(not refs for refs in lists):
        raise ValueError("every prediction needs at least one reference")
    width = max(len(refs) for refs in lists)
    streams = [[refs[i] if i < len(refs) else None for refs in lists] for i in range(width)]
    return float(sacrebleu.corpus_bleu(predictions, streams).score)


def sentence_bleu(prediction: str, references: list[str]) -> float:
    """Smoothed sentence BLEU (0-100) of one prediction against its references."""
    if isinstance(references, str):
        raise TypeError("references must be a list of strings, not a single string")
    if not references:
        raise ValueError("sentence_bleu needs at least one reference")
    return float(_sentence_metric().sentence_score(prediction, list(references)).score)

"""Diversity of multiple samples per prompt: Self-BLEU and Distinct-n.

Lower Self-BLEU means more diverse samples; 100 means every sample for a
prompt is identical. Distinct-n is the share of a prompt's sample n-grams
(whitespace tokens) that are distinct, averaged over prompts: 1 when no
n-gram repeats across the k samples, 1/k when all k samples are the same.
Both are used to detect mode collapse in distilled students.
"""

from __future__ import annotations

from distill.metrics.bleu import sentence_bleu


def _prompt_self_bleu(samples: list[str]) -> float:
    """Mean over samples of each sample's BLEU against the other k-1 samples."""
    scores = [
        sentence_bleu(sample, samples[:i] + samples[i + 1:])
        for i, sample in enumerate(samples)
    ]
    return sum(scores) / len(scores)


def self_bleu(samples: list[list[str]]) -> float:
    """Self-BLEU (0-100) averaged over prompts; ``samples[p]`` holds prompt p's k samples."""
    if not samples:
        raise ValueError("self_bleu needs at least one prompt")
    for p, group in enumerate(samples):
        if isinstance(group, str) or len(group) < 2:
            raise ValueError(
                f"self_bleu needs k>=2 samples per prompt; prompt {p} has "
                f"{'a bare string' if isinstance(group, str) else len(group)}"
            )
    per_prompt = [_prompt_self_bleu(list(group)) for group in samples]
    return sum(per_prompt) / len(per_prompt)


def distinct_n(samples: list[list[str]], n: int) -> float:
    """Distinct-n (0-1) averaged over prompts (module docstring); a prompt whose samples hold no n-gram is
    skipped, 0 if none has one."""
    if n < 1:
        raise ValueError(f"distinct_n needs n >= 1, got {n}")
    ratios = []
    for group in samples:
        grams = [tuple(tokens[i:i + n]) for text in group for tokens in [text.split()]
                 for i in range(len(tokens) - n + 1)]
        if grams:
            ratios.append(len(set(grams)) / len(grams))
    return sum(ratios) / len(ratios) if ratios else 0.0

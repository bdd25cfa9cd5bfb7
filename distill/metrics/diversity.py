"""Diversity of multiple samples per prompt (self-BLEU).

Lower self-BLEU means more diverse samples; 100 means every sample for a
prompt is identical. Used to detect mode collapse in distilled students.
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

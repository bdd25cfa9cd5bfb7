"""Batched generation of texts for evaluation (greedy, beam, sampling)."""

from __future__ import annotations

import torch

from distill.data.collate import Encoded, collate_prompts
from distill.models.generation import Decoding, cut_at_eos, generate_ids
from distill.train.progress import progress_bar


def generate_texts(model, tokenizer, items: list[Encoded], decoding: Decoding, batch_size: int,
                   device: torch.device, progress: bool) -> list[list[str]]:
    """``num_samples`` decoded outputs per prompt, in input order."""
    model.eval()
    encoder_decoder = bool(model.config.is_encoder_decoder)
    results: list[list[str]] = []
    with progress_bar(progress, total=len(items), description=f"generate {decoding.name}", unit="prompt") as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            prompts = {k: v.to(device) for k, v in collate_prompts(chunk, tokenizer.pad_token_id, encoder_decoder).items()}
            new = generate_ids(model, prompts, decoding, tokenizer.eos_token_id, tokenizer.pad_token_id)
            rows = cut_at_eos(new, tokenizer.eos_token_id)
            texts = [t.strip() for t in tokenizer.batch_decode(rows, skip_special_tokens=True)]
            k = decoding.num_samples
            results.extend(texts[i * k : (i + 1) * k] for i in range(len(chunk)))
            bar.advance(len(chunk))
    return results

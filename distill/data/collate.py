"""Tokenisation and batching for both architectures.

A batch is a dict of tensors with one convention for loss masks:
``loss_mask`` is 1 on output tokens (EOS included) and 0 on prompt and
padding, aligned with the tokens it marks (``input_ids`` for decoder-only,
``labels`` for encoder-decoder). ``distill.models.forward`` turns it into the
target-aligned view every loss uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.data.tasks import Example


@dataclass(frozen=True)
class Encoded:
    prompt_ids: list[int]
    target_ids: list[int]  # ends with EOS unless truncated away by max_target_length
    index: int = 0  # position in the training set: names the example's random stream (keyed_random)
    # The dataset's reference text: sequence rewards compare with it even when a method replaced
    # target_ids with teacher outputs (docs/design.md, Methods).
    reference: str | None = None


def _fit_prompt(ids: list[int], max_source_length: int) -> list[int]:
    if len(ids) <= max_source_length:
        return ids
    # Keep the head of the prompt but always its last tokens too: they carry the
    # template's cue ("Answer:", "Summary:") that tells the model what to write.
    tail = min(8, max_source_length // 4)
    return ids[: max_source_length - tail] + (ids[-tail:] if tail else [])


def encode(tokenizer, examples: list[Example], max_source_length: int, max_target_length: int) -> list[Encoded]:
    """Token ids of prompts and targets (batched through the fast tokenizer)."""
    if not examples:
        return []
    eos = tokenizer.eos_token_id
    prompts = tokenizer([e.source for e in examples])["input_ids"]
    targets = tokenizer([e.target for e in examples], add_special_tokens=False)["input_ids"]
    return [Encoded(_fit_prompt(p, max_source_length), t[: max_target_length - 1] + [eos], i, e.target)
            for i, (p, t, e) in enumerate(zip(prompts, targets, examples))]


def collate(items: list[Encoded], pad_id: int, encoder_decoder: bool) -> dict[str, torch.Tensor]:
    if encoder_decoder:
        return _collate_seq2seq(items, pad_id)
    return _collate_causal(items, pad_id)


def _pad(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            start = width - len(row) if left else 0
            out[i, start : start + len(row)] = torch.tensor(row)
    return out


def _collate_causal(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    sequences = [it.prompt_ids + it.target_ids for it in items]
    input_ids = _pad(sequences, pad_id)
    attention_mask = _pad([[1] * len(s) for s in sequences], 0)
    loss_mask = _pad([[0] * len(it.prompt_ids) + [1] * len(it.target_ids) for it in items], 0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def _collate_seq2seq(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    return {
        "input_ids": _pad([it.prompt_ids for it in items], pad_id),
        "attention_mask": _pad([[1] * len(it.prompt_ids) for it in items], 0),
        "labels": _pad([it.target_ids for it in items], pad_id),
        "loss_mask": _pad([[1] * len(it.target_ids) for it in items], 0),
    }


def collate_prompts(items: list[Encoded], pad_id: int, encoder_decoder: bool) -> dict[str, torch.Tensor]:
    """Prompts only, for generation: left-padded for decoder-only so new tokens line up."""
    prompts = [it.prompt_ids for it in items]
    left = not encoder_decoder
    return {
        "input_ids": _pad(prompts, pad_id, left=left),
        "attention_mask": _pad([[1] * len(p) for p in prompts], 0, left=left),
    }


def generated_batch(prompts: dict[str, torch.Tensor], new: torch.Tensor, eos_id: int, pad_id: int,
                    encoder_decoder: bool) -> dict[str, torch.Tensor]:
    """The training batch for prompts + freshly generated outputs, built on the device (no host round-trip).

    Decoder-only rows keep the prompts' left padding, so every output starts
    at the same column (positions follow the attention mask, see
    ``distill.models.forward``). Each output runs up to and including its first EOS.
    """
    from distill.models.sampling import generated_mask

    mask = generated_mask(new, eos_id).long()
    outputs = torch.where(mask.bool(), new, torch.full_like(new, pad_id))
    if encoder_decoder:
        return {"input_ids": prompts["input_ids"], "attention_mask": prompts["attention_mask"], "labels": outputs,
                "loss_mask": mask, "generated": outputs}
    return {"input_ids": torch.cat([prompts["input_ids"], outputs], 1),
            "attention_mask": torch.cat([prompts["attention_mask"], mask], 1),
            "loss_mask": torch.cat([torch.zeros_like(prompts["attention_mask"]), mask], 1), "generated": outputs}

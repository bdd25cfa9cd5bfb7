"""Batched generation (greedy, beam, sampling) for evaluation and on-policy training."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.data.collate import Encoded, collate_prompts
from distill.errors import ConfigError
from distill.train.progress import progress_bar

STRATEGIES = ("greedy", "beam", "sample")


@dataclass(frozen=True)
class Decoding:
    """One decoding setting; ``num_samples`` outputs per prompt (sampling only)."""

    strategy: str
    max_new_tokens: int
    num_beams: int = 1
    sampling_temperature: float | None = None
    num_samples: int = 1

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"decoding strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        if self.strategy == "sample" and not (self.sampling_temperature and self.sampling_temperature > 0):
            raise ConfigError(f"sampling needs sampling_temperature > 0, got {self.sampling_temperature}")
        if self.strategy != "sample" and self.num_samples != 1:
            raise ConfigError("num_samples > 1 needs strategy=sample")
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ConfigError(f"max_new_tokens and num_beams must be >= 1, got {self.max_new_tokens}, {self.num_beams}")

    @property
    def name(self) -> str:
        if self.strategy == "sample":
            return f"sample_t{self.sampling_temperature:g}_k{self.num_samples}"
        return "greedy" if self.strategy == "greedy" else f"beam{self.num_beams}"

    def generate_kwargs(self) -> dict:
        if self.strategy == "sample":
            # Pure temperature sampling: no top-k / top-p truncation from a model's generation_config.
            return {"do_sample": True, "temperature": self.sampling_temperature, "top_k": 0, "top_p": 1.0,
                    "num_return_sequences": self.num_samples, "num_beams": 1}
        return {"do_sample": False, "num_beams": self.num_beams, "num_return_sequences": 1,
                "early_stopping": self.strategy == "beam"}


@torch.no_grad()
def generate_ids(model, prompts: dict[str, torch.Tensor], decoding: Decoding, eos_id: int, pad_id: int) -> torch.Tensor:
    """New tokens only, [B * num_samples, T_new], padded with ``pad_id`` after EOS (KV cache on)."""
    out = model.generate(**prompts, max_new_tokens=decoding.max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id,
                         use_cache=True, **decoding.generate_kwargs())
    if not model.config.is_encoder_decoder:
        out = out[:, prompts["input_ids"].size(1):]
    else:
        out = out[:, 1:]  # drop the decoder start token
    return out


def generate_texts(model, tokenizer, items: list[Encoded], decoding: Decoding, batch_size: int,
                   device: torch.device, progress: bool) -> list[list[str]]:
    """``num_samples`` decoded outputs per prompt, in input order."""
    model.eval()
    encoder_decoder = bool(model.config.is_encoder_decoder)
    results: list[list[str]] = []
    with progress_bar(progress, total=len(items), description=f"generate {decoding.name}") as advance:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            prompts = {k: v.to(device) for k, v in collate_prompts(chunk, tokenizer.pad_token_id, encoder_decoder).items()}
            new = generate_ids(model, prompts, decoding, tokenizer.eos_token_id, tokenizer.pad_token_id)
            texts = [t.strip() for t in tokenizer.batch_decode(_cut_at_eos(new, tokenizer.eos_token_id), skip_special_tokens=True)]
            k = decoding.num_samples
            results.extend(texts[i * k : (i + 1) * k] for i in range(len(chunk)))
            for _ in chunk:
                advance()
    return results


def _cut_at_eos(ids: torch.Tensor, eos_id: int) -> list[list[int]]:
    rows = []
    for row in ids.tolist():
        rows.append(row[: row.index(eos_id)] if eos_id in row else row)
    return rows

"""Decoding settings and generation with the KV cache, shared by evaluation and on-policy training."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distill.errors import ConfigError
from distill.fields import check_arguments, check_choice, check_count, check_range
from distill.models.sampling import decode

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
        if self.strategy == "sample" and not (self.sampling_temperature and self.sampling_temperature > 0
                                              and math.isfinite(self.sampling_temperature)):
            raise ConfigError(f"sampling needs sampling_temperature > 0, got {self.sampling_temperature}")
        if self.strategy != "sample" and self.num_samples != 1:
            raise ConfigError("num_samples > 1 needs strategy=sample")
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ConfigError(f"max_new_tokens and num_beams must be >= 1, got {self.max_new_tokens}, {self.num_beams}")

    @classmethod
    def from_config(cls, values: dict, section: str) -> "Decoding":
        """A decoding from a config block (``teacher_generation.decoding``, ``task.decoding``); errors name
        ``section.key``."""
        check_arguments(cls, values, section)
        check_choice(section, "strategy", values["strategy"], STRATEGIES)
        check_count(section, "max_new_tokens", values["max_new_tokens"])
        check_count(section, "num_beams", values.get("num_beams", 1))
        check_count(section, "num_samples", values.get("num_samples", 1))
        temperature = values.get("sampling_temperature")
        if values["strategy"] == "sample" or temperature is not None:
            check_range(section, "sampling_temperature", temperature, 0.0, low_open=True)
        if values["strategy"] != "sample" and values.get("num_samples", 1) != 1:
            raise ConfigError(f"{section}.num_samples > 1 needs {section}.strategy=sample")
        return cls(**values)

    @property
    def name(self) -> str:
        if self.strategy == "sample":
            return f"sample_t{self.sampling_temperature:g}_k{self.num_samples}"
        return "greedy" if self.strategy == "greedy" else f"beam{self.num_beams}"


@torch.no_grad()
def generate_ids(model, prompts: dict[str, torch.Tensor], decoding: Decoding, eos_id: int, pad_id: int,
                 keys: torch.Tensor | None = None) -> torch.Tensor:
    """New tokens only, [B * num_samples, T_new], padded with ``pad_id`` after EOS (KV cache on).

    Greedy and sampling run our own decoding loop (``distill.models.sampling``);
    beam search is HF ``generate``'s. Row i·k + j is sample j of prompt i;
    ``keys`` ([B·k, 2], in that order) key each row's sampling noise.
    """
    if decoding.strategy != "beam":
        if decoding.num_samples > 1:
            prompts = {k: v.repeat_interleave(decoding.num_samples, 0) for k, v in prompts.items()}
        return decode(model, prompts, decoding.max_new_tokens, eos_id, pad_id, decoding.sampling_temperature,
                      keys=keys)
    out = model.generate(**prompts, max_new_tokens=decoding.max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id,
                         use_cache=True, do_sample=False, num_beams=decoding.num_beams,
                         num_return_sequences=1, early_stopping=True)
    if not model.config.is_encoder_decoder:
        out = out[:, prompts["input_ids"].size(1):]
    else:
        out = out[:, 1:]  # drop the decoder start token
    return out


def cut_at_eos(ids: torch.Tensor, eos_id: int) -> list[list[int]]:
    """Each row up to and including its first EOS (rows without one are kept whole, padding aside)."""
    rows = []
    for row in ids.tolist():
        rows.append(row[: row.index(eos_id) + 1] if eos_id in row else row)
    return rows

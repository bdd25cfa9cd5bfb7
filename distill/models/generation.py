"""Decoding settings and generation with the KV cache, shared by evaluation and on-policy training."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distill.errors import ConfigError

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
def generate_ids(model, prompts: dict[str, torch.Tensor], decoding: Decoding, eos_id: int, pad_id: int,
                 logits_processor=None) -> torch.Tensor:
    """New tokens only, [B * num_samples, T_new], padded with ``pad_id`` after EOS (KV cache on)."""
    extra = {"logits_processor": logits_processor} if logits_processor is not None else {}
    out = model.generate(**prompts, max_new_tokens=decoding.max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id,
                         use_cache=True, **decoding.generate_kwargs(), **extra)
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


class TeacherMixture:
    """Logits processor for MiniLLM's sampling policy (1−α)·q + α·p at one sampling temperature.

    HF ``generate`` calls it once per new token with the student's scores; it
    advances the teacher by one token with its own KV cache and returns
    log((1−α)q + αp), so generation samples from the mixture (call generate with
    temperature 1 and no top-k/top-p; the temperature is applied here).
    """

    def __init__(self, teacher, prompts: dict[str, torch.Tensor], teacher_mix: float, sampling_temperature: float):
        self.teacher, self.prompts = teacher, prompts
        self.log_mix = (math.log1p(-teacher_mix) if teacher_mix < 1 else -math.inf, math.log(teacher_mix) if teacher_mix > 0 else -math.inf)
        self.temperature = sampling_temperature
        self.past = self.encoder_outputs = self.positions = None
        self.attention = prompts["attention_mask"]

    @torch.no_grad()
    def _teacher_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.teacher.config.is_encoder_decoder:
            if self.encoder_outputs is None:
                self.encoder_outputs = self.teacher.get_encoder()(**self.prompts)
            new = input_ids if self.past is None else input_ids[:, -1:]
            out = self.teacher(encoder_outputs=self.encoder_outputs, attention_mask=self.prompts["attention_mask"],
                               decoder_input_ids=new, past_key_values=self.past, use_cache=True)
        else:
            if self.past is None:
                new, self.positions = input_ids, (self.attention.cumsum(-1) - 1).clamp(min=0)
                self.attention = torch.cat([self.attention, torch.ones_like(input_ids[:, self.attention.size(1):])], 1)
            else:
                new = input_ids[:, -1:]
                self.attention = torch.cat([self.attention, torch.ones_like(new)], 1)
                self.positions = self.positions[:, -1:] + 1
            out = self.teacher(input_ids=new, attention_mask=self.attention, position_ids=self.positions,
                               past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return out.logits[:, -1].float()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        teacher = self._teacher_logits(input_ids)
        size = min(teacher.size(-1), scores.size(-1))
        log_q = torch.log_softmax(scores[..., :size].float() / self.temperature, -1)
        log_p = torch.log_softmax(teacher[..., :size] / self.temperature, -1)
        mixed = torch.logaddexp(log_q + self.log_mix[0], log_p + self.log_mix[1])
        out = torch.full_like(scores, -math.inf, dtype=mixed.dtype)
        out[..., :size] = mixed
        return out

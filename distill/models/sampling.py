"""Our own KV-cache decoding loop for greedy decoding and temperature sampling.

Used by on-policy training (GKD, X-KD, MiniLLM) and by evaluation (beam
search stays with HF ``generate``). HF ``generate`` spends most of a small
model's decoding step in per-token Python (logits processors, stopping
criteria, cache bookkeeping) and asks the device whether every sequence has
finished after each token. This loop runs one cached forward per token,
samples with the Gumbel-max trick (no host round-trip), and checks for "all
finished" only every ``check_every`` tokens: the only host-device syncs in an
on-policy step.
"""

from __future__ import annotations

import inspect
import math

import torch

from distill.models.keyed_random import keyed_uniform


def _cache_kwarg(model) -> str:
    """The KV-cache argument's name: ``cache`` from transformers 5.24 on, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class _DecoderOnlyCache:
    """Prefill left-padded prompts, then feed one token at a time (positions follow the attention mask)."""

    def __init__(self, model, prompts: dict[str, torch.Tensor], max_new_tokens: int):
        self.model, self.cache_kwarg = model, _cache_kwarg(model)
        attention = prompts["attention_mask"]
        self.attention = torch.cat([attention, attention.new_ones(attention.size(0), max_new_tokens)], 1)
        self.length = attention.size(1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=prompts["input_ids"], attention_mask=attention, position_ids=positions, use_cache=True)
        self.past, self.position = getattr(out, self.cache_kwarg), positions[:, -1:]
        self.logits = out.logits[:, -1]

    def step(self, token: torch.Tensor) -> torch.Tensor:
        self.length += 1
        self.position = self.position + 1
        out = self.model(input_ids=token[:, None], attention_mask=self.attention[:, : self.length],
                         position_ids=self.position, use_cache=True, **{self.cache_kwarg: self.past})
        self.past, self.logits = getattr(out, self.cache_kwarg), out.logits[:, -1]
        return self.logits


class _EncoderDecoderCache:
    """Encode once; the decoder starts from its start token and feeds one token at a time."""

    def __init__(self, model, prompts: dict[str, torch.Tensor], max_new_tokens: int):
        self.model, self.attention, self.cache_kwarg = model, prompts["attention_mask"], _cache_kwarg(model)
        self.encoded = model.get_encoder()(input_ids=prompts["input_ids"], attention_mask=self.attention)
        start = torch.full((self.attention.size(0), 1), model.config.decoder_start_token_id,
                           dtype=torch.long, device=self.attention.device)
        self.past = None
        self.logits = self._forward(start)

    def _forward(self, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(encoder_outputs=self.encoded, attention_mask=self.attention, decoder_input_ids=decoder_input_ids,
                         use_cache=True, **{self.cache_kwarg: self.past})
        self.past = getattr(out, self.cache_kwarg)
        return out.logits[:, -1]

    def step(self, token: torch.Tensor) -> torch.Tensor:
        self.logits = self._forward(token[:, None])
        return self.logits


def start_cache(model, prompts: dict[str, torch.Tensor], max_new_tokens: int):
    """A model primed on the prompts: ``.logits`` predicts the first new token, ``.step(token)`` the next."""
    cls = _EncoderDecoderCache if model.config.is_encoder_decoder else _DecoderOnlyCache
    return cls(model, prompts, max_new_tokens)


def _pick(scores: torch.Tensor, sampling_temperature: float | None, generator, keys: torch.Tensor | None = None,
          position: int = 0) -> torch.Tensor:
    """argmax (greedy) or a sample from softmax(scores / T) via Gumbel-max, without leaving the device.

    With ``keys`` ([B, 2], ``distill.models.keyed_random.row_keys``) each row's noise is a
    function of its own key and the position, not of the batch it sits in.
    """
    if sampling_temperature is None:
        return scores.argmax(-1)
    if keys is not None:
        uniform = keyed_uniform(keys, position, scores.size(-1))
    else:
        uniform = torch.rand(scores.shape, device=scores.device, generator=generator).clamp_(min=1e-20)
    gumbel_negated = uniform.log_().neg_().log_()  # log(−log u), in place on the fresh uniforms: −Gumbel noise
    scaled = scores.float() if sampling_temperature == 1.0 else scores.float() / sampling_temperature  # x/1 is x
    return (scaled - gumbel_negated).argmax(-1)


class TeacherMixture:
    """MiniLLM's sampling policy, log((1−α)·q_T + α·p_T), with the teacher advanced by its own KV cache.

    The teacher's logits at every generated position are kept (``logits()``),
    so the batch needs no second teacher pass: they are exactly what a full
    forward over prompt + output would give for the output tokens. The
    sampling policy's own log-probabilities of each drawn token, log q_T and
    log p_T at the sampling temperature T, are kept too (``sampled()``):
    importance weights and rewards must use the distribution actually
    sampled from (docs/design.md, Methods), from the student in eval mode (no dropout).
    """

    def __init__(self, teacher, prompts: dict[str, torch.Tensor], teacher_mix: float, sampling_temperature: float,
                 max_new_tokens: int):
        self.cache = start_cache(teacher, prompts, max_new_tokens)
        self.log_mix = (math.log1p(-teacher_mix), math.log(teacher_mix) if teacher_mix > 0 else -math.inf)
        self.temperature = sampling_temperature
        self.kept: list[torch.Tensor] = []
        self.sampled_log_q: list[torch.Tensor] = []
        self.sampled_log_p: list[torch.Tensor] = []
        self._log_q = self._log_p = None

    def __call__(self, student_logits: torch.Tensor) -> torch.Tensor:
        teacher = self.cache.logits
        self.kept.append(teacher)
        size = min(teacher.size(-1), student_logits.size(-1))
        self._log_q = torch.log_softmax(student_logits[..., :size].float() / self.temperature, -1)
        self._log_p = torch.log_softmax(teacher[..., :size].float() / self.temperature, -1)
        return torch.logaddexp(self._log_q + self.log_mix[0], self._log_p + self.log_mix[1])

    def record(self, token: torch.Tensor) -> None:
        """Keep log q_T(y_t) and log p_T(y_t) of the token just drawn."""
        index = token.clamp(max=self._log_q.size(-1) - 1)[:, None]  # pad after EOS may sit outside a trimmed vocab
        self.sampled_log_q.append(self._log_q.gather(-1, index).squeeze(-1))
        self.sampled_log_p.append(self._log_p.gather(-1, index).squeeze(-1))

    def advance(self, token: torch.Tensor) -> None:
        self.cache.step(token)

    def logits(self, length: int) -> torch.Tensor:
        """[B, length, V] teacher logits of the first ``length`` generated positions."""
        return torch.stack(self.kept[:length], 1)

    def sampled(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, length] log q_T and log p_T of the drawn tokens (meaningful up to each row's EOS)."""
        return torch.stack(self.sampled_log_q[:length], 1), torch.stack(self.sampled_log_p[:length], 1)


@torch.no_grad()
def decode(model, prompts: dict[str, torch.Tensor], max_new_tokens: int, eos_id: int, pad_id: int,
           sampling_temperature: float | None = None, mixture: TeacherMixture | None = None,
           check_every: int = 16, generator: torch.Generator | None = None,
           keys: torch.Tensor | None = None) -> torch.Tensor:
    """New tokens only, [B, T_new] with ``pad_id`` after each row's EOS; trailing all-pad columns removed.

    ``sampling_temperature=None`` is greedy. With a ``mixture`` the tokens are
    sampled from the mixture's log-probabilities (its temperature applies).
    Sampling noise comes from ``keys`` (per-row streams) when given, else from
    ``generator`` / the global RNG.
    """
    cache = start_cache(model, prompts, max_new_tokens)
    logits, tokens = cache.logits, []
    finished = torch.zeros(logits.size(0), dtype=torch.bool, device=logits.device)
    for t in range(max_new_tokens):
        scores = mixture(logits) if mixture is not None else logits
        token = _pick(scores, 1.0 if mixture is not None else sampling_temperature, generator, keys, t)
        token = token.masked_fill_(finished, pad_id)  # in place: the loop's small ops are a fifth of its time
        tokens.append(token)
        if mixture is not None:
            mixture.record(token)
        finished |= token == eos_id
        last = t + 1 == max_new_tokens or ((t + 1) % check_every == 0 and bool(finished.all()))
        if last:
            break
        if mixture is not None:
            mixture.advance(token)
        logits = cache.step(token)
    new = torch.stack(tokens, 1)
    return new[:, : int(generated_mask(new, eos_id).sum(1).max())]


def generated_mask(new: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on each row's tokens up to and including its first EOS (the whole row if it has none)."""
    is_eos = (new == eos_id).long()
    return (is_eos.cumsum(1) - is_eos) == 0

"""Speculative decoding (Leviathan et al., 2023; Chen et al., 2023; SPEC §10), one request at a time.

The draft q proposes k tokens autoregressively; the target p scores all k + 1
positions in one forward; proposal i is accepted with probability
min(1, p(x_i)/q(x_i)) in order; at the first rejection one token is drawn from
norm(max(0, p − q)); if all k are accepted, a bonus token is drawn from p.
The output is distributed exactly as the target's own sampling at the same
temperature; greedy (``sampling_temperature=None``) accepts a proposal iff it
is the target's argmax, so the output is the target's greedy output, token
for token. Both models keep their KV caches between rounds and crop them
back to the committed tokens after a rejection.

Per round the result records, for OSD (``distill.methods.osd``), the target's
logits at each new token's position, taken from the verification forward:
every new position (``record="all"``) or only the correction/bonus one
(``record="mismatch"``). Those positions are prefixes of the final output,
so an update needs no second target pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from distill.models.sampling import _cache_kwarg


def _crop(cache, tokens_to_remove: int) -> None:
    """Drop the last tokens of a KV cache. A negative argument removes that many tokens in every
    transformers version we support (a positive one is an absolute length in some, refused in others)."""
    if tokens_to_remove > 0:
        cache.crop(-tokens_to_remove)


class _Runner:
    """One model decoding one request: feed tokens, get their logits rows, crop the cache back."""

    def __init__(self, model, prompt_ids: list[int], device):
        self.model, self.device, self.kwarg = model, device, _cache_kwarg(model)
        self.past, self.length, self.forwards, self.seconds = None, 0, 0, 0.0
        self.encoder_decoder = bool(model.config.is_encoder_decoder)
        if self.encoder_decoder:
            ids = torch.tensor([prompt_ids], device=device)
            self.encoder_mask = torch.ones_like(ids)
            self.encoded = model.get_encoder()(input_ids=ids, attention_mask=self.encoder_mask)
            self.pending = [model.config.decoder_start_token_id]  # committed tokens not yet in the cache
        else:
            self.pending = list(prompt_ids)

    def feed(self, tokens: list[int]) -> torch.Tensor:
        """[len(tokens), V] float32 logits, row i predicting the token after ``tokens[i]``."""
        started = time.perf_counter()
        ids = torch.tensor([tokens], device=self.device)
        if self.encoder_decoder:
            out = self.model(encoder_outputs=self.encoded, attention_mask=self.encoder_mask, decoder_input_ids=ids,
                             use_cache=True, **{self.kwarg: self.past})
        else:
            end = self.length + len(tokens)
            positions = torch.arange(self.length, end, device=self.device)[None]
            out = self.model(input_ids=ids, attention_mask=torch.ones(1, end, dtype=torch.long, device=self.device),
                             position_ids=positions, use_cache=True, **{self.kwarg: self.past})
        self.past, self.length = getattr(out, self.kwarg), self.length + len(tokens)
        self.forwards += 1
        self.seconds += time.perf_counter() - started
        return out.logits[0].float()

    def crop(self, tokens: int) -> None:
        _crop(self.past, tokens)
        self.length -= max(tokens, 0)


@dataclass
class SpeculativeResult:
    tokens: list[int]  # new tokens, EOS included when produced
    proposed: int = 0  # draft proposals made
    accepted: int = 0  # of them accepted
    target_forwards: int = 0
    draft_forwards: int = 0
    target_seconds: float = 0.0
    draft_seconds: float = 0.0
    overlaps: list[float] = field(default_factory=list)  # Σ_v min(p, q) at each decided proposal position
    records: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (output position, target logits row)


def _probs(logits: torch.Tensor, temperature: float | None) -> torch.Tensor:
    return torch.softmax(logits / (temperature or 1.0), -1)


def _draw(probs: torch.Tensor, generator) -> int:
    return int(torch.multinomial(probs, 1, generator=generator))


def _propose(draft: _Runner, k: int, temperature: float | None, generator) -> tuple[list[int], list[torch.Tensor]]:
    """k draft tokens and the draft's logits row before each (k draft forwards)."""
    logits = draft.feed(draft.pending)[-1]
    draft.pending = []
    tokens, rows = [], []
    for i in range(k):
        rows.append(logits)
        token = int(logits.argmax()) if temperature is None else _draw(_probs(logits, temperature), generator)
        tokens.append(token)
        if i + 1 < k:
            logits = draft.feed([token])[-1]
    return tokens, rows


def _verify(proposals, q_rows, p_rows, temperature, generator) -> tuple[int, int, list[float]]:
    """(accepted count n, the next token: correction at n or bonus, Σ min(p, q) at each decided position)."""
    overlaps = []
    for i, token in enumerate(proposals):
        p, q = _probs(p_rows[i], temperature), _probs(q_rows[i], temperature)
        overlaps.append(float(torch.minimum(p, q).sum()))
        if temperature is None:
            if token == int(p_rows[i].argmax()):
                continue
            return i, int(p_rows[i].argmax()), overlaps
        if float(torch.rand((), generator=generator)) * float(q[token]) < float(p[token]):  # u < p/q
            continue
        residual = torch.clamp(p - q, min=0.0)
        residual = residual / residual.sum() if float(residual.sum()) > 0 else p
        return i, _draw(residual, generator), overlaps
    bonus = p_rows[len(proposals)]
    return len(proposals), int(bonus.argmax()) if temperature is None else _draw(_probs(bonus, temperature), generator), \
        overlaps


@torch.no_grad()
def speculative_generate(target, draft, prompt_ids: list[int], max_new_tokens: int, num_proposals: int, eos_id: int,
                         sampling_temperature: float | None = None, generator: torch.Generator | None = None,
                         record: str = "none") -> SpeculativeResult:
    """Decode one request speculatively; ``record`` is none | mismatch | all (see the module docstring)."""
    device = next(target.parameters()).device
    t, d = _Runner(target, prompt_ids, device), _Runner(draft, prompt_ids, device)
    result = SpeculativeResult([])
    while len(result.tokens) < max_new_tokens:
        k = min(num_proposals, max_new_tokens - len(result.tokens) - 1)
        proposals, q_rows = _propose(d, k, sampling_temperature, generator) if k > 0 else ([], [])
        logits = t.feed(t.pending + proposals)
        p_rows = logits[logits.size(0) - k - 1:]
        size = min(p_rows.size(-1), q_rows[0].size(-1)) if q_rows else p_rows.size(-1)  # padded output layers
        n, token, overlaps = _verify(proposals, [q[:size] for q in q_rows], p_rows[:, :size], sampling_temperature,
                                     generator)
        start = len(result.tokens)
        new = proposals[:n] + [token]
        if record == "all":
            result.records.extend((start + i, p_rows[i]) for i in range(len(new)))
        elif record == "mismatch":
            result.records.append((start + n, p_rows[n]))
        result.proposed, result.accepted = result.proposed + k, result.accepted + n
        result.overlaps.extend(overlaps)
        t.crop(k - n)  # the target's cache held committed + all k proposals
        t.pending = [token]
        if k == 0:  # no proposal: the draft saw nothing new
            d.pending = d.pending + [token]
        elif n < k:  # the draft's cache held committed + the first k − 1 proposals
            d.crop(k - 1 - n)
            d.pending = [token]
        else:
            d.pending = [proposals[-1], token]
        result.tokens.extend(new)
        if eos_id in new:
            result.tokens = result.tokens[: start + new.index(eos_id) + 1]
            result.records = [(pos, row) for pos, row in result.records if pos < len(result.tokens)]
            break
    result.tokens = result.tokens[:max_new_tokens]
    result.target_forwards, result.draft_forwards = t.forwards, d.forwards
    result.target_seconds, result.draft_seconds = t.seconds, d.seconds
    return result


def expected_tokens_per_target_forward(acceptance_rate: float, num_proposals: int) -> float:
    """E = (1 − α^{k+1}) / (1 − α): tokens per target forward with i.i.d. acceptance α (Leviathan et al.)."""
    if acceptance_rate >= 1.0:
        return float(num_proposals + 1)
    return (1.0 - acceptance_rate ** (num_proposals + 1)) / (1.0 - acceptance_rate)


def speedup_model(acceptance_rate: float, num_proposals: int, cost_ratio: float) -> float:
    """E / (c·k + 1): wall-clock speedup over the target alone, c = draft forward cost / target forward cost."""
    return expected_tokens_per_target_forward(acceptance_rate, num_proposals) / (cost_ratio * num_proposals + 1.0)


@dataclass
class AloneResult:
    tokens: list[int]
    forwards: int
    seconds: float  # in the model's forwards
    wall_seconds: float  # the whole decoding, Python included


@torch.no_grad()
def target_alone(target, prompt_ids: list[int], max_new_tokens: int, eos_id: int,
                 sampling_temperature: float | None = None, generator: torch.Generator | None = None) -> AloneResult:
    """The target decoding one request by itself, through the same runner: the baseline of ``speedup_measured``
    and the per-forward cost behind ``c``."""
    started = time.perf_counter()
    runner = _Runner(target, prompt_ids, next(target.parameters()).device)
    tokens: list[int] = []
    while len(tokens) < max_new_tokens:
        logits = runner.feed(runner.pending)[-1]
        token = int(logits.argmax()) if sampling_temperature is None else _draw(_probs(logits, sampling_temperature),
                                                                                  generator)
        tokens.append(token)
        runner.pending = [token]
        if token == eos_id:
            break
    return AloneResult(tokens, runner.forwards, runner.seconds, time.perf_counter() - started)

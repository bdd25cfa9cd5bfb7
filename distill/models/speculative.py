"""Speculative decoding (Leviathan et al., 2023; Chen et al., 2023), one request at a time.

Contract: docs/design.md, Speculative decoding and OSD.

The draft q proposes up to k tokens autoregressively (it stops after proposing
EOS: nothing after an EOS is ever output); the target p scores all proposals
in one forward; proposal i is accepted with probability min(1, p(x_i)/q(x_i))
in order; at the first rejection one token is drawn from norm(max(0, p − q));
if all are accepted, a bonus token is drawn from p. The output is distributed
exactly as the target's own sampling at the same temperature; greedy
(``sampling_temperature=None``) accepts a proposal iff it is the target's
argmax, so the output is the target's greedy output, token for token. Both
models keep their KV caches between rounds and crop them back to the
committed tokens after a rejection.

Both distributions are over the real vocabulary (``vocab_size``, the
tokenizer's): output-layer rows past it are padding, never valid tokens, so
they are cut from both models' logits before anything is drawn; a draft
narrower than that gets −∞ there (it cannot propose those tokens).

Random draws are keyed uniforms (``distill.models.keyed_random``): draw i of a
request is a hash of the request's key and i, computed on the logits' device,
so decoding runs on any device and the same key gives the same output.

Per decided proposal position (each accepted one and the first rejected one)
the result records α's term: 1 if the draft's and target's argmaxes agree
(greedy: p and q are one-hot), else Σ_v min(p_T, q_T), the probability of
acceptance; and the T = 1 overlap Σ_v min(p, q) beside it. Per round it also
records, for OSD (``distill.methods.osd``), the target's logits at each new
token's position, taken from the verification forward: every new position
(``record="all"``) or only the correction/bonus one (``record="mismatch"``).
Those positions are prefixes of the final output, so an update needs no
second target pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from distill.errors import ModelError
from distill.models.keyed_random import keyed_uniform
from distill.models.sampling import _cache_kwarg


def _crop(cache, tokens_to_remove: int) -> None:
    """Drop the last tokens of a KV cache. A negative argument removes that many tokens in every
    transformers version we support (a positive one is an absolute length in some, refused in others)."""
    if tokens_to_remove > 0:
        cache.crop(-tokens_to_remove)


def output_width(model) -> int:
    """Rows of the model's output layer (its config's vocabulary when the layer is not exposed)."""
    head = model.get_output_embeddings()
    return int(head.weight.size(0)) if head is not None else int(model.config.vocab_size)


def check_draft_width(target, draft, draft_path: str) -> None:
    """A draft whose output layer is wider than the target's is refused: it could propose a token the target has
    no logit for."""
    if output_width(draft) > output_width(target):
        raise ModelError(f"eval.speculative.draft={draft_path} has an output layer of {output_width(draft)} tokens, "
                         f"wider than the target's {output_width(target)}; pick a draft with at most the target's")


class _Runner:
    """One model decoding one request: feed tokens, get their logits rows over ``width`` tokens, crop the cache."""

    def __init__(self, model, prompt_ids: list[int], device, width: int):
        self.model, self.device, self.kwarg, self.width = model, device, _cache_kwarg(model), width
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
        """[len(tokens), width] float32 logits, row i predicting the token after ``tokens[i]``."""
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
        return _fit(out.logits[0].float(), self.width)

    def crop(self, tokens: int) -> None:
        _crop(self.past, tokens)
        self.length -= max(tokens, 0)


def _fit(logits: torch.Tensor, width: int) -> torch.Tensor:
    """The first ``width`` columns: padded rows cut, or −∞ (probability 0) for tokens a narrower layer lacks."""
    if logits.size(-1) >= width:
        return logits[..., :width]
    return torch.nn.functional.pad(logits, (0, width - logits.size(-1)), value=-torch.inf)


class _Draws:
    """A request's random draws: draw i is ``keyed_uniform(key, i)`` on the device of the tensor it serves
    (a CPU ``torch.Generator`` cannot drive ``torch.multinomial`` on an accelerator)."""

    def __init__(self, key: torch.Tensor | None):
        self.key, self.count = key, 0

    def uniform(self, like: torch.Tensor, size: int) -> torch.Tensor:
        if self.key is None:
            raise ValueError("sampled speculative decoding needs a key (distill.models.keyed_random.row_keys)")
        if self.key.device != like.device:
            self.key = self.key.to(like.device)  # once, not per draw
        self.count += 1
        return keyed_uniform(self.key, self.count - 1, size)[0]

    def categorical(self, log_weights: torch.Tensor) -> torch.Tensor:
        """A sample from softmax(log_weights) by Gumbel-max, as a 0-dim tensor on their device."""
        uniform = self.uniform(log_weights, log_weights.size(-1))
        return (log_weights - torch.log(-torch.log(uniform))).argmax(-1)


@dataclass
class SpeculativeResult:
    tokens: list[int]  # new tokens, EOS included when produced
    proposed: int = 0  # draft proposals made
    accepted: int = 0  # of them accepted
    target_forwards: int = 0
    draft_forwards: int = 0
    target_seconds: float = 0.0
    draft_seconds: float = 0.0
    alphas: list[float] = field(default_factory=list)  # α's term at each decided proposal position (module doc)
    overlaps_t1: list[float] = field(default_factory=list)  # Σ_v min(p, q) at T = 1 at the same positions
    records: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (output position, target logits row)
    corrections: list[int] = field(default_factory=list)  # output position of each round's correction or bonus


def _probs(logits: torch.Tensor, temperature: float | None) -> torch.Tensor:
    return torch.softmax(logits / (temperature or 1.0), -1)


def _pick(logits: torch.Tensor, temperature: float | None, draws: _Draws) -> int:
    """argmax (greedy) or a sample from softmax(logits / T)."""
    return int(logits.argmax() if temperature is None else draws.categorical(logits / temperature))


def _propose(draft: _Runner, k: int, eos_id: int, temperature: float | None,
             draws: _Draws) -> tuple[list[int], list[torch.Tensor]]:
    """Up to k draft tokens, ending early at EOS, and the draft's logits row before each."""
    logits = draft.feed(draft.pending)[-1]
    draft.pending = []
    tokens, rows = [], []
    for i in range(k):
        rows.append(logits)
        tokens.append(_pick(logits, temperature, draws))
        if tokens[-1] == eos_id:
            break
        if i + 1 < k:
            logits = draft.feed([tokens[-1]])[-1]
    return tokens, rows


def _alpha_terms(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float | None) -> tuple[float, float]:
    """(α's term: argmax agreement when greedy, else Σ min(p_T, q_T); the T = 1 overlap Σ min(p, q))."""
    overlap_t1 = float(torch.minimum(_probs(p_logits, None), _probs(q_logits, None)).sum())
    if temperature is None:
        return float(p_logits.argmax() == q_logits.argmax()), overlap_t1
    if temperature == 1.0:
        return overlap_t1, overlap_t1
    return float(torch.minimum(_probs(p_logits, temperature), _probs(q_logits, temperature)).sum()), overlap_t1


def _verify(proposals, q_rows, p_rows, temperature, draws: _Draws | None = None):
    """(accepted count n, the next token: correction at n or bonus, α's terms and T = 1 overlaps at each decided
    position)."""
    alphas, overlaps = [], []
    for i, token in enumerate(proposals):
        alpha, overlap = _alpha_terms(p_rows[i], q_rows[i], temperature)
        alphas.append(alpha)
        overlaps.append(overlap)
        if temperature is None:
            if token == int(p_rows[i].argmax()):
                continue
            return i, int(p_rows[i].argmax()), alphas, overlaps
        p, q = _probs(p_rows[i], temperature), _probs(q_rows[i], temperature)
        if float(draws.uniform(p, 1)[0] * q[token]) < float(p[token]):  # u < p/q
            continue
        residual = torch.clamp(p - q, min=0.0)
        residual = residual if float(residual.sum()) > 0 else p  # p = q: never rejected, up to rounding
        return i, int(draws.categorical(torch.log(residual))), alphas, overlaps
    return len(proposals), _pick(p_rows[len(proposals)], temperature, draws), alphas, overlaps


@torch.no_grad()
def speculative_generate(target, draft, prompt_ids: list[int], max_new_tokens: int, num_proposals: int, eos_id: int,
                         sampling_temperature: float | None = None, key: torch.Tensor | None = None,
                         record: str = "none", vocab_size: int | None = None) -> SpeculativeResult:
    """Decode one request speculatively (see the module docstring).

    ``key``: [1, 2] int64 (``keyed_random.row_keys``), required when sampling; ``record``: none | mismatch | all;
    ``vocab_size``: the tokenizer's vocabulary (None: the target's output layer, all of it real).
    """
    device = next(target.parameters()).device
    width = output_width(target) if vocab_size is None else min(vocab_size, output_width(target))
    t, d = _Runner(target, prompt_ids, device, width), _Runner(draft, prompt_ids, device, width)
    draws, result = _Draws(key), SpeculativeResult([])
    while len(result.tokens) < max_new_tokens:
        limit = min(num_proposals, max_new_tokens - len(result.tokens) - 1)
        proposals, q_rows = _propose(d, limit, eos_id, sampling_temperature, draws) if limit > 0 else ([], [])
        k = len(proposals)
        logits = t.feed(t.pending + proposals)
        p_rows = logits[logits.size(0) - k - 1:]
        n, token, alphas, overlaps = _verify(proposals, q_rows, p_rows, sampling_temperature, draws)
        start = len(result.tokens)
        new = proposals[:n] + [token]
        result.corrections.append(start + n)
        if record == "all":
            result.records.extend((start + i, p_rows[i]) for i in range(len(new)))
        elif record == "mismatch":
            result.records.append((start + n, p_rows[n]))
        # The draft stops at EOS, so every proposal counted here precedes or is the first EOS.
        result.proposed, result.accepted = result.proposed + k, result.accepted + n
        result.alphas.extend(alphas)
        result.overlaps_t1.extend(overlaps)
        result.tokens.extend(new)
        if eos_id in new:
            result.tokens = result.tokens[: start + new.index(eos_id) + 1]
            result.records = [(pos, row) for pos, row in result.records if pos < len(result.tokens)]
            break
        _advance(t, d, proposals, n, token)
    result.tokens = result.tokens[:max_new_tokens]
    result.target_forwards, result.draft_forwards = t.forwards, d.forwards
    result.target_seconds, result.draft_seconds = t.seconds, d.seconds
    return result


def _advance(t: _Runner, d: _Runner, proposals: list[int], n: int, token: int) -> None:
    """Crop both caches back to the committed tokens; queue what each model has not seen yet."""
    k = len(proposals)
    t.crop(k - n)  # the target's cache held committed + all k proposals
    t.pending = [token]
    if k == 0:  # no proposal: the draft saw nothing new
        d.pending = d.pending + [token]
    elif n < k:  # the draft's cache held committed + the first k − 1 proposals
        d.crop(k - 1 - n)
        d.pending = [token]
    else:
        d.pending = [proposals[-1], token]


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
                 sampling_temperature: float | None = None, key: torch.Tensor | None = None,
                 vocab_size: int | None = None) -> AloneResult:
    """The target decoding one request by itself, through the same runner and over the same vocabulary: the
    baseline of ``speedup_measured`` and the per-forward cost behind ``c``."""
    started = time.perf_counter()
    width = output_width(target) if vocab_size is None else min(vocab_size, output_width(target))
    runner, draws = _Runner(target, prompt_ids, next(target.parameters()).device, width), _Draws(key)
    tokens: list[int] = []
    while len(tokens) < max_new_tokens:
        token = _pick(runner.feed(runner.pending)[-1], sampling_temperature, draws)
        tokens.append(token)
        runner.pending = [token]
        if token == eos_id:
            break
    return AloneResult(tokens, runner.forwards, runner.seconds, time.perf_counter() - started)

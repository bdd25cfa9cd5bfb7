"""Online speculative decoding (Liu et al., 2023): distil the draft while it serves.

Contract: docs/design.md, Speculative decoding and OSD.

The training split, in order, is a stream of requests (``data_order="stream"``;
``task.generator.shift`` switches distributions mid-stream). Each request is
decoded speculatively with the current draft (the student) against the target
(the teacher). The verification pass already holds the target's distribution
at every new token's position; the positions where a proposal was rejected,
with the target's correction or bonus token (``positions: mismatch``), or all
generated positions (``positions: all``) are kept. Every ``update_interval``
requests the draft takes one optimizer step with the divergence group's
D(p, q) on the kept positions (optionally with the last ``replay_size``
requests again). The target runs only inside verification, never for the
update. Logged per request: acceptance_rate α, the mean over its decided
proposal positions of the chance of acceptance (greedy: argmax agreement;
sampled at T: Σ_v min(p_T, q_T)), overlap_t1 (Σ_v min(p, q) at T = 1 there),
accepted_fraction and tokens_per_target_forward, and the moving average of α
over the last ``moving_average_window`` requests.
``update: false`` serves and logs without learning (the draft before OSD, or
a draft distilled offline).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import torch

from distill.fields import check_choice, check_count, check_range
from distill.losses.divergences import Divergence
from distill.losses.kd import divergence_term
from distill.losses.terms import LossTerms
from distill.methods.base import LOG_RECORDS, Method
from distill.models.forward import token_view
from distill.models.keyed_random import row_keys
from distill.models.speculative import speculative_generate


class OSD(Method):
    needs_teacher = True
    prompts_only = True  # requests are prompts: the target decides every output token
    single_stream = True  # one request stream, served in order: one process, update_interval requests a step
    data_order = "stream"  # the requests in their own order, not shuffled

    def __init__(self, divergence: dict, num_proposals: int, update_interval: int, positions: str,
                 sampling_temperature: float | None, max_new_tokens: int, replay_size: int, update: bool,
                 stream_start: int = 0, moving_average_window: int = 100, anchor_weight: float = 0.25):
        for name, value, low in (("num_proposals", num_proposals, 1), ("update_interval", update_interval, 1),
                                 ("replay_size", replay_size, 0), ("moving_average_window", moving_average_window, 1),
                                 ("stream_start", stream_start, 0), ("max_new_tokens", max_new_tokens, 1)):
            check_count("method", name, value, low)
        check_choice("method", "positions", positions, ("mismatch", "all", "anchored"))
        check_range("method", "anchor_weight", anchor_weight, 0.0, 1.0)
        self.anchor_weight = anchor_weight
        if sampling_temperature is not None:  # null = greedy serving
            check_range("method", "sampling_temperature", sampling_temperature, 0.0, low_open=True)
        self.divergence, self.num_proposals, self.positions = Divergence.from_config(divergence), num_proposals, positions
        self.examples_per_step = update_interval  # the loop takes this many requests per optimizer step
        self.stream_start = stream_start  # the stream begins at this train example (then wraps around)
        self.sampling_temperature, self.max_new_tokens, self.update = sampling_temperature, max_new_tokens, update
        self._replay: deque = deque(maxlen=replay_size)
        self._recent: deque = deque(maxlen=moving_average_window)  # the last requests' α, for the moving average

    def trajectories(self, items, ctx):
        draft, target = ctx.student, ctx.teacher
        was_training = draft.training
        draft.eval()  # serving: no dropout
        served, records = [], []
        # each request's place in the stream (keys its draws, names it in the log); ``self.positions`` is
        # which token positions of a served request the draft learns from
        requests = ctx.stream_positions if ctx.stream_positions is not None else [item.index for item in items]
        for item, request in zip(items, requests):
            result = speculative_generate(target, draft, item.prompt_ids, self.max_new_tokens, self.num_proposals,
                                          ctx.tokenizer.eos_token_id, self.sampling_temperature,
                                          row_keys(ctx.seed, 0, [request], "osd"),
                                          record="all" if self.positions == "anchored" else self.positions,
                                          vocab_size=len(ctx.tokenizer))
            served.append((replace(item, target_ids=result.tokens), self._weighted(result)))
            records.append(self._with_average(_request_record(request, result)))
        draft.train(was_training)
        batch = self._batch(list(self._replay) + served, ctx)
        self._replay.extend(served)
        batch[LOG_RECORDS] = records
        return batch

    def _weighted(self, result) -> list[tuple[int, torch.Tensor, float]]:
        """Kept positions with their loss weights: 1, except the accepted ones of ``anchored`` (anchor_weight),
        which keep the draft's already-right choices from drifting while it learns from its mistakes."""
        if self.positions != "anchored":
            return [(j, row, 1.0) for j, row in result.records]
        corrections = set(result.corrections)
        return [(j, row, 1.0 if j in corrections else self.anchor_weight) for j, row in result.records]

    def _with_average(self, record: dict) -> dict:
        if record["acceptance_rate"] is not None:  # a request with no proposals (EOS at once) has no α
            self._recent.append(record["acceptance_rate"])
        record["acceptance_rate_avg"] = sum(self._recent) / len(self._recent) if self._recent else None
        return record

    def _batch(self, entries, ctx) -> dict[str, torch.Tensor]:
        """Prompt + served output; the loss mask and the target's logits only at the kept positions."""
        batch = ctx.collate([item for item, _ in entries])
        batch["output_mask"] = batch["loss_mask"]  # every served token: what an encoder-decoder's decoder attends to
        mask = torch.zeros_like(batch["loss_mask"], dtype=torch.float32)
        vocab = max(row.size(-1) for _, kept in entries for _, row, _ in kept)
        width = mask.size(1) - (0 if ctx.encoder_decoder else 1)  # the target-aligned view's length
        teacher = torch.zeros(len(entries), width, vocab, device=ctx.device)
        for i, (item, kept) in enumerate(entries):
            offset = 0 if ctx.encoder_decoder else len(item.prompt_ids)  # output position j sits at column offset + j
            for j, row, weight in kept:  # a weighted mask: the window's N counts an anchored position by its weight
                mask[i, offset + j] = weight
                teacher[i, offset + j - (0 if ctx.encoder_decoder else 1), : row.size(-1)] = row
        batch["loss_mask"], batch["teacher_logits"] = mask, teacher
        return batch

    def loss_terms(self, batch, ctx) -> LossTerms:
        view = token_view(ctx.student, batch)  # full logits: the verified target rows come as logits
        term = divergence_term(self.divergence, view, batch["teacher_logits"], weight=1.0 if self.update else 0.0)
        return LossTerms({"kd": term})

    def state_dict(self) -> dict:
        """The replay buffer and the moving average's window: part of the stream's state, so a resumed run
        continues exactly."""
        return {"replay": [(item.prompt_ids, item.target_ids, item.index, [(j, row.cpu(), w) for j, row, w in kept])
                           for item, kept in self._replay], "recent": list(self._recent)}

    def load_state_dict(self, state: dict) -> None:
        from distill.data.collate import Encoded

        self._replay.clear()
        self._recent.clear()
        self._recent.extend(state.get("recent", []))
        for prompt, target, index, kept in state["replay"]:  # checkpoints before anchored positions: weight 1
            self._replay.append((Encoded(prompt, target, index), [(*entry, 1.0)[:3] for entry in kept]))


def _request_record(request: int, result) -> dict:
    alphas, overlaps = result.alphas, result.overlaps_t1
    return {"request": request, "acceptance_rate": sum(alphas) / len(alphas) if alphas else None,
            "overlap_t1": sum(overlaps) / len(overlaps) if overlaps else None,
            "accepted_fraction": result.accepted / result.proposed if result.proposed else None,
            "tokens_per_target_forward": len(result.tokens) / max(result.target_forwards, 1),
            "tokens": len(result.tokens), "target_forwards": result.target_forwards}

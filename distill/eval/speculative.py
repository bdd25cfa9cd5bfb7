"""`distill eval ckpt=TARGET eval.speculative.draft=DRAFT`: speculative decoding and its measures.

Contract: docs/design.md, Speculative decoding and OSD.

Every request is decoded twice, one at a time and through the same runner
code: speculatively (draft proposes k, target verifies), and by the target
alone, the baseline of ``speedup_measured`` and of the per-forward costs that
give c. Each generation record keeps its counts and timings, so the measures
below are recomputed from generations.jsonl alone (``distill rescore``):
  * acceptance_rate α: the mean over decided proposal positions of the chance that the proposal is accepted:
    greedy, 1 if the draft's and target's argmaxes agree, else 0; sampled at T, Σ_v min(p_T, q_T);
  * overlap_t1: the mean over the same positions of Σ_v min(p, q) at T = 1 (how close the distributions are,
    whatever the decoding);
  * accepted_fraction: accepted / proposed; tokens_per_target_forward;
  * cost_ratio c: seconds per draft forward / seconds per target forward (target alone);
  * speedup_model = E / (c·k + 1), E = (1 − α^{k+1}) / (1 − α);
  * speedup_measured: wall clock of the target alone / wall clock of speculative decoding;
  * matches_target (greedy only; null when sampled, where the two decodings are independent samples): the
    fraction of requests where both decodings gave the same output (1.0 for greedy).
"""

from __future__ import annotations

import time

from distill.errors import DataError
from distill.models.keyed_random import row_keys
from distill.models.speculative import speculative_generate, speedup_model, target_alone
from distill.train.progress import progress_bar

STAT_FIELDS = ("acceptance_sum", "overlap_t1_sum", "overlap_count")  # absent from records of older versions


def speculative_records(target, draft, tokenizer, items, max_new_tokens: int, num_proposals: int,
                        sampling_temperature: float | None, progress: bool, seed: int) -> list[tuple[str, dict]]:
    """Per request: (the speculative output text, its counts and timings)."""
    eos, vocab = tokenizer.eos_token_id, len(tokenizer)
    target.eval(), draft.eval()
    out = []
    with progress_bar(progress, total=len(items), description=f"speculative k={num_proposals}", unit="prompt") as bar:
        for index, item in enumerate(items):
            started = time.perf_counter()
            spec = speculative_generate(target, draft, item.prompt_ids, max_new_tokens, num_proposals, eos,
                                        sampling_temperature, row_keys(seed, 0, [index], "speculative"),
                                        vocab_size=vocab)
            wall = time.perf_counter() - started
            alone = target_alone(target, item.prompt_ids, max_new_tokens, eos, sampling_temperature,
                                 row_keys(seed, 0, [index], "target_alone"), vocab_size=vocab)
            stats = {"tokens": len(spec.tokens), "proposed": spec.proposed, "accepted": spec.accepted,
                     "acceptance_sum": sum(spec.alphas), "overlap_t1_sum": sum(spec.overlaps_t1),
                     "overlap_count": len(spec.alphas),
                     "target_forwards": spec.target_forwards, "draft_forwards": spec.draft_forwards,
                     "draft_seconds": spec.draft_seconds, "wall_seconds": wall,
                     "alone_forwards": alone.forwards, "alone_seconds": alone.seconds,
                     "alone_wall_seconds": alone.wall_seconds,
                     "matches_target": spec.tokens == alone.tokens if sampling_temperature is None else None}
            text = tokenizer.decode([t for t in spec.tokens if t != eos], skip_special_tokens=True).strip()
            out.append((text, stats))
            bar.advance()
    return out


def summarise_speculative(stats: list[dict], num_proposals: int, sampling_temperature: float | None) -> dict:
    """The measures of the module docstring from per-request stats."""
    missing = [key for key in STAT_FIELDS if any(key not in s for s in stats)]
    if missing:
        raise DataError(f"the generations' speculative stats lack {missing}: written by an older `distill eval`, "
                        "whose greedy acceptance_rate was the T = 1 overlap; re-run `distill eval` with "
                        "eval.speculative.draft")
    total = lambda key: sum(s[key] for s in stats)  # noqa: E731
    positions = max(total("overlap_count"), 1)
    alpha = total("acceptance_sum") / positions
    per_draft = total("draft_seconds") / max(total("draft_forwards"), 1)
    per_target = total("alone_seconds") / max(total("alone_forwards"), 1)
    cost = per_draft / per_target if per_target > 0 else float("nan")
    greedy = sampling_temperature is None
    return {"acceptance_rate": alpha, "overlap_t1": total("overlap_t1_sum") / positions,
            "accepted_fraction": total("accepted") / max(total("proposed"), 1),
            "tokens_per_target_forward": total("tokens") / max(total("target_forwards"), 1),
            "cost_ratio": cost, "speedup_model": speedup_model(alpha, num_proposals, cost),
            "speedup_measured": total("alone_wall_seconds") / max(total("wall_seconds"), 1e-12),
            "matches_target": sum(bool(s["matches_target"]) for s in stats) / max(len(stats), 1) if greedy else None,
            "num_proposals": num_proposals}

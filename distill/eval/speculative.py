"""`distill eval ckpt=TARGET eval.speculative.draft=DRAFT`: speculative decoding and its measures (SPEC §10).

Every request is decoded twice, one at a time and through the same runner
code: speculatively (draft proposes k, target verifies), and by the target
alone, the baseline of ``speedup_measured`` and of the per-forward costs that
give c. Each generation record keeps its counts and timings, so the measures
below are recomputed from generations.jsonl alone (``distill rescore``):
  * acceptance_rate α: mean over decided proposal positions of Σ_v min(p, q);
  * accepted_fraction: accepted / proposed; tokens_per_target_forward;
  * cost_ratio c: seconds per draft forward / seconds per target forward (target alone);
  * speedup_model = E / (c·k + 1), E = (1 − α^{k+1}) / (1 − α);
  * speedup_measured: wall clock of the target alone / wall clock of speculative decoding;
  * matches_target: the fraction of requests where both decodings gave the same output (1.0 for greedy).
"""

from __future__ import annotations

import time

import torch

from distill.models.speculative import speculative_generate, speedup_model, target_alone
from distill.train.progress import progress_bar


def speculative_records(target, draft, tokenizer, items, max_new_tokens: int, num_proposals: int,
                        sampling_temperature: float | None, progress: bool, seed: int) -> list[tuple[str, dict]]:
    """Per request: (the speculative output text, its counts and timings)."""
    eos = tokenizer.eos_token_id
    target.eval(), draft.eval()
    out = []
    with progress_bar(progress, total=len(items), description=f"speculative k={num_proposals}", unit="prompt") as bar:
        for index, item in enumerate(items):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + index)  # one stream per request
            started = time.perf_counter()
            spec = speculative_generate(target, draft, item.prompt_ids, max_new_tokens, num_proposals, eos,
                                        sampling_temperature, generator)
            wall = time.perf_counter() - started
            alone = target_alone(target, item.prompt_ids, max_new_tokens, eos, sampling_temperature,
                                 torch.Generator().manual_seed(seed * 1_000_003 + index))
            stats = {"tokens": len(spec.tokens), "proposed": spec.proposed, "accepted": spec.accepted,
                     "overlap_sum": sum(spec.overlaps), "overlap_count": len(spec.overlaps),
                     "target_forwards": spec.target_forwards, "draft_forwards": spec.draft_forwards,
                     "draft_seconds": spec.draft_seconds, "wall_seconds": wall,
                     "alone_forwards": alone.forwards, "alone_seconds": alone.seconds,
                     "alone_wall_seconds": alone.wall_seconds, "matches_target": spec.tokens == alone.tokens}
            text = tokenizer.decode([t for t in spec.tokens if t != eos], skip_special_tokens=True).strip()
            out.append((text, stats))
            bar.advance()
    return out


def summarise_speculative(stats: list[dict], num_proposals: int) -> dict:
    """The measures of the module docstring from per-request stats."""
    total = lambda key: sum(s[key] for s in stats)  # noqa: E731
    alpha = total("overlap_sum") / max(total("overlap_count"), 1)
    per_draft = total("draft_seconds") / max(total("draft_forwards"), 1)
    per_target = total("alone_seconds") / max(total("alone_forwards"), 1)
    cost = per_draft / per_target if per_target > 0 else float("nan")
    return {"acceptance_rate": alpha, "accepted_fraction": total("accepted") / max(total("proposed"), 1),
            "tokens_per_target_forward": total("tokens") / max(total("target_forwards"), 1),
            "cost_ratio": cost, "speedup_model": speedup_model(alpha, num_proposals, cost),
            "speedup_measured": total("alone_wall_seconds") / max(total("wall_seconds"), 1e-12),
            "matches_target": sum(bool(s["matches_target"]) for s in stats) / max(len(stats), 1),
            "num_proposals": num_proposals}

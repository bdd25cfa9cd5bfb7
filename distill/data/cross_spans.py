"""Student tokens that merge teacher tokens: the teacher's probability of the student's whole token.

At an aligned position the teacher's next-token distribution is about *its* next token. Where the student's
realised token b spells several teacher tokens t1 … tm (the student's "Ġ-" where the teacher writes "Ġ" then
"-"), mapping the teacher's first token onto a student token gives b nothing and hands p(t1) to the student token
that t1 maps to ("Ġ"): the student is taught to stop after "Ġ" exactly where its data goes on with "-". The
teacher does say how likely b's whole text is: the product of its conditionals along its own tokens,
P(b) = p(t1) · p(t2 | t1) ⋯ p(tm | t1 … tm−1) (a span's summed log-probabilities). So at such a position P(b) moves
from t1's student token (or from the bucket, when t1 maps nowhere) to b; everything else is as mapped, and the
total stays 1. Only the realised token gets its span's probability: the teacher's probability of any other
student token that merges its tokens would need its own continuation, which the batch does not hold (docs/design.md,
"Different tokenizers"). With one tokenizer on both sides every span is one token mapped to itself: no change.
"""

from __future__ import annotations

import torch


def realised_log_probs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, kd_temperature: float
                       ) -> torch.Tensor:
    """The teacher's log-probability of each of its own target tokens, [N] over the masked positions in row-major
    order (row b's target tokens in order), at ``kd_temperature``."""
    rows, columns = mask.nonzero(as_tuple=True)
    scaled = logits[rows, columns].float() / kd_temperature
    return scaled.gather(-1, targets[rows, columns].unsqueeze(-1)).squeeze(-1) - scaled.logsumexp(-1)


def _log_sub(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(exp a − exp b) for b ≤ a (−inf where they are equal)."""
    return a + torch.log1p(-torch.exp(b - a).clamp(max=1.0))


def span_spellings(pairs: list[list[tuple]], teacher_mask: torch.Tensor, student_mask: torch.Tensor):
    """Index tensors over the aligned pairs, in ``pairs``' flattened order, for those whose student token ends at
    a teacher boundary: (which pair, the teacher's flat index of its first token, of the token after its last,
    the student's flat index of its own token)."""
    def firsts(mask):
        counts = (mask > 0).sum(1)
        return (counts.cumsum(0) - counts).tolist()

    teacher_first, student_first = firsts(teacher_mask), firsts(student_mask)
    chosen = [(n, teacher_first[b] + pair[1], teacher_first[b] + pair[2], student_first[b] + pair[0])
              for n, (b, pair) in enumerate((b, pair) for b, row in enumerate(pairs) for pair in row) if pair[2] > pair[1]]
    out = torch.tensor(chosen, dtype=torch.long, device=teacher_mask.device).reshape(-1, 4)
    return out.unbind(1)


def merge_spans(values: torch.Tensor, tail: torch.Tensor, targets: torch.Tensor, student_of: torch.Tensor,
                first_teacher: torch.Tensor, realised: torch.Tensor, span_log_prob: torch.Tensor):
    """Move each position's span probability onto its realised student token (module docstring).

    ``values`` [N, k] the mapped teacher log-probabilities at N aligned positions over the student tokens
    ``targets`` (sorted), ``tail`` [N] the bucket; ``first_teacher`` [N] each position's first teacher token,
    ``realised`` [N] the student's token, ``span_log_prob`` [N] log P(realised) (nan: no span). ``student_of``
    [V_teacher]: each teacher token's student token, −1 for none. Returns (values, tail, extra ids [N], extra
    log-probabilities [N]): the realised tokens that no teacher token maps onto need a slot of their own
    (−1 / −inf where none is needed)."""
    values, tail = values.clone(), tail.clone()
    extra_ids = torch.full_like(realised, -1)
    extra = torch.full_like(tail, float("-inf"))
    source = student_of[first_teacher]
    live = ~torch.isnan(span_log_prob) & (source != realised)
    rows, span = live.nonzero().squeeze(-1), span_log_prob[live]
    source, realised = source[live], realised[live]

    def slot(ids):
        at = torch.searchsorted(targets, ids.clamp(min=0)).clamp(max=targets.numel() - 1)
        return at, (ids >= 0) & (targets[at] == ids)

    at, mapped = slot(source)
    values[rows[mapped], at[mapped]] = _log_sub(values[rows[mapped], at[mapped]], span[mapped])
    tail[rows[~mapped]] = _log_sub(tail[rows[~mapped]], span[~mapped])
    at, known = slot(realised)
    values[rows[known], at[known]] = torch.logaddexp(values[rows[known], at[known]], span[known])
    extra_ids[rows[~known]], extra[rows[~known]] = realised[~known], span[~known]
    return values, tail, extra_ids, extra

"""Where the two tokenisations cut the text differently: merged tokens and tokens inside a teacher token.

Merged (the student's tokenizer the coarser one here): the teacher's probability of the student's whole token.

At an aligned position the teacher's next-token distribution is about *its* next token. Where the student's
realised token b spells several teacher tokens t1 … tm (the student's "Ġ-" where the teacher writes "Ġ" then
"-"), mapping the teacher's first token onto a student token gives b nothing and hands p(t1) to the student token
that t1 maps to ("Ġ"): the student is taught to stop after "Ġ" exactly where its data goes on with "-". The
teacher does say how likely b's whole text is: the product of its conditionals along its own tokens,
P(b) = p(t1) · p(t2 | t1) ⋯ p(tm | t1 … tm−1) (a span's summed log-probabilities). So at such a position P(b) moves
from t1's student token (or from the bucket, when t1 maps nowhere) to b; everything else is as mapped, and the
total stays 1. Any other student token that spells the realised t1 and then one teacher token x gets its exact
probability too, p(t1) · p(x | t1), from the teacher's next row along the realised path (``two_piece_rows``); a
longer merge, or one of another first token, would need a continuation the batch does not hold (docs/design.md,
"Different tokenizers"). With one tokenizer on both sides every span is one token mapped to itself: no change.

Inside (the student's tokenizer the finer one here): a student token that starts inside a teacher token (the
student's "-" after its "Ġ", where the teacher wrote "Ġ-") has no aligned position, so without a teacher of its
own it would get no signal (on arith: the operators of every answer line). The teacher's row where its token
began says, for every teacher token that extends the text written so far ("Ġ" → "Ġ-", "Ġ+", "Ġ=", …), how likely
it is; conditioned on that prefix and mapped to the student's first token of each rest ("-", "+", "=", …), it is
the teacher's distribution over the student's next token. Teacher tokens that are the prefix itself are left out
(renormalised away): what follows them is in a row the batch does not hold.
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


def _slots(targets: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(each id's slot among the sorted ``targets``, whether it is there at all; −1 ids never are)."""
    at = torch.searchsorted(targets, ids.clamp(min=0)).clamp(max=targets.numel() - 1)
    return at, (ids >= 0) & (targets[at] == ids)


def span_spellings(pairs: list[list[tuple]], teacher_mask: torch.Tensor, student_mask: torch.Tensor):
    """Index tensors over the aligned pairs, in ``pairs``' flattened order, for those whose student token ends at
    a teacher boundary: (which pair, the teacher's flat index of its first token, of the token after its last,
    the student's flat index of its own token)."""
    teacher_first, student_first = _firsts(teacher_mask), _firsts(student_mask)
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

    at, mapped = _slots(targets, source)
    values[rows[mapped], at[mapped]] = _log_sub(values[rows[mapped], at[mapped]], span[mapped])
    tail[rows[~mapped]] = _log_sub(tail[rows[~mapped]], span[~mapped])
    at, known = _slots(targets, realised)
    values[rows[known], at[known]] = torch.logaddexp(values[rows[known], at[known]], span[known])
    extra_ids[rows[~known]], extra[rows[~known]] = realised[~known], span[~known]
    return values, tail, extra_ids, extra


def continuations(cross, prefix: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the teacher's tokens say about a student token that starts ``prefix`` characters into a teacher
    token: (teacher ids whose text extends ``prefix``, the student's first token of the rest of each; teacher ids
    whose text is ``prefix`` itself or whose rest is no text, whose continuation the row cannot tell). Computed
    once per prefix and run (a scan of the teacher's vocabulary)."""
    hit = cross.continuations.get(prefix)
    if hit is None:
        key, longer, rests, other = prefix.encode(), [], [], []
        for token_id, surface in enumerate(cross.teacher_surfaces):
            if surface is None or not surface.startswith(key):
                continue
            try:
                rest = surface[len(key):].decode("utf-8")
            except UnicodeDecodeError:  # the rest is a byte fragment: no student token to name
                rest = ""
            (other if not rest else longer).append(token_id)
            if rest:
                rests.append(rest)
        encoded = cross.student_tokenizer(rests, add_special_tokens=False)["input_ids"] if rests else []
        hit = (torch.tensor(longer, dtype=torch.long), torch.tensor([ids[0] if ids else -1 for ids in encoded],
               dtype=torch.long), torch.tensor(other, dtype=torch.long))
        cross.continuations[prefix] = hit
    return hit


def inside_teacher(cross, rows: torch.Tensor, prefix: str, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's distribution over the student's next token after the student has written ``prefix`` of a
    teacher token ([n, V_teacher] log-probabilities of the rows where that token was predicted): each teacher
    token a that extends the prefix gives p(a) to the student's first token of a's rest, conditioned on the
    prefix continuing inside a teacher token (divided by the mass of the tokens that extend it); rests the
    student's ``targets`` lack are the bucket. Tokens that are the prefix itself are left out: what follows them
    is in a row the batch does not hold, and a bucket the student cannot put mass in (its support may be its
    whole vocabulary) would make the divergence infinite. (values over ``targets`` [n, k], log bucket [n])."""
    longer, student, _ = (t.to(rows.device) for t in continuations(cross, prefix))
    at, slotted = _slots(targets, student)
    probs = rows.exp()
    mass = torch.zeros(rows.size(0), targets.numel(), dtype=probs.dtype, device=rows.device)
    mass.index_add_(1, at[slotted], probs[:, longer[slotted]])
    bucket = probs[:, longer[~slotted]].sum(-1)
    total = (mass.sum(-1) + bucket).clamp(min=torch.finfo(probs.dtype).tiny).unsqueeze(-1)
    return (mass / total).log(), (bucket / total.squeeze(-1)).log()


def inside_rows(cross, pairs, rows: torch.Tensor, mapped: tuple, targets: torch.Tensor) -> tuple:
    """``mapped`` (values, bucket) with the rows of student tokens that start inside a teacher token replaced by
    ``inside_teacher`` for their prefix (rows in ``pairs``' flattened order)."""
    values, tail = mapped[0].clone(), mapped[1].clone()
    groups: dict[str, list[int]] = {}
    for n, pair in enumerate(pair for row in pairs for pair in row):
        if pair[3]:
            groups.setdefault(pair[3], []).append(n)
    for prefix, members in groups.items():
        at = torch.tensor(members, dtype=torch.long, device=rows.device)
        values[at], tail[at] = inside_teacher(cross, rows[at], prefix, targets)
    return values, tail


def merged_rows(ctx, batch, teacher_view, pairs, mapped, kd_temperature: float):
    """``merge_spans`` at the aligned positions (in ``pairs``' order): the teacher's realised tokens'
    log-probabilities summed over each student token's spelling."""
    from distill.models.forward import view_targets

    view, teacher_batch = teacher_view
    teacher_targets, _ = view_targets(ctx.teacher, teacher_batch)
    student_targets, student_mask = view_targets(ctx.student, batch)
    realised = realised_log_probs(view.logits, teacher_targets, view.mask, kd_temperature)
    which, first, end, student_at = span_spellings(pairs, view.mask, student_mask)
    sums = torch.cat([realised.new_zeros(1, dtype=torch.float64), realised.double().cumsum(0)])
    count = mapped[1].numel()
    span = torch.full((count,), float("nan"), device=ctx.device)
    span[which] = (sums[end] - sums[first]).float()
    first_teacher, student_token = (torch.zeros(count, dtype=torch.long, device=ctx.device) for _ in range(2))
    first_teacher[which] = teacher_targets[view.mask > 0][first]
    student_token[which] = student_targets[student_mask > 0][student_at]
    targets = ctx.cross.mapping[0].to(ctx.device)
    merged = merge_spans(*mapped, targets, ctx.cross.student_of.to(ctx.device), first_teacher, student_token, span)
    student_first = _firsts(student_mask)
    every_token = student_targets[student_mask > 0][[student_first[b] + pair[0] for b, row in enumerate(pairs)
                                                     for pair in row]]
    moved = two_piece_rows(ctx.cross, pairs, (view, teacher_targets, realised), every_token, merged[:2], targets,
                           kd_temperature)
    return (*moved, *merged[2:])


def _firsts(mask: torch.Tensor) -> list[int]:
    """Each row's first index among the masked positions in row-major order."""
    counts = (mask > 0).sum(1)
    return (counts.cumsum(0) - counts).tolist()


def two_piece_rows(cross, pairs, teacher: tuple, student_tokens: torch.Tensor, mapped: tuple, targets: torch.Tensor,
                   kd_temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-piece merges of the realised teacher token (module docstring): at an aligned position whose teacher
    token t1 has a next row in the batch, each student token s spelling t1 then x gets p(t1)·p(x | t1), moved from
    t1's student token (or its bucket). Left as mapped: s = the realised student token (``merge_spans`` gave it its
    span) and s whose text is a proper prefix of it (its mass is the realised path's minus continuations the batch
    does not hold). ``teacher`` = (view, its targets, ``realised_log_probs``); ``student_tokens`` [N] the realised
    student token at each pair; ``mapped`` (values [N, k] over ``targets``, bucket [N]). Positions inside a teacher
    token keep ``inside_teacher``'s distribution."""
    view, teacher_targets, realised = teacher
    table, values, tail = two_pieces(cross), mapped[0].clone(), mapped[1].clone()
    counts, firsts = (view.mask > 0).sum(1).tolist(), _firsts(view.mask)
    flat_targets = teacher_targets[view.mask > 0]
    groups: dict[int, list[tuple[int, int]]] = {}
    for n, (b, pair) in enumerate((b, pair) for b, row in enumerate(pairs) for pair in row):
        if not pair[3] and pair[1] + 1 < counts[b] and int(flat_targets[firsts[b] + pair[1]]) in table:
            groups.setdefault(int(flat_targets[firsts[b] + pair[1]]), []).append((n, firsts[b] + pair[1]))
    rows, columns = view.mask.nonzero(as_tuple=True)
    surfaces = cross.student_surfaces
    for first, members in groups.items():
        at, flat = (torch.tensor(column, dtype=torch.long, device=values.device) for column in zip(*members))
        rests, students = (column.to(values.device) for column in table[first])
        following = (view.logits[rows[flat + 1], columns[flat + 1]].float() / kd_temperature).log_softmax(-1)
        amounts = realised[flat].unsqueeze(-1) + following[:, rests]  # log p(t1) + log p(x | t1), [m, |x|]
        own = [surfaces[int(token)] or b"" for token in student_tokens[at]]
        left = torch.tensor([[s == b or own[i].startswith(surfaces[s] or b"\0") for s in students.tolist()]
                             for i, b in enumerate(student_tokens[at].tolist())], dtype=torch.bool, device=values.device)
        amounts = amounts.masked_fill(left, float("-inf"))
        slot, known = _slots(targets, students)
        values[at.unsqueeze(-1), slot[known]] = torch.logaddexp(values[at.unsqueeze(-1), slot[known]], amounts[:, known])
        tail[at] = torch.logaddexp(tail[at], amounts[:, ~known].logsumexp(-1))
        source, mapped_at = _slots(targets, cross.student_of[first].view(1).to(values.device))
        if mapped_at.item():
            values[at, source] = _log_sub(values[at, source], amounts.logsumexp(-1))
        else:
            tail[at] = _log_sub(tail[at], amounts.logsumexp(-1))
    return values, tail


def two_pieces(cross) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Teacher token t1 -> (teacher tokens x, student tokens s) where s's text is exactly t1's then x's: the
    student tokens that merge two of the teacher's, found once per run by splitting every student token's text
    (surfaces unique on the teacher's side, as the vocabulary match takes them)."""
    if "built" not in cross.two_pieces:
        counts: dict[bytes, int] = {}
        for surface in cross.teacher_surfaces:
            counts[surface] = counts.get(surface, 0) + 1
        teacher = {s: i for i, s in enumerate(cross.teacher_surfaces) if s is not None and counts[s] == 1}
        table: dict[int, list[tuple[int, int]]] = {}
        for student_id, surface in enumerate(cross.student_surfaces):
            for cut in range(1, len(surface or b"")):
                first, rest = teacher.get(surface[:cut]), teacher.get(surface[cut:])
                if first is not None and rest is not None:
                    table.setdefault(first, []).append((rest, student_id))
        cross.two_pieces.update({first: tuple(torch.tensor(column, dtype=torch.long) for column in zip(*entries))
                                 for first, entries in table.items()})
        cross.two_pieces["built"] = True
    return cross.two_pieces

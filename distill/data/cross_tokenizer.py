"""Teacher and student with different tokenizers: which positions and which tokens can be compared.

Both models read the same text. Each tokenisation maps its tokens to character spans (offsets). A position is
*aligned* where both tokenisations have a token boundary at the same character: there the teacher's and the
student's next-token distributions are distributions over what follows the same text. Between two aligned
boundaries each side covers the text with one or more tokens (a *span*); where a method needs the realised text's
log-probability, a span's tokens' log-probabilities are summed.

Vocabularies are matched by the text a token stands for (its surface string, leading space included): teacher
token a and student token b are matched when both stand for the same bytes and no other token of either vocabulary
does (byte-level tokens are read as their raw bytes, so byte fragments of a character match too). The
divergence is then taken over matched tokens plus one bucket per side for the unmatched mass, which is exactly a
sparse teacher (distill.losses.sparse) whose support is the matched tokens, mapped to the student's ids: with
the same tokenizer on both sides every token is matched, the bucket is empty, and the loss is the ordinary one.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field

import torch

from distill.errors import ConfigError
from distill.losses.sparse import SparseTeacher

REPLACEMENT_BYTES = "\ufffd".encode()  # what a lossy decode leaves: never a match


def offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """(ids, character spans) of ``text`` without special tokens; refused in one line for a tokenizer that
    cannot give offsets (a slow tokenizer) or does not give back the text (lossy normalisation)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"divergence.cross_tokenizer needs character offsets; tokenizer "
                          f"{getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)} is not a fast tokenizer")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(span) for span in encoded["offset_mapping"]]


def check_round_trip(tokenizer, text: str) -> None:
    """The tokenizer reproduces the text it reads (no lowercasing, accent stripping or unknown-token loss)."""
    ids, _ = offsets(tokenizer, text)
    back = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if back != text:
        raise ConfigError(f"divergence.cross_tokenizer needs tokenizers that give back the text they read; "
                          f"{getattr(tokenizer, 'name_or_path', 'a tokenizer')} turns {text[:40]!r} into "
                          f"{back[:40]!r}")


@dataclass(frozen=True)
class Alignment:
    """Aligned boundaries of one text: ``teacher[i]`` and ``student[i]`` are the indices of the tokens that end
    at the i-th common boundary; the next-token distributions after those tokens are compared."""

    teacher: list[int]
    student: list[int]
    ends: list[int]  # the common boundary characters


def align(teacher_spans: list[tuple[int, int]], student_spans: list[tuple[int, int]]) -> Alignment:
    """The token boundaries both tokenisations share. A boundary is the end character of a token; two tokens
    ending at the same character (e.g. after a shared word) align, split or merged tokens in between do not."""
    student_end = {}
    for index, (_, end) in enumerate(student_spans):
        student_end.setdefault(end, index)  # zero-width tokens share an end: the first one names it
    pairs = [(t, student_end[end], end) for t, (_, end) in enumerate(teacher_spans) if end in student_end]
    seen, kept = set(), []
    for pair in pairs:
        if pair[2] not in seen:
            seen.add(pair[2])
            kept.append(pair)
    return Alignment([p[0] for p in kept], [p[1] for p in kept], [p[2] for p in kept])


def span_sums(values: torch.Tensor, alignment_indices: list[int]) -> torch.Tensor:
    """Per aligned boundary, the sum of ``values`` ([T] per token of one side) over that side's tokens since the
    previous aligned boundary: a span's log-probability when ``values`` are its tokens' log-probabilities."""
    out, start = [], 0
    for end in alignment_indices:
        out.append(values[start:end + 1].sum())
        start = end + 1
    return torch.stack(out) if out else values.new_zeros(0)


def _byte_decoder() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's): each of the 256 bytes as one printable character, inverted."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def surface_bytes(tokenizer) -> list[bytes | None]:
    """Each id's surface text as bytes, leading space included; None for special tokens. Byte-level BPE tokens
    (GPT-2, Llama 3, Qwen) and byte-fallback pieces (``<0x80>``) are read as their raw bytes, so the halves of a
    multi-byte character match too; other tokens as ``decode(anchor + id) − decode(anchor)`` in UTF-8 (which
    handles sentencepiece's ``▁`` markers)."""
    import re

    byte_level = type(getattr(tokenizer, "backend_tokenizer", None) and tokenizer.backend_tokenizer.decoder
                      ).__name__ == "ByteLevel"
    decoder = _byte_decoder() if byte_level else {}
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"]
    base = tokenizer.decode(anchor, clean_up_tokenization_spaces=False)
    special = set(tokenizer.all_special_ids)
    out: list[bytes | None] = []
    for token_id, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token_id in special or piece is None:
            out.append(None)
        elif byte_level and all(ch in decoder for ch in piece):
            out.append(bytes(decoder[ch] for ch in piece))
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
            out.append(bytes([int(piece[3:5], 16)]))
        else:
            text = tokenizer.decode(anchor + [token_id], clean_up_tokenization_spaces=False)
            out.append(text[len(base):].encode() if text.startswith(base) else None)
    return out


def match_vocabularies(teacher_tokenizer, student_tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher ids, student ids) of matched tokens: equal surface strings, each unique in its own vocabulary;
    special tokens by their name ("<pad>" to "<pad>"), and EOS to EOS whatever the names."""
    def unique(surfaces):
        counts: dict[bytes, int] = {}
        for s in surfaces:
            if s is not None:
                counts[s] = counts.get(s, 0) + 1
        return {s: i for i, s in enumerate(surfaces) if s is not None and counts[s] == 1 and REPLACEMENT_BYTES not in s}

    teacher, student = unique(surface_bytes(teacher_tokenizer)), unique(surface_bytes(student_tokenizer))
    pairs = {(teacher[s], student[s]) for s in teacher.keys() & student.keys()}
    specials = [{tok.convert_ids_to_tokens(i): i for i in tok.all_special_ids}
                for tok in (teacher_tokenizer, student_tokenizer)]
    pairs |= {(specials[0][name], specials[1][name]) for name in specials[0].keys() & specials[1].keys()}
    eos = (teacher_tokenizer.eos_token_id, student_tokenizer.eos_token_id)
    if None not in eos and not any(eos[0] == a or eos[1] == b for a, b in pairs):  # "</s>" against "<|endoftext|>"
        pairs.add(eos)
    pairs = sorted(pairs)
    ids = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    return ids[:, 0], ids[:, 1]


def project_vocabularies(teacher_tokenizer, student_tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Every teacher token mapped to one student token where it can be: matched tokens to their match; any other
    to the first student token of its text (the teacher's "12" to the student's "1": both say the text goes on
    with "1"). (teacher ids, student ids); teacher tokens left out (byte fragments, unmatched specials) keep their
    mass in the bucket."""
    teacher_ids, student_ids = match_vocabularies(teacher_tokenizer, student_tokenizer)
    mapped = dict(zip(teacher_ids.tolist(), student_ids.tolist()))
    special = set(teacher_tokenizer.all_special_ids)
    texts, owners = [], []
    for token_id, surface in enumerate(surface_bytes(teacher_tokenizer)):
        if token_id in mapped or token_id in special or surface is None:
            continue
        try:
            texts.append(surface.decode("utf-8"))
        except UnicodeDecodeError:  # a byte fragment of a character: no text to re-tokenise
            continue
        owners.append(token_id)
    if texts:
        for token_id, ids in zip(owners, student_tokenizer(texts, add_special_tokens=False)["input_ids"]):
            if ids:
                mapped[token_id] = ids[0]
    pairs = sorted(mapped.items())
    return (torch.tensor([t for t, _ in pairs], dtype=torch.long),
            torch.tensor([s for _, s in pairs], dtype=torch.long))


def vocabulary_map(teacher_ids: torch.Tensor, student_ids: torch.Tensor, teacher_vocab: int):
    """(the student tokens anything maps onto, in order; each pair's slot among them; [V_teacher] bool of the
    teacher tokens that map nowhere): what ``matched_teacher`` needs, computed once per run."""
    targets, slot = torch.unique(student_ids, return_inverse=True)
    outside = torch.ones(teacher_vocab, dtype=torch.bool, device=teacher_ids.device)
    outside[teacher_ids] = False
    return targets, slot, outside


def matched_teacher(teacher_log_probs: torch.Tensor, teacher_ids: torch.Tensor, student_ids: torch.Tensor,
                    student_vocab: int, mapping: tuple | None = None) -> SparseTeacher:
    """The teacher at aligned positions ([..., V_teacher] log-probabilities) as a sparse teacher over the
    student's vocabulary: the probabilities of the teacher tokens mapped to each student token, summed (one to one
    for matched tokens, many to one for projected ones), the unmapped rest in the bucket. ``mapping``:
    ``vocabulary_map`` of these ids, when the caller keeps it."""
    device = teacher_log_probs.device
    teacher_ids, student_ids = teacher_ids.to(device), student_ids.to(device)
    if mapping is None:
        mapping = vocabulary_map(teacher_ids, student_ids, teacher_log_probs.size(-1))
    targets, slot, outside = (t.to(device) for t in mapping)
    picked = teacher_log_probs.index_select(-1, teacher_ids)
    if targets.numel() == student_ids.numel():  # one to one: no sums, the log-probabilities as they are
        order = torch.empty_like(slot).scatter_(0, slot, torch.arange(slot.numel(), device=device))
        values = picked.index_select(-1, order)
    else:
        summed = torch.zeros(*picked.shape[:-1], targets.numel(), dtype=picked.dtype, device=device)
        values = summed.index_add_(-1, slot, picked.exp()).log()
    rest = teacher_log_probs.masked_fill(~outside, float("-inf"))
    own = torch.empty(*teacher_log_probs.shape[:-1], 0, dtype=torch.long, device=device)  # every row's support is shared
    return SparseTeacher(own, values, torch.logsumexp(rest, -1), teacher_log_probs.amin(-1), student_vocab, targets)


@dataclass
class CrossTokenizer:
    """What a run comparing two tokenizers keeps: both tokenizers and the matched vocabulary."""

    teacher_tokenizer: object
    student_tokenizer: object
    teacher_ids: torch.Tensor
    student_ids: torch.Tensor
    same: bool = False  # one vocabulary on both sides: the teacher reads the student's own tokens
    continuations: dict = field(default_factory=dict, repr=False)  # prefix -> cross_spans.continuations, per run
    two_pieces: dict = field(default_factory=dict, repr=False)  # cross_spans.two_pieces, once per run

    @classmethod
    def build(cls, teacher_tokenizer, student_tokenizer) -> "CrossTokenizer":
        for tokenizer in (teacher_tokenizer, student_tokenizer):
            offsets(tokenizer, "a")  # a slow tokenizer is refused here, before any batch
        teacher_ids, student_ids = project_vocabularies(teacher_tokenizer, student_tokenizer)
        same = teacher_tokenizer.get_vocab() == student_tokenizer.get_vocab()
        return cls(teacher_tokenizer, student_tokenizer, teacher_ids, student_ids, same)

    @property
    def student_vocab(self) -> int:
        return len(self.student_tokenizer)

    @functools.cached_property
    def mapping(self) -> tuple:
        """``vocabulary_map`` of the pairs, once per run (a unique over every teacher token is not per batch)."""
        return vocabulary_map(self.teacher_ids, self.student_ids, len(self.teacher_tokenizer))

    @functools.cached_property
    def teacher_surfaces(self) -> list[bytes | None]:
        return surface_bytes(self.teacher_tokenizer)

    @functools.cached_property
    def student_surfaces(self) -> list[bytes | None]:
        return surface_bytes(self.student_tokenizer)

    @functools.cached_property
    def student_of(self) -> torch.Tensor:
        """[V_teacher] long: the student token each teacher token maps onto, −1 for none."""
        out = torch.full((len(self.teacher_tokenizer),), -1, dtype=torch.long)
        out[self.teacher_ids] = self.student_ids
        return out

    def unmapped(self, role: str, device) -> torch.Tensor:
        """[V] bool: the tokens of ``role``'s vocabulary in its bucket (no teacher mass maps onto a student
        one; a teacher one maps nowhere)."""
        vocab = len(self.teacher_tokenizer) if role == "teacher" else self.student_vocab
        ids = self.teacher_ids if role == "teacher" else self.student_ids
        mask = torch.ones(vocab, dtype=torch.bool, device=device)
        mask[ids.to(device)] = False
        return mask


def _starts(tokenizer, ids: list[int], text: str) -> list[int]:
    """The character each token of ``ids`` starts at in ``text`` (their decoding): from offsets when
    re-tokenising the text gives these ids back, else from growing decodes."""
    again, spans = offsets(tokenizer, text)
    if again == ids:
        return [start for start, _ in spans]
    return [len(tokenizer.decode(ids[:i], skip_special_tokens=True, clean_up_tokenization_spaces=False))
            for i in range(len(ids))]


def _texts(cross: CrossTokenizer, item) -> tuple[str, str, list[int], bool]:
    """(prompt text, target text, the target's student tokens without EOS, whether it ended in EOS)."""
    tok = cross.student_tokenizer
    target = list(item.target_ids)
    eos = bool(target) and target[-1] == tok.eos_token_id
    body = target[:-1] if eos else target
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)  # noqa: E731
    return decode(item.prompt_ids), decode(body), body, eos


def teacher_items(cross: CrossTokenizer, items, limit: int | None = None) -> tuple[list, list[list[tuple]]]:
    """The teacher's tokenisation of each item's text, and per item the aligned (student target index, teacher
    target index, end, prefix) entries: target tokens that start at the same character (the EOS after the text
    included, prefix ""); ``end`` is the teacher target index at which the student token's text ends, when that
    is a teacher boundary too (the teacher tokens from the second index up to it spell the student token), else
    -1; and student tokens that start inside a teacher token, with that token's index and ``prefix`` the part of
    its text before them (docs/methods.md, "Merged tokens").
    With one vocabulary the teacher reads the student's own tokens (a sample need not be the canonical
    tokenisation of its text). ``limit``: the teacher's position window; targets are cut to fit it."""
    from distill.data.collate import Encoded

    if cross.same:
        return list(items), [[(i, i, -1, "") for i in range(len(item.target_ids))] for item in items]
    tok = cross.teacher_tokenizer
    out, pairs = [], []
    for item in items:
        prompt_text, target_text, body, eos = _texts(cross, item)
        student_starts = _starts(cross.student_tokenizer, body, target_text) + ([len(target_text)] if eos else [])
        teacher_body, spans = offsets(tok, target_text)
        teacher_starts = [start for start, _ in spans] + ([len(target_text)] if eos else [])
        prompt = tok(prompt_text, add_special_tokens=False)["input_ids"]
        target = teacher_body + ([tok.eos_token_id] if eos else [])
        if limit is not None and len(prompt) + len(target) > limit:  # re-tokenised text can be longer
            target = target[:max(limit - len(prompt), 0)]
        out.append(Encoded(prompt, target, index=item.index))
        first = {}
        for j, start in enumerate(teacher_starts[:len(target)]):
            first.setdefault(start, j)
        stops = dict(first)
        if len(target) >= len(teacher_body):  # the whole text kept: a token ending at its end ends a span
            stops.setdefault(len(target_text), len(teacher_body))
        ends = [stops.get(end, -1) for end in student_starts[1:len(body)] + [len(target_text)]][:len(body)]
        ends += [-1] * (len(student_starts) - len(ends))  # EOS covers no text
        aligned = [(i, first[start], ends[i], "") for i, start in enumerate(student_starts) if start in first]
        pairs.append(sorted(aligned + _inside(student_starts[:len(body)], spans[:len(target)], first, target_text)))
    return out, pairs


def _inside(student_starts: list[int], teacher_spans: list[tuple[int, int]], first: dict, text: str) -> list[tuple]:
    """Student tokens that start inside a teacher token (the student's tokenizer the finer one there): (student
    index, that teacher token's index, −1, the text of the teacher token before the student token). Without
    them those positions would get no teacher at all (docs/methods.md, "Tokens inside a teacher token")."""
    starts = [start for start, _ in teacher_spans]
    out = []
    for i, start in enumerate(student_starts):
        j = bisect.bisect_right(starts, start) - 1
        if start in first or j < 0 or not teacher_spans[j][0] < start < teacher_spans[j][1]:
            continue
        out.append((i, j, -1, text[teacher_spans[j][0]:start]))
    return out


def cross_teacher(ctx, batch: dict, items, kd_temperature: float, uld: str | None = None
                  ) -> tuple[SparseTeacher, torch.Tensor, torch.Tensor | None]:
    """The teacher's distributions at the student's view positions (aligned ones; the rest masked out) as a
    sparse teacher over matched tokens, that aligned mask ([B, L] of the student's token view), and with ``uld``
    the teacher's probabilities sorted in decreasing order (all of them, or its bucket's) for the ULD term."""
    from distill.data.collate import collate
    from distill.data.cross_spans import inside_rows, merged_rows
    from distill.losses.logspace import log_probs
    from distill.models.forward import token_view, view_targets
    from distill.models.load import position_limit

    cross = ctx.cross
    limit = None if ctx.teacher.config.is_encoder_decoder else position_limit(ctx.teacher.config)
    encoded, pairs = teacher_items(cross, items, limit)
    tok = cross.teacher_tokenizer
    teacher_batch = {k: v.to(ctx.device) for k, v in collate(encoded, tok.pad_token_id,
                                                            bool(ctx.teacher.config.is_encoder_decoder)).items()}
    view = token_view(ctx.teacher, teacher_batch)
    _, mask = view_targets(ctx.student, batch)
    targets = cross.mapping[0].to(ctx.device)
    k = targets.numel()
    values = torch.full((*mask.shape, k), float("-inf"), device=ctx.device)
    tail = torch.zeros(mask.shape, device=ctx.device)
    aligned = torch.zeros_like(mask)
    keep = None if uld != "unmatched" else cross.unmapped("teacher", ctx.device)
    width = 0 if uld is None else view.logits.size(-1) if keep is None else int(keep.sum())
    ranked = torch.zeros(*mask.shape, width, device=ctx.device) if uld is not None else None
    extra_ids, extra = torch.full(mask.shape, -1, device=ctx.device), torch.full(mask.shape, float("-inf"),
                                                                               device=ctx.device)
    (student_b, student_pos), (teacher_b, teacher_pos) = _aligned_positions(pairs, mask, view.mask)
    if student_b.numel():  # every aligned position of the batch in one pass over the teacher's vocabulary
        rows = log_probs(view.logits[teacher_b, teacher_pos].float(), kd_temperature)
        sparse = matched_teacher(rows, cross.teacher_ids.to(ctx.device), cross.student_ids, cross.student_vocab,
                                 cross.mapping)
        row_values, row_tail = sparse.log_probs, sparse.log_tail
        if not cross.same:  # student tokens that start inside a teacher token: the teacher given that prefix
            row_values, row_tail = inside_rows(cross, pairs, rows, (row_values, row_tail), targets)
        if not cross.same:  # student tokens that spell several teacher tokens get their whole text's probability
            row_values, row_tail, extra_ids[student_b, student_pos], extra[student_b, student_pos] = merged_rows(
                ctx, batch, (view, teacher_batch), pairs, (row_values, row_tail), kd_temperature)
        values[student_b, student_pos], tail[student_b, student_pos] = row_values, row_tail
        aligned[student_b, student_pos] = 1
        if ranked is not None:
            probs = rows.exp() if keep is None else rows.exp()[:, keep]
            ranked[student_b, student_pos] = probs.sort(-1, descending=True).values
    ids = torch.empty(*mask.shape, 0, dtype=torch.long, device=ctx.device)  # the matched tokens: shared by all
    if (extra_ids >= 0).any():  # realised student tokens no teacher token maps onto: one more slot of their own
        ids, values = extra_ids.unsqueeze(-1), torch.cat([values, extra.unsqueeze(-1)], -1)
    return SparseTeacher(ids, values, tail, None, cross.student_vocab, targets), aligned, ranked


def _aligned_positions(pairs: list[list[tuple[int, int]]], student_mask: torch.Tensor, teacher_mask: torch.Tensor):
    """The aligned (row, position) pairs of the student's and the teacher's views, as index tensors: ``pairs``
    count target tokens, i.e. the views' masked positions in order."""
    def flat(mask: torch.Tensor, which: int):
        rows, columns = mask.nonzero(as_tuple=True)  # row-major: row b's target tokens in order
        counts = (mask > 0).sum(1)
        first = (counts.cumsum(0) - counts).tolist()
        picks = torch.tensor([first[b] + pair[which] for b, row in enumerate(pairs) for pair in row],
                             dtype=torch.long, device=mask.device)
        return rows[picks], columns[picks]

    return flat(student_mask, 0), flat(teacher_mask, 1)

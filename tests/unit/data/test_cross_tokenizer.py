"""Cross-tokenizer alignment and vocabulary matching on hand-built examples and two real offline tokenizers; with
the same tokenizer on both sides the loss is the ordinary divergence."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from distill.data.cross_tokenizer import (
    align,
    check_round_trip,
    match_vocabularies,
    matched_teacher,
    offsets,
    span_sums,
)
from distill.errors import ConfigError
from distill.losses.divergences import Divergence
from distill.losses.sparse import sparse_divergence
from distill.models.tokenizer import build_tokenizer

TEXT = "Question: Ava has 12 pens. Next, Ava gets 7 more pens.\nAnswer: 12 + 7 = 19\n#### 19"


@pytest.fixture(scope="module")
def gpt2(shared_dir):
    from distill.models.load import load_tokenizer

    return load_tokenizer(str(shared_dir / "models" / "gpt2-tokenizer"))  # as runs load it: with a pad token


@pytest.fixture(scope="module")
def projected(gpt2, tiny):
    """GPT-2's vocabulary projected onto the tiny one (50 257 teacher tokens: computed once for the module)."""
    from distill.data.cross_tokenizer import project_vocabularies

    return project_vocabularies(gpt2, tiny)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = [TEXT.replace("12", str(a)).replace("7", str(b)) for a in range(1, 30) for b in range(1, 9)]
    return build_tokenizer(texts, 300, tmp_path_factory.mktemp("tok"))


def test_boundaries_both_sides_share_align_and_spans_sum_between_them():
    # "hello world!": teacher "hello" | " world" | "!"; student "he" | "llo" | " " | "world" | "!"
    teacher = [(0, 5), (5, 11), (11, 12)]
    student = [(0, 2), (2, 5), (5, 6), (6, 11), (11, 12)]
    a = align(teacher, student)
    assert (a.teacher, a.student, a.ends) == ([0, 1, 2], [1, 3, 4], [5, 11, 12])
    # the student's span log-probabilities: "he"+"llo", " "+"world", "!"
    assert span_sums(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), a.student).tolist() == [3.0, 7.0, 5.0]
    merged = align([(0, 11)], student)  # one teacher token over the whole word pair: only its end aligns
    assert (merged.teacher, merged.student) == ([0], [3])


def test_real_tokenizers_align_on_shared_text(gpt2, tiny):
    for tokenizer in (gpt2, tiny):
        check_round_trip(tokenizer, TEXT)
    (_, a_spans), (_, b_spans) = offsets(gpt2, TEXT), offsets(tiny, TEXT)
    alignment = align(a_spans, b_spans)
    assert alignment.ends[-1] == len(TEXT)  # the text's end is always a shared boundary
    assert 0 < len(alignment.ends) <= min(len(a_spans), len(b_spans))


def test_lossy_or_slow_tokenizers_are_refused_in_one_line():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = Tokenizer(models.WordLevel({"hello": 0, "[UNK]": 1}, unk_token="[UNK]"))
    words.normalizer, words.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    lowering = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]")
    with pytest.raises(ConfigError, match="give back the text they read"):
        check_round_trip(lowering, "Hello")

    class Slow:
        is_fast, name_or_path = False, "slow-one"

    with pytest.raises(ConfigError, match="slow-one is not a fast tokenizer"):
        offsets(Slow(), "x")


def test_vocabularies_match_by_surface_text(gpt2, tiny):
    same_t, same_s = match_vocabularies(tiny, tiny)
    assert same_t.tolist() == same_s.tolist() and len(same_t) == len(tiny)  # every token, specials by name
    cross_t, cross_s = match_vocabularies(gpt2, tiny)
    assert 0 < len(cross_t) < len(tiny)
    assert (gpt2.eos_token_id, tiny.eos_token_id) in set(zip(cross_t.tolist(), cross_s.tolist()))
    for t, s in list(zip(cross_t.tolist(), cross_s.tolist()))[:50]:  # matched tokens stand for the same text
        if t != gpt2.eos_token_id:
            assert gpt2.decode([t]) == tiny.decode([s]) or gpt2.decode([t]).strip() == tiny.decode([s]).strip()


@pytest.mark.parametrize("name, extra", [("fkl", {}), ("rkl", {}), ("jsd", {"beta": 0.5}), ("tvd", {}),
                                         ("skl", {"skew": 0.1}), ("srkl", {"skew": 0.1})])
def test_the_same_tokenizer_gives_the_ordinary_divergence_and_gradients(tiny, name, extra):
    torch.manual_seed(0)
    vocab = len(tiny)
    student, teacher = torch.randn(6, vocab) * 2, torch.randn(6, vocab) * 2
    div = Divergence.from_config({"name": name, "kd_temperature": 1.0, "chunk_size": 4, "beta": None,
                                  "normalize": False, "skew": None, **extra})
    t_ids, s_ids = match_vocabularies(tiny, tiny)
    sparse = matched_teacher(torch.log_softmax(teacher, -1), t_ids, s_ids, vocab)
    results = []
    for fn in (lambda z: div(z, teacher), lambda z: sparse_divergence(div, z, sparse)):
        z = student.clone().requires_grad_(True)
        values = fn(z)
        values.sum().backward()
        results.append((values.detach(), z.grad))
    assert torch.allclose(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(results[1][1], results[0][1], rtol=1e-4, atol=1e-6)


def test_teacher_tokens_the_student_lacks_project_onto_its_first_token(gpt2, tiny, projected):
    from distill.data.cross_tokenizer import surface_bytes

    matched_t, _ = match_vocabularies(gpt2, tiny)
    teacher_ids, student_ids = projected
    assert len(matched_t) < 1000 < len(teacher_ids)  # GPT-2's words the tiny student spells in pieces land too
    surfaces, matched = surface_bytes(gpt2), set(matched_t.tolist())
    projected = [(t, s) for t, s in zip(teacher_ids.tolist(), student_ids.tolist()) if t not in matched]
    for t, s in projected[:: len(projected) // 20]:
        assert tiny(surfaces[t].decode(), add_special_tokens=False)["input_ids"][0] == s
    # the teacher's distribution over student tokens sums the projected probabilities, and keeps all its mass
    log_p = torch.log_softmax(torch.randn(3, len(gpt2)), -1)
    sparse = matched_teacher(log_p, teacher_ids, student_ids, len(tiny))
    total = torch.logsumexp(torch.cat([sparse.log_probs, sparse.log_tail.unsqueeze(-1)], -1), -1)
    assert torch.allclose(total, torch.zeros(3), atol=1e-4)


def test_a_batch_gets_each_examples_own_teacher_rows_at_its_aligned_positions(gpt2, tiny, projected):
    """Batched and padded, the teacher's rows land where one example alone puts them."""
    from types import SimpleNamespace

    from transformers import GPT2Config, GPT2LMHeadModel

    from distill.data.collate import Encoded, collate
    from distill.data.cross_tokenizer import CrossTokenizer, cross_teacher, teacher_items
    from distill.models.forward import token_view, view_targets

    torch.manual_seed(0)
    cross = CrossTokenizer(gpt2, tiny, *projected)
    config = dict(n_embd=16, n_layer=1, n_head=2, n_positions=128)
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=len(gpt2), **config)).eval()
    student = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny), **config)).eval()
    texts = [TEXT, TEXT.replace("12", "3").replace("19", "10"), "Ava has 5.\nAnswer: 5 + 2 = 7\n#### 7"]
    items = []
    for index, text in enumerate(texts):
        prompt, answer = text.split("Answer:")
        ids = lambda s: tiny(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        items.append(Encoded(ids(prompt), ids("Answer:" + answer) + [tiny.eos_token_id], index=index))
    ctx = SimpleNamespace(cross=cross, teacher=teacher, student=student, device=torch.device("cpu"))
    batch = collate(items, tiny.pad_token_id, False)
    with torch.no_grad():
        sparse, aligned, ranked = cross_teacher(ctx, batch, items, 2.0, uld="all")
    _, mask = view_targets(student, batch)
    encoded, pairs = teacher_items(cross, items)
    assert all(pairs) and aligned.sum() == sum(len(p) for p in pairs)
    for b, item in enumerate(encoded):
        alone = collate([item], gpt2.pad_token_id, False)
        with torch.no_grad():
            view = token_view(teacher, alone)
        rows = torch.log_softmax(view.logits[0, view.mask[0].nonzero().squeeze(-1)] / 2.0, -1)
        student_pos = mask[b].nonzero().squeeze(-1)
        kept = [pair for pair in pairs[b] if not pair[3]]  # aligned positions (inside ones: their own test)
        at = torch.tensor([pair[0] for pair in kept])
        picked = rows[[pair[1] for pair in kept]]
        expected = matched_teacher(picked, cross.teacher_ids, cross.student_ids, len(tiny))  # its own mapping
        assert torch.allclose(sparse.log_probs[b, student_pos[at]], expected.log_probs, atol=1e-5)
        assert torch.allclose(sparse.log_tail[b, student_pos[at]], expected.log_tail, atol=1e-5)
        assert torch.allclose(ranked[b, student_pos[at]], picked.exp().sort(descending=True).values, atol=1e-6)
        assert aligned[b].sum() == len(pairs[b])


def test_a_student_token_that_spells_several_teacher_tokens_gets_their_product(tmp_path):
    """Teacher on a 270-token BPE, student on a 297-token one of the same texts (it merges the teacher's tokens):
    at a position whose student token spells teacher tokens t1 … tm, the student token's teacher probability is
    what the mapping gives it plus p(t1) p(t2 | t1) ⋯ (from the teacher alone), t1's student token loses that
    much, and every aligned position keeps a total of 1."""
    (sparse, aligned), (cross, _, encoded, pairs, rows, targets, positions) = _pair_run(tmp_path, 270, 300)
    realised = rows.gather(-1, torch.tensor(encoded[0].target_ids)[:, None]).squeeze(-1)
    total = torch.logsumexp(torch.cat([sparse.log_probs, sparse.log_tail.unsqueeze(-1)], -1), -1)
    assert torch.allclose(total[aligned > 0], torch.zeros(int(aligned.sum())), atol=1e-5)
    merged = [(i, j, e) for i, j, e, _ in pairs[0] if e > j + 1]
    assert len(merged) >= 3  # "Answer", "Ġ+", "Ġ=", "####": merges of the teacher's tokens here
    for i, j, e in merged:
        at, token = positions[i], int(targets[0, positions[i]])
        plain = matched_teacher(rows[j:j + 1], cross.teacher_ids, cross.student_ids, cross.student_vocab)
        p = lambda teacher_row, tid: teacher_row.log_probs[0, teacher_row.support_ids[0] == tid].exp().sum()  # noqa: E731
        got = sparse.log_probs[0, at].exp()[sparse.support_ids[0, at] == token].sum()
        expected = p(plain, token) + realised[j:e].sum().exp()
        assert torch.allclose(got, expected, atol=1e-6)
        source = int(cross.student_of[encoded[0].target_ids[j]])
        moved = p(plain, source) - sparse.log_probs[0, at].exp()[sparse.support_ids[0, at] == source].sum()
        two_piece = sum(mass for s, mass in _two_piece_masses(cross, rows, encoded[0].target_ids, j, token).items())
        assert torch.allclose(moved, realised[j:e].sum().exp() + two_piece, atol=1e-6)


def _two_piece_masses(cross, rows: torch.Tensor, teacher_targets: list[int], j: int, realised_student: int) -> dict:
    """By brute force over both vocabularies: every student token s ≠ the realised one (nor a prefix of its text)
    whose text is teacher token t1 = teacher_targets[j] then some teacher token x, with p(t1)·p(x | t1)."""
    from distill.data.cross_tokenizer import surface_bytes

    teacher, student = surface_bytes(cross.teacher_tokenizer), surface_bytes(cross.student_tokenizer)
    first, out = teacher[teacher_targets[j]], {}
    if j + 1 >= rows.size(0):
        return out
    for s, text in enumerate(student):
        if text is None or s == realised_student or student[realised_student].startswith(text):
            continue
        for x, rest in enumerate(teacher):
            if rest is not None and first + rest == text and teacher.count(rest) == 1:
                out[s] = float((rows[j, teacher_targets[j]] + rows[j + 1, x]).exp())
    return out


def test_a_student_token_that_merges_the_teachers_token_and_another_gets_their_product(tmp_path):
    """Beside the realised token: each student token spelling the teacher's realised t1 and then a teacher token x
    gets p(t1)·p(x | t1) from the teacher's next row (brute force over both vocabularies), on top of its mapping."""
    (sparse, aligned), (cross, _, encoded, pairs, rows, targets, positions) = _pair_run(tmp_path, 270, 300)
    checked = 0
    for i, j, _, prefix in pairs[0]:
        if prefix:
            continue
        at, token = positions[i], int(targets[0, positions[i]])
        plain = matched_teacher(rows[j:j + 1], cross.teacher_ids, cross.student_ids, cross.student_vocab)
        for s, mass in _two_piece_masses(cross, rows, encoded[0].target_ids, j, token).items():
            before = plain.log_probs[0, plain.support_ids[0] == s].exp().sum()
            got = sparse.log_probs[0, at].exp()[sparse.support_ids[0, at] == s].sum()
            if (sparse.support_ids[0, at] == s).any():
                assert abs(float(got - before) - mass) < 1e-6
                checked += 1
    assert checked >= 10


def test_a_student_token_inside_a_teacher_token_gets_the_teacher_given_the_prefix(tmp_path):
    """Teacher on the 297-token BPE, student on the 270-token one (the finer): a student token that starts inside
    a teacher token ("w" of "Ans|w|e|r" inside the teacher's "Answer") gets, from the teacher's row where that
    token began, the mass of every teacher token extending the text written so far, on the student's first token
    of its rest, divided by the mass of the tokens extending it (brute force over the vocabulary here)."""
    from distill.data.cross_tokenizer import surface_bytes

    (sparse, aligned), (cross, coarse, _, pairs, rows, _, positions) = _pair_run(tmp_path, 300, 270)
    rows, fine = rows.exp(), cross.student_tokenizer
    inside = [pair for pair in pairs[0] if pair[3]]
    assert len(inside) >= 3 and aligned[0, positions[[p[0] for p in inside]]].eq(1).all()
    surfaces = surface_bytes(coarse)
    for i, j, _, prefix in inside:
        at = positions[i]
        total = torch.logsumexp(torch.cat([sparse.log_probs[0, at], sparse.log_tail[0, at, None]]), 0)
        assert torch.allclose(total, torch.zeros(()), atol=1e-5)
        key, expected, norm = prefix.encode(), {}, 0.0
        for a, surface in enumerate(surfaces):
            if surface is not None and surface.startswith(key):
                rest = surface[len(key):].decode("utf-8", errors="ignore")
                if rest:  # the prefix itself: renormalised away
                    norm += float(rows[j, a])
                    s = fine(rest, add_special_tokens=False)["input_ids"][0]
                    expected[s] = expected.get(s, 0.0) + float(rows[j, a])
        for s, mass in expected.items():
            got = sparse.log_probs[0, at].exp()[sparse.support_ids[0, at] == s].sum()
            assert abs(float(got) - mass / norm) < 1e-5


def _pair_run(tmp_path, teacher_vocab: int, student_vocab: int):
    """Two tiny BPEs of the same texts, random 1-layer GPT-2s on each, TEXT's answer as the one item: what
    cross_teacher gives, and (cross, the teacher's tokenizer, its own items and pairs, its [T, V] log-probability rows
    at its target positions, the student's targets and target positions)."""
    from types import SimpleNamespace

    from transformers import GPT2Config, GPT2LMHeadModel

    from distill.data.collate import Encoded, collate
    from distill.data.cross_tokenizer import CrossTokenizer, cross_teacher, teacher_items
    from distill.models.forward import token_view, view_targets

    texts = [TEXT.replace("12", str(a)).replace("7", str(b)) for a in range(1, 30) for b in range(1, 9)]
    t_tok = build_tokenizer(texts, teacher_vocab, tmp_path / "teacher")
    s_tok = build_tokenizer(texts, student_vocab, tmp_path / "student")
    cross = CrossTokenizer.build(t_tok, s_tok)
    torch.manual_seed(0)
    config = dict(n_embd=16, n_layer=1, n_head=2, n_positions=128)
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=len(t_tok), **config)).eval()
    student = GPT2LMHeadModel(GPT2Config(vocab_size=len(s_tok), **config)).eval()
    prompt, answer = TEXT.split("Answer:")
    ids = lambda s: s_tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    items = [Encoded(ids(prompt), ids("Answer:" + answer) + [s_tok.eos_token_id], index=0)]
    ctx = SimpleNamespace(cross=cross, teacher=teacher, student=student, device=torch.device("cpu"))
    batch = collate(items, s_tok.pad_token_id, False)
    with torch.no_grad():
        sparse, aligned, _ = cross_teacher(ctx, batch, items, 1.0)
        encoded, pairs = teacher_items(cross, items)
        view = token_view(teacher, collate(encoded, t_tok.pad_token_id, False))
    rows = torch.log_softmax(view.logits[0, view.mask[0].nonzero().squeeze(-1)], -1)
    targets, mask = view_targets(student, batch)
    return (sparse, aligned), (cross, t_tok, encoded, pairs, rows, targets, mask[0].nonzero().squeeze(-1))

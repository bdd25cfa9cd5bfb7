"""The teacher cache: supports by hand, a build read back exactly, resuming, and one-line refusals."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from distill.data.collate import Encoded, collate
from distill.data.teacher_cache import CacheSettings, TeacherCache, build, items_digest, support
from distill.errors import ConfigError, DataError
from distill.losses.divergences import Divergence
from distill.losses.logspace import log_probs
from distill.losses.sparse import sparse_divergence
from distill.models.forward import token_view, view_targets

PAD, V = 0, 24


def settings(**kw) -> CacheSettings:
    return CacheSettings(**{"k": None, "epsilon": None, "k_max": 8, "dtype": "float32", "dir": None,
                            "batch_size": 3, "shard_examples": 4, **kw})


def test_support_fixed_and_adaptive_by_hand():
    log_p = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    ids, values, tail, low = support(log_p, settings(k=2))
    assert ids.tolist() == [[0, 1]] and math.isclose(tail.exp().item(), 0.2, rel_tol=1e-6)
    assert math.isclose(low.exp().item(), 0.05, rel_tol=1e-6)
    ids, values, tail, _ = support(log_p, settings(epsilon=0.1))  # 0.5 + 0.3 + 0.15 leaves 0.05 ≤ 0.1
    assert ids.tolist() == [[0, 1, 2, -1]]  # ragged: the fourth slot is empty
    assert math.isclose(tail.exp().item(), 0.05, rel_tol=1e-5)
    ids, _, tail, _ = support(log_p, settings(epsilon=0.1, k_max=2))  # capped: the tail keeps 0.2
    assert ids.tolist() == [[0, 1]] and math.isclose(tail.exp().item(), 0.2, rel_tol=1e-6)


def test_settings_refuse_both_or_neither_policy():
    with pytest.raises(ConfigError, match="exactly one of teacher_cache.k"):
        settings(k=4, epsilon=0.01)
    with pytest.raises(ConfigError, match="teacher_cache.epsilon"):
        settings(epsilon=1.5)


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                      pad_token_id=PAD, eos_token_id=1)).eval()


def _items(n=10):
    g = torch.Generator().manual_seed(1)
    return [Encoded(torch.randint(2, V, (3 + i % 3,), generator=g).tolist(),
                    torch.randint(2, V, (2 + i % 4,), generator=g).tolist() + [1], index=i) for i in range(n)]


def _build(teacher, items, out, **kw):
    meta = {"items": items_digest(items), "teacher": "t0"}
    return build(teacher, lambda m, b: token_view(m, b), lambda chunk: collate(chunk, PAD, False), items,
                 settings(**kw), out, meta, kd_temperature=1.0)


def test_a_full_support_cache_gives_the_dense_divergence(teacher, tmp_path):
    items = _items()
    _build(teacher, items, tmp_path / "cache", k=V)
    cache = TeacherCache(tmp_path / "cache", {"items": items_digest(items), "teacher": "t0"})
    batch = collate(items[2:7], PAD, False)
    targets, mask = view_targets(teacher, batch)
    sparse = cache.sparse_teacher(items[2:7], targets, mask)
    student = torch.randn(*mask.shape, V)
    with torch.no_grad():
        dense_teacher = token_view(teacher, batch).logits
    div = Divergence.from_config({"name": "fkl", "kd_temperature": 1.0, "chunk_size": 4, "beta": None,
                                  "normalize": False, "skew": None})
    dense = div(student, dense_teacher) * mask
    student.requires_grad_(True)
    values = sparse_divergence(div, student, sparse)
    assert torch.allclose(values * mask, dense, atol=1e-5)
    assert torch.all(values[mask == 0] == 0)  # positions outside the view: 0, never NaN
    values.sum().backward()
    assert torch.isfinite(student.grad).all() and torch.all(student.grad[mask == 0] == 0)


def test_a_build_resumes_after_its_whole_shards_and_damage_is_named(teacher, tmp_path):
    items, out = _items(), tmp_path / "cache"
    _build(teacher, items, out, k=4)
    shard = out / "shard-00001"
    before = {p: p.stat().st_mtime_ns for p in (out / "shard-00000").rglob("*") if p.is_file()}
    (out / "manifest.json").unlink()
    import shutil

    shutil.rmtree(shard)  # what a kill during the second shard leaves: no manifest, one shard short
    _build(teacher, items, out, k=4)
    assert shard.is_dir() and {p: p.stat().st_mtime_ns for p in before} == before  # the first was kept
    expected = {"items": items_digest(items), "teacher": "t0"}
    TeacherCache(out, expected)
    arrow = next((out / "shard-00002").rglob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:-8])
    with pytest.raises(DataError, match="shard-00002/data/.*truncated"):
        TeacherCache(out, expected)


def test_a_cache_for_another_run_is_refused_in_one_line(teacher, tmp_path):
    items, out = _items(), tmp_path / "cache"
    _build(teacher, items, out, k=4)
    with pytest.raises(DataError, match="built for another teacher .'t0'.*'t1'"):
        TeacherCache(out, {"items": items_digest(items), "teacher": "t1"})
    with pytest.raises(DataError, match="not a finished teacher cache"):
        TeacherCache(tmp_path / "nothing", {})
    cache = TeacherCache(out, {"teacher": "t0"})
    other = [Encoded(items[0].prompt_ids, [5, 1], index=0)]
    batch = collate(other, PAD, False)
    with pytest.raises(DataError, match="example 0 has other targets"):
        cache.sparse_teacher(other, *view_targets(teacher, batch))


def test_a_disk_that_fills_mid_build_publishes_nothing_half_written_and_the_next_build_resumes(teacher, tmp_path,
                                                                                                monkeypatch):
    import errno

    import datasets

    items, out = _items(), tmp_path / "cache"
    real_save, calls = datasets.Dataset.save_to_disk, []

    def filling(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second shard: the disk is full halfway through its files
            real_save(self, path, *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", filling)
    with pytest.raises(OSError, match="No space left"):
        _build(teacher, items, out, k=4)
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000"]  # no half shard, no temporary, no manifest
    _build(teacher, items, out, k=4)  # space again: resumes at the second shard
    assert len(calls) == 4 and (out / "manifest.json").is_file()
    TeacherCache(out, {"items": items_digest(items), "teacher": "t0"})


def test_ragged_supports_land_at_their_positions_and_a_view_of_another_length_is_refused(teacher, tmp_path):
    items = _items()
    _build(teacher, items, tmp_path / "cache", epsilon=0.3, k_max=V)
    cache = TeacherCache(tmp_path / "cache", {"teacher": "t0"})
    batch = collate(items[:6], PAD, False)
    targets, mask = view_targets(teacher, batch)
    sparse = cache.sparse_teacher(items[:6], targets, mask)
    with torch.no_grad():
        logits = token_view(teacher, batch).logits
    rows, columns = mask.nonzero(as_tuple=True)
    ids, values, tail, low = support(log_probs(logits[rows, columns].float(), 1.0), settings(epsilon=0.3, k_max=V))
    sizes = (ids >= 0).sum(-1)
    assert sizes.min() < sizes.max()  # the supports are ragged: the case a fixed width would hide
    width = sparse.ids.size(-1)
    assert width == int(sizes.max())
    assert torch.equal(sparse.ids[rows, columns], ids[:, :width])
    assert torch.allclose(sparse.log_probs[rows, columns], values[:, :width], atol=1e-6)
    assert torch.allclose(sparse.log_tail[rows, columns], tail, atol=1e-6)
    assert torch.allclose(sparse.log_min[rows, columns], low, atol=1e-6)
    assert torch.all(sparse.ids[mask == 0] == -1)
    short = mask.clone()
    short[0, mask[0].nonzero()[-1]] = False
    with pytest.raises(DataError, match=f"example {items[0].index} has {int(mask[0].sum())} cached positions"):
        cache.sparse_teacher(items[:6], targets, short)

"""`distill teacher-cache` and `teacher.cache=DIR|auto`: one teacher pass serves the runs, exactly at full support,
with the bound logged, and every mismatch refused in one line."""

from __future__ import annotations

import json

import pytest

from .conftest import TINY, TINY_ARITH, cli, train_args


def _cache_args(out, cache_dir, *extra):
    return ["teacher-cache", *TINY_ARITH, *TINY, f"cache_dir={cache_dir}", f"teacher_cache.dir={out}",
            "teacher_cache.shard_examples=128", *extra]


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


@pytest.fixture(scope="module")
def full_cache(tmp_path_factory, cache_dir):
    """A cache keeping every token (k ≥ V): the sparse loss is the dense one."""
    out = tmp_path_factory.mktemp("full") / "cache"
    assert cli(*_cache_args(out, cache_dir, "method=supervised_kd", "teacher_cache.k=4096")) == 0
    return out


def test_a_full_support_cache_trains_exactly_like_the_live_teacher(tmp_path, cache_dir, full_cache, capsys):
    manifest = json.loads((full_cache / "manifest.json").read_text())
    assert manifest["examples"] == 300 and manifest["targets"] == "dataset" and len(manifest["shards"]) == 3
    live, cached = tmp_path / "live", tmp_path / "cached"
    assert cli(*train_args(live, cache_dir, "method=supervised_kd", "eval.after_train=false")) == 0
    assert cli(*train_args(cached, cache_dir, "method=supervised_kd", "eval.after_train=false",
                           f"teacher.cache={full_cache}")) == 0
    a, b = _records(live), _records(cached)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4), (x["step"], x["loss"], y["loss"])
        assert y["sparse/grad_l1_bound"] == pytest.approx(0.0, abs=1e-6)  # nothing outside the support
    assert "reusing cached SFT teacher" not in (cached / "train.log").read_text()  # the teacher never loaded
    fused = tmp_path / "fused"  # from hidden states: no [tokens × V] tensor of either model at once
    assert cli(*train_args(fused, cache_dir, "method=supervised_kd", "eval.after_train=false", "fused_linear=true",
                           f"teacher.cache={full_cache}")) == 0
    assert "losses from hidden states" in (fused / "train.log").read_text()
    for x, y in zip(b, _records(fused)):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-4), (x["step"], x["loss"], y["loss"])


def test_a_small_support_logs_its_bound_and_auto_builds_once(tmp_path, cache_dir):
    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run in enumerate(runs):
        assert cli(*train_args(run, cache_dir, "method=gkd", "method.lmbda=0", "eval.after_train=false",
                               "teacher.cache=auto", "teacher_cache.k=4", f"seed={seed}")) == 0
    first, second = [(run / "train.log").read_text() for run in runs]
    assert "teacher cache built" in first and "reusing the teacher cache" in second
    bounds = [r["sparse/grad_l1_bound"] for r in _records(runs[0])]
    assert all(b > 0 for b in bounds) and all(0 < r["sparse/tail_mass"] < 1 for r in _records(runs[0]))


def test_mismatches_are_refused_in_one_line(tmp_path, cache_dir, full_cache, capsys):
    run = tmp_path / "run"
    assert cli(*train_args(run, cache_dir, "method=gkd", "method.lmbda=1", f"teacher.cache={full_cache}")) == 2
    assert "cannot read teacher.cache" in capsys.readouterr().err
    assert cli(*train_args(run, cache_dir, "method=supervised_kd", "divergence.kd_temperature=2.0",
                           f"teacher.cache={full_cache}")) != 0
    err = capsys.readouterr().err
    assert "built for another kd temperature" in err and err.count("\n") == 1
    assert cli(*train_args(run, cache_dir, "method=supervised_kd", "+teacher.bootstrap.trainer.max_steps=2",
                           f"teacher.cache={full_cache}")) != 0
    assert "built for another teacher" in capsys.readouterr().err
    hydra_dir = tmp_path / "hydra"
    assert cli(*_cache_args(tmp_path / "x", cache_dir, "method=minillm", f"hydra.run.dir={hydra_dir}")) != 0
    assert "cannot use a teacher cache" in capsys.readouterr().err
    assert not hydra_dir.exists() and not (tmp_path / "x").exists()  # a refused build leaves nothing behind

"""`divergence.cross_tokenizer=true`: with one tokenizer it is ordinary KD (supervised and on-policy GKD); with a
teacher of another tokenizer (a tiny BPE of another size) both train offline; without the option the mismatch is
refused, naming it."""

from __future__ import annotations

import json

import pytest

from .conftest import cli, train_args

KD = ["method=supervised_kd", "eval.after_train=false"]


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def test_one_tokenizer_on_both_sides_is_ordinary_on_policy_kd(tmp_path, cache_dir):
    """Through the whole on-policy path (the student's samples handed to the teacher every step); the off-policy
    equality, divergence by divergence, is tests/unit/data/test_cross_tokenizer.py's."""
    method = ["method=gkd", "method.lmbda=1", "eval.after_train=false"]
    plain, cross = tmp_path / "plain", tmp_path / "cross"
    assert cli(*train_args(plain, cache_dir, *method)) == 0
    assert cli(*train_args(cross, cache_dir, *method, "divergence.cross_tokenizer=true")) == 0
    assert _losses(cross) == pytest.approx(_losses(plain), rel=1e-5)


def test_a_teacher_with_another_tokenizer_trains_and_the_default_refusal_names_the_option(tmp_path, cache_dir,
                                                                                           capsys):
    other = ["teacher.tokenizer=400"]  # a tiny BPE of 400 tokens beside the student's 300
    assert cli(*train_args(tmp_path / "refused", cache_dir, *KD, *other)) != 0
    assert "divergence.cross_tokenizer=true" in capsys.readouterr().err
    run = tmp_path / "cross"
    assert cli(*train_args(run, cache_dir, *KD, *other, "divergence.cross_tokenizer=true")) == 0
    log = (run / "train.log").read_text()
    assert "cross-tokenizer KD:" in log and "teacher's 400" in log
    losses = _losses(run)
    assert len(losses) == 4 and all(loss > 0 for loss in losses)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert all(0.5 < r["cross/aligned_fraction"] <= 1 and 0 <= r["sparse/tail_mass"] < 0.5 for r in records)
    for mode in ("unmatched", "all"):  # ULD beside the divergence (over the buckets) or instead of it
        uld = tmp_path / f"uld_{mode}"
        assert cli(*train_args(uld, cache_dir, *KD, *other, "divergence.cross_tokenizer=true",
                               f"divergence.uld={mode}")) == 0
        records = [json.loads(line) for line in (uld / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
        assert all(r["loss/uld"] >= 0 for r in records) and (("loss/kd" in records[0]) == (mode == "unmatched"))
    on_policy = tmp_path / "on_policy"
    assert cli(*train_args(on_policy, cache_dir, "method=gkd", "method.lmbda=1", "eval.after_train=false", *other,
                           "divergence.cross_tokenizer=true")) == 0
    assert all(loss > 0 for loss in _losses(on_policy))
    assert cli(*train_args(tmp_path / "minillm", cache_dir, "method=minillm", "divergence.cross_tokenizer=true")) == 2
    assert "cannot use divergence.cross_tokenizer=true yet" in capsys.readouterr().err

"""Collecting and aggregating: rows, swept settings, seed groups, missing runs."""

from __future__ import annotations

import math

import pytest
import yaml

from distill.errors import DataError
from distill.report.aggregate import (
    METRIC_KEYS,
    build_rows,
    group_rows,
    hyperparameters,
    method_name,
    missing_runs,
    run_status,
    swept_keys,
)
from distill.report.collect import collect

from .conftest import TEACHER_SCORE, run_config, write_run


def test_metric_keys_mirror_distill_metrics():
    from distill.metrics import METRIC_KEYS as REAL

    assert METRIC_KEYS == {k: tuple(v) for k, v in REAL.items()}


def test_collect_finds_every_run_and_skips_hidden_dirs(sweep):
    runs = collect([sweep])
    assert len(runs) == 9
    assert all(not r["run"].startswith(".") for r in runs)
    assert "gkd-arith-tiny/divergence.beta=0.1,seed=2" in {r["run"] for r in runs}


def test_collect_errors_name_the_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        collect([tmp_path / "nope"])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no training runs"):
        collect([tmp_path / "empty"])


def test_broken_files_become_warnings_not_crashes(tmp_path):
    from .conftest import write_run

    write_run(tmp_path / "r", "gkd", 0, finished=False)
    with (tmp_path / "r" / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 75, "loss"')  # killed mid-append
    (run,) = collect([tmp_path])
    assert len(run["metrics"]) == 3 and any("malformed" in w for w in run["warnings"])
    assert method_name(run) == "gkd"  # no summary.json yet: from method._target_


def test_hyperparameters_skip_copies_and_unused_divergence():
    gkd = hyperparameters(run_config("gkd", 0, 0.1, 0.5, 1.0))
    assert gkd["method.lmbda"] == 0.5 and gkd["divergence.beta"] == 0.1
    assert not any(k.startswith(("method.divergence", "method.teacher_decoding", "method._target_")) for k in gkd)
    assert "trainer.device" not in gkd and gkd["trainer.adam_betas"] == "[0.9, 0.999]"
    sft = hyperparameters(run_config("sft", 0, 0.1, 0.5, 1.0))
    assert not any(k.startswith("divergence.") for k in sft)  # sft ignores the divergence group


def test_method_defaults_that_differ_between_methods_are_not_a_sweep():
    gkd, xkd = {"method.alpha": 1.0, "trainer.lr": 1e-3}, {"method.alpha": 0.1, "trainer.lr": 2e-3}
    assert swept_keys([gkd, xkd], ["gkd", "xkd"]) == ["trainer.lr", "seed"]
    assert swept_keys([gkd, xkd], ["gkd", "gkd"]) == ["method.alpha", "trainer.lr", "seed"]


def test_rows_and_swept_settings(sweep):
    rows, swept = build_rows(collect([sweep]))
    assert swept == ["divergence.beta", "seed"]
    assert len(rows) == 8 + 1 + 1 + 3  # student evals, extra `default` variant, partial run, teacher evals
    teacher = [r for r in rows if r["method"] == "teacher"]
    assert len(teacher) == 3 and all(r["divergence.beta"] is None and r["value"] == TEACHER_SCORE for r in teacher)
    partial = [r for r in rows if r["status"] == "partial"]
    assert len(partial) == 1 and partial[0]["value"] is None and partial[0]["steps"] == 50


def test_groups_mean_and_sample_std_by_hand(sweep):
    rows, swept = build_rows(collect([sweep]))
    groups = {(g["method"], g["divergence.beta"], g["variant"]): g for g in group_rows(rows, swept)}
    gkd = groups[("gkd", 0.1, "student")]  # seeds 0, 1: 50 + 1 + 5 + 10 + {0, 3}
    assert (gkd["n"], gkd["seeds"], gkd["mean"]) == (2, [0, 1], 67.5)
    assert gkd["std"] == pytest.approx(math.sqrt(2 * 1.5 ** 2))
    assert groups[("supervised_kd", 0.9, "student")]["mean"] == 60.5
    single = groups[("gkd", 0.9, "default")]
    assert (single["n"], single["mean"], single["std"]) == (1, 77.0, None)
    teacher = groups[("teacher", None, "teacher")]
    assert (teacher["n"], teacher["seeds"], teacher["std"]) == (2, [0, 1], 0.0)  # one per seed, not per run


def test_partial_run_is_listed_as_missing(sweep):
    (missing,) = missing_runs(collect([sweep]))
    assert missing["run"] == "gkd-arith-tiny/divergence.beta=0.1,seed=2"
    assert missing["status"] == "partial" and "no final/" in missing["reason"] and "step 50" in missing["reason"]


def test_run_status():
    run = {"has_final": True, "evals": [{"variant": "teacher"}], "metrics": [{"step": 1, "loss": 0.5}]}
    assert run_status(run) == "no eval"
    served = {**run, "metrics": [{"step": 1, "request": 0, "acceptance_rate": 0.5}]}
    assert run_status(served) == "complete"  # an OSD run is measured by its stream, not a student eval
    assert run_status({**run, "evals": [{"variant": "student"}]}) == "complete"
    assert run_status({**run, "has_final": False}) == "partial"


def _with_config(run, **changes):
    """Edit a written run's run_config.yaml: ``changes`` maps dotted keys to values."""
    config = yaml.safe_load((run / "run_config.yaml").read_text())
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    (run / "run_config.yaml").write_text(yaml.safe_dump(config))


def test_runs_that_differ_in_any_setting_are_never_averaged_as_seeds(tmp_path):
    """Issue 14.1: with and without an SFT-bootstrapped student used to print "20.00 ± 28.28, n=2, seeds 0"."""
    for name, enabled in (("plain", False), ("bootstrapped", True)):
        write_run(tmp_path / name, "sft", 0)
        _with_config(tmp_path / name, **{"student.bootstrap.enabled": enabled})
    rows, swept = build_rows(collect([tmp_path]))
    assert "student.bootstrap.enabled" in swept
    groups = group_rows(rows, swept)
    assert len(groups) == 2 and all(g["n"] == 1 and g["std"] is None for g in groups)
    assert {g["student.bootstrap.enabled"] for g in groups} == {False, True}
    from distill.report.series import curve_data

    (terms,) = curve_data(collect([tmp_path]), rows, swept).values()
    assert len(terms["loss"]) == 2 and all(line["n"] == 1 for line in terms["loss"].values())  # two students, two lines


def test_the_same_configuration_and_seed_twice_is_an_error(tmp_path):
    write_run(tmp_path / "a", "gkd", 0)
    write_run(tmp_path / "copy-of-a", "gkd", 0)
    rows, swept = build_rows(collect([tmp_path]))
    with pytest.raises(DataError, match="same configuration and seed 0"):
        group_rows(rows, swept)


def test_hyperparameters_cover_the_whole_config_but_not_what_cannot_change_results():
    config = run_config("gkd", 3, 0.1, 0.5, 1.0)
    config.update({"bootstrap_seed": 1, "tokenizer": {"vocab_size": 512}, "cache_dir": "/tmp/x",
                   "eval": {"after_train": True}, "logger": {"wandb": None},
                   "teacher_generation": {"batch_size": 64, "decoding": {"strategy": "greedy"}}})
    config["student"]["config"] = {"n_embd": 64}
    config["task"]["data_dir"] = "/data/a"
    hp = hyperparameters(config)
    assert {"student.config.n_embd", "teacher.name", "task.data_dir", "bootstrap_seed", "tokenizer.vocab_size",
            "teacher_generation.decoding.strategy"} <= set(hp)
    assert not {"seed", "cache_dir", "eval.after_train", "teacher_generation.batch_size",
                "divergence.chunk_size"} & set(hp)
    sft = hyperparameters({**run_config("sft", 0, 0.1, 0.5, 1.0), "teacher": {"name": "big"}})
    assert not any(k.startswith("teacher.") for k in sft)  # sft never loads the teacher


def test_labels_shorten_checkpoint_paths_to_their_last_parts_and_keep_other_values():
    from distill.report.series import config_label

    row = {"student.pretrained": "/work/osd/outputs/osd_study/offline/gkd/final", "method.update": False,
           "trainer.lr": 0.001}
    label = config_label(row, ["student.pretrained", "method.update", "trainer.lr"])
    assert label == "pretrained=…/offline/gkd/final, update=False, lr=0.001"
    assert config_label({"student.pretrained": "outputs/a/final"}, ["student.pretrained"]) == "pretrained=outputs/a/final"


def test_paired_differences_ignore_settings_the_baseline_does_not_vary():
    """gkd's method.alpha (its RL weight) and xkd's method.alpha (the AVRIL weight) share a key: a single
    gkd configuration is still every xkd variant's baseline; a one-seed pair (no SE) is left out."""
    from distill.report.aggregate import paired_differences

    common = {"task": "arith", "eval": "arith-test", "variant": "student", "metric": "accuracy"}
    groups = [{**common, "method": "gkd", "method.alpha": 1.0, "by_seed": {0: 10.0, 1: 12.0, 2: 11.0}},
              {**common, "method": "xkd", "method.alpha": 0.1, "by_seed": {0: 11.0, 1: 14.0, 2: 11.0}},
              {**common, "method": "xkd", "method.alpha": 0.5, "by_seed": {0: 9.0, 1: 11.0}},
              {**common, "method": "sft", "method.alpha": None, "by_seed": {0: 5.0}},
              {**common, "method": "seqkd", "method.alpha": None, "by_seed": {0: 10 - 4 / 3, 1: 12 - 4 / 3, 2: 11 - 4 / 3}}]
    pairs = paired_differences(groups, ["method.alpha", "seed"], "gkd")
    assert [(p["group"]["method.alpha"], p["mean"], p["n"]) for p in pairs][:2] == [(0.1, 1.0, 3), (0.5, -1.0, 2)]
    assert pairs[2]["mean"] == pytest.approx(-4 / 3) and pairs[2]["t"] is None  # equal diffs: SE ~1e-16, no t
    assert pairs[0]["se"] == pytest.approx(math.sqrt(1.0) / math.sqrt(3))  # diffs 1, 2, 0: std 1
    # 95 % CI: 1 ± t(0.975, 2)·(1/√3) = 1 ± 4.303 · 0.57735 = 1 ± 2.4843; diffs -1, -1 have SE 0: the CI is a point
    assert pairs[0]["ci95"] == pytest.approx((1 - 2.48434, 1 + 2.48434), abs=1e-4)
    assert pairs[1]["ci95"] == pytest.approx((-1.0, -1.0))


def test_the_t_quantile_is_the_table_value_and_its_tail_tends_to_the_normal():
    from distill.report.aggregate import t_quantile_975

    assert [t_quantile_975(df) for df in (1, 4, 30)] == [12.706, 2.776, 2.042]
    assert t_quantile_975(60) == pytest.approx(2.000, abs=2e-3) and t_quantile_975(120) == pytest.approx(1.980, abs=2e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_roots_with_the_same_name_keep_their_runs_apart(tmp_path):
    """`distill report a/stream b/stream`: runs with the same relative path under both are two runs."""
    for parent, seed in (("a", 0), ("b", 1)):
        write_run(tmp_path / parent / "stream" / "before", "sft", seed)
    runs = collect([tmp_path / "a" / "stream", tmp_path / "b" / "stream"])
    assert sorted(run["run"] for run in runs) == ["a/stream/before", "b/stream/before"]

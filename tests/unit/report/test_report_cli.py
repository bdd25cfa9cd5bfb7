"""`distill report` end to end: files written, report.md content, CLI exit codes."""

from __future__ import annotations

import csv

import pytest

from distill.cli import main
from distill.report.render import variant_label


def _cli(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert _cli("report", str(sweep), "--out", str(out)) == 0
    return out


def test_cli_writes_report_csv_and_pngs(report):
    assert (report / "report.md").is_file() and (report / "runs.csv").is_file()
    for name in ("curves_gkd.png", "curves_supervised_kd.png", "tradeoff.png"):
        assert (report / name).read_bytes()[:4] == b"\x89PNG", name
    assert not list(report.glob(".tmp-*")), "no temp files left behind"


def test_cli_prints_a_short_summary(sweep, tmp_path, capsys):
    assert _cli("report", str(sweep), f"--out={tmp_path}") == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "report.md") in out and "9 runs, 1 missing or partial" in out


def test_runs_csv_rows_and_columns(report):
    with (report / "runs.csv").open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["run", "method", "task", "student", "teacher", "eval", "variant",
                                 "divergence.beta", "seed", "metric", "accuracy", "self_bleu", "status", "steps",
                                 "train_seconds", "commit"]
    assert len(rows) == 13
    assert sum(r["method"] == "teacher" for r in rows) == 3
    by_run = {(r["run"], r["variant"]): r for r in rows}
    row = by_run[("supervised_kd-arith-tiny/divergence.beta=0.9,seed=1", "student")]
    assert (row["accuracy"], row["seed"], row["status"], row["train_seconds"]) == ("62.0", "1", "complete", "11.0")
    assert row["commit"] == "fedcba9+"
    assert by_run[("supervised_kd-arith-tiny/divergence.beta=0.9,seed=0", "student")]["commit"] == "0123456"
    partial = by_run[("gkd-arith-tiny/divergence.beta=0.1,seed=2", "")]
    assert (partial["status"], partial["accuracy"], partial["steps"]) == ("partial", "", "50")


def test_report_md_tables_missing_runs_and_images(report):
    text = (report / "report.md").read_text()
    assert "| gkd | arith | tiny | 0.1 | arith-test | student | accuracy | 67.50 ± 2.12 | 1.50 | 2 | 0, 1 |" in text
    rows = [line.split(" | ") for line in text.split("## Results")[1].split("## ")[0].splitlines() if "| student |" in line]
    assert {row[-1].rstrip(" |") for row in rows} == {"0123456, fedcba9+"}  # every group names its commits
    assert "| teacher | arith | tiny |  | arith-test | teacher | accuracy | 80.00 ± 0.00 | 0.00 | 2 | 0, 1 |" in text
    missing = text.split("## Missing or partial runs")[1].split("## Plots")[0]
    assert "gkd-arith-tiny/divergence.beta=0.1,seed=2 | partial | no final/" in missing
    for name in ("curves_gkd.png", "curves_supervised_kd.png", "tradeoff.png"):
        assert f"]({name})" in text
    assert text.count("Skipped:") == 2  # data efficiency and heatmaps have no data here
    sampled = text.split("## Sampled decoding")[1].split("## Missing")[0]
    # gkd over β ∈ {0.1, 0.9} × seeds {0, 1}: 50 + 5 + 1.5 + 5 + 10 = 71.5 greedy, − 10·T sampled
    assert "| arith | gkd | 0.5 | 66.50 | 65.00 | 4 |" in sampled
    assert "| arith | gkd | 1 | 61.50 | 50.00 | 4 |" in sampled
    assert "| arith | teacher | 0.5 | 75.00 | 65.00 | 3 |" in sampled


def test_variant_labels_drop_group_prefixes_but_keep_values():
    label = variant_label("eval.num_samples=4,eval.sampling_temperatures=[0.5,1.0,1.5],task.max_eval_examples=200")
    assert label == "num_samples=4, sampling_temperatures=[0.5,1.0,1.5], max_eval_examples=200"
    assert variant_label("student") == "student" and variant_label("seed=1,divergence.beta=0.5") == \
        "seed=1, divergence.beta=0.5"


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_missing_directory_is_one_error_line(tmp_path, capsys):
    assert _cli("report", str(tmp_path / "nope"), "--out", str(tmp_path / "out")) != 0
    assert "does not exist" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_directory_without_runs_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _cli("report", str(tmp_path / "empty"), "--out", str(tmp_path / "out")) != 0
    assert "holds no training runs" in _error_line(capsys)


def test_bad_arguments(tmp_path, capsys):
    assert _cli("report", str(tmp_path), "--bogus") != 0
    assert "unknown option" in _error_line(capsys)
    assert _cli("report") == 2
    assert "usage: distill report" in capsys.readouterr().err


def test_several_directories_keep_runs_apart(sweep, grid, tmp_path, capsys):
    assert _cli("report", str(sweep), str(grid), "--out", str(tmp_path)) == 0
    with (tmp_path / "runs.csv").open() as handle:
        runs = {r["run"] for r in csv.DictReader(handle)}
    assert len(runs) == 9 + 8 and all(r.startswith((sweep.name + "/", grid.name + "/")) for r in runs)


def test_paired_differences_by_hand(sweep, tmp_path):
    """gkd − supervised_kd at the same β and seed is (50 − 40) + 10·λ = 15 on every seed (conftest formulas)."""
    assert _cli("report", str(sweep), f"--out={tmp_path}", "--baseline", "supervised_kd") == 0
    section = (tmp_path / "report.md").read_text().split("## Paired differences")[1].split("## ")[0]
    assert "| gkd | beta=0.1 | supervised_kd | arith | arith-test | student | accuracy | +15.00 | 0.00 |  | [+15.00, +15.00] | 2 |" in section
    assert "| gkd | beta=0.9 | supervised_kd | arith | arith-test | student | accuracy | +15.00 | 0.00 |  | [+15.00, +15.00] | 2 |" in section

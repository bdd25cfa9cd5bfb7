"""`distill report` publishes a report as a whole and says what is wrong with its input in one line."""

from __future__ import annotations

import csv
import errno
import json

import pytest

from distill.cli import main
from distill.report import plots as P

from .conftest import write_run


def _cli(*args: str) -> int:
    try:
        return main(list(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def _snapshot(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_the_old_report_stays_whole_until_the_new_one_replaces_it(sweep, grid, tmp_path, monkeypatch):
    """Issue: a kill during a report into an existing --out left the old report.md and runs.csv beside new plots."""
    out = tmp_path / "report"
    assert _cli("report", str(grid), "--out", str(out)) == 0
    old = _snapshot(out)
    assert any(name.startswith("heatmap_") for name in old)
    during = []
    real = P.save_png

    def watched(fig, path):
        during.append(_snapshot(out))  # what a kill -9 at this moment would leave
        real(fig, path)

    monkeypatch.setattr(P, "save_png", watched)
    assert _cli("report", str(sweep), "--out", str(out)) == 0
    assert len(during) > 1 and all(state == old for state in during)
    new = _snapshot(out)
    assert not any(name.startswith("heatmap_") for name in new), "no plot of the old report is left beside the new"
    assert "gkd-arith-tiny" in new["runs.csv"].decode() and sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_report_that_fails_midway_leaves_the_old_one_as_it_was(sweep, grid, tmp_path, monkeypatch, capsys):
    out = tmp_path / "report"
    assert _cli("report", str(grid), "--out", str(out)) == 0
    old = _snapshot(out)
    calls = []
    real = P.save_png

    def fails_second(fig, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(fig, path)

    monkeypatch.setattr(P, "save_png", fails_second)
    capsys.readouterr()
    assert _cli("report", str(sweep), "--out", str(out)) == 2
    assert "No space left" in _error_line(capsys)
    assert _snapshot(out) == old and sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_out_that_is_a_file_is_one_error_line(sweep, tmp_path, capsys):
    """Issue: a FileExistsError traceback."""
    out = tmp_path / "report.md"
    out.write_text("mine")
    assert _cli("report", str(sweep), "--out", str(out)) == 2
    line = _error_line(capsys)
    assert f"--out {out} is a file" in line
    assert out.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_out_holding_other_files_is_refused_not_replaced(sweep, tmp_path, capsys):
    """The report replaces its directory as a whole: other files there would go with it."""
    (tmp_path / "notes.txt").write_text("mine")
    assert _cli("report", str(sweep), "--out", str(tmp_path)) == 2
    assert f"--out {tmp_path} holds notes.txt" in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_a_baseline_no_run_has_is_refused_naming_the_methods(sweep, tmp_path, capsys):
    """Issue: --baseline bogus was silently ignored."""
    out = tmp_path / "out"
    assert _cli("report", str(sweep), "--out", str(out), "--baseline", "bogus") == 2
    line = _error_line(capsys)
    assert "--baseline bogus" in line and "gkd" in line and "supervised_kd" in line and "teacher" in line
    assert not out.exists()


@pytest.fixture
def broken(tmp_path):
    """Four runs: one eval with metric 5, a run_config.yaml that is a list, a summary.json that is null, one fine."""
    root = tmp_path / "runs"
    for name, seed in (("a", 0), ("b", 1), ("c", 2), ("d", 3)):
        write_run(root / name, "gkd", seed)
    (root / "a" / "eval" / "arith-test" / "student" / "metrics.json").write_text('{"metric": 5}')
    (root / "b" / "run_config.yaml").write_text("- 1\n- 2\n")
    (root / "c" / "summary.json").write_text("null")
    return root


def test_malformed_run_files_are_one_warning_each_and_the_run_is_treated_consistently(broken, tmp_path, capsys):
    """Issue: no warning, contradictory "Missing runs" text, a CSV column named 5 (or a TypeError)."""
    out = tmp_path / "out"
    assert _cli("report", str(broken), "--out", str(out)) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 3 and all(line.startswith("warning: ") for line in warnings), warnings
    metrics, config, summary = (broken / "a" / "eval" / "arith-test" / "student" / "metrics.json",
                                broken / "b" / "run_config.yaml", broken / "c" / "summary.json")
    assert f"{metrics}: 'metric' is 5, not a metric name; this evaluation is ignored" in warnings[0]
    assert f"{config}: holds a list, not a mapping of settings" in warnings[1]
    assert f"{summary}: holds null, not a JSON object; ignored" in warnings[2]
    with (out / "runs.csv").open() as handle:
        reader = csv.DictReader(handle)
        status = {row["run"]: row["status"] for row in reader}
    assert "5" not in reader.fieldnames
    assert status == {"a": "no eval", "b": "unreadable", "c": "complete", "d": "complete"}
    missing = (out / "report.md").read_text().split("## Missing or partial runs")[1].split("## Plots")[0]
    assert "| a | no eval | no student evaluation" in missing
    assert "| b | unreadable | run_config.yaml holds a list, not a mapping of settings |" in missing
    assert "| c |" not in missing and "| d |" not in missing


@pytest.mark.parametrize("name, text, warned", [
    ("summary.json", json.dumps({"method": ["gkd"], "train_seconds": "10"}), "'method' is a list, not a string"),
    ("run_config.yaml", "seed: [1, 2]\n", "has 'seed' a list, not an integer"),
    ("run_config.yaml", "task: arith\n", "has 'task' \"arith\", not a mapping"),
    ("eval/arith-test/student/metrics.json", json.dumps({"metric": "accuracy", "accuracy": "high"}),
     "score 'accuracy' is \"high\", not a number"),
])
def test_fields_of_the_wrong_type_are_named_not_crashed_on(tmp_path, capsys, name, text, warned):
    write_run(tmp_path / "runs" / "a", "gkd", 0)
    write_run(tmp_path / "runs" / "b", "gkd", 1)
    (tmp_path / "runs" / "a" / name).write_text(text)
    assert _cli("report", str(tmp_path / "runs"), "--out", str(tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'runs' / 'a' / name}: " in err and warned in err, err


def test_out_that_links_to_a_report_directory_replaces_that_directory_and_keeps_the_link(sweep, grid, tmp_path):
    shared = tmp_path / "shared" / "report"
    assert _cli("report", str(grid), "--out", str(shared)) == 0
    (tmp_path / "mine").symlink_to(shared, target_is_directory=True)
    assert _cli("report", str(sweep), "--out", str(tmp_path / "mine")) == 0
    assert (tmp_path / "mine").is_symlink() and "gkd-arith-tiny" in (shared / "runs.csv").read_text()
    assert not any(p.name.startswith("heatmap_") for p in shared.iterdir())

"""Fault injection (issue 10): kills at the worst moments, damaged files, concurrent runs, signals.

Every interrupted run must, when the same command is run again, end with
exactly the weights and metrics of an uninterrupted run, leave no temporary
files behind, and say what happened in one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from distill.io import verify_manifest
from distill.train import checkpoint as ckpt

from .conftest import cli, cli_subprocess, train_args

STEPS = ["trainer.max_steps=6", "trainer.save_every=2"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, cache_dir):
    """The uninterrupted run every faulty one is compared with."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert cli(*train_args(run, cache_dir, *STEPS)) == 0
    return run


def _same_final(a, b) -> None:
    wa, wb = load_file(str(a / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def _logged_steps(run) -> list[int]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


def _leftovers(run) -> list[str]:
    return sorted(p.name for d in (run, run / "checkpoints") if d.is_dir() for p in d.iterdir() if p.name.startswith(".tmp-"))


def _resume_and_compare(run, straight, cache_dir, *extra) -> None:
    assert cli(*train_args(run, cache_dir, *STEPS, *extra)) == 0
    _same_final(straight, run)
    assert _logged_steps(run) == [1, 2, 3, 4, 5, 6]
    assert _leftovers(run) == []


def test_kill_while_writing_a_checkpoint(tmp_path, cache_dir, straight):
    run = tmp_path / "run"
    killed = cli_subprocess(*train_args(run, cache_dir, *STEPS), env={"DISTILL_FAULT_INJECT": "kill-save@4"})
    assert killed.returncode == -9
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step-00000002"]
    assert _leftovers(run)  # the half-written step-4 sits under a temporary name
    _resume_and_compare(run, straight, cache_dir)


def test_kill_while_pruning_old_checkpoints(tmp_path, cache_dir, straight):
    run = tmp_path / "run"
    keep_one = "trainer.keep_checkpoints=1"
    killed = cli_subprocess(*train_args(run, cache_dir, *STEPS, keep_one), env={"DISTILL_FAULT_INJECT": "kill-prune@4"})
    assert killed.returncode == -9
    # step-2 was being deleted: it is gone from its name at once; whatever is left of it is a temporary
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step-00000004"]
    assert all(verify_manifest(p) is None for p in ckpt.list_checkpoints(run / "checkpoints"))
    _resume_and_compare(run, straight, cache_dir, keep_one)


def test_a_torn_last_metrics_line_is_tolerated(tmp_path, cache_dir, straight):
    run = tmp_path / "run"
    assert cli_subprocess(*train_args(run, cache_dir, *STEPS), env={"DISTILL_FAULT_INJECT": "kill@5"}).returncode == -9
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 6, "loss": 0.')  # a disk that filled up mid-append
    _resume_and_compare(run, straight, cache_dir)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, cache_dir, straight, capsys):
    run = tmp_path / "run"
    assert cli_subprocess(*train_args(run, cache_dir, *STEPS), env={"DISTILL_FAULT_INJECT": "kill@5"}).returncode == -9
    weights = run / "checkpoints" / "step-00000004" / "student" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-11] ^= 0x10  # one flipped bit in a weight: the file still loads, silently different
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    _resume_and_compare(run, straight, cache_dir)
    warnings = [line for line in capsys.readouterr().out.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "step-00000004" in warnings[0] and "sha256" in warnings[0]
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 2


def test_sigterm_saves_at_the_step_boundary_and_exits_with_one_line(tmp_path, cache_dir, straight):
    run = tmp_path / "run"
    stopped = cli_subprocess(*train_args(run, cache_dir, *STEPS), env={"DISTILL_FAULT_INJECT": "term@3"})
    assert stopped.returncode == 128 + signal.SIGTERM
    lines = [line for line in stopped.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: stopped by SIGTERM at step 3"), stopped.stderr
    assert lines[0].endswith("re-run the same command to resume"), lines[0]
    assert (run / "checkpoints" / "step-00000003").is_dir()
    _resume_and_compare(run, straight, cache_dir)


def _start(run, cache_dir, *extra) -> subprocess.Popen:
    args = train_args(run, cache_dir, "trainer.max_steps=100000", "trainer.save_every=100000", *extra)
    return subprocess.Popen([sys.executable, "-m", "distill.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _wait_for(condition, process, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_second_run_on_a_busy_directory_is_refused_and_sigterm_stops_the_first(tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    first = _start(run, cache_dir)
    try:
        _wait_for(lambda: (run / "metrics.jsonl").exists(), first, "the first run logs")
        capsys.readouterr()
        assert cli(*train_args(run, cache_dir, "trainer.max_steps=100000", "trainer.save_every=100000")) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(errors) == 1 and f"pid {first.pid}" in errors[0] and "in use" in errors[0]
        first.send_signal(signal.SIGTERM)  # what a cluster sends before it kills
        assert first.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        first.kill()
    lines = [line for line in first.stderr.read().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: stopped by SIGTERM"), lines
    saved = ckpt.list_checkpoints(run / "checkpoints")
    assert len(saved) == 1 and verify_manifest(saved[0]) is None
    steps = _logged_steps(run)
    assert steps == sorted(set(steps))  # one writer: no interleaved or duplicated records


def test_ctrl_c_saves_and_exits_with_one_line(tmp_path, cache_dir):
    run = tmp_path / "run"
    process = _start(run, cache_dir)
    try:
        _wait_for(lambda: (run / "metrics.jsonl").exists(), process, "training starts")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 128 + signal.SIGINT
    finally:
        process.kill()
    lines = [line for line in process.stderr.read().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: stopped by SIGINT"), lines
    assert lines[0].endswith("re-run the same command to resume"), lines[0]
    assert len(ckpt.list_checkpoints(run / "checkpoints")) == 1


def test_a_signal_during_the_last_step_lets_the_run_finish(tmp_path, cache_dir):
    """Review of issue 10: SIGTERM during the last step reported an interruption and left no final/."""
    run = tmp_path / "run"
    done = cli_subprocess(*train_args(run, cache_dir, *STEPS), env={"DISTILL_FAULT_INJECT": "term@6"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "final").is_dir() and json.loads((run / "summary.json").read_text())["steps"] == 6

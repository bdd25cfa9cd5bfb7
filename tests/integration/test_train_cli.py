"""`distill train` through the real CLI: outputs, both architectures, resume, bootstrap cache."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from .conftest import cli, cli_subprocess, train_args


@pytest.mark.parametrize("student, auto_class", [("tiny", AutoModelForCausalLM), ("tiny_t5", AutoModelForSeq2SeqLM)])
def test_sft_writes_a_run_directory_with_a_loadable_final(tmp_path, cache_dir, student, auto_class):
    run = tmp_path / "run"
    assert cli(*train_args(run, cache_dir, "method=sft", f"student={student}")) == 0
    model = auto_class.from_pretrained(run / "final")
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    assert model.config.vocab_size == len(tokenizer)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == [1, 2, 3, 4]
    assert all({"loss/ce", "lr", "tokens_per_s", "grad_norm"} <= set(r) for r in train_records)
    assert any("val/loss" in r for r in records)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["method"] == "sft" and summary["student"] == student
    assert (run / ".hydra" / "config.yaml").exists() and (run / "train.log").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]


def test_resume_after_sigkill_equals_the_uninterrupted_run(tmp_path, cache_dir):
    steps = ["trainer.max_steps=6", "trainer.save_every=2"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert cli(*train_args(straight, cache_dir, *steps)) == 0

    killed = cli_subprocess(*train_args(resumed, cache_dir, *steps), env={"DISTILL_FAULT_INJECT": "kill@4"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (resumed / "final").exists()
    assert (resumed / "checkpoints" / "step-00000004").is_dir()

    assert cli(*train_args(resumed, cache_dir, *steps)) == 0
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(resumed / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
    steps_logged = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()
                    if "loss" in json.loads(line)]
    assert steps_logged == [1, 2, 3, 4, 5, 6]
    assert json.loads((resumed / "summary.json").read_text())["resumed_from_step"] == 4


def test_resume_refuses_a_run_dir_holding_another_config(tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    assert cli(*train_args(run, cache_dir)) == 0
    assert cli(*train_args(run, cache_dir, "trainer.lr=0.5")) == 2
    assert "trainer.lr" in capsys.readouterr().err


def test_bootstrapped_teacher_is_cached_and_reused(tmp_path, capsys):
    cache_dir = tmp_path / "cache"  # its own: other tests of the session may have bootstrapped this teacher already
    extra = ["eval.after_train=true", "eval.compare_teacher=true", "trainer.max_steps=2", "seed=7"]
    assert cli(*train_args(tmp_path / "a", cache_dir, *extra)) == 0
    cached = list((cache_dir / "bootstrap").glob("teacher-tiny-*/final/config.json"))
    assert cached
    assert "bootstrapping teacher tiny by SFT" in capsys.readouterr().out
    assert cli(*train_args(tmp_path / "b", cache_dir, *extra)) == 0
    out = capsys.readouterr().out  # Hydra's console log handler writes to stdout
    assert "reusing cached SFT teacher" in out and "bootstrapping" not in out
    assert "teacher" in out and "student" in out and "accuracy" in out
    assert len(list((cache_dir / "bootstrap").glob("teacher-tiny-*/final/config.json"))) == len(cached)
    for role in ("student", "teacher"):
        metrics = json.loads((tmp_path / "b" / "eval" / "arith-test" / role / "metrics.json").read_text())
        assert 0.0 <= metrics["accuracy"] <= 100.0 and metrics["num_examples"] == 8


def test_bf16_autocast_and_gradient_accumulation_run(tmp_path, cache_dir):
    run = tmp_path / "run"
    assert cli(*train_args(run, cache_dir, "trainer.precision=bf16", "trainer.micro_batch_size=2",
                           "trainer.grad_accum_steps=2", "trainer.max_steps=2")) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "lr" in r]
    assert len(train_records) == 2
    assert all(r["loss"] == r["loss"] and r["loss"] > 0 for r in train_records)  # finite, positive
    assert AutoModelForCausalLM.from_pretrained(run / "final").dtype.is_floating_point


def test_wandb_logger_runs_offline_without_prompting(tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = tmp_path / "run"
    assert cli(*train_args(run, cache_dir, "logger=wandb", "trainer.max_steps=2")) == 0
    assert list((run / "wandb").glob("offline-run-*")), "W&B should have written an offline run"
    assert (run / "metrics.jsonl").exists()  # local files are written whatever W&B does
    # One W&B id per line of training: a resumed run keeps it, a fresh start (old run moved aside) gets another,
    # so the two histories never mix in one W&B run.
    first = (run / "wandb_id").read_text()
    assert cli(*train_args(run, cache_dir, "logger=wandb", "trainer.max_steps=4")) == 0
    assert (run / "wandb_id").read_text() == first
    assert cli(*train_args(run, cache_dir, "logger=wandb", "trainer.max_steps=2", "trainer.resume=false")) == 0
    assert (run / "wandb_id").read_text() != first


def test_bootstraps_are_shared_across_seeds_and_train_fractions(tmp_path, cache_dir, capsys):
    both = ["method=supervised_kd", "student.bootstrap.enabled=true", "trainer.max_steps=1"]
    assert cli(*train_args(tmp_path / "a", cache_dir, *both, "seed=11")) == 0
    capsys.readouterr()
    assert cli(*train_args(tmp_path / "b", cache_dir, *both, "seed=12", "task.train_fraction=0.5")) == 0
    out = capsys.readouterr().out
    assert "reusing cached SFT student" in out and "reusing cached SFT teacher" in out
    assert "bootstrapping" not in out
    assert "150 train / 8 validation examples" in out  # the run itself trains on half of the 300
    assert cli(*train_args(tmp_path / "c", cache_dir, *both, "bootstrap_seed=5")) == 0
    out = capsys.readouterr().out
    assert "bootstrapping student tiny" in out and "bootstrapping teacher tiny" in out


def test_parallel_jobs_needing_one_bootstrap_train_it_once(tmp_path):
    cache = tmp_path / "cache"  # empty: both jobs find no bootstrap when they start
    args = [[sys.executable, "-m", "distill.cli",
             *train_args(tmp_path / f"job{i}", cache, "student.bootstrap.enabled=true", "trainer.max_steps=1",
                         "bootstrap_trainer.max_steps=60", f"seed={i}")] for i in (0, 1)]
    jobs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for a in args]
    outs = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    logs = "".join(outs)
    assert logs.count("bootstrapping student tiny") == 1 and logs.count("reusing cached SFT student") == 1
    assert len(list((cache / "bootstrap").glob("student-tiny-*/final/config.json"))) == 1


def test_training_time_adds_up_across_resumes_and_a_finished_run_is_not_rewritten(tmp_path, cache_dir, capsys):
    """Issue 14.3: a resumed run counted only the time after resuming; re-running a finished one rewrote it."""
    run, steps = tmp_path / "run", ["trainer.max_steps=6", "trainer.save_every=2"]
    killed = cli_subprocess(*train_args(run, cache_dir, *steps), env={"DISTILL_FAULT_INJECT": "slow@1,kill@4"})
    assert killed.returncode == -9
    assert cli(*train_args(run, cache_dir, *steps)) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from_step"] == 4 and summary["train_seconds"] >= 1.0  # the first session's second counts
    assert set(summary["code"]) == {"commit", "dirty", "version"}  # which code trained it (docs/design.md)
    before = {p: p.stat().st_mtime_ns for p in (run / "summary.json", run / "final" / "model.safetensors")}
    capsys.readouterr()
    assert cli(*train_args(run, cache_dir, *steps)) == 0
    assert "already finished its 6 steps" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert json.loads((run / "summary.json").read_text()) == summary


def test_progress_lines_when_output_goes_to_a_file(tmp_path, cache_dir):
    """Issue 14.5: a job writing to a file showed no progress; now a line every progress_interval seconds."""
    run = tmp_path / "run"
    args = [a for a in train_args(run, cache_dir) if not a.startswith("trainer.progress=")]
    result = cli_subprocess(*args, "trainer.progress=true", "trainer.progress_interval=0")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "distill.progress" in line and "train: step" in line]
    assert len(lines) >= 3 and "step 4/4 (100%)" in lines[-1]
    assert any("loss " in line and "tokens/s" in line and "ETA" in line for line in lines[:-1])
    logged = (run / "train.log").read_text()
    assert sum("train: step" in line for line in logged.splitlines()) == len(lines)


def test_a_warmup_longer_than_the_run_is_warned_once(tmp_path, cache_dir, capsys):
    assert cli(*train_args(tmp_path / "run", cache_dir, "trainer.warmup_steps=10")) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "never reaches trainer.lr" in line]
    assert len(warnings) == 1 and "trainer.warmup_steps=10 >= trainer.max_steps=4" in warnings[0]


def test_an_interrupted_bootstrap_says_it_resumes(tmp_path, capsys):
    """Issue 14.10: it logged "(no cached checkpoint)" and then "resuming from step 2"."""
    cache, args = tmp_path / "cache", ["student.bootstrap.enabled=true"]
    killed = cli_subprocess(*train_args(tmp_path / "run", cache, *args), env={"DISTILL_FAULT_INJECT": "kill@2"})
    assert killed.returncode == -9 and "bootstrapping student tiny" in killed.stdout
    capsys.readouterr()
    assert cli(*train_args(tmp_path / "run", cache, *args)) == 0
    out = capsys.readouterr().out
    assert "resuming the interrupted SFT bootstrap of student tiny" in out and "no cached model yet" not in out


def test_few_labels_many_prompts(tmp_path, cache_dir, capsys):
    """task.labeled_fraction: methods that need targets train on the labelled part, prompt-only methods on
    every prompt; the SFT student bootstraps on the labelled part, the teacher's bootstrap is shared."""
    import re

    student_key = lambda out: set(re.findall(r"student-tiny-([0-9a-f]{16})", out))  # noqa: E731
    few = ["task.labeled_fraction=0.1", "student.bootstrap.enabled=true"]
    assert cli(*train_args(tmp_path / "sft", cache_dir, *few)) == 0
    out = capsys.readouterr().out
    assert "30 train / 8 validation examples" in out and "trains on the 30 labelled examples only" in out
    few_student = student_key(out)
    assert cli(*train_args(tmp_path / "seqkd", cache_dir, *few, "method=seqkd")) == 0
    out = capsys.readouterr().out
    assert "300 train / 8 validation examples" in out and student_key(out) == few_student
    teacher = set(re.findall(r"teacher-tiny-([0-9a-f]{16})", out))
    assert cli(*train_args(tmp_path / "all", cache_dir, "student.bootstrap.enabled=true", "method=seqkd")) == 0
    out = capsys.readouterr().out  # all labels: another student bootstrap, the same teacher
    assert len(few_student) == 1 and student_key(out) and student_key(out) != few_student
    assert set(re.findall(r"teacher-tiny-([0-9a-f]{16})", out)) == teacher

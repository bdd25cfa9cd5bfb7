"""A run directory holds one run: a fresh start moves the old one aside, a refused command writes
nothing, a diverged run can continue from a chosen checkpoint with a lower lr (issue 10, items 8, 13, 14)."""

from __future__ import annotations

import json

from safetensors.torch import load_file

from distill.train import checkpoint as ckpt

from .conftest import cli, cli_subprocess, train_args

SIX = ["trainer.max_steps=6", "trainer.save_every=2"]


def _weights(run):
    return load_file(str(run / "final" / "model.safetensors"))


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def _snapshot(run) -> dict:
    """Every file under ``run`` with its bytes (what a refused command must leave untouched)."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_false_moves_the_earlier_run_aside_and_never_mixes(tmp_path, cache_dir):
    """Item 8: the old run's step-6 used to survive beside the new run's step-4 and be resumed later."""
    run, reference = tmp_path / "run", tmp_path / "reference"
    assert cli(*train_args(run, cache_dir, *SIX)) == 0
    new = ["trainer.max_steps=4", "trainer.lr=5e-3"]
    assert cli(*train_args(run, cache_dir, *new, "trainer.resume=false")) == 0
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step-00000002", "step-00000004"]
    replaced = list((run / ".replaced").iterdir())
    assert len(replaced) == 1 and (replaced[0] / "checkpoints" / "step-00000006").is_dir()
    assert (replaced[0] / "final").is_dir() and (replaced[0] / "run_config.yaml").exists()
    # The next plain re-run of the new config finds only the new run's own checkpoints.
    assert cli(*train_args(run, cache_dir, *new)) == 0
    assert cli(*train_args(reference, cache_dir, *new)) == 0
    assert _equal(_weights(run), _weights(reference))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 4


def test_a_refused_command_changes_nothing_in_the_run_directory(tmp_path, cache_dir, capsys):
    """Item 13: a refused config used to overwrite .hydra/config.yaml and the log."""
    run = tmp_path / "run"
    assert cli(*train_args(run, cache_dir)) == 0
    before = _snapshot(run)
    assert cli(*train_args(run, cache_dir, "trainer.lr=0.5")) == 2
    assert "trainer.lr" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_a_command_refused_for_bad_input_leaves_no_directory_and_blocks_nothing(tmp_path, cache_dir, capsys):
    """Item 13: run_config.yaml used to be written before the data was read, blocking the corrected command."""
    data = tmp_path / "data"
    data.mkdir()
    good = json.dumps({"question": "Ava has 2 pens. How many?", "answer": "2 + 0 = 2\n#### 2"})
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text(f"{good}\n" * 40)
    (data / "train.jsonl").write_text(f"{good}\n{{broken\n")
    run = tmp_path / "run"
    args = ["task=gsm8k", f"task.data_dir={data}", "task.validation_from_train=0", "tokenizer.vocab_size=280",
            "task.max_source_length=64", "task.max_target_length=32"]
    assert cli(*train_args(run, cache_dir, *args, arith=False)) == 2
    assert "train.jsonl:2" in capsys.readouterr().err
    assert not run.exists()
    (data / "train.jsonl").write_text(f"{good}\n" * 40)
    assert cli(*train_args(run, cache_dir, *args, arith=False)) == 0


def _lrs(run) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in records if "lr" in r}


def test_after_a_divergence_the_error_says_how_to_continue_and_that_works(tmp_path, cache_dir):
    """Item 14: lowering the lr in the same dir was refused; now trainer.resume_from continues a chosen step."""
    run = tmp_path / "run"
    base = ["trainer.max_steps=6", "trainer.save_every=1", "trainer.keep_checkpoints=3"]
    diverged = cli_subprocess(*train_args(run, cache_dir, *base), env={"DISTILL_FAULT_INJECT": "nan@5"})
    assert diverged.returncode == 3
    error = [line for line in diverged.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "step 5" in error[0] and "trainer.resume_from=" in error[0] and "max |w|" in error[0]
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step-00000002", "step-00000003",
                                                                             "step-00000004"]
    # Continue from step 2 (the newest may hold exploded weights) with a lower lr, in the same directory;
    # the continuation is itself interrupted, and re-running it resumes the new branch, not step 2.
    continued = [*base, "trainer.lr=2e-4", "trainer.resume_from=2"]
    killed = cli_subprocess(*train_args(run, cache_dir, *continued), env={"DISTILL_FAULT_INJECT": "kill@4"})
    assert killed.returncode == -9
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("superseded-")) == [
        "superseded-step-00000003", "superseded-step-00000004"]
    assert cli(*train_args(run, cache_dir, *continued)) == 0
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 4
    lrs = _lrs(run)
    assert sorted(lrs) == [1, 2, 3, 4, 5, 6] and all(lrs[s] <= 2e-4 for s in (3, 4, 5, 6))
    # The same step with other optimiser settings is a new branch: the 2e-4 one is superseded, never continued.
    other = [*base, "trainer.lr=1e-4", "trainer.resume_from=2", "hydra.run.dir=" + str(run)]
    assert cli(*train_args(run, cache_dir, *other)) == 0
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 2
    assert all(_lrs(run)[s] <= 1e-4 for s in (3, 4, 5, 6))


def test_a_resume_from_that_cannot_be_used_is_refused_before_anything_is_written(tmp_path, cache_dir, capsys):
    """Review of item 14: a bad resume_from used to be found after the run dir was rewritten."""
    run, t5_run = tmp_path / "run", tmp_path / "t5"
    assert cli(*train_args(run, cache_dir)) == 0
    assert cli(*train_args(t5_run, cache_dir, "student=tiny_t5")) == 0
    before = _snapshot(run)
    for extra, needle in ((["trainer.resume_from=99", "trainer.lr=1e-5"], "no checkpoint"),
                          ([f"trainer.resume_from={t5_run}", "trainer.lr=1e-5"], "checkpoints of another run"),
                          (["trainer.resume_from=2", "trainer.resume=false"], "drop trainer.resume=false")):
        capsys.readouterr()
        assert cli(*train_args(run, cache_dir, *extra)) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(errors) == 1 and needle in errors[0], errors
        assert _snapshot(run) == before
    fresh = tmp_path / "fresh"  # a checkpoint of another architecture: refused before the new run dir is written
    assert cli(*train_args(fresh, cache_dir, f"trainer.resume_from={t5_run}")) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and "another model" in errors[0] and not fresh.exists()


def test_non_finite_weights_are_never_kept_as_a_checkpoint(tmp_path, cache_dir):
    """Item 14: lr=1e38 overflows the update itself: exit 3, one line, no checkpoint of those weights."""
    run = tmp_path / "run"
    result = cli_subprocess(*train_args(run, cache_dir, "trainer.lr=1e38", "trainer.save_every=1"))
    assert result.returncode == 3
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "overflow" in errors[0]
    assert ckpt.list_checkpoints(run / "checkpoints") == []

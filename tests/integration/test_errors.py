"""SPEC §9: bad input gets one clear line naming what to fix and a non-zero exit."""

from __future__ import annotations

import json

from .conftest import TINY, cli, cli_subprocess, train_args


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_unknown_group_value_lists_the_options(capsys):
    assert cli("train", "method=nope") != 0
    err = capsys.readouterr().err
    assert "method/nope" in err and "sft" in err and "Available options" in err


def test_missing_checkpoint_path(tmp_path, capsys):
    assert cli("eval", f"ckpt={tmp_path / 'missing'}") == 2
    assert "does not exist" in _error_line(capsys)


def test_directory_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli("eval", f"ckpt={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'out'}") == 2
    assert "is not a checkpoint" in _error_line(capsys)


def test_required_value_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default eval run dir is relative
    assert cli("eval") == 2
    assert "ckpt" in _error_line(capsys)


def test_malformed_jsonl_names_file_and_line(tmp_path, cache_dir, capsys):
    data = tmp_path / "data"
    data.mkdir()
    good = json.dumps({"question": "1+1?", "answer": "#### 2"})
    for split in ("train", "validation", "test"):
        (data / f"{split}.jsonl").write_text(f"{good}\n{good}\n")
    (data / "train.jsonl").write_text(f"{good}\n{good}\n{{not json\n")
    assert cli(*train_args(tmp_path / "run", cache_dir, "task=gsm8k", f"task.data_dir={data}",
                           "task.validation_from_train=0", arith=False)) == 2
    line = _error_line(capsys)
    assert "train.jsonl:3" in line and "malformed JSON" in line


def test_offline_hub_model_fails_fast_with_what_to_set(tmp_path, cache_dir, capsys):
    assert cli(*train_args(tmp_path / "run", cache_dir, "student=t5_small")) == 2
    line = _error_line(capsys)
    assert "google-t5/t5-small" in line and "pretrained" in line


def test_out_of_range_value(tmp_path, cache_dir, capsys):
    assert cli(*train_args(tmp_path / "run", cache_dir, "task.train_fraction=1.5")) == 2
    assert "task.train_fraction" in _error_line(capsys)


def test_nan_loss_stops_keeps_last_checkpoint_and_names_the_step(tmp_path, cache_dir):
    run = tmp_path / "run"
    result = cli_subprocess(*train_args(run, cache_dir, "trainer.max_steps=6", "trainer.save_every=2"),
                            env={"DISTILL_FAULT_INJECT": "nan@3"})
    assert result.returncode == 3
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "step 4" in errors[0] and "step-00000002" in errors[0]
    assert [p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")] == ["step-00000002"]
    assert not (run / "final").exists()


def test_help_shows_the_composed_config():
    result = cli_subprocess("train", "--help")
    assert result.returncode == 0
    assert "method: sft" in result.stdout or "_target_: distill.methods.sft.SFT" in result.stdout
    assert "task" in result.stdout and "trainer:" in result.stdout
    unused = TINY  # the same overrides compose for --cfg job
    job = cli_subprocess("train", *unused, "--cfg", "job")
    assert job.returncode == 0 and "max_steps: 4" in job.stdout


def test_teacher_and_student_vocabularies_that_differ(tmp_path, cache_dir, shared_dir, capsys):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    teacher_dir = tmp_path / "gpt2-vocab-teacher"
    tokenizer = AutoTokenizer.from_pretrained(shared_dir / "models" / "gpt2-tokenizer")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=8, n_layer=1, n_head=2)).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    assert cli(*train_args(tmp_path / "run", cache_dir, "method=supervised_kd", f"teacher.pretrained={teacher_dir}",
                           "teacher.config=null", "teacher.bootstrap.enabled=false")) == 2
    line = _error_line(capsys)
    assert "vocabularies differ" in line

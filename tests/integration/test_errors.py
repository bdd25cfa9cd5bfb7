"""docs/design.md, Errors: bad input gets one clear line naming what to fix and a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import TINY, TINY_ARITH, cli, cli_subprocess, train_args


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_unknown_group_value_lists_the_options(capsys):
    assert cli("train", "method=nope") == 2  # one exit code for every user error, Hydra's included
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
                            env={"DISTILL_FAULT_INJECT": "nan@4"})
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
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=8, n_layer=1, n_head=2)).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    assert cli(*train_args(tmp_path / "run", cache_dir, "method=supervised_kd", f"teacher.pretrained={teacher_dir}",
                           "teacher.config=null", "teacher.bootstrap.enabled=false")) == 2
    line = _error_line(capsys)
    assert "vocabularies differ" in line


def _data_dir(tmp_path, train_text: str):
    data = tmp_path / "data"
    data.mkdir()
    good = json.dumps({"question": "Ava has 2 pens. How many?", "answer": "2 + 0 = 2\n#### 2"}) + "\n"
    for split in ("validation", "test"):
        (data / f"{split}.jsonl").write_text(good * 4)
    (data / "train.jsonl").write_bytes(good.encode() * 3 + train_text.encode("latin-1"))
    return data


def _train_on(tmp_path, cache_dir, data):
    return cli(*train_args(tmp_path / "run", cache_dir, "task=gsm8k", f"task.data_dir={data}",
                           "task.validation_from_train=0", "task.max_target_length=32", arith=False))


def test_a_byte_that_is_not_utf8_names_file_and_line(tmp_path, cache_dir, capsys):
    data = _data_dir(tmp_path, '{"question": "caf\xe9", "answer": "#### 1"}\n')  # latin-1 é: 0xe9
    assert _train_on(tmp_path, cache_dir, data) == 2
    line = _error_line(capsys)
    assert "train.jsonl:4" in line and "UTF-8" in line and "0xe9" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("record, field", [('{"question": "q", "answer": null}', "'answer'"),
                                           ('{"question": 17, "answer": "#### 1"}', "'question'")])
def test_null_or_non_string_fields_are_refused(tmp_path, cache_dir, capsys, record, field):
    """Item 17: "answer": null used to train on the text "None"."""
    assert _train_on(tmp_path, cache_dir, _data_dir(tmp_path, record + "\n")) == 2
    line = _error_line(capsys)
    assert "train.jsonl:4" in line and field in line and "must be a string" in line


@pytest.mark.parametrize("override, named", [("trainer.lr=-1e-3", "trainer.lr"), ("trainer.max_steps=abc", "trainer.max_steps"),
                                             ("trainer.warmup_steps=-5", "trainer.warmup_steps"),
                                             ("trainer.adam_betas=[0.9,1.5]", "trainer.adam_betas"),
                                             ("trainer.max_grad_norm=0", "trainer.max_grad_norm")])
def test_bad_trainer_values_are_one_line_before_anything_runs(tmp_path, cache_dir, capsys, override, named):
    assert cli(*train_args(tmp_path / "run", cache_dir, override)) == 2
    assert named in _error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_run_dir_that_cannot_be_created_is_one_line(tmp_path, cache_dir, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert cli(*train_args(blocker / "run", cache_dir)) == 2
    line = _error_line(capsys)
    assert "a-file" in line and "hydra.run.dir" in line


def test_a_full_disk_is_one_line_and_the_run_resumes_later(tmp_path, cache_dir):
    """Item 16: a write that fails for lack of space (here: a 64 kB file-size limit) stops with one line;
    nothing half-written is kept, and the same command completes once there is room."""
    import resource

    run = tmp_path / "run"
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))  # noqa: E731
    full = subprocess.run([sys.executable, "-m", "distill.cli", *train_args(run, cache_dir)], capture_output=True,
                          text=True, preexec_fn=limit, timeout=300)
    assert full.returncode == 2
    errors = [line for line in full.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "File too large" in errors[0] and "step-00000002" in errors[0], full.stderr
    leftovers = [p for p in run.rglob("*") if p.name.startswith(".tmp-") or p.name.startswith("step-")]
    assert leftovers == []
    assert cli(*train_args(run, cache_dir)) == 0


def test_a_truncated_model_file_in_final_is_named(tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    assert cli(*train_args(run, cache_dir)) == 0
    weights = run / "final" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    capsys.readouterr()
    assert cli("eval", f"ckpt={run}", *TINY_ARITH, "eval.progress=false", f"hydra.run.dir={tmp_path / 'eval'}") == 2
    line = _error_line(capsys)
    assert "model.safetensors" in line and "truncated" in line
    assert not (tmp_path / "eval").exists()
    (run / "final" / "manifest.json").unlink()  # a directory distill did not write: the loader's own error, one line
    assert cli("eval", f"ckpt={run}", *TINY_ARITH, "eval.progress=false", f"hydra.run.dir={tmp_path / 'eval'}") == 2
    assert "cannot load model weights" in _error_line(capsys)


def _generations(tmp_path, **changes):
    record = {"task": "arith", "split": "test", "metric": "accuracy", "checkpoint": "x", "reference": "#### 2",
              "outputs": {"greedy": ["#### 2"]}, "decoding": {"greedy": {"strategy": "greedy"}}, **changes}
    path = tmp_path / "generations.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize("changes, named", [({"outputs": {"greedy": "#### 2"}}, "non-empty list of strings"),
                                            ({"metric": "f1"}, "unknown metric"),
                                            ({"outputs": []}, "objects keyed by decoding name")])
def test_rescore_of_a_malformed_generations_file(tmp_path, capsys, changes, named):
    assert cli("rescore", str(_generations(tmp_path, **changes))) == 2
    line = _error_line(capsys)
    assert named in line and "record 1" in line
    assert not (tmp_path / "metrics.json").exists()


def test_rescore_of_a_missing_file(tmp_path, capsys):
    assert cli("rescore", str(tmp_path / "nope.jsonl")) == 2
    assert "does not exist" in _error_line(capsys)


def test_an_encoder_decoder_student_with_a_decoder_only_teacher_is_refused_before_anything_is_built(tmp_path, capsys):
    """Issue 14.6: it crashed mid-run with a raw ValueError; now one line saying which teacher to use."""
    empty_cache = tmp_path / "cache"
    assert cli(*train_args(tmp_path / "run", empty_cache, "method=supervised_kd", "student=tiny_t5")) == 2
    line = _error_line(capsys)
    assert "encoder-decoder" in line and "decoder-only" in line and "teacher=tiny_t5" in line
    assert not empty_cache.exists()  # no tokenizer was built, no teacher bootstrapped


def test_outputs_longer_than_a_model_fits_are_refused_before_anything_is_built(tmp_path, capsys):
    """Issue 14.7: the length error came after a 46 s tokenizer build."""
    empty_cache = tmp_path / "cache"
    assert cli(*train_args(tmp_path / "run", empty_cache, "student.config.n_positions=64")) == 2
    line = _error_line(capsys)
    assert "64 positions" in line and "task.max_target_length" in line
    assert not empty_cache.exists()


def test_no_command_prints_usage_and_fails(capsys):
    assert cli() == 2
    assert "distill train" in capsys.readouterr().err


def test_a_cache_dir_under_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli(*train_args(tmp_path / "run", blocker / "cache")) == 2
    line = _error_line(capsys)
    assert "a-file" in line and "Not a directory" in line


def test_a_refused_eval_leaves_no_empty_directories(tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    assert cli(*train_args(run, cache_dir)) == 0
    assert cli("eval", f"ckpt={run / 'final'}", "eval.max_new_tokens=abc") == 2
    assert "eval.max_new_tokens" in _error_line(capsys)
    assert not (run / "eval").exists()

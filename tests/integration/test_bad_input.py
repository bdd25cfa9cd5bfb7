"""Bad input, as a new user types it: exit 2, exactly one `error:` line naming the key, nothing written.

Every row of the defects issue (a probe of 219 bad inputs on 467e6c2) is a row here. A refused command must
leave the directory tree exactly as it found it: no run or evaluation directory, no `.hydra/`, no log, and no
user directory removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import TINY_ARITH, cli, train_args


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) + ("/" if p.is_dir() else "") for p in root.rglob("*"))


def _refused(capsys, code: int, named: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and named in err[0], err[0]
    return err[0]


# (overrides, the key the one line must name). Each of these failed on 467e6c2: a traceback, two lines that
# do not name the key, a silent acceptance, a NaN trained into a "diverged" exit, or files written first.
TRAIN_ROWS = [
    (["+trainer.foo=1"], "trainer.foo"),
    (["+eval.foo=1"], "eval.foo"),
    (["+task.generator.foo=1"], "task.generator.foo"),
    (["+method.foo=1"], "method.foo"),
    (["method=gkd", "+method.foo=1"], "method.foo"),
    (["+foo=1"], "foo"),
    (["trainer.device=tpu"], "trainer.device"),
    (["seed=abc"], "seed"),
    (["tokenizer.vocab_size=-5"], "tokenizer.vocab_size"),
    (["tokenizer.vocab_size=big"], "tokenizer.vocab_size"),
    (["tokenizer.vocab_size=0"], "tokenizer.vocab_size"),
    (["method=seqkd", "method.generation_batch_size=0"], "method.generation_batch_size"),
    (["method=gkd", "method.seq_kd=true", "teacher_generation.batch_size=0"], "teacher_generation.batch_size"),
    (["method=gkd", "method.alpha=0.5", "method.reward_metric=bogus"], "method.reward_metric"),
    (["method=xkd", "method.reward_head.hidden=-4"], "method.reward_head.hidden"),
    (["task.prompt.decoder=\"Question: {question\""], "task.prompt.decoder"),
    (["task.prompt.decoder=\"Q: {}\""], "task.prompt.decoder"),
    (["trainer.eval_batches=0"], "trainer.eval_batches"),
    (["trainer.eval_batches=-3"], "trainer.eval_batches"),
    (["method=supervised_kd", "method.ce_weight=nan"], "method.ce_weight"),
    (["method=minillm", "method.importance_clip=-1"], "method.importance_clip"),
    (["method=minillm", "method.ptx_weight=-1"], "method.ptx_weight"),
    (["method=xkd", "method.gamma=abc"], "method.gamma"),
    (["method=osd", "method.update=perhaps"], "method.update"),
    (["task.max_source_length=-1"], "task.max_source_length"),
    (["task.max_target_length=0"], "task.max_target_length"),
    (["task.metric=bogus"], "task.metric"),
    (["method=minillm", "method.gamma=nan"], "method.gamma"),
    (["method=xkd", "method.alpha=nan"], "method.alpha"),
    (["method=xkd", "method.prior_std=nan"], "method.prior_std"),
    (["method=supervised_kd", "divergence.kd_temperature=nan"], "divergence.kd_temperature"),
    (["method=supervised_kd", "method.ce_weight=lots"], "method.ce_weight"),
    (["method=gkd", "method.lmbda=abc"], "method.lmbda"),
    (["method=osd", "method.num_proposals=four"], "method.num_proposals"),
    (["method=gkd", "method.sampling_temperature=hot"], "method.sampling_temperature"),
    (["method=gkd", "divergence=jsd", "divergence.beta=half"], "divergence.beta"),
    (["trainer.lr_schedule=bogus"], "trainer.lr_schedule"),
    (["method=minillm", "method.sampling_temperature=0"], "method.sampling_temperature"),
    (["method=minillm", "method.chunk_size=0"], "method.chunk_size"),
    (["task.generator.sizes.train=-5"], "task.generator.sizes.train"),
    (["task.generator.sizes.train=0"], "task.generator.sizes.train"),
    (["method=seqkd", "method.teacher_decoding.strategy=beam"], "teacher_generation.decoding.strategy"),
    (["method=seqkd", "+method.teacher_decoding.strategy=beam"], "teacher_generation.decoding.strategy"),
    (["teacher_generation.decoding.strategy=bogus"], "teacher_generation.decoding.strategy"),
    (["eval.split=dev"], "eval.split"),
    (["eval.after_train=true", "eval.max_new_tokens=100000"], "eval.max_new_tokens"),
    (["bootstrap_trainer.lr=nan"], "bootstrap_trainer.lr"),
    (["+bootstrap_trainer.foo=1"], "bootstrap_trainer.foo"),
    (["teacher.bootstrap.trainer.max_steps=0"], "teacher.bootstrap.trainer.max_steps"),
    (["trainer.distributed.timeout_s=nan"], "trainer.distributed.timeout_s"),
    (["teacher.sharding=zero3"], "teacher.sharding"),
    (["logger=wandb", "logger.wandb.mode=sometimes"], "logger.wandb.mode"),
    (["method=osd", "method.sampling_temperature=nan"], "method.sampling_temperature"),
]


@pytest.mark.parametrize("overrides, named", TRAIN_ROWS, ids=[" ".join(o) for o, _ in TRAIN_ROWS])
def test_bad_train_input(tmp_path, capsys, overrides, named):
    """Refused before any model, tokenizer or data is built: the cache stays empty too."""
    cache = tmp_path / "cache"
    code = cli(*train_args(tmp_path / "run", cache, *overrides))
    _refused(capsys, code, named)
    assert _tree(tmp_path) == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli(*train_args(run, cache_dir, "trainer.max_steps=2")) == 0
    return run


EVAL_ROWS = [
    (["device=tpu"], "device"),
    (["eval.batch_size=0"], "eval.batch_size"),
    (["eval.batch_size=-4"], "eval.batch_size"),
    (["eval.sampling_temperatures=[hot]"], "eval.sampling_temperatures"),
    (["eval.sampling_temperatures=[-1.0]"], "eval.sampling_temperatures"),
    (["eval.num_samples=0"], "eval.num_samples"),
    (["eval.num_samples=-2"], "eval.num_samples"),
    (["eval.num_beams=0"], "eval.num_beams"),
    (["eval.max_new_tokens=0"], "eval.max_new_tokens"),
    (["eval.strategy=sample", "eval.sampling_temperature=0"], "eval.sampling_temperature"),
    (["eval.sampling_temperature=nan"], "eval.sampling_temperature"),
    (["eval.strategy=bogus"], "eval.strategy"),
    (["eval.max_new_tokens=100000"], "eval.max_new_tokens"),
    (["eval.split=dev"], "eval.split"),
    (["+eval.foo=1"], "eval.foo"),
    (["eval.speculative.num_proposals=0", "eval.speculative.draft=x"], "eval.speculative.num_proposals"),
]


@pytest.mark.parametrize("overrides, named", EVAL_ROWS, ids=[" ".join(o) for o, _ in EVAL_ROWS])
def test_bad_eval_input(trained, tmp_path, capsys, overrides, named):
    before = _tree(trained)
    code = cli("eval", f"ckpt={trained / 'final'}", *TINY_ARITH, "eval.progress=false", *overrides)
    _refused(capsys, code, named)
    assert _tree(trained) == before and not (trained / "eval").exists()


def test_eval_of_missing_or_malformed_data_writes_nothing(trained, tmp_path, capsys):
    args = ["eval", f"ckpt={trained / 'final'}", "task=gsm8k", "eval.progress=false"]
    _refused(capsys, cli(*args, f"task.data_dir={tmp_path / 'missing'}"), "task.data_dir")
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n{not json\n')
    _refused(capsys, cli(*args, f"task.data_dir={data}"), "test.jsonl:2")
    assert not (trained / "eval").exists()


def test_a_gptj_student_with_fused_linear_true_is_refused_before_the_run_is_written(tmp_path, cache_dir, capsys):
    code = cli(*train_args(tmp_path / "run", cache_dir, "fused_linear=true", "student.config.model_type=gptj",
                           "+student.config.rotary_dim=16"))
    _refused(capsys, code, "fused_linear=true")
    assert not (tmp_path / "run").exists()


# Security item 3: a refused command removes only the directories it created.
def test_a_refused_eval_of_an_empty_directory_keeps_that_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "mine"
    empty.mkdir()
    _refused(capsys, cli("eval", f"ckpt={empty}", "eval.progress=false"), "is not a checkpoint")
    assert empty.is_dir() and _tree(tmp_path) == ["mine/"]


def test_a_refused_train_into_an_existing_empty_directory_keeps_it_and_its_parents(tmp_path, capsys):
    outside = tmp_path / "elsewhere" / "empty-parent"  # not under the working directory
    outside.mkdir(parents=True)
    _refused(capsys, cli(*train_args(outside, tmp_path / "cache", "trainer.lr=-1")), "trainer.lr")
    assert outside.is_dir()
    _refused(capsys, cli(*train_args(outside / "new" / "run", tmp_path / "cache", "trainer.lr=-1")), "trainer.lr")
    assert outside.is_dir() and not (outside / "new").exists()
    assert _tree(tmp_path) == ["elsewhere/", "elsewhere/empty-parent/"]


def test_a_preset_given_pretrained_weights_uses_them(tmp_path, trained, cache_dir, capsys):
    """`student.pretrained=DIR` on the tiny preset: the path wins over the preset's config, said in one line."""
    run = tmp_path / "run"
    assert cli(*train_args(run, cache_dir, f"student.pretrained={trained / 'final'}", "trainer.max_steps=1")) == 0
    log = (run / "train.log").read_text()
    assert f"student.pretrained={trained / 'final'}: the model is loaded from there" in log
    assert "config is not used" in log


def test_non_ascii_paths_need_no_quoting(tmp_path, trained, capsys):
    ckpt = tmp_path / "prüfung-ü"
    shutil.copytree(trained / "final", ckpt)
    out = tmp_path / "auswertung-ünï"
    assert cli("eval", f"ckpt={ckpt}", *TINY_ARITH, "eval.progress=false", "task.max_eval_examples=2",
               "eval.max_new_tokens=4", f"hydra.run.dir={out}") == 0
    assert json.loads((out / "metrics.json").read_text())["num_examples"] == 2


def test_an_unquoted_value_hydra_cannot_parse_says_to_quote_it(tmp_path, capsys):
    code = cli(*train_args(tmp_path / "run", tmp_path / "cache", "task.prompt.decoder=Frage: {question} ünï"))
    line = _refused(capsys, code, "task.prompt.decoder")
    assert "quoted" in line

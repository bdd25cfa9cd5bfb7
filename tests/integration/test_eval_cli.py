"""`distill eval` and `distill rescore` through the real CLI on every task."""

from __future__ import annotations

import json

import pytest

from .conftest import cli, train_args


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cache_dir):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli(*train_args(run, cache_dir, "trainer.max_steps=2")) == 0
    return run


def _eval(run, *extra):
    return cli("eval", f"ckpt={run / 'final'}", "eval.progress=false", "eval.batch_size=8", *extra)


def _metrics(run, name):
    return json.loads((run / "eval" / name / "default" / "metrics.json").read_text())


def test_arith_eval_writes_generations_and_metrics(trained_run):
    assert _eval(trained_run, "task.generator.sizes.train=300", "task.generator.sizes.test=8",
                 "task.generator.sizes.validation=8", "eval.max_new_tokens=12") == 0
    metrics = json.loads((trained_run / "eval" / "arith-test").glob("*/metrics.json").__next__().read_text())
    assert {"task", "split", "num_examples", "decoding", "checkpoint", "accuracy"} <= set(metrics)
    assert metrics["task"] == "arith" and metrics["split"] == "test" and metrics["num_examples"] == 8
    assert metrics["decoding"]["strategy"] == "greedy"
    records = [json.loads(l) for l in next((trained_run / "eval" / "arith-test").glob("*/generations.jsonl")).read_text().splitlines()]
    assert len(records) == 8
    assert {"prompt", "reference", "outputs", "decoding"} <= set(records[0])
    assert records[0]["reference"].endswith(records[0]["reference"].split("####")[-1])
    # per-item scores: which examples it got right, without re-scoring; they average to the reported number
    per_item = [r["scores"]["greedy"][0]["correct"] for r in records]
    assert set(per_item) <= {0.0, 100.0} and sum(per_item) / len(per_item) == pytest.approx(metrics["accuracy"])


@pytest.mark.parametrize("task, keys, strategy", [
    ("gsm8k", {"accuracy"}, "greedy"),
    ("xsum", {"rouge1", "rouge2", "rougeL"}, "greedy"),
    ("wmt14_en_de", {"bleu"}, "beam"),
])
def test_real_tasks_produce_their_metric_keys(trained_run, shared_dir, task, keys, strategy):
    data_dir = shared_dir / "data" / task
    assert _eval(trained_run, f"task={task}", f"task.data_dir={data_dir}", "task.max_eval_examples=3",
                 "eval.max_new_tokens=6") == 0
    metrics = json.loads(next((trained_run / "eval" / f"{task}-test").glob("*/metrics.json")).read_text())
    assert keys <= set(metrics) and metrics["num_examples"] == 3
    assert metrics["decoding"]["strategy"] == strategy
    assert "self_bleu" not in metrics


def test_a_run_evaluated_on_another_task_is_told_so(trained_run, capsys):
    capsys.readouterr()
    assert _eval(trained_run, "task=lingua", "task.generator.sizes.test=4", "task.generator.sizes.train=40",
                 "task.generator.sizes.validation=4", "eval.max_new_tokens=4") == 0
    assert "trained on task arith; evaluating it on task lingua" in "".join(capsys.readouterr())
    assert _eval(trained_run, "task.generator.sizes.train=300", "task.generator.sizes.test=4",
                 "task.generator.sizes.validation=4", "eval.max_new_tokens=4") == 0
    assert "trained on task" not in "".join(capsys.readouterr())


def test_num_samples_adds_self_bleu_and_temperatures_add_entries(trained_run, capsys):
    """Issue 14.2: every number sits next to the decoding that produced it, in metrics.json and on the console."""
    capsys.readouterr()
    assert _eval(trained_run, "task.generator.sizes.train=300", "task.generator.sizes.test=4",
                 "task.generator.sizes.validation=4", "eval.max_new_tokens=8", "eval.num_samples=4",
                 "eval.sampling_temperatures=[0.5,1.0]", "eval.split=validation") == 0
    out = next((trained_run / "eval" / "arith-validation").glob("*/metrics.json"))
    metrics = json.loads(out.read_text())
    assert metrics["decoding"]["strategy"] == "greedy"
    assert "self_bleu" not in metrics  # the top level is the greedy decoding's, which has one output per prompt
    assert metrics["accuracy"] == metrics["by_decoding"][0]["accuracy"]
    temps = {e["sampling_temperature"]: e for e in metrics["by_decoding"] if e["strategy"] == "sample"}
    assert set(temps) == {0.5, 1.0}
    assert all({"accuracy", "self_bleu"} <= set(e) and e["num_samples"] == 4 for e in temps.values())
    table = [line for line in capsys.readouterr().out.splitlines() if "│" in line]
    greedy = [line for line in table if "greedy" in line]
    sampled = {t: [line for line in table if f"sample T={t:g} ×4" in line] for t in (0.5, 1.0)}
    assert len(greedy) == 1 and greedy[0].rstrip(" │").endswith("-")  # no Self-BLEU beside greedy accuracy
    for t, lines in sampled.items():
        assert len(lines) == 1 and f"{temps[t]['self_bleu']:.2f}" in lines[0] and f"{temps[t]['accuracy']:.2f}" in lines[0]
    record = json.loads(out.with_name("generations.jsonl").read_text().splitlines()[0])
    assert len(record["outputs"]["sample_t0.5_k4"]) == 4
    assert len(record["scores"]["sample_t0.5_k4"]) == 4 and set(record["scores"]["sample_t0.5_k4"][0]) == {"correct"}


def test_rescore_needs_no_model_and_reproduces_metrics(trained_run, tmp_path):
    source = next((trained_run / "eval").glob("arith-*/*/generations.jsonl"))
    original = json.loads(source.with_name("metrics.json").read_text())
    # Point the records at a checkpoint that does not exist: rescoring must not need it.
    records = [json.loads(line) for line in source.read_text().splitlines()]
    copy = tmp_path / "generations.jsonl"
    copy.write_text("".join(json.dumps({**r, "checkpoint": "/nonexistent"}) + "\n" for r in records))
    assert cli("rescore", str(copy)) == 0
    rescored = json.loads((tmp_path / "metrics.json").read_text())
    assert rescored.pop("checkpoint") == "/nonexistent"
    original.pop("checkpoint")
    assert rescored == original


def test_paths_named_like_sweep_runs_need_no_quoting(tmp_path, cache_dir):
    run = tmp_path / "seed=0,trainer.lr=0.1"  # how Hydra names a sweep's run dirs
    assert cli(*train_args(run, cache_dir, "trainer.max_steps=1")) == 0
    assert (run / "final" / "config.json").exists()
    assert _eval(run, "task.generator.sizes.train=300", "task.generator.sizes.test=4",
                 "task.generator.sizes.validation=4", "eval.max_new_tokens=4") == 0
    assert json.loads(next((run / "eval" / "arith-test").glob("*/metrics.json")).read_text())["num_examples"] == 4


@pytest.fixture(scope="module")
def draft_run(tmp_path_factory, cache_dir):
    """A second, smaller model on the same tokenizer: the draft."""
    run = tmp_path_factory.mktemp("draft") / "run"
    assert cli(*train_args(run, cache_dir, "trainer.max_steps=2", "student.config.n_embd=32")) == 0
    return run


def test_speculative_eval_writes_its_measures_beside_an_identical_task_metric(trained_run, draft_run, capsys):
    """docs/design.md, Speculative decoding and OSD: eval with a draft; greedy speculative outputs equal the target's own, so the metric does too."""
    arith = ["task.generator.sizes.train=300", "task.generator.sizes.test=6", "task.generator.sizes.validation=4",
             "eval.max_new_tokens=16"]
    assert _eval(trained_run, *arith, f"eval.speculative.draft={draft_run}", "eval.speculative.num_proposals=3",
                 "eval.split=validation") == 0
    out = next((trained_run / "eval" / "arith-validation").glob("*speculative*/metrics.json"))
    metrics = json.loads(out.read_text())
    greedy, spec = metrics["by_decoding"][0], metrics["by_decoding"][-1]
    assert spec["name"] == "speculative_k3" and spec["strategy"] == "speculative"
    assert spec["accuracy"] == greedy["accuracy"] and spec["matches_target"] == 1.0
    for key in ("acceptance_rate", "accepted_fraction", "tokens_per_target_forward", "cost_ratio", "speedup_model",
                "speedup_measured"):
        assert spec[key] == spec[key] and spec[key] >= 0, key  # present, not NaN
    assert 1.0 <= spec["tokens_per_target_forward"] <= 4.0
    assert "speculative decoding, k=3: acceptance_rate" in capsys.readouterr().out
    # rescoring reproduces every measure from generations.jsonl alone
    assert cli("rescore", str(out.with_name("generations.jsonl"))) == 0
    assert json.loads(out.read_text())["by_decoding"][-1] == spec


@pytest.mark.parametrize("override, needle", [("eval.speculative.num_proposals=0", "num_proposals"),
                                              ("eval.strategy=beam", "not beam search")])
def test_speculative_eval_bad_input_is_one_line(trained_run, draft_run, capsys, override, needle):
    capsys.readouterr()
    assert _eval(trained_run, f"eval.speculative.draft={draft_run}", override) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and needle in errors[0]


def test_a_draft_with_another_vocabulary_is_one_line(trained_run, tmp_path, shared_dir, capsys):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    draft = tmp_path / "gpt2-vocab-draft"
    tokenizer = AutoTokenizer.from_pretrained(shared_dir / "models" / "gpt2-tokenizer")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=8, n_layer=1, n_head=2)).save_pretrained(draft)
    tokenizer.save_pretrained(draft)
    capsys.readouterr()
    assert _eval(trained_run, f"eval.speculative.draft={draft}", f"hydra.run.dir={tmp_path / 'out'}") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and "target and draft vocabularies differ" in errors[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("own_dir", [True, False])
def test_an_interrupted_eval_takes_back_what_it_wrote(trained_run, tmp_path, capsys, monkeypatch, own_dir):
    """SIGTERM mid-generation (the CLI's handler raises SignalInterrupt): no .hydra/, .lock or eval.log is left,
    so the report never lists a half-made evaluation, and the one line speaks of evaluation, not checkpoints."""
    import signal

    from distill.errors import SignalInterrupt

    def interrupted(*args, **kwargs):
        raise SignalInterrupt(signal.SIGTERM)

    monkeypatch.setattr("distill.eval.run.generate_texts", interrupted)
    before = sorted(map(str, trained_run.rglob("*")))
    out = [f"hydra.run.dir={tmp_path / 'eval'}"] if own_dir else ["eval.split=validation"]
    capsys.readouterr()
    assert _eval(trained_run, "task.generator.sizes.train=300", "task.generator.sizes.validation=8",
                 "task.generator.sizes.test=8", *out) == 128 + signal.SIGTERM
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("interrupted: by SIGTERM") and "evaluate again" in err[0], err
    assert "checkpoint" not in err[0]
    assert not (tmp_path / "eval").exists()
    assert sorted(map(str, trained_run.rglob("*"))) == before

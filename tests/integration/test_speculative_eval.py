"""`distill eval eval.speculative.draft=...` end to end: greedy α is argmax agreement, sampled decoding reports no
matches_target, a draft with a wider output layer and generations of an older version are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from .conftest import cli, train_args

ARITH = ["task.generator.sizes.train=300", "task.generator.sizes.test=6", "task.generator.sizes.validation=6",
         "eval.max_new_tokens=12", "eval.split=validation"]


@pytest.fixture(scope="module")
def target(tmp_path_factory, cache_dir):
    run = tmp_path_factory.mktemp("target") / "run"
    assert cli(*train_args(run, cache_dir, "trainer.max_steps=2")) == 0
    return run / "final"


def _save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def scaled_draft(target, tmp_path_factory):
    """The target with its output layer (untied) scaled by 0.3: its argmax is the target's everywhere."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(target)
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=False)
    head.weight.data = model.lm_head.weight.data.clone() * 0.3
    model.config.tie_word_embeddings = False
    model.lm_head = head
    return _save(model, AutoTokenizer.from_pretrained(target), tmp_path_factory.mktemp("draft") / "scaled")


def _eval(target, draft, out, *extra):
    return cli("eval", f"ckpt={target}", "eval.progress=false", "eval.batch_size=8", *ARITH,
               f"eval.speculative.draft={draft}", "eval.speculative.num_proposals=4", f"hydra.run.dir={out}", *extra)


def test_greedy_acceptance_rate_is_argmax_agreement(target, scaled_draft, tmp_path, capsys):
    assert _eval(target, scaled_draft, tmp_path / "greedy") == 0
    spec = json.loads((tmp_path / "greedy" / "metrics.json").read_text())["by_decoding"][-1]
    assert spec["accepted_fraction"] == 1.0 and spec["matches_target"] == 1.0
    assert spec["acceptance_rate"] == 1.0 and spec["overlap_t1"] < 0.99
    assert spec["speedup_model"] == pytest.approx(5 / (4 * spec["cost_ratio"] + 1))  # E = k + 1 at α = 1
    assert "acceptance_rate 1.000 (T = 1 overlap" in capsys.readouterr().out
    generations = tmp_path / "greedy" / "generations.jsonl"
    assert cli("rescore", str(generations)) == 0
    assert json.loads((tmp_path / "greedy" / "metrics.json").read_text())["by_decoding"][-1] == spec
    old = [json.loads(line) for line in generations.read_text().splitlines()]
    for record in old:  # the fields of the version whose greedy α was the T = 1 overlap
        record["speculative"]["overlap_sum"] = record["speculative"].pop("overlap_t1_sum")
        del record["speculative"]["acceptance_sum"]
    generations.write_text("".join(json.dumps(record) + "\n" for record in old))
    capsys.readouterr()
    assert cli("rescore", str(generations)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and "acceptance_sum" in errors[0]


def test_sampled_decoding_reports_no_matches_target(target, scaled_draft, tmp_path, capsys):
    assert _eval(target, scaled_draft, tmp_path / "sampled", "eval.strategy=sample",
                 "eval.sampling_temperature=0.8") == 0
    spec = json.loads((tmp_path / "sampled" / "metrics.json").read_text())["by_decoding"][-1]
    assert spec["matches_target"] is None and 0.0 <= spec["acceptance_rate"] <= 1.0
    out = capsys.readouterr().out
    assert "speculative decoding, k=4: acceptance_rate" in out and "matches_target" not in out


def test_a_draft_with_a_wider_output_layer_is_refused_before_anything_is_written(target, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(target), AutoTokenizer.from_pretrained(target)
    model.resize_token_embeddings(len(tokenizer) + 8)  # padded rows past the shared tokenizer
    wide = _save(model, tokenizer, tmp_path / "wide")
    capsys.readouterr()
    assert _eval(target, wide, tmp_path / "out") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and f"eval.speculative.draft={wide}" in errors[0] and "wider" in errors[0]
    assert not (tmp_path / "out").exists()

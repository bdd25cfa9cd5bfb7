"""Every method × {tiny decoder-only, tiny T5} through the real CLI, and a β × λ multirun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from .conftest import TINY, TINY_ARITH, cli

METHODS = ["sft", "supervised_kd", "seqkd", "gkd", "minillm", "xkd"]
EXPECTED_TERMS = {
    "sft": {"loss/ce"}, "supervised_kd": {"loss/kd"}, "seqkd": {"loss/ce"}, "gkd": {"loss/kd", "frac_on_policy"},
    "minillm": {"loss/single_step", "loss/pg", "loss/ptx", "importance_weight"},
    "xkd": {"loss/kd", "loss/td_student", "loss/td_teacher", "loss/reward_kl", "reward/mu", "reward/sigma",
            "reward/corr_mu_delta_teacher", "reward/inv_var_eff", "grad_ratio/alpha_to_base"},
}
SHORT = ["task.max_target_length=24", "trainer.max_steps=2", "trainer.save_every=2", "trainer.eval_every=2"]


@pytest.mark.parametrize("arch, auto_class", [("tiny", AutoModelForCausalLM), ("tiny_t5", AutoModelForSeq2SeqLM)])
@pytest.mark.parametrize("method", METHODS)
def test_method_runs_and_writes_a_loadable_final(tmp_path, cache_dir, method, arch, auto_class):
    run = tmp_path / "run"
    args = ["train", *TINY_ARITH, *TINY, *SHORT, f"cache_dir={cache_dir}", f"hydra.run.dir={run}",
            f"method={method}", f"student={arch}", f"teacher={arch}"]
    if method in ("gkd", "xkd"):
        args.append("method.lmbda=1")  # exercise on-policy sampling
    if method == "xkd":
        args.append("method.diagnostics_every=2")  # the gradient ratio, on its own graph, then the training backward
    assert cli(*args) == 0
    auto_class.from_pretrained(run / "final")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*(r.keys() for r in records if "loss" in r))
    assert EXPECTED_TERMS[method] <= logged
    assert all(r["loss"] == r["loss"] for r in records if "loss" in r)  # no NaN
    if method == "xkd":  # the reward head is checkpointed with the student but not exported
        extra = (run / "checkpoints" / "step-00000002" / "extra.pt")
        assert extra.exists() and not any("reward" in p.name for p in (run / "final").iterdir())


def test_multirun_sweeps_beta_and_lambda(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    assert cli("train", "-m", *TINY_ARITH, *TINY, *SHORT, f"cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}",
               "method=gkd", "divergence=jsd", "divergence.beta=0.1,0.9", "method.lmbda=0,1") == 0
    runs = sorted(p.parent.parent for p in sweep.glob("gkd-arith-tiny/*/final/config.json"))
    assert len(runs) == 4
    configs = [yaml.safe_load((run / "run_config.yaml").read_text()) for run in runs]
    assert {(c["divergence"]["beta"], c["method"]["lmbda"]) for c in configs} == {(0.1, 0), (0.1, 1), (0.9, 0), (0.9, 1)}


@pytest.mark.parametrize("override, needle", [
    ("divergence.beta=1.0", "divergence.beta"),
    ("method.lmbda=1.5", "method.lmbda"),
])
def test_out_of_range_hyperparameters_fail_before_models_load(tmp_path, cache_dir, capsys, override, needle):
    args = ["train", *TINY_ARITH, *TINY, f"cache_dir={cache_dir}", f"hydra.run.dir={tmp_path / 'r'}", "method=gkd",
            "divergence=jsd", override]
    assert cli(*args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and needle in err[0]
    assert not Path(tmp_path / "r" / "checkpoints").exists()


def test_seqkd_and_gkd_rl_with_k_sampled_teacher_outputs_per_prompt(tmp_path, cache_dir, capsys):
    """Issue 10.3: num_samples = k trains on k teacher outputs per prompt (k·n examples), from the CLI."""
    common = ["train", *TINY_ARITH, *TINY, *SHORT, f"cache_dir={cache_dir}", "teacher_generation.decoding.strategy=sample",
              "teacher_generation.decoding.sampling_temperature=1.0", "teacher_generation.decoding.num_samples=2"]
    assert cli(*common, f"hydra.run.dir={tmp_path / 'seqkd'}", "method=seqkd") == 0
    assert "600 train / 8 validation examples" in capsys.readouterr().out  # 300 prompts × 2 samples
    assert cli(*common, f"hydra.run.dir={tmp_path / 'gkd'}", "method=gkd", "method.seq_kd=true", "method.lmbda=0.5",
               "method.alpha=0.5") == 0


def test_osd_serves_the_stream_logs_alpha_per_request_and_resumes_mid_stream(tmp_path, cache_dir):
    """docs/design.md, Speculative decoding and OSD: per-request α in metrics.jsonl; a kill mid-stream resumes to the same draft (replay included)."""
    from safetensors.torch import load_file

    from .conftest import cli_subprocess

    args = lambda run: ["train", *TINY_ARITH, *TINY, "task.max_target_length=16", f"cache_dir={cache_dir}",  # noqa: E731
                        f"hydra.run.dir={run}", "method=osd", "method.update_interval=3", "method.replay_size=2",
                        "method.moving_average_window=5", "trainer.max_steps=4", "trainer.save_every=2"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert cli(*args(straight)) == 0
    records = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    requests = [r for r in records if "request" in r]
    assert [r["request"] for r in requests] == list(range(12))  # the stream in order, 3 requests per update
    assert all(0.0 <= r["acceptance_rate"] <= 1.0 for r in requests if r["acceptance_rate"] is not None)
    alphas = [r["acceptance_rate"] for r in requests if r["acceptance_rate"] is not None]
    assert requests[-1]["acceptance_rate_avg"] == pytest.approx(sum(alphas[-5:]) / len(alphas[-5:]))
    assert cli_subprocess(*args(killed), env={"DISTILL_FAULT_INJECT": "kill@3"}).returncode == -9
    assert cli(*args(killed)) == 0
    resumed = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["acceptance_rate_avg"] for r in resumed if "request" in r] == [r["acceptance_rate_avg"] for r in requests]
    a, b = load_file(str(straight / "final" / "model.safetensors")), load_file(str(killed / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_osd_with_a_draft_of_another_vocabulary_is_one_line(tmp_path, cache_dir, shared_dir, capsys):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    target = tmp_path / "gpt2-vocab-target"
    tokenizer = AutoTokenizer.from_pretrained(shared_dir / "models" / "gpt2-tokenizer")
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=8, n_layer=1, n_head=2)).save_pretrained(target)
    tokenizer.save_pretrained(target)
    assert cli("train", *TINY_ARITH, *TINY, f"cache_dir={cache_dir}", f"hydra.run.dir={tmp_path / 'run'}", "method=osd",
               f"teacher.pretrained={target}", "teacher.config=null", "teacher.bootstrap.enabled=false") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and "vocabularies differ" in errors[0]

"""distill.train.distributed without processes: settings, what launchers export, refusals, one-process identity."""

from __future__ import annotations

import pytest
import torch

from distill.errors import ConfigError
from distill.io import write_manifest
from distill.train import distributed as D
from distill.train.faults import fault

ACCELERATE_KEYS = ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP", "FSDP_VERSION")


@pytest.fixture
def clean_env(monkeypatch):
    for key in ACCELERATE_KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.mark.parametrize("values, fragment", [({"strategy": "zero3"}, "strategy must be one of auto, ddp, fsdp2"),
                                              ({"timeout_s": 0}, "timeout_s must be > 0")])
def test_bad_settings_are_one_line_errors(values, fragment):
    with pytest.raises(ConfigError, match=fragment):
        D.DistributedSettings(**values)


def test_strategy_follows_accelerates_config(clean_env):
    assert D.chosen_strategy(D.DistributedSettings()) == "ddp"
    clean_env.setenv("ACCELERATE_USE_FSDP", "true")
    clean_env.setenv("FSDP_VERSION", "2")
    assert D.chosen_strategy(D.DistributedSettings()) == "fsdp2"
    assert D.chosen_strategy(D.DistributedSettings(strategy="ddp")) == "ddp"  # said explicitly: it wins
    clean_env.setenv("FSDP_VERSION", "1")
    with pytest.raises(ConfigError, match="FSDP version 1; distill shards with FSDP2"):
        D.chosen_strategy(D.DistributedSettings())


def test_deepspeed_is_refused_with_the_supported_alternative(clean_env):
    clean_env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="DeepSpeed, which distill does not support.*fsdp2"):
        D.chosen_strategy(D.DistributedSettings())


def test_one_process_changes_nothing(clean_env):
    clean_env.delenv("WORLD_SIZE", raising=False)
    clean_env.delenv("SLURM_NTASKS", raising=False)
    one = D.setup(D.DistributedSettings(strategy="fsdp2"), "cpu", "fsdp2")
    assert (one.world, one.rank, one.main, one.active) == (1, 0, True, False)
    value = torch.tensor(3.5)
    assert one.sum(value) is value and one.max(value) is value and one.broadcast({"a": 1}) == {"a": 1}
    totals = {"loss": torch.tensor(1.0), "tokens": torch.tensor(7)}
    assert one.job_totals(totals) is totals


def test_bad_teacher_sharding_is_refused():
    with pytest.raises(ConfigError, match="teacher.sharding must be one of replicate, fsdp2"):
        D.check_teacher_sharding("zero3")


def test_stream_methods_refuse_several_processes():
    from distill.methods.base import Method
    from distill.methods.sft import SFT

    class Stream(Method):  # what the runner reads from OSD: the explicit single-stream flag
        needs_teacher, prompts_only, single_stream, examples_per_step = True, True, True, 8
        trajectories = loss_terms = None

    stream = Stream()
    D.check_single_stream(stream, 1)
    with pytest.raises(ConfigError, match="method stream serves one request stream and runs in one process"):
        D.check_single_stream(stream, 2)
    D.check_single_stream(SFT(), 2)


def test_a_checkpoint_resumes_under_the_layout_that_wrote_it(tmp_path):
    write_manifest(tmp_path, {"step": 2, **D.layout(D.Dist(rank=0, world=2, strategy="ddp"))})
    D.check_layout(D.Dist(rank=1, world=2, strategy="ddp"), tmp_path)
    with pytest.raises(ConfigError, match="written by 2 process\\(es\\) with strategy ddp.*--nproc_per_node 2"):
        D.check_layout(D.Dist(), tmp_path)
    with pytest.raises(ConfigError, match="not with 2 \\(fsdp2\\)"):
        D.check_layout(D.Dist(rank=0, world=2, strategy="fsdp2"), tmp_path)


def test_fsdp2_units_are_the_transformer_blocks():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=16, n_head=2, n_positions=32, vocab_size=50))
    blocks = D._blocks(model)
    assert len(blocks) == 3 and all(type(b).__name__ == "GPT2Block" for b in blocks)


def test_a_fault_can_target_one_rank(monkeypatch):
    monkeypatch.setenv("DISTILL_FAULT_INJECT", "kill@3#1")
    monkeypatch.setenv("RANK", "0")
    assert not fault("kill", 3)
    monkeypatch.setenv("RANK", "1")
    assert fault("kill", 3) and not fault("kill", 2)

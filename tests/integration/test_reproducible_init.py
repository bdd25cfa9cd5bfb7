"""A run's method-owned modules (X-KD's reward head) start from the run's seed, whatever the process did before:
a parallel sweep's worker runs several jobs in one process, so the global generator's state depends on
which jobs it ran first (found by reproducing the X-KD study from a cold cache, issue 15)."""

from __future__ import annotations

import torch

from .conftest import cli, train_args


def _head(run) -> dict:
    extra = torch.load(run / "checkpoints" / "step-00000001" / "extra.pt", weights_only=False)
    return extra["reward_head"]


def test_xkd_reward_head_init_does_not_depend_on_earlier_work_in_the_process(tmp_path, cache_dir):
    heads = []
    for draws, name in ((0, "first"), (1000, "second")):
        torch.rand(draws)  # what an earlier job in the same worker process would leave behind
        run = tmp_path / name
        args = train_args(run, cache_dir, "method=xkd", "trainer.max_steps=1", "trainer.warmup_steps=0")
        assert cli(*args) == 0
        heads.append(_head(run))
    assert heads[0].keys() == heads[1].keys()
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])

"""A training step never waits for the device in our code (performance issue).

Every call that would copy a device tensor's value to the host (``item``,
``bool``, ``float``, ``int``, ``tolist``, ``cpu``, ``numpy``) is recorded
with the distill file that made it. Allowed: decoding's "has every row
finished?" checks and its final trim (``distill/models/sampling.py``, a few
per generation, not per token) and the text reward of GKD+RL, which needs the
decoded strings. ``schedule.py`` draws each epoch's example order once from a
CPU generator (host memory, never the device). HF's own attention-mask preparation is outside our code and
not counted.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch

from distill.methods.seqkd import SeqKD
from distill.methods.sft import SFT
from distill.methods.supervised_kd import SupervisedKD

from .conftest import DECODING, DIVERGENCE
from .test_methods import _trainer, gkd, minillm, xkd

SYNCING = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy")
PACKAGE = str(Path(__import__("distill").__file__).parent)


@pytest.fixture
def host_syncs(monkeypatch):
    """The distill source file of each syncing call made while the fixture is active."""
    seen: list[str] = []

    def wrap(name):
        original = getattr(torch.Tensor, name)

        def recording(self, *args, **kwargs):
            caller = traceback.extract_stack(limit=2)[0].filename  # who called .item() & co.
            if caller.startswith(PACKAGE):
                seen.append(Path(caller).name)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, recording)

    for name in SYNCING:
        wrap(name)
    return seen


METHODS = {
    "sft": (SFT, set()),
    "seqkd": (lambda: SeqKD(DECODING, 4), set()),  # the teacher's outputs are generated in setup, not in a step
    "supervised_kd": (lambda: SupervisedKD(DIVERGENCE, 0.5), set()),
    "gkd": (lambda: gkd(lmbda=1.0, max_new_tokens=20), {"sampling.py"}),
    "minillm": (lambda: minillm(max_new_tokens=20), {"sampling.py"}),
    "xkd": (lambda: xkd(base="gkd", lmbda=1.0, max_new_tokens=20), {"sampling.py"}),
}


@pytest.mark.parametrize("name", METHODS)
def test_a_training_step_has_no_host_syncs_but_decodings(make_ctx, items, tmp_path, name, request):
    build, allowed = METHODS[name]
    trainer = _trainer(build(), make_ctx(), items, 2, 2, tmp_path)
    trainer.train_step(0)  # warm-up: lazy initialisation is not a step
    seen = request.getfixturevalue("host_syncs")
    totals = trainer.train_step(1)
    trainer._note_finite(1, totals)
    trainer.optimizer.step()
    trainer.scheduler.step()
    decoding = [f for f in seen if f != "schedule.py"]
    assert set(decoding) <= allowed, seen
    # 20 new tokens, a stop check every 16: at most 1 check + 1 trim per micro-batch
    assert len(decoding) <= 2 * 2

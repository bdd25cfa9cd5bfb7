"""A student that is already its teacher stays put, for every distillation method at its defaults (issue 15).

With the student a copy of the teacher, a divergence D(p, q) is exactly 0 with exactly 0 gradient; decoupled
weight decay used to nudge the student off the teacher, and Adam turned the resulting near-zero gradients into
full-size steps (92 % → 76 % accuracy in 40 steps of gkd λ=1 at lr 2e-3, weight decay 0.01). Methods whose loss
is a divergence must therefore leave the weights exactly unchanged; the others (seqkd's cross-entropy on the
teacher's greedy outputs, MiniLLM's ptx cross-entropy, X-KD's consistency with a reward head that is still
learning) stay within a small KL of the teacher.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from distill.data.collate import collate
from distill.models.forward import token_view

from .conftest import TINY, TINY_ARITH, cli

# Only the run's size is shrunk; learning rate, weight decay, warm-up and every method setting are the defaults.
SIZE = [a for a in TINY if not a.startswith(("trainer.warmup_steps", "bootstrap_trainer."))] + ["trainer.max_steps=6"]
# case -> (method, overrides)
EXACT = {"supervised_kd": ("supervised_kd", []), "gkd": ("gkd", []), "gkd_on_policy": ("gkd", ["method.lmbda=1"]),
         "gkd_jsd": ("gkd", ["divergence=jsd"])}
CLOSE = {"seqkd": ("seqkd", []), "minillm": ("minillm", []), "xkd": ("xkd", [])}


@pytest.fixture(scope="module")
def same_model(tmp_path_factory, cache_dir):
    """One tiny model trained a little (so its distributions are not uniform), saved as a directory."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    assert cli("train", *TINY_ARITH, *TINY, f"cache_dir={cache_dir}", f"hydra.run.dir={run}", "trainer.max_steps=20",
               "trainer.lr=5e-3") == 0
    return run / "final"


def _run(tmp_path, cache_dir, model, case: tuple[str, list[str]]):
    method, extra = case
    run = tmp_path / "run"
    args = ["train", *TINY_ARITH, *SIZE, f"cache_dir={cache_dir}", f"hydra.run.dir={run}", f"method={method}", *extra,
            f"student.pretrained={model}", "student.config=null", f"teacher.pretrained={model}", "teacher.config=null",
            "teacher.bootstrap.enabled=false"]
    assert cli(*args) == 0
    return run / "final"


@pytest.mark.parametrize("name", sorted(EXACT))
def test_divergence_methods_leave_a_student_equal_to_its_teacher_exactly_unchanged(tmp_path, cache_dir, same_model, name):
    final = _run(tmp_path, cache_dir, same_model, EXACT[name])
    before, after = load_file(str(same_model / "model.safetensors")), load_file(str(final / "model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def _kl(teacher_dir, student_dir, items, tokenizer) -> float:
    teacher, student = (AutoModelForCausalLM.from_pretrained(d).eval() for d in (teacher_dir, student_dir))
    batch = collate(items, tokenizer.pad_token_id, False)
    with torch.no_grad():
        p, q = (token_view(m, batch) for m in (teacher, student))
    log_p, log_q = torch.log_softmax(p.logits, -1), torch.log_softmax(q.logits, -1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1)
    return float((per_token * p.mask).sum() / p.mask.sum())


@pytest.mark.parametrize("name", sorted(CLOSE))
def test_other_methods_keep_a_student_equal_to_its_teacher_close(tmp_path, cache_dir, same_model, name):
    from transformers import AutoTokenizer

    from distill.data.collate import encode
    from distill.data.tasks import Example

    final = _run(tmp_path, cache_dir, same_model, CLOSE[name])
    tokenizer = AutoTokenizer.from_pretrained(same_model)
    items = encode(tokenizer, [Example(f"Question: Ava has {a} pens. How many?\nAnswer:", f" {a} + 0 = {a}\n#### {a}")
                               for a in range(1, 9)], 64, 32)
    assert _kl(same_model, final, items, tokenizer) < 0.01

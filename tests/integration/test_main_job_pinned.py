"""The default recipe's numbers cannot change silently (issue 26).

The README's main job (SFT student, bootstrapped teacher, both evaluated) runs here shrunken — fewer problems
and steps, every other setting the default — and its weights and scores are compared with the values pinned
below, with the commit that set them. A change to any default of the recipe (conf/train.yaml, the presets, the
task generator, the tokenizer) or to the float order of its code fails this test the day it lands.

Pinned on CPU numerics that every x86-64 machine reproduces bit for bit: MKL's conditional numerical
reproducibility (``MKL_CBWR=COMPATIBLE``), ATen's portable kernels (``ATEN_CPU_CAPABILITY=default``) and one
thread. Without them the same recipe gives other numbers on other CPUs (README: 25.0 / 95.0 with AVX-512
kernels, 48.0 / 90.6 with AVX2 ones), so a pin of the native run would fail on a machine of another kind.
The pins hold for the CPU build of torch in constraints-cpu.txt; a new torch re-pins.

If this fails on purpose: re-run the README's first command, update its table, and set PINNED from this
test's message, all in one commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPRODUCIBLE = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1"}
SHRUNKEN = ["task.generator.sizes.train=2000", "task.generator.sizes.validation=40", "task.generator.sizes.test=60",
            "trainer.max_steps=130", "bootstrap_trainer.max_steps=130", "trainer.eval_every=130",
            "trainer.save_every=130", "trainer.progress=false", "eval.progress=false", "eval.after_train=true",
            "eval.compare_teacher=true"]
PINNED = {"commit": "PENDING", "student_sha256": "", "teacher_sha256": "", "student_accuracy": None,
          "teacher_accuracy": None}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_the_default_recipe_gives_the_pinned_weights_and_scores(tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    env = {**os.environ, **REPRODUCIBLE}
    done = subprocess.run([sys.executable, "-m", "distill", "train", *SHRUNKEN, f"cache_dir={cache}",
                           f"hydra.run.dir={run}"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = {role: json.loads((run / "eval" / "arith-test" / role / "metrics.json").read_text())["accuracy"]
              for role in ("student", "teacher")}
    found = {"student_sha256": _sha(run / "final" / "model.safetensors"),
             "teacher_sha256": _sha(next(cache.glob("bootstrap/teacher-*/final/model.safetensors"))),
             "student_accuracy": scores["student"], "teacher_accuracy": scores["teacher"]}
    expected = {key: PINNED[key] for key in found}
    assert found == expected, (f"the default recipe's numbers changed since {PINNED['commit']}: {found} now, "
                               f"{expected} pinned; if intended, update the README's table and PINNED together")

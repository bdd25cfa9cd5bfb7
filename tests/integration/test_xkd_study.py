"""scripts/xkd_study.sh end to end, shrunken to seconds: every phase runs and the report has its tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import TINY_ARITH

REPO = Path(__file__).resolve().parents[2]


def test_the_study_script_runs_every_phase_and_writes_the_report(tmp_path, cache_dir):
    tiny = [*TINY_ARITH, "tokenizer.vocab_size=300", "trainer.micro_batch_size=4", "trainer.warmup_steps=1",
            "trainer.log_every=1", "trainer.eval_every=2", "trainer.save_every=2", "bootstrap_trainer.max_steps=3",
            "bootstrap_trainer.micro_batch_size=4", "bootstrap_trainer.warmup_steps=1", "eval.batch_size=8",
            "eval.max_new_tokens=8", "task.labeled_fraction=0.05", "task.max_target_length=24"]
    env = {**os.environ, "DISTILL": f"{sys.executable} -m distill.cli", "DISTILL_CACHE": str(cache_dir), "SEEDS": "0,1",
           "ABLATION_SEEDS": "0", "FRACTIONS": "0.1", "STEPS": "2", "EVAL": "4", "BOOTSTRAP_STEPS": "2", "JOBS": "2",
           "EXTRA": " ".join(tiny)}
    out = tmp_path / "study"
    result = subprocess.run(["bash", str(REPO / "scripts" / "xkd_study.sh"), str(out)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[xkd_study] wall time" in result.stdout
    report = (out / "report" / "report.md").read_text()
    for section in ("## Results", "## Paired differences", "## Sampled decoding"):
        assert section in report
    for method in ("| sft |", "| supervised_kd |", "| seqkd |", "| gkd |", "| minillm |", "| xkd |", "| teacher |"):
        assert method in report
    assert "q_form" in report and "labeled_fraction" in report

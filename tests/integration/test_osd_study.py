"""scripts/osd_study.sh end to end, shrunken to seconds: every phase runs, the stream report and speedups exist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import TINY_ARITH

REPO = Path(__file__).resolve().parents[2]


def test_the_osd_study_script_serves_learns_and_measures(tmp_path, cache_dir):
    tiny = [*TINY_ARITH, "tokenizer.vocab_size=300", "trainer.micro_batch_size=4", "trainer.warmup_steps=1",
            "bootstrap_trainer.max_steps=3", "bootstrap_trainer.micro_batch_size=4", "bootstrap_trainer.warmup_steps=1",
            "eval.batch_size=8", "eval.max_new_tokens=8", "task.max_target_length=16"]
    env = {**os.environ, "DISTILL": f"{sys.executable} -m distill.cli", "PYTHON": sys.executable,
           "DISTILL_CACHE": str(cache_dir), "STEPS": "3", "EVAL": "4", "SHIFT_AT": "200", "STREAM_START": "150",
           "BOOTSTRAP_STEPS": "2", "OFFLINE": "gkd", "EXTRA": " ".join(tiny), "EVAL_EXTRA": " ".join([*TINY_ARITH, "eval.max_new_tokens=8"])}
    out = tmp_path / "osd"
    result = subprocess.run(["bash", str(REPO / "scripts" / "osd_study.sh"), str(out)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[osd_study] wall time" in result.stdout
    for draft in ("before", "osd", "osd_mismatch", "offline_gkd"):
        records = [json.loads(line) for line in (out / "stream" / draft / "metrics.jsonl").read_text().splitlines()]
        requests = [r["request"] for r in records if "request" in r]
        assert requests == list(range(3 * 8))  # STEPS updates of update_interval requests each, in stream order
        metrics = json.loads((out / "speedup" / draft / "metrics.json").read_text())
        spec = [row for row in metrics["by_decoding"] if row["name"] == "speculative_k4"]
        assert spec and 0.0 <= spec[0]["acceptance_rate"] <= 1.0 and spec[0]["matches_target"] == 1.0
    report = (out / "report" / "report.md").read_text()
    assert "acceptance" in report.lower()

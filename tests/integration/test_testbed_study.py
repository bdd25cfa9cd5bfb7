"""scripts/testbed_study.sh end to end, shrunken to seconds: every phase runs (repair rate, arms, controls,
data efficiency, trade-off) and the report has every arm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_testbed_study_runs_every_phase_and_reports_every_arm(tmp_path, cache_dir):
    tiny = ["task.generator.sizes.train=240", "task.generator.sizes.validation=8", "task.generator.sizes.test=8",
            "task.start_examples=40", "tokenizer.vocab_size=300", "trainer.micro_batch_size=4",
            "trainer.warmup_steps=1", "trainer.log_every=1", "trainer.eval_every=2", "trainer.save_every=2",
            "trainer.eval_batches=1", "bootstrap_trainer.max_steps=3", "bootstrap_trainer.micro_batch_size=4",
            "bootstrap_trainer.warmup_steps=1", "eval.batch_size=8", "eval.max_new_tokens=8"]
    env = {**os.environ, "DISTILL": f"{sys.executable} -m distill.cli", "PYTHON": sys.executable,
           "DISTILL_CACHE": str(cache_dir), "SEEDS": "0,1", "CONTROL_SEEDS": "0", "EFFICIENCY_SEEDS": "0",
           "FRACTIONS": "0.5", "TRADEOFF_SEEDS": "0", "TRADEOFF_EVAL": "4", "STEPS": "2", "EVAL": "4",
           "BOOTSTRAP_STEPS": "2", "REPAIR_EXAMPLES": "4", "JOBS": "2", "EXTRA": " ".join(tiny)}
    out = tmp_path / "study"
    result = subprocess.run(["bash", str(REPO / "scripts" / "testbed_study.sh"), "lingua", str(out)],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    assert "[testbed_study lingua] wall time" in result.stdout
    repair = json.loads((out / "repair.json").read_text())
    assert repair["task"] == "lingua" and repair["split"] == "test" and "repair_rate" in repair
    assert repair["examples"] == 4 and repair["experiment"] == "testbed_lingua"  # the study's own task
    criteria = (out / "criteria.md").read_text()
    assert "## Criteria (PLAN.md)" in criteria and "- xkd − gkd:" in criteria
    report = (out / "report" / "report.md").read_text()
    for arm in ("| sft |", "| supervised_kd |", "| seqkd |", "| gkd |", "| minillm |", "| xkd |", "| teacher |"):
        assert arm in report, arm
    assert "reward_source" in report and "train_fraction" in report and "seq_kd" in report and "prior_std" in report
    sampled = list(out.glob("gkd/*/*/eval/lingua-test/*/metrics.json"))
    entries = [e for m in sampled for e in json.loads(m.read_text())["by_decoding"] if e["strategy"] == "sample"]
    assert {e["sampling_temperature"] for e in entries} == {0.5, 1.0, 1.5}
    assert all({"bleu", "self_bleu", "distinct_1", "distinct_2"} <= set(e) for e in entries)

"""scripts/teacher_cache_compare.py: the paired cached − dense comparison and PLAN.md's verdict, on hand-made runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "teacher_cache_compare.py"


def _run(root: Path, arm: str, seed: int, accuracy: float, bound: float | None = None) -> None:
    run = root / arm / f"seed={seed}"
    (run / "eval" / "arith-validation" / "student").mkdir(parents=True)
    (run / "run_config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    (run / "eval" / "arith-validation" / "student" / "metrics.json").write_text(
        json.dumps({"metric": "accuracy", "accuracy": accuracy}))
    record = {"step": 1, "loss": 0.5, **({"sparse/grad_l1_bound": bound, "sparse/tail_mass": bound / 2}
                                         if bound is not None else {})}
    (run / "metrics.jsonl").write_text(json.dumps(record) + "\n")


def _compare(root: Path) -> str:
    return subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, check=True).stdout


def test_a_small_paired_difference_holds_and_a_large_one_costs(tmp_path):
    for seed, (dense, cached) in enumerate([(60.0, 60.2), (62.0, 61.8), (58.0, 58.4), (61.0, 60.9), (59.0, 59.1)]):
        _run(tmp_path / "a", "dense", seed, dense)
        _run(tmp_path / "a", "cached", seed, cached, bound=1e-4)
    (tmp_path / "a" / "times.txt").write_text("cache_build 10\ndense_sweep 100\ncached_sweep 60\n")
    out = _compare(tmp_path / "a")
    assert "**the cache holds**" in out and "| 0 | 60.00 | 60.20 | +0.20 | 1.00e-04 | 5.00e-05 |" in out
    assert "dense sweep 100 s; cached sweep 60 s + build 10 s = 70 s (0.70× the dense sweep)" in out
    for seed, (dense, cached) in enumerate([(60.0, 55.0), (62.0, 57.5), (58.0, 53.0), (61.0, 56.2), (59.0, 54.1)]):
        _run(tmp_path / "b", "dense", seed, dense)
        _run(tmp_path / "b", "cached", seed, cached, bound=1e-2)
    assert "**the cache costs accuracy**" in _compare(tmp_path / "b")

"""scripts/cross_tokenizer_compare.py: the paired gains, their Welch difference and PLAN.md's verdicts, on hand-made
runs with hand-computed statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cross_tokenizer_compare.py"


def _run(root: Path, arm: str, seed: int, accuracy: float, aligned: float | None = None, seconds: float = 100.0):
    run = root / arm / f"seed={seed}"
    (run / "eval" / "arith-test" / "student").mkdir(parents=True)
    (run / "run_config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    (run / "summary.json").write_text(json.dumps({"train_seconds": seconds}))
    (run / "eval" / "arith-test" / "student" / "metrics.json").write_text(
        json.dumps({"metric": "accuracy", "accuracy": accuracy}))
    record = {"step": 1, "loss": 0.5, **({"cross/aligned_fraction": aligned, "sparse/tail_mass": 0.002}
                                         if aligned is not None else {})}
    (run / "metrics.jsonl").write_text(json.dumps(record) + "\n")


def _compare(root: Path) -> str:
    return subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, check=True).stdout


def test_gains_their_welch_difference_and_the_verdicts(tmp_path):
    sft, same_sft = [30.0, 31.0, 29.0, 30.0, 32.0], [25.0, 26.0, 24.0, 25.0, 27.0]
    g_cross, g_same = [5.0, 6.0, 4.0, 5.0, 5.0], [6.0, 5.0, 5.0, 6.0, 5.5]
    for seed in range(5):
        _run(tmp_path, "sft", seed, sft[seed])
        _run(tmp_path, "kd_cross", seed, sft[seed] + g_cross[seed], aligned=0.95, seconds=120.0)
        _run(tmp_path, "sft_same", seed, same_sft[seed])
        _run(tmp_path, "kd_same", seed, same_sft[seed] + g_same[seed])
    out = _compare(tmp_path)
    # G_cross: mean 5, sd √0.5, SE 0.316, t 15.8; G_same: mean 5.5, SE 0.224
    assert "G_cross = kd_cross − sft: +5.00 ± 0.32 (t = 15.8, 95 % CI [+4.12, +5.88], n = 5)" in out
    assert "cross-tokenizer KD **transfers**" in out
    assert "G_same = kd_same − sft_same: +5.50 ± 0.22" in out
    # Welch: SE √(0.1 + 0.05) = 0.387, df 0.15² / (0.1²/4 + 0.05²/4) = 7.2 -> t(0.975, 7) = 2.365
    assert "G_cross − G_same: -0.50 ± 0.39 (Welch, df 7.2, 95 % CI [-1.42, +0.42])" in out
    assert "**keeps the same-tokenizer gain**" in out
    assert "| 0 | 30.00 | 35.00 | +5.00 | 25.00 | 31.00 | +6.00 |" in out
    assert "(kd_cross, logged mean): 0.950" in out and "kd_cross 120, kd_same 100 (1.20×)" in out
    assert "(1 − the logged tail mass): 0.9980" in out


def test_a_gain_under_three_se_does_not_transfer_and_a_large_shortfall_loses(tmp_path):
    for seed, (cross, same) in enumerate([(3.0, 12.0), (-2.0, 11.0), (4.0, 13.0), (-1.0, 12.5), (1.0, 11.5)]):
        _run(tmp_path, "sft", seed, 30.0)
        _run(tmp_path, "kd_cross", seed, 30.0 + cross)
        _run(tmp_path, "sft_same", seed, 30.0)
        _run(tmp_path, "kd_same", seed, 30.0 + same)
    out = _compare(tmp_path)
    assert "**does not transfer at this many seeds**" in out and "**loses part of the same-tokenizer gain**" in out


def test_the_reverse_arm_and_the_scored_starts_are_reported(tmp_path):
    for seed in range(3):
        _run(tmp_path, "sft", seed, 30.0)
        _run(tmp_path, "kd_cross", seed, 31.0)
        _run(tmp_path, "sft_same", seed, 20.0 + seed)
        _run(tmp_path, "kd_same", seed, 22.0)
        _run(tmp_path, "kd_reverse", seed, 24.0 + 2 * seed)  # gains 4, 5, 6: SE 0.577, t 8.7
    for name, role, value in (("start_b", "student", 30.5), ("start_a", "student", 19.0), ("start_b", "teacher", 88.0)):
        (tmp_path / name / "eval" / "arith-test" / role).mkdir(parents=True, exist_ok=True)
        (tmp_path / name / "eval" / "arith-test" / role / "metrics.json").write_text(
            json.dumps({"metric": "accuracy", "accuracy": value}))
    out = _compare(tmp_path)
    assert "G_reverse = kd_reverse − sft_same: +5.00 ± 0.58 (t = 8.7" in out and "KD **transfers**" in out
    assert "| 2 | 22.00 | 28.00 | +6.00 |" in out
    assert "start on B 30.50, start on A 19.00, teacher on A 88.00" in out

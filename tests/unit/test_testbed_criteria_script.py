"""scripts/testbed_criteria.py: PLAN.md's criteria from a study's runs.csv, on hand-made scores."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "testbed_criteria.py"
OFFSETS = (0.0, 1.0, -1.0, 0.5, -0.5)  # per-seed noise shared by every arm: paired SEs come from the differences


def _write_study(root: Path, arms: dict[str, list[float]], repair: float) -> Path:
    (root / "report").mkdir(parents=True)
    rows = [{"run": "start", "variant": "student", "seed": "0", "metric": "accuracy", "accuracy": "30.0"},
            {"run": "start", "variant": "teacher", "seed": "0", "metric": "accuracy", "accuracy": "93.0"}]
    for arm, scores in arms.items():
        name, _, fraction = arm.partition("@")
        for seed, score in enumerate(scores):
            run = f"{name}/x-arith-tiny/" + (f"task.train_fraction={fraction}," if fraction else "") + f"seed={seed}"
            rows.append({"run": run, "variant": "student", "seed": str(seed), "metric": "accuracy",
                         "accuracy": str(score)})
    with (root / "report" / "runs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["run", "variant", "seed", "metric", "accuracy"])
        writer.writeheader()
        writer.writerows(rows)
    (root / "repair.json").write_text(f'{{"repair_rate": {repair}}}')
    return root


def _run(study: Path) -> str:
    return subprocess.run([sys.executable, str(SCRIPT), str(study)], capture_output=True, text=True, check=True).stdout


def _arm(mean: float, jitter: tuple = OFFSETS) -> list[float]:
    return [mean + o for o in jitter]


def test_a_clear_xkd_win_on_a_valid_testbed(tmp_path):
    wobble = (0.0, 0.2, -0.2, 0.1, -0.1)  # the difference's own noise
    arms = {"gkd": _arm(60), "seqkd": _arm(58), "kd_teacher_outputs": _arm(57), "xkd": _arm(63, tuple(
        o + w for o, w in zip(OFFSETS, wobble))), "xkd_prior1": _arm(60), "xkd_oracle": _arm(63)[:3],
        "efficiency_gkd@0.1": _arm(50)[:3], "efficiency_xkd@0.1": [50.1, 52.0, 48.0]}
    out = _run(_write_study(tmp_path / "s", arms, repair=70.0))
    assert "Start 30.00, teacher 93.00." in out
    assert "| gkd | 60.00 | 0.35 | 5 | +30.00 |" in out  # SE of 0, 1, −1, .5, −.5: std 0.79 / √5
    assert "Testbed valid (by the means): yes" in out and "Testbed valid (at the 3-SE bar): yes" in out
    assert "**xkd: wins.**" in out and "**xkd_prior1: ties.**" in out  # +3 with t ≫ 3; 0 ± 0 ties
    assert "more data-efficient: no" in out  # +0.1 with its noise: far under 3 SE


def test_an_off_policy_lead_invalidates_unless_the_repair_rate_explains_it(tmp_path):
    wobble = (0.0, 0.3, -0.3, 0.2, -0.2)
    arms = {"gkd": _arm(55), "seqkd": [60 + o + w for o, w in zip(OFFSETS, wobble)], "kd_teacher_outputs": _arm(54),
            "xkd": _arm(55)}
    out = _run(_write_study(tmp_path / "a", arms, repair=50.0))
    assert "not the literature's (seqkd ahead), not explained by the repair rate" in out
    assert "Testbed valid (at the 3-SE bar): no" in out
    out = _run(_write_study(tmp_path / "b", arms, repair=49.9))
    assert "Testbed valid (at the 3-SE bar): yes" in out and "explained by the repair rate" in out


def _write_sampled(study: Path, arm: str, seed: int, by_t: dict[float, tuple[float, float]]) -> None:
    """One run's sampled evaluation (trade-off phase): {T: (bleu, self_bleu)}, listed in runs.csv."""
    run, variant = f"{arm}/x-lingua-tiny/seed={seed}", "eval.num_samples=4"
    entries = [{"strategy": "greedy", "bleu": 0.0}] + [
        {"strategy": "sample", "sampling_temperature": t, "bleu": b, "self_bleu": s, "distinct_1": 0.5,
         "distinct_2": 0.75} for t, (b, s) in by_t.items()]
    path = study / run / "eval" / "lingua-test" / variant / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"by_decoding": entries}))
    with (study / "report" / "runs.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow([run, variant, seed, "bleu", "0", "lingua-test"])


def _tradeoff_study(root: Path, xkd_bleu_drop: float) -> Path:
    (root / "report").mkdir(parents=True)
    with (root / "report" / "runs.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["run", "variant", "seed", "metric", "bleu", "eval"],
                                      ["start", "student", 0, "bleu", "40.0", "lingua-test"]])
    for seed, offset in enumerate((0.0, 1.0, -1.0)):
        _write_sampled(root, "gkd", seed, {0.5: (80 + offset, 60 + offset), 1.0: (70 + offset, 40 + offset)})
        # xkd: Self-BLEU 5 lower at T = 1 (its own noise ±0.2), BLEU lower by xkd_bleu_drop (noise ±0.1)
        _write_sampled(root, "xkd", seed, {0.5: (80 + offset, 60 + offset),
                                           1.0: (70 + offset - xkd_bleu_drop + offset / 10, 35 + offset * 1.2)})
    return root


def test_the_tradeoff_criterion_reads_the_sampled_evaluations(tmp_path):
    out = _run(_tradeoff_study(tmp_path / "tie", xkd_bleu_drop=0.0))
    assert "| gkd | 1 | 70.00 ± 0.58 | 40.00 ± 0.58 | 50.00 ± 0.00 | 75.00 ± 0.00 | 3 |" in out
    assert "- T = 1: metric +0.00 ± 0.06" in out  # the paired difference's own noise, not the arms'
    assert "**X-KD improves on GKD's trade-off** (metric not lower by > 1 SE, Self-BLEU lower by ≥ 3 SE, at " \
           "some T): **yes, at T = 1.**" in out
    out = _run(_tradeoff_study(tmp_path / "drop", xkd_bleu_drop=2.0))  # BLEU lower by 2, far past its SE
    assert "at some T): **no.**" in out

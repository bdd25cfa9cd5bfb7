"""scripts/xkd_diagnostics.py: the pilot's diagnostics table, recomputed by hand from a made-up run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "xkd_diagnostics.py"


def _run(root: Path, target: str, method: dict, records: list[dict], accuracy: float) -> None:
    root.mkdir(parents=True)
    config = {"method": {"_target_": target, **method}, "seed": 3, "trainer": {"lr": 0.003, "max_steps": 40},
              "task": {"metric": "accuracy"}}
    (root / "run_config.yaml").write_text(yaml.safe_dump(config))
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "eval" / "arith-validation" / "student").mkdir(parents=True)
    (root / "eval" / "arith-validation" / "student" / "metrics.json").write_text(json.dumps({"accuracy": accuracy}))


def test_means_are_over_the_second_half_and_other_methods_show_no_xkd_settings(tmp_path):
    records = [{"step": s, "reward/corr_mu_delta_teacher": c, "reward/inv_var_eff": 0.5, "grad_ratio/alpha_to_base": g,
                "reward/mu": -1.0, "reward/delta_teacher": -2.0} for s, c, g in ((10, 0.0, 9.0), (20, 0.2, 0.1),
                                                                                     (30, 0.4, 0.3))]
    records.append({"step": 40, "val/loss": 1.0})
    _run(tmp_path / "sweep" / "xkd", "distill.methods.xkd.XKD",
         {"prior_std": 10.0, "alpha": 0.1, "td_target": None, "reward_source": "head"}, records, 61.5)
    _run(tmp_path / "sweep" / "gkd", "distill.methods.gkd.GKD", {"alpha": 1.0}, [{"step": 40, "loss": 1.0}], 60.0)
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "sweep")], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    # steps >= 20 (half of 40): corr (0.2 + 0.4) / 2 = 0.3, ratio (0.1 + 0.3) / 2 = 0.2; step 10 left out
    assert out[2] == "| gkd |  |  |  |  | 0.003 | 3 | 60 |  |  |  |  |  |"
    assert out[3] == "| xkd | 10 | 0.1 |  | head | 0.003 | 3 | 61.5 | 0.3 | 0.5 | 0.2 | -1 | -2 |"


def test_no_run_is_one_error(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and "no run directory" in done.stderr

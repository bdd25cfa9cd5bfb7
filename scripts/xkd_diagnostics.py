"""X-KD's reward-head diagnostics per run, as a markdown table (docs/results/testbed_v2/pilot.md).

    python scripts/xkd_diagnostics.py RUN_OR_SWEEP_DIR... [--from-step N]

For every run directory under the arguments (one with run_config.yaml and metrics.jsonl): the X-KD settings that
vary, the seed, the score of its after-train evaluation, and the means over logged steps >= --from-step (default:
the second half of training) of corr(mu, delta^T) (does the head's reward track the teacher's implied reward?),
1/sigma_eff^2 (how strongly the student term pulls), the gradient-norm ratio of the alpha term to the base loss,
and the mean mu and delta^T. Runs of other methods are listed with their score only (the baseline beside them).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import yaml

DIAGNOSTICS = ("reward/corr_mu_delta_teacher", "reward/inv_var_eff", "grad_ratio/alpha_to_base", "reward/mu",
               "reward/delta_teacher")
SETTINGS = ("prior_std", "alpha", "td_target", "reward_source")


def runs(paths: list[Path]) -> list[Path]:
    found = {p.parent for root in paths for p in ([root / "run_config.yaml"] + sorted(root.rglob("run_config.yaml")))
             if p.is_file() and (p.parent / "metrics.jsonl").is_file()}
    return sorted(found)


def score(run: Path, metric: str) -> float | None:
    for path in sorted(run.glob("eval/*/student/metrics.json")):
        return json.loads(path.read_text()).get(metric)
    return None


def summary(run: Path, from_step: int | None) -> dict:
    config = yaml.safe_load((run / "run_config.yaml").read_text())
    method = config["method"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    start = from_step if from_step is not None else config["trainer"]["max_steps"] // 2
    row = {"method": method["_target_"].rsplit(".", 1)[-1].lower(), "seed": config["seed"],
           "lr": config["trainer"]["lr"], "score": score(run, config["task"]["metric"])}
    row.update({k: method.get(k) if row["method"] == "xkd" else None for k in SETTINGS})  # gkd's alpha is another knob
    for key in DIAGNOSTICS:
        values = [r[key] for r in records if key in r and r["step"] >= start]
        row[key] = statistics.fmean(values) if values else None
    return row


def table(rows: list[dict]) -> str:
    header = ["method", *SETTINGS, "lr", "seed", "score", "corr(μ, δᵀ)", "1/σ_eff²", "‖∇α‖/‖∇base‖", "mean μ",
              "mean δᵀ"]
    fmt = lambda v: "" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in sorted(rows, key=lambda r: tuple(str(r[k]) for k in ("method", *SETTINGS, "lr", "seed"))):
        cells = [row["method"], *[row[k] for k in SETTINGS], row["lr"], row["seed"], row["score"],
                 *[row[k] for k in DIAGNOSTICS]]
        lines.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--from-step", type=int, default=None)
    args = parser.parse_args(argv)
    found = runs(args.paths)
    if not found:
        parser.error(f"no run directory (run_config.yaml and metrics.jsonl) under {', '.join(map(str, args.paths))}")
    print(table([summary(run, args.from_step) for run in found]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

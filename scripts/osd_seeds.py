"""Whole-stream acceptance per draft/target pair (bootstrap seed) of scripts/osd_study.sh runs, and the paired
differences against the draft before OSD across pairs: mean ± standard error over seeds (docs/results/osd).

    python scripts/osd_seeds.py SEED=DIR [SEED=DIR ...]      # DIR: an osd_study.sh output directory
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

DRAFTS = ("before", "osd", "osd_mismatch")


def stream_alpha(run: Path, last: int | None = None) -> float:
    """Mean per-request α of a stream run (``last``: of its final requests only)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    alphas = [r["acceptance_rate"] for r in sorted((r for r in records if "request" in r), key=lambda r: r["request"])]
    return sum(alphas[-last:] if last else alphas) / len(alphas[-last:] if last else alphas)


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def main(args: list[str]) -> None:
    rows = {}
    for arg in args:
        seed, _, directory = arg.partition("=")
        stream = Path(directory) / "stream"
        rows[seed] = {d: (stream_alpha(stream / d), stream_alpha(stream / d, 100)) for d in DRAFTS}
    print("| bootstrap seed | before | osd (all positions) | osd_mismatch | osd − before | osd_mismatch − before | "
          "osd − before, last 100 |")
    print("|---|---|---|---|---|---|---|")
    for seed, r in rows.items():
        print(f"| {seed} | {r['before'][0]:.3f} | {r['osd'][0]:.3f} | {r['osd_mismatch'][0]:.3f} | "
              f"{r['osd'][0] - r['before'][0]:+.3f} | {r['osd_mismatch'][0] - r['before'][0]:+.3f} | "
              f"{r['osd'][1] - r['before'][1]:+.3f} |")
    for name, pick in (("osd − before", lambda r: r["osd"][0] - r["before"][0]),
                       ("osd_mismatch − before", lambda r: r["osd_mismatch"][0] - r["before"][0]),
                       ("osd − before, last 100 requests", lambda r: r["osd"][1] - r["before"][1])):
        mean, se = mean_se([pick(r) for r in rows.values()])
        print(f"{name}: {mean:+.3f} ± {se:.3f} (SE over {len(rows)} pairs, t = {mean / se:.1f})")


if __name__ == "__main__":
    main(sys.argv[1:])

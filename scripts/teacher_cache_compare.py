"""The teacher-cache study's comparison (docs/results/teacher_cache/PLAN.md) from its run directories.

    python scripts/teacher_cache_compare.py OUT     # OUT: scripts/teacher_cache_study.sh's directory

Per seed, the validation score of the cached run minus the dense run's; their mean, SE, 95 % CI and PLAN.md's
verdict; the cached runs' mean logged gradient bound and tail mass; the wall times from OUT/times.txt.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.report.aggregate import t_quantile_975  # noqa: E402

BAR = 1.5  # PLAN.md: points


def _mean(records: list[dict], key: str) -> float | None:
    return statistics.fmean(r[key] for r in records) if records and key in records[0] else None


def scores(sweep: Path) -> dict[int, dict]:
    """seed -> {"score", "bound", "tail"} for every finished run of a sweep directory."""
    out = {}
    for config in sweep.rglob("run_config.yaml"):
        run = config.parent
        metrics = next(iter(sorted(run.glob("eval/*/student/metrics.json"))), None)
        if metrics is None:
            continue
        values = json.loads(metrics.read_text())
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
        out[yaml.safe_load(config.read_text())["seed"]] = {"score": values[values["metric"]],
                                                           "bound": _mean(records, "sparse/grad_l1_bound"),
                                                           "tail": _mean(records, "sparse/tail_mass")}
    return out


def verdict(diffs: list[float]) -> tuple[str, float, float, tuple[float, float]]:
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.inf
    half = t_quantile_975(len(diffs) - 1) * se if len(diffs) > 1 else math.inf
    low, high = mean - half, mean + half
    if -BAR < low and high < BAR:
        return "the cache holds", mean, se, (low, high)
    if high < 0 and mean < -BAR:
        return "the cache costs accuracy", mean, se, (low, high)
    return "inconclusive at this many seeds", mean, se, (low, high)


def main() -> None:
    out = Path(sys.argv[1])
    dense, cached = scores(out / "dense"), scores(out / "cached")
    seeds = sorted(set(dense) & set(cached))
    if not seeds:
        raise SystemExit(f"error: {out} has no seed scored in both dense/ and cached/")
    diffs = [cached[s]["score"] - dense[s]["score"] for s in seeds]
    text, mean, se, (low, high) = verdict(diffs)
    lines = ["| seed | dense | cached | cached − dense | mean bound | mean tail mass |", "|---|---|---|---|---|---|"]
    for s, d in zip(seeds, diffs):
        c = cached[s]
        lines.append(f"| {s} | {dense[s]['score']:.2f} | {c['score']:.2f} | {d:+.2f} | "
                     f"{c['bound'] if c['bound'] is not None else float('nan'):.2e} | "
                     f"{c['tail'] if c['tail'] is not None else float('nan'):.2e} |")
    lines += ["", f"Paired difference cached − dense: {mean:+.2f} ± {se:.2f} (95 % CI [{low:+.2f}, {high:+.2f}], "
              f"n = {len(diffs)}): **{text}** (PLAN.md: the CI inside ±{BAR})."]
    times = out / "times.txt"
    if times.is_file():
        t = dict(line.split() for line in times.read_text().splitlines() if line.strip())
        build, dense_s, cached_s = (float(t.get(k, "nan")) for k in ("cache_build", "dense_sweep", "cached_sweep"))
        lines.append(f"Wall time: dense sweep {dense_s:.0f} s; cached sweep {cached_s:.0f} s + build {build:.0f} s "
                     f"= {cached_s + build:.0f} s ({(cached_s + build) / dense_s:.2f}× the dense sweep).")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

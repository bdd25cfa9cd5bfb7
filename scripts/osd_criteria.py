"""The OSD criteria of docs/results/testbed_v2/PLAN.md, applied to an `ARMS=all scripts/osd_study.sh OUT` output.

    python scripts/osd_criteria.py outputs/osd_study [--json OUT/criteria.json]

Reads each draft's per-request series (OUT/stream/DRAFT/metrics.jsonl, or metrics.jsonl.gz as committed in
docs/results/testbed_v2/osd) and prints, as markdown, on distribution B
(the requests from the shift on; where it starts is read from the run's config):
- every arm served greedily against the draft before OSD served greedily, by the **accepted fraction** (greedy
  serving accepts a proposal iff it is the target's argmax); every arm served by sampling (T = 1) against the
  draft before OSD served by sampling, by **α** (the mean chance of acceptance, Σ min(p, q));
- the mismatch arm's cost under sampled serving and whether anchoring or replay removes it: their T = 1 overlap
  (α of sampled serving, logged for greedy arms as ``overlap_t1``) against OSD on every position.
Every difference is paired per request (the same requests in the same order: greedy serving and stream order have
no randomness), mean ± SE over requests, t and a 95 % CI; a request with no proposal (no value) drops out of the
pairs it is in. PLAN.md's bar: an arm helps if it exceeds `before` by ≥ 3 SE; the cost is removed if anchored or
replay is not below all-positions by ≥ 3 SE. These SEs are over requests of one run per arm, not over runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
import sys
from pathlib import Path

import yaml

BAR_T = 3.0
GREEDY = ("osd", "osd_mismatch", "osd_mismatch_replay", "osd_anchored")  # against `before`, accepted fraction
SAMPLED = ("osd_sampled", "osd_mismatch_sampled")  # against `before_sampled`, α
COST = ("osd_mismatch", "osd_mismatch_replay", "osd_anchored")  # against `osd`, T = 1 overlap


def series(run: Path) -> tuple[int, dict[int, dict]]:
    """(the first request from distribution B, {request: its record}) of one served stream."""
    config = yaml.safe_load((run / "run_config.yaml").read_text())
    shift = config["task"]["generator"].get("shift") or {}
    first_b = int(shift["at"]) - int(config["method"]["stream_start"]) if shift else 0
    records = {}
    plain = run / "metrics.jsonl"
    text = plain.read_text() if plain.is_file() else gzip.decompress((run / "metrics.jsonl.gz").read_bytes()).decode()
    for line in text.splitlines():
        record = json.loads(line)
        if "request" in record:
            records[record["request"]] = record
    return first_b, records


def _has_series(run: Path) -> bool:
    return (run / "metrics.jsonl").is_file() or (run / "metrics.jsonl.gz").is_file()


def paired(arm: dict[int, dict], base: dict[int, dict], key: str, first: int) -> dict | None:
    """arm − base over the requests from ``first`` on where both have ``key``: mean, SE, t, 95 % CI, n."""
    both = [(arm[r][key], base[r][key]) for r in sorted(arm.keys() & base.keys())
            if r >= first and arm[r].get(key) is not None and base[r].get(key) is not None]
    if len(both) < 2:
        return None
    differences = [a - b for a, b in both]
    mean, se = statistics.fmean(differences), statistics.stdev(differences) / math.sqrt(len(differences))
    return {"arm": statistics.fmean(a for a, _ in both), "base": statistics.fmean(b for _, b in both),
            "difference": mean, "se": se, "t": mean / se if se > 0 else math.copysign(math.inf, mean),
            "ci": (mean - 1.96 * se, mean + 1.96 * se), "n": len(differences)}


def _row(name: str, base: str, result: dict | None, verdict: str) -> str:
    if result is None:
        return f"| {name} | {base} | – | – | – | – | – | – | not run |"
    low, high = result["ci"]
    return (f"| {name} | {base} | {result['arm']:.4f} | {result['base']:.4f} | {result['difference']:+.4f} ± "
            f"{result['se']:.4f} | {result['t']:.1f} | [{low:+.4f}, {high:+.4f}] | {result['n']} | {verdict} |")


def criteria(out: Path) -> tuple[list[str], dict]:
    """The markdown lines and the numbers behind them."""
    runs = {d.name: series(d) for d in sorted((out / "stream").iterdir()) if _has_series(d)}
    first_b = runs["before"][0]
    header = ["| arm | against | arm mean | base mean | difference ± SE | t | 95 % CI | requests | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    found: dict[str, dict] = {}
    lines = [f"# OSD criteria (PLAN.md), distribution B: requests {first_b} on", "",
             "## Does the arm help? Greedy arms: accepted fraction; sampled arms: α (T = 1)", "", *header]
    offline = tuple(name for name in runs if name.startswith("offline_"))
    comparisons = [(a, "before", "accepted_fraction") for a in GREEDY + offline]
    comparisons += [(a, "before_sampled", "acceptance_rate") for a in SAMPLED]
    for arm, base, key in comparisons:
        result = paired(runs[arm][1], runs[base][1], key, first_b) if arm in runs and base in runs else None
        helps = result is not None and result["difference"] > 0 and result["t"] >= BAR_T
        found[f"{arm} vs {base} ({key})"] = result
        lines.append(_row(f"{arm} ({key})", base, result, "helps" if helps else "does not help"))
    lines += ["", "## The mismatch arm's cost under sampled serving: T = 1 overlap against OSD on every position",
              "", *header]
    not_below = {}
    for arm in COST:
        result = paired(runs[arm][1], runs["osd"][1], "overlap_t1", first_b) if arm in runs and "osd" in runs else None
        below = result is not None and result["difference"] < 0 and -result["t"] >= BAR_T
        not_below[arm] = result is not None and not below
        found[f"{arm} vs osd (overlap_t1)"] = result
        lines.append(_row(arm, "osd", result, ("below all-positions by ≥ 3 SE" if below else "not below by 3 SE")
                          if result else "not run"))
    removed = [arm for arm in ("osd_mismatch_replay", "osd_anchored") if not_below[arm]]
    lines += ["", f"Cost removed (PLAN.md: anchored or replay not below all-positions by ≥ 3 SE): "
                  f"{'yes, by ' + ' and '.join(removed) if removed else 'no'}."]
    return lines, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the study's output directory (OUT of scripts/osd_study.sh)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if not _has_series(args.out / "stream" / "before"):
        sys.exit(f"error: {args.out}/stream/before/metrics.jsonl not found: pass the OUT of scripts/osd_study.sh")
    lines, found = criteria(args.out)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()

"""The cross-tokenizer study's comparison (docs/results/cross_tokenizer/PLAN.md) from its run directories.

    python scripts/cross_tokenizer_compare.py OUT    # OUT: scripts/cross_tokenizer_study.sh's directory

Per seed, each arm's test score; the paired gains G_cross = kd_cross − sft and G_same = kd_same − sft_same (mean,
SE, t, 95 % CI); their difference with Welch's SE; PLAN.md's verdicts; aligned fraction, mass matched and train
seconds; with kd_reverse (amendment 3) its gain over sft_same; the scored starts and the teacher on A.
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

ARMS = ("sft", "kd_cross", "sft_same", "kd_same")
T_BAR, EQUIVALENCE = 3.0, 3.0  # PLAN.md: t for "transfers"; ± points for "keeps the gain"


def _mean_logged(run: Path, key: str) -> float | None:
    values = [r[key] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if key in r]
    return statistics.fmean(values) if values else None


def scores(sweep: Path) -> dict[int, dict]:
    """seed -> {"score", "aligned", "seconds"} for every finished (scored) run of a sweep directory."""
    out = {}
    for config in sweep.rglob("run_config.yaml"):
        run = config.parent
        metrics = next(iter(sorted(run.glob("eval/*/student/metrics.json"))), None)
        if metrics is None or not (run / "summary.json").is_file():
            continue
        values = json.loads(metrics.read_text())
        summary = json.loads((run / "summary.json").read_text())
        out[yaml.safe_load(config.read_text())["seed"]] = {
            "score": values[values["metric"]], "aligned": _mean_logged(run, "cross/aligned_fraction"),
            "tail": _mean_logged(run, "sparse/tail_mass"), "seconds": summary.get("train_seconds")}
    return out


def paired(a: dict, b: dict) -> tuple[list[int], list[float]]:
    seeds = sorted(set(a) & set(b))
    return seeds, [a[s]["score"] - b[s]["score"] for s in seeds]


def summary(diffs: list[float]) -> dict:
    n = len(diffs)
    mean = statistics.fmean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(n) if n > 1 else math.inf
    half = t_quantile_975(n - 1) * se if n > 1 else math.inf
    return {"n": n, "mean": mean, "se": se, "t": mean / se if se > 0 else math.inf, "ci": (mean - half, mean + half)}


def welch(x: dict, y: dict, x_diffs: list[float], y_diffs: list[float]) -> dict:
    """x − y for two unpaired sets of gains: Welch's SE and (floored, so conservative) degrees of freedom."""
    vx, vy = statistics.variance(x_diffs) / x["n"], statistics.variance(y_diffs) / y["n"]
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx ** 2 / (x["n"] - 1) + vy ** 2 / (y["n"] - 1)) if vx + vy > 0 else x["n"] + y["n"] - 2
    half = t_quantile_975(max(int(df), 1)) * se
    mean = x["mean"] - y["mean"]
    return {"mean": mean, "se": se, "df": df, "ci": (mean - half, mean + half)}


def verdicts(cross: dict, gap: dict) -> tuple[str, str]:
    transfers = "transfers" if cross["mean"] > 0 and cross["t"] >= T_BAR else "does not transfer at this many seeds"
    low, high = gap["ci"]
    if -EQUIVALENCE < low and high < EQUIVALENCE:
        keeps = "keeps the same-tokenizer gain"
    elif high < 0:
        keeps = "loses part of the same-tokenizer gain"
    else:
        keeps = "is inconclusive at this many seeds"
    return transfers, keeps


def _fmt(s: dict) -> str:
    low, high = s["ci"]
    return f"{s['mean']:+.2f} ± {s['se']:.2f} (t = {s['t']:.1f}, 95 % CI [{low:+.2f}, {high:+.2f}], n = {s['n']})"


def main() -> None:
    out = Path(sys.argv[1])
    runs = {arm: scores(out / arm) for arm in ARMS}
    seeds_cross, g_cross = paired(runs["kd_cross"], runs["sft"])
    seeds_same, g_same = paired(runs["kd_same"], runs["sft_same"])
    if len(g_cross) < 2 or len(g_same) < 2:
        raise SystemExit(f"error: {out} needs at least 2 seeds scored in kd_cross and sft, and in kd_same and sft_same")
    cross, same = summary(g_cross), summary(g_same)
    gap = welch(cross, same, g_cross, g_same)
    transfers, keeps = verdicts(cross, gap)
    lines = ["| seed | sft (B) | kd_cross (A → B) | G_cross | sft_same (A) | kd_same (A → A) | G_same |",
             "|---|---|---|---|---|---|---|"]
    for seed in sorted(set(seeds_cross) | set(seeds_same)):
        cells = [runs[arm].get(seed, {}).get("score") for arm in ARMS]
        text = ["–" if c is None else f"{c:.2f}" for c in cells]
        gc = f"{cells[1] - cells[0]:+.2f}" if None not in cells[:2] else "–"
        gs = f"{cells[3] - cells[2]:+.2f}" if None not in cells[2:] else "–"
        lines.append(f"| {seed} | {text[0]} | {text[1]} | {gc} | {text[2]} | {text[3]} | {gs} |")
    means = {arm: statistics.fmean(r["score"] for r in runs[arm].values()) for arm in ARMS if runs[arm]}
    lines += ["", "Means: " + ", ".join(f"{arm} {value:.2f}" for arm, value in means.items()) + ".",
              f"G_cross = kd_cross − sft: {_fmt(cross)}: cross-tokenizer KD **{transfers}** (PLAN.md: t ≥ {T_BAR:g}).",
              f"G_same = kd_same − sft_same: {_fmt(same)}.",
              f"G_cross − G_same: {gap['mean']:+.2f} ± {gap['se']:.2f} (Welch, df {gap['df']:.1f}, 95 % CI "
              f"[{gap['ci'][0]:+.2f}, {gap['ci'][1]:+.2f}]): it **{keeps}** (PLAN.md: the CI inside ±{EQUIVALENCE:g})."]
    aligned = [r["aligned"] for r in runs["kd_cross"].values() if r["aligned"] is not None]
    seconds = {arm: [r["seconds"] for r in runs[arm].values() if r["seconds"]] for arm in ("kd_cross", "kd_same")}
    tails = [r["tail"] for r in runs["kd_cross"].values() if r["tail"] is not None]
    if aligned:
        lines.append(f"Aligned fraction of the student's target positions (kd_cross, logged mean): "
                     f"{statistics.fmean(aligned):.3f}.")
    if tails:
        lines.append(f"Teacher probability mass matched onto student tokens at aligned positions (1 − the logged "
                     f"tail mass): {1 - statistics.fmean(tails):.4f}.")
    if seconds["kd_cross"] and seconds["kd_same"]:
        ratio = statistics.fmean(seconds["kd_cross"]) / statistics.fmean(seconds["kd_same"])
        lines.append(f"Train seconds: kd_cross {statistics.fmean(seconds['kd_cross']):.0f}, kd_same "
                     f"{statistics.fmean(seconds['kd_same']):.0f} ({ratio:.2f}×).")
    lines += reverse_lines(out, runs["sft_same"]) + start_lines(out)
    print("\n".join(lines))


def reverse_lines(out: Path, sft_same: dict) -> list[str]:
    """Amendment 3: kd_reverse (teacher on B → student on A) against sft_same, paired, the same bar."""
    reverse = scores(out / "kd_reverse") if (out / "kd_reverse").is_dir() else {}
    seeds, gains = paired(reverse, sft_same)
    if len(gains) < 2:
        return []
    g = summary(gains)
    verdict = "transfers" if g["mean"] > 0 and g["t"] >= T_BAR else "does not transfer at this many seeds"
    lines = ["", "| seed | sft_same (A) | kd_reverse (B → A) | G_reverse |", "|---|---|---|---|"]
    lines += [f"| {s} | {sft_same[s]['score']:.2f} | {reverse[s]['score']:.2f} | {d:+.2f} |" for s, d in zip(seeds, gains)]
    return lines + ["", f"G_reverse = kd_reverse − sft_same: {_fmt(g)}: from the teacher on B, cross-tokenizer KD "
                        f"**{verdict}** (amendment 3, the same bar: t ≥ {T_BAR:g})."]


def start_lines(out: Path) -> list[str]:
    """The scored starts (start_a, start_b) and the teacher on A (start_b's compare_teacher)."""
    found = []
    for name, role, label in (("start_b", "student", "start on B"), ("start_a", "student", "start on A"),
                              ("start_b", "teacher", "teacher on A")):
        metrics = next(iter(sorted((out / name).glob(f"eval/*/{role}/metrics.json"))), None)
        if metrics is not None:
            values = json.loads(metrics.read_text())
            found.append(f"{label} {values[values['metric']]:.2f}")
    return ["", "Scored once on the same split: " + ", ".join(found) + "."] if found else []


if __name__ == "__main__":
    main()

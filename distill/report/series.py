"""Plot data: rows and run records -> the numbers each figure draws (no matplotlib here)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from distill.report.aggregate import TEACHER, mean_std, sort_key

FRACTION = "task.train_fraction"
FRACTIONS = {FRACTION: "fraction of the training set", "task.labeled_fraction": "fraction of the training set with labels"}


def short_names(keys: list[str]) -> dict[str, str]:
    """``divergence.beta -> beta`` unless two keys would end the same; deeper keys
    (``student.bootstrap.enabled``) stay whole, their last part alone says too little."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 and k.count(".") == 1 else k) for k, s in zip(keys, last)}


def config_label(row: dict, params: list[str]) -> str:
    """The settings that tell a run apart from the other runs of its method, seed excluded."""
    names = short_names(params)
    parts = [f"{names[k]}={_short(format_value(row[k]))}" for k in params if row.get(k) is not None]
    return ", ".join(parts) or "all runs"


def _short(value: str) -> str:
    """A checkpoint path in a label: its last parts tell runs apart."""
    return "…/" + "/".join(value.rstrip("/").split("/")[-3:]) if value.count("/") > 3 else value


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _by_key(item: tuple) -> tuple:
    """Sort (key tuple, value) items: tasks, then methods in their fixed order, then settings."""
    return tuple(sort_key(v) for v in item[0])


def _curve_terms(record: dict) -> list[str]:
    return [k for k, v in record.items()
            if (k == "loss" or k.startswith("loss/") or k == "val/loss") and _is_number(v)]


def curve_data(runs: list[dict], rows: list[dict], swept: list[str]) -> dict:
    """``(task, method) -> term -> config label -> {steps, mean, n}``, averaged over seeds step by step."""
    params = [k for k in swept if k != "seed"]
    meta = {}
    for row in rows:
        if row["method"] != TEACHER:
            meta.setdefault(row["run"], (row["task"], row["method"], config_label(row, params)))
    points: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    members: dict = defaultdict(set)
    for run in runs:
        task, method, label = meta[run["run"]]
        for record in run["metrics"]:
            for term in _curve_terms(record):
                points[(task, method)][term][label][record["step"]].append(record[term])
                members[(task, method, label)].add(run["run"])
    out: dict = {}
    for key, terms in sorted(points.items(), key=_by_key):
        ordered = sorted(terms, key=lambda t: (t != "loss", t == "val/loss", t))  # total first, validation last
        out[key] = {term: {label: _mean_line(by_step, len(members[(*key, label)]))
                           for label, by_step in sorted(terms[term].items())}
                    for term in ordered}
    return out


def _mean_line(by_step: dict, n: int) -> dict:
    """Mean over the runs that logged each step (a partial run stops early, it does not drag the mean)."""
    steps = sorted(by_step)
    return {"steps": steps, "mean": [statistics.fmean(by_step[s]) for s in steps], "n": n}


def tradeoff_data(rows: list[dict]) -> dict:
    """``task -> method -> [{temperature, self_bleu, value, n}]`` from sampled decodings with self_bleu."""
    acc: dict = defaultdict(dict)
    for row in rows:
        for entry in row.get("_by_decoding") or []:
            value, diversity = entry.get(row["metric"]), entry.get("self_bleu")
            temperature = entry.get("sampling_temperature")
            if _is_number(value) and _is_number(diversity) and _is_number(temperature):
                # A run scored twice at one temperature (two eval variants) counts once.
                acc[(row["task"], row["method"], float(temperature))].setdefault(row["run"], (diversity, value))
    out: dict = {}
    for (task, method, temperature), per_run in sorted(acc.items(), key=_by_key):
        pairs = list(per_run.values())
        out.setdefault(task, {}).setdefault(method, []).append(
            {"temperature": temperature, "self_bleu": statistics.fmean(p[0] for p in pairs),
             "value": statistics.fmean(p[1] for p in pairs), "n": len(pairs)})
    return out


def efficiency_data(primary: list[dict], swept: list[str] = (), key: str = FRACTION) -> dict:
    """``task -> series -> [{fraction, mean, std, n}]`` over the fraction ``key``. A series is a method with
    its other swept settings (seed excluded), so variants of a method are never pooled into one point;
    only series with two or more values of ``key`` are kept."""
    others = [k for k in swept if k not in ("seed", key)]
    acc: dict = defaultdict(list)
    for row in primary:
        if _is_number(row.get(key)):
            label = config_label(row, others)
            series = row["method"] if label == "all runs" else f"{row['method']}: {label}"
            acc[(row["task"], series, float(row[key]))].append(row["value"])
    fractions: dict = defaultdict(set)
    for task, series, fraction in acc:
        fractions[(task, series)].add(fraction)
    out: dict = {}
    for (task, series, fraction), values in sorted(acc.items(), key=_by_key):
        if len(fractions[(task, series)]) >= 2:
            mean, std = mean_std(values)
            out.setdefault(task, {}).setdefault(series, []).append(
                {"fraction": fraction, "mean": mean, "std": std or 0.0, "n": len(values)})
    return out


def heatmap_data(primary: list[dict], swept: list[str]) -> dict:
    """``task -> (a, b) -> method -> {x, y, mean, n}`` over the first two numeric settings a method sweeps."""
    params = [k for k in swept if k != "seed"]
    by_method: dict = defaultdict(list)
    for row in primary:
        by_method[(row["task"], row["method"])].append(row)
    out: dict = {}
    for (task, method), members in sorted(by_method.items(), key=_by_key):
        numeric = [k for k in params if len({m[k] for m in members if _is_number(m.get(k))}) >= 2]
        if len(numeric) < 2:
            continue
        a, b = numeric[:2]
        out.setdefault(task, {}).setdefault((a, b), {})[method] = _grid(members, a, b)
    return out


def _grid(members: list[dict], a: str, b: str) -> dict:
    """Mean score per (a, b) cell; rows of the grid are b values, columns a values; None where no run."""
    cells: dict = defaultdict(list)
    for m in members:
        if _is_number(m.get(a)) and _is_number(m.get(b)):
            cells[(m[a], m[b])].append(m["value"])
    xs = sorted({x for x, _ in cells})
    ys = sorted({y for _, y in cells})
    mean = [[statistics.fmean(cells[(x, y)]) if cells.get((x, y)) else None for x in xs] for y in ys]
    n = [[len(cells.get((x, y), [])) for x in xs] for y in ys]
    return {"x": xs, "y": ys, "mean": mean, "n": n}


def stream_data(runs: list[dict], rows: list[dict], swept: list[str]) -> dict:
    """``task -> config label -> {requests, alpha, smoothed, n}`` from per-request records (OSD and other
    servers of a request stream: ``request`` and ``acceptance_rate`` in metrics.jsonl), averaged over seeds."""
    params = [k for k in swept if k != "seed"]
    meta = {}
    for row in rows:
        if row["method"] != TEACHER:
            meta.setdefault(row["run"], (row["task"], f"{row['method']}: {config_label(row, params)}"))
    per_request: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    members: dict = defaultdict(set)
    for run in runs:
        if run["run"] not in meta:
            continue
        task, label = meta[run["run"]]
        for record in run["metrics"]:
            if _is_number(record.get("request")) and _is_number(record.get("acceptance_rate")):
                per_request[task][label][int(record["request"])].append(record["acceptance_rate"])
                members[(task, label)].add(run["run"])
    out: dict = {}
    for task, labels in sorted(per_request.items(), key=lambda item: sort_key(item[0])):
        for label, by_request in sorted(labels.items()):
            requests = sorted(by_request)
            alpha = [statistics.fmean(by_request[r]) for r in requests]
            out.setdefault(task, {})[label] = {"requests": requests, "alpha": alpha, "smoothed": _smooth(alpha),
                                               "n": len(members[(task, label)])}
    return out


def _smooth(values: list[float]) -> list[float]:
    """Trailing mean over about a twentieth of the stream (at least 5 requests)."""
    window = max(5, len(values) // 20)
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def stream_quarters(data: dict) -> list[dict]:
    """Mean α per quarter of the stream, per task and configuration (before/after a shift at a glance)."""
    out = []
    for task, labels in data.items():
        for label, line in labels.items():
            alpha, n = line["alpha"], len(line["alpha"])
            quarters = [statistics.fmean(alpha[q * n // 4:(q + 1) * n // 4]) if (q + 1) * n // 4 > q * n // 4 else None
                        for q in range(4)]
            out.append({"task": task, "config": label, "requests": n, "runs": line["n"], "quarters": quarters,
                        "mean": statistics.fmean(alpha)})
    return out

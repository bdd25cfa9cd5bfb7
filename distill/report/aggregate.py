"""Aggregating: run records -> one row per (run, evaluation), seed groups, missing runs.

Rows are plain dicts. Keys starting with ``_`` are internal (plot inputs) and
never written to runs.csv.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict

from distill.errors import DataError
from distill.provenance import short
from distill.settings_keys import NON_RESULT_KEYS, covers

TEACHER = "teacher"
# Display and colour order of the known methods: every conf/method/*.yaml (a test checks); others follow by name.
METHODS = ("teacher", "sft", "supervised_kd", "seqkd", "gkd", "minillm", "xkd", "osd")
# Mirrors distill.metrics.METRIC_KEYS (importing that pulls in the scorers); a test checks they agree.
METRIC_KEYS = {"accuracy": ("accuracy",), "bleu": ("bleu",), "rouge": ("rouge1", "rouge2", "rougeL")}
# The number a metric is summarised by; ROUGE-2 as in the GKD paper (and the gkd reward).
MAIN_KEY = {"accuracy": "accuracy", "bleu": "bleu", "rouge": "rouge2"}
# Runs are grouped (and their scores averaged over seeds) by their whole resolved config except the seed and
# the settings that cannot change what a run learns (distill/settings_keys.py).
# Methods that never load a teacher: its settings cannot change their results.
WITHOUT_TEACHER = {"sft"}
GROUP_FIELDS = ("task", "method", "model", "eval", "variant", "metric")
PREFIXES = ("method", "divergence", "task", "student", "teacher", "teacher_generation", "trainer", "tokenizer",
            "bootstrap_seed", "bootstrap_trainer")


def method_name(run: dict) -> str:
    """summary.json's method choice, else the module of ``method._target_`` (summary is written last)."""
    summary = run["summary"] or {}
    if summary.get("method"):
        return str(summary["method"])
    target = str((run["config"].get("method") or {}).get("_target_", ""))
    parts = target.split(".")
    return parts[-2] if len(parts) >= 2 else (target or "unknown")


def _ignored(key: str) -> bool:
    return covers(NON_RESULT_KEYS, key)


def hyperparameters(config: dict) -> dict:
    """Flat ``group.key -> value`` of every setting that can change a run's results (seed excluded)."""
    out: dict = {}
    _flatten("", config, out)
    method = config.get("method") or {}
    unused = []
    if "divergence" not in method:  # a method without a divergence ignores the divergence group
        unused.append("divergence")
    if "teacher_decoding" not in method:
        unused.append("teacher_generation")
    if not (config.get("teacher") or {}).get("cache"):  # the live teacher: how a cache would be built is moot
        unused.append("teacher_cache")
    target = str(method.get("_target_", "")).split(".")
    if len(target) >= 2 and target[-2] in WITHOUT_TEACHER:  # distill.methods.<module>.<Class>
        unused.append("teacher")
    return {k: v for k, v in out.items()
            if not _ignored(k) and not any(k == u or k.startswith(u + ".") for u in unused)}


def _flatten(prefix: str, node: dict, out: dict) -> None:
    for key, value in node.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            _flatten(name, value, out)
        else:  # lists and {} become strings so values stay hashable and print as in the YAML
            out[name] = json.dumps(value) if isinstance(value, (list, dict)) else value


def swept_keys(settings: list[dict], methods: list[str]) -> list[str]:
    """Keys with two or more distinct values among the runs that have them, then ``seed``.

    ``method.*`` keys are compared within one method only: gkd's alpha=1 and
    xkd's alpha=0.1 are two defaults, not a sweep.
    """
    values: dict[tuple, set] = {}
    for hp, method in zip(settings, methods):
        for key, value in hp.items():
            values.setdefault((method if key.startswith("method.") else "", key), set()).add(value)
    swept = list(dict.fromkeys(k for (_, k), v in values.items() if len(v) >= 2 and k != "seed"))
    # Stable sort: grouped as in the config, first-seen order within a group.
    swept.sort(key=lambda k: PREFIXES.index(k.split(".")[0]) if k.split(".")[0] in PREFIXES else len(PREFIXES))
    return swept + ["seed"]


def run_status(run: dict) -> str:
    if run.get("unreadable"):
        return "unreadable"
    if not run["has_final"]:
        return "partial"
    if not any(e["variant"] != TEACHER for e in run["evals"]) and not served_a_stream(run):
        return "no eval"
    return "complete"


def served_a_stream(run: dict) -> bool:
    """A run that served a request stream (OSD) is measured by its per-request records, not a student eval."""
    return any("request" in record for record in run["metrics"])


def build_rows(runs: list[dict]) -> tuple[list[dict], list[str]]:
    """All rows and the swept keys (``seed`` last)."""
    settings = [hyperparameters(run["config"]) for run in runs]
    swept = swept_keys(settings, [method_name(run) for run in runs])
    rows = []
    for run, hp in zip(runs, settings):
        rows.extend(run_rows(run, hp, swept))
    return rows, swept


def run_rows(run: dict, hp: dict, swept: list[str]) -> list[dict]:
    """One row per student evaluation (one without metrics if none), plus one per teacher evaluation."""
    config, summary = run["config"], run["summary"] or {}
    steps = [r["step"] for r in run["metrics"]]
    base = {"run": run["run"], "method": method_name(run),
            "task": summary.get("task") or (config.get("task") or {}).get("name"),
            "student": summary.get("student") or (config.get("student") or {}).get("name"),
            "teacher": summary.get("teacher") or (config.get("teacher") or {}).get("name"),
            "eval": None, "variant": None, "metric": None, "value": None,
            **{k: hp.get(k) for k in swept if k != "seed"},
            "seed": config.get("seed"), "status": run_status(run), "steps": max(steps) if steps else None,
            "train_seconds": summary.get("train_seconds"), "commit": short(summary.get("code")),
            "_path": run["path"]}
    base["model"] = base["student"]
    student = [_eval_row(base, e) for e in run["evals"] if e["variant"] != TEACHER]
    teacher = [_teacher_row(base, e, swept) for e in run["evals"] if e["variant"] == TEACHER]
    return (student or [base]) + teacher


def _eval_row(base: dict, evaluation: dict) -> dict:
    metrics = evaluation["metrics"]
    name = metrics.get("metric")
    key = MAIN_KEY.get(name, name)
    primary = metrics.get("decoding") or {}
    keys = METRIC_KEYS.get(name, (key,)) if key else ()
    scores = {k: primary.get(k, metrics.get(k)) for k in keys}
    return {**base, "eval": evaluation["eval"], "variant": evaluation["variant"], "split": metrics.get("split"),
            "decoding": primary.get("name"), "metric": key, **scores, "value": scores.get(key),
            "self_bleu": primary.get("self_bleu"), "_by_decoding": metrics.get("by_decoding") or []}


def _teacher_row(base: dict, evaluation: dict, swept: list[str]) -> dict:
    """The teacher is not what the run trained: no student, no training hyperparameters."""
    row = _eval_row(base, evaluation)
    row.update({k: None for k in swept if k != "seed"})
    row.update({"method": TEACHER, "student": None, "model": base["teacher"], "status": "complete",
                "steps": None, "train_seconds": None, "commit": None})
    return row


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def group_rows(rows: list[dict], swept: list[str]) -> list[dict]:
    """Rows with a score, grouped by everything but the seed.

    Two runs of one configuration with the same seed are the same experiment
    twice (copied or re-run into another directory): that is an error, never
    an average over "seeds".
    """
    fields = (*GROUP_FIELDS, *[k for k in swept if k != "seed"])
    keyed: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if isinstance(row.get("value"), (int, float)) and math.isfinite(row["value"]):
            keyed[tuple(row.get(f) for f in fields)].append(row)
    groups = []
    for members in keyed.values():
        if members[0]["method"] == TEACHER:  # every run of a sweep may score the same teacher again
            members = list({m["seed"]: m for m in reversed(members)}.values())
        _check_distinct_seeds(members)
        mean, std = mean_std([m["value"] for m in members])
        seconds = [m["train_seconds"] for m in members if isinstance(m.get("train_seconds"), (int, float))]
        groups.append({**{f: members[0].get(f) for f in fields}, "mean": mean, "std": std, "n": len(members),
                       "se": None if std is None else std / math.sqrt(len(members)),
                       "by_seed": {m["seed"]: m["value"] for m in members},
                       "seeds": sorted({m["seed"] for m in members}, key=sort_key),
                       "train_seconds": statistics.fmean(seconds) if seconds else None,
                       "commits": sorted({m["commit"] for m in members if m.get("commit")}),
                       "runs": [m["run"] for m in members]})
    order = ("task", "method", "model", *fields[len(GROUP_FIELDS):], "eval", "variant", "metric")
    return sorted(groups, key=lambda g: tuple(sort_key(g[f]) for f in order))


def _check_distinct_seeds(members: list[dict]) -> None:
    seen: dict = {}
    for member in members:
        if member["seed"] in seen:
            raise DataError(f"runs {seen[member['seed']]} and {member['run']} have the same configuration and seed "
                            f"{member['seed']}: the same experiment twice, not two seeds; report one of them")
        seen[member["seed"]] = member["run"]


def sort_key(value) -> tuple:
    """Orders mixed values: known methods first, numbers numerically, None last."""
    if value is None:
        return (3, 0, "")
    if isinstance(value, str) and value in METHODS:
        return (0, METHODS.index(value), "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value, "")
    return (2, 0, str(value))


def missing_runs(runs: list[dict]) -> list[dict]:
    """Runs without final/ or without a student evaluation, with the reason."""
    out = []
    for run in runs:
        status = run_status(run)
        if status == "complete":
            continue
        steps = [r["step"] for r in run["metrics"]]
        reasons = []
        if run.get("unreadable"):  # nothing else of it is read
            reasons.append(run["unreadable"])
        elif not run["has_final"]:
            reasons.append(f"no final/ (last logged step {max(steps)})" if steps else "no final/ and nothing logged")
        if not run.get("unreadable") and not any(e["variant"] != TEACHER for e in run["evals"]):
            reasons.append("no student evaluation (`eval/TASK-SPLIT/VARIANT/metrics.json`)")
        out.append({"run": run["run"], "status": status, "reason": "; ".join(reasons), "path": run["path"]})
    return out


def primary_rows(rows: list[dict]) -> list[dict]:
    """One scored student row per run for the per-run plots: the final test evaluation, student/default first."""
    best: dict[str, dict] = {}
    for row in rows:
        if row["method"] == TEACHER or not isinstance(row.get("value"), (int, float)):
            continue
        if row["run"] not in best or _preference(row) < _preference(best[row["run"]]):
            best[row["run"]] = row
    return list(best.values())


def _preference(row: dict) -> tuple:
    rank = {"student": 0, "default": 1}
    return ("-step-" in (row["eval"] or ""), row.get("split") != "test", rank.get(row["variant"], 2),
            row["eval"] or "", row["variant"] or "")


# Settings that describe a method rather than the experiment it runs in: they differ between the methods
# being compared and are not matched when pairing.
METHOD_PREFIXES = ("method.", "divergence.", "teacher_generation.")


def paired_differences(groups: list[dict], swept: list[str], baseline: str) -> list[dict]:
    """Each method's per-seed difference from ``baseline`` in the same experiment (task, evaluation,
    and every setting that is not the method's own), over the seeds both have: mean, SE and t = mean / SE."""
    context = [k for k in swept if k != "seed" and not k.startswith(METHOD_PREFIXES)]
    own = [k for k in swept if k.startswith(METHOD_PREFIXES)]
    key = lambda g: tuple(g.get(f) for f in ("task", "eval", "variant", "metric", *context))  # noqa: E731
    bases: dict = defaultdict(list)
    for g in groups:
        if g["method"] == baseline:
            bases[key(g)].append(g)
    out = []
    for group in groups:
        if group["method"] in (baseline, TEACHER):
            continue
        # a baseline swept over its own settings: pair with the configuration that shares the group's values
        # of the settings the baseline varies (a method's other settings, e.g. its own alpha, mean nothing here)
        candidates = bases.get(key(group), [])
        varying = [k for k in own if len({b.get(k) for b in candidates}) > 1]
        candidates = [b for b in candidates if all(b.get(k) == group.get(k) for k in varying)]
        if len(candidates) != 1:
            continue
        base = candidates[0]
        seeds = sorted(set(group["by_seed"]) & set(base["by_seed"]), key=sort_key)
        diffs = [group["by_seed"][s] - base["by_seed"][s] for s in seeds]
        if len(diffs) < 2:  # one seed has no standard error: the results table already shows it
            continue
        mean, std = mean_std(diffs)
        se = None if std is None else std / math.sqrt(len(diffs))
        half = None if se is None else t_quantile_975(len(diffs) - 1) * se
        out.append({"group": group, "baseline": baseline, "n": len(diffs), "mean": mean, "se": se,
                    "t": None if se is None or se < 1e-9 else mean / se, "seeds": seeds,  # equal diffs: no t
                    "ci95": None if half is None else (mean - half, mean + half)})
    return out


# Two-sided 95 % quantiles of Student's t for 1-30 degrees of freedom (standard tables, 3 decimals).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the 95 % confidence interval of a mean of df + 1 paired differences is mean ± t·SE."""
    if df < 1:
        raise ValueError(f"a confidence interval needs at least 2 values, got df={df}")
    # beyond the table, the first Cornish-Fisher term around 1.96 is within 0.002
    return _T975[df - 1] if df <= len(_T975) else 1.95996 + 2.372 / df

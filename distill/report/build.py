"""The whole report: collect -> aggregate -> figures -> report.md, runs.csv and PNGs in one directory."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from distill.errors import ConfigError
from distill.io import TMP_PREFIX, atomic_dir, atomic_write_text
from distill.report import plots as P
from distill.report import series as S
from distill.report.aggregate import (
    build_rows,
    group_rows,
    method_name,
    missing_runs,
    paired_differences,
    primary_rows,
    sort_key,
)
from distill.report.collect import collect
from distill.report.render import render_csv, render_markdown

REPORT_FILES = ("report.md", "runs.csv")  # and the plots, *.png
SAMPLING_HINT = ("evaluate with eval.num_samples>1 and eval.sampling_temperatures=[...] "
                 "to get sampled decodings with self_bleu")


def build_report(sources: list[Path], out: Path, baselines: list[str] | None = None) -> dict:
    """Write report.md, runs.csv and the plots into ``out``, published as a whole (never an old report.md beside
    new plots); return what the CLI prints. ``baselines``: methods every other one is compared with seed by
    seed (default: sft, when present)."""
    target = check_out(out)
    runs = collect(sources)
    rows, swept = build_rows(runs)
    groups = group_rows(rows, swept)
    warnings = [w for run in runs for w in run["warnings"]]
    baselines = _baselines(baselines, runs, groups, warnings)
    sections = make_figures(runs, rows, swept)
    plots = [{**s, "images": [(name, caption) for name, caption, _ in s["figures"]]} for s in sections]
    missing = missing_runs(runs)
    pairs = [p for b in baselines for p in paired_differences(groups, swept, b)]
    context = {"sources": [str(s) for s in sources], "runs": runs, "rows": rows, "swept": swept, "pairs": pairs,
               "groups": groups, "sampled": S.tradeoff_data(rows),
               "stream": S.stream_quarters(S.stream_data(runs, rows, swept)), "metric": task_metrics(rows),
               "missing": missing, "plots": plots, "warnings": warnings,
               "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    csv_text, markdown = render_csv(rows, swept), render_markdown(context)
    with atomic_dir(target) as tmp:  # a kill or an error anywhere leaves the previous report as it was
        for section in sections:
            for name, _, fig in section["figures"]:
                P.save_png(fig, tmp / name)
        atomic_write_text(tmp / "runs.csv", csv_text)
        atomic_write_text(tmp / "report.md", markdown)
    return {"report": out / "report.md", "runs": len(runs), "rows": len(rows), "missing": len(missing),
            "plots": [name for s in sections for name, _, _ in s["figures"]], "warnings": warnings}


def _is_report_file(path: Path) -> bool:
    """What ``distill report`` writes, or its temporary files (an earlier version wrote them inside ``out``)."""
    return path.is_file() and not path.is_symlink() and (
        path.name in REPORT_FILES or path.suffix == ".png" or path.name.startswith(TMP_PREFIX))


def check_out(out: Path) -> Path:
    """The directory to replace by the new report: ``out`` (or what it links to), if it is new or holds only
    a report's files; anything else there would be deleted with it."""
    target = out.resolve() if out.is_symlink() else out
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory for the report (created if missing)")
    if target == target.parent or target.resolve() == Path.cwd().resolve():
        raise ConfigError(f"--out {out} is the current or root directory; pass a directory for the report alone")
    other = sorted(p.name for p in target.iterdir() if not _is_report_file(p)) if target.is_dir() else []
    if other:
        raise ConfigError(f"--out {out} holds {other[0]}{f' and {len(other) - 1} more' if len(other) > 1 else ''}, "
                          "which a report does not write; the report replaces its directory as a whole: pass a new "
                          "directory or one holding only an earlier report")
    return target


def _baselines(asked: list[str] | None, runs: list[dict], groups: list[dict], warnings: list[str]) -> list[str]:
    """The baselines to pair with: the ones asked for (each must be a method of the runs), else sft if scored."""
    scored = {g["method"] for g in groups}
    if asked is None:
        return ["sft"] if "sft" in scored else []
    methods = sorted({method_name(run) for run in runs} | scored, key=sort_key)  # scored: with the teacher
    for name in asked:
        if name not in methods:
            raise ConfigError(f"--baseline {name}: no run of that method; the runs' methods are {', '.join(methods)}")
        if name not in scored:
            warnings.append(f"--baseline {name}: no run of {name} has a score; no paired differences against it")
    return asked


def _file(stem: str, task: str, several_tasks: bool) -> str:
    name = f"{stem}_{task}" if several_tasks else stem
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name) + ".png"


def task_metrics(rows: list[dict]) -> dict:
    """``task -> metric name`` (the first row that names one)."""
    return {row["task"]: row["metric"] for row in reversed(rows) if row.get("metric")}


def make_figures(runs: list[dict], rows: list[dict], swept: list[str]) -> list[dict]:
    """Sections ``{title, figures: [(file, caption, Figure)], skipped: [reason]}`` in report order."""
    primary = primary_rows(rows)
    tasks = sorted({row["task"] for row in rows}, key=sort_key)
    several = len(tasks) > 1
    metric = task_metrics(rows)
    sections = [_curves(runs, rows, swept, several), _stream(runs, rows, swept, several), _tradeoff(rows, metric, several),
                _efficiency(primary, swept, metric, several), _heatmaps(primary, swept, metric, several)]
    return [s for s in sections if s is not None]


def _section(title: str, figures: list, reason: str) -> dict:
    return {"title": title, "figures": figures, "skipped": [] if figures else [reason]}


def _curves(runs, rows, swept, several) -> dict:
    figures = []
    for (task, method), terms in S.curve_data(runs, rows, swept).items():
        name = _file(f"curves_{method}", str(task), several)
        figures.append((name, f"{method} training curves on {task}", P.curves_figure(method, task, terms)))
    return _section("Training curves", figures, "no metrics.jsonl record has a loss term")


def _stream(runs, rows, swept, several) -> dict | None:
    """α over the request stream; only in reports with runs that served one (method=osd)."""
    figures = []
    for task, data in S.stream_data(runs, rows, swept).items():
        name = _file("acceptance_stream", str(task), several)
        figures.append((name, f"acceptance rate over the request stream on {task}", P.stream_figure(task, data)))
    return _section("Speculative acceptance over the stream", figures, "") if figures else None


def _tradeoff(rows, metric, several) -> dict:
    figures = []
    for task, data in S.tradeoff_data(rows).items():
        name = _file("tradeoff", str(task), several)
        figures.append((name, f"{metric[task]} vs Self-BLEU on {task}", P.tradeoff_figure(task, metric[task], data)))
    return _section("Performance vs diversity", figures, f"no evaluation has self_bleu; {SAMPLING_HINT}")


def _efficiency(primary, swept, metric, several) -> dict:
    figures = []
    for key, meaning in S.FRACTIONS.items():
        stem = "data_efficiency" if key == S.FRACTION else f"data_efficiency_{key.rsplit('.', 1)[-1]}"
        for task, data in S.efficiency_data(primary, swept, key).items():
            figures.append((_file(stem, str(task), several), f"data efficiency over {key} on {task}",
                            P.efficiency_figure(task, metric[task], data, key, meaning)))
    return _section("Data efficiency", figures, "no method (with its other settings) was evaluated at two or more "
                    f"values of {' or '.join(S.FRACTIONS)}")


def _heatmaps(primary, swept, metric, several) -> dict:
    figures = []
    for task, pairs in S.heatmap_data(primary, swept).items():
        for (a, b), per_method in pairs.items():
            name = _file(f"heatmap_{a}_{b}", str(task), several)
            figure = P.heatmap_figure(task, metric[task], a, b, per_method)
            figures.append((name, f"{metric[task]} over {a} × {b} on {task}", figure))
    return _section("Hyperparameter heatmaps", figures,
                    "no method sweeps two numeric settings (seed excluded) among the evaluated runs")

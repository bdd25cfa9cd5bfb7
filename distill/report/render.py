"""Rendering: rows and groups -> runs.csv and report.md text (pure: strings in, strings out)."""

from __future__ import annotations

import csv
import io
import re

from distill.report.aggregate import METRIC_KEYS
from distill.report.series import format_value, short_names

LEADING = ["run", "method", "task", "student", "teacher", "eval", "variant"]
TRAILING = ["self_bleu", "status", "steps", "train_seconds", "commit"]


def csv_columns(rows: list[dict], swept: list[str]) -> list[str]:
    """Identity, swept settings (seed last), the metric's name and scores, then status and cost."""
    present = {k for row in rows for k in row}
    scores = [k for keys in METRIC_KEYS.values() for k in keys if k in present]
    extra = sorted({row["metric"] for row in rows if row.get("metric") and row["metric"] not in scores})
    return [*LEADING, *swept, "metric", *scores, *extra, *TRAILING]


def render_csv(rows: list[dict], swept: list[str]) -> str:
    columns = csv_columns(rows, swept)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buffer.getvalue()


def _cell(value) -> str:
    return format_value(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], body: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in body]
    return lines


def score_text(group: dict) -> str:
    if group["std"] is None:
        return f"{group['mean']:.2f}"
    return f"{group['mean']:.2f} ± {group['std']:.2f}"


def results_section(groups: list[dict], swept: list[str]) -> list[str]:
    params = [k for k in swept if k != "seed"]
    names = short_names(params)
    lines = ["## Results", "",
             "Scores of the default decoding of each evaluation (greedy unless the variant overrides it): "
             "mean ± sample std over the seeds of one configuration, SE = std / √n; n = number of runs averaged.", ""]
    if not groups:
        return lines + ["No run has an evaluation yet (see below).", ""]
    header = ["method", "task", "model", *[names[k] for k in params], "eval", "variant", "metric",
              "score", "SE", "n", "seeds", "train s", "commit"]
    body = [[g["method"], g["task"], g["model"], *[g[k] for k in params], g["eval"], variant_label(g["variant"]), g["metric"],
             score_text(g), "" if g["se"] is None else f"{g['se']:.2f}", g["n"],
             ", ".join(format_value(s) for s in g["seeds"]),
             None if g["train_seconds"] is None else f"{g['train_seconds']:.1f}", ", ".join(g["commits"])]
            for g in groups]
    return lines + _table(header, body) + [""]


def paired_section(pairs: list[dict], swept: list[str]) -> list[str]:
    """Per-seed differences from each baseline method: mean, its standard error, t = mean / SE, 95 % CI."""
    if not pairs:
        return []
    own = [k for k in swept if k != "seed" and k.startswith(("method.", "divergence."))]
    names = short_names(own)
    lines = ["## Paired differences", "",
             "Each configuration minus the baseline method on the same seeds (same teacher, start, data and "
             "budget): mean of the per-seed differences, its standard error (std / √n), t = mean / SE and the 95 % "
             "confidence interval mean ± t(0.975, n − 1)·SE. |t| ≥ 3 is a difference well beyond seed noise.", ""]
    header = ["method", "settings", "baseline", "task", "eval", "variant", "metric", "mean diff", "SE", "t", "95% CI",
              "n"]
    body = []
    for p in pairs:
        g = p["group"]
        settings = ", ".join(f"{names[k]}={format_value(g[k])}" for k in own if g.get(k) is not None)
        body.append([g["method"], settings, p["baseline"], g["task"], g["eval"], variant_label(g["variant"]),
                     g["metric"], f"{p['mean']:+.2f}", "" if p["se"] is None else f"{p['se']:.2f}",
                     "" if p["t"] is None else f"{p['t']:+.1f}",
                     "" if p["ci95"] is None else f"[{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]", p["n"]])
    return lines + _table(header, body) + [""]


def variant_label(variant: str) -> str:
    """``eval.num_samples=4,task.max_eval_examples=200`` -> ``num_samples=4, max_eval_examples=200``."""
    return re.sub(r",(?=[A-Za-z_][\w.]*=)", ", ", re.sub(r"(^|,)(?:eval|task)\.", r"\1", variant))


def sampled_section(sampled: dict, metric: dict) -> list[str]:
    """Mean score and Self-BLEU per method and sampling temperature: the trade-off figure as numbers."""
    if not sampled:
        return []
    lines = ["## Sampled decoding", "",
             "Each prompt sampled several times per temperature; the score averages all samples, Self-BLEU "
             "compares each sample with the others of its prompt (higher = less diverse); mean over n runs.", ""]
    body = [[task, method, p["temperature"], f"{p['value']:.2f}", f"{p['self_bleu']:.2f}", p["n"]]
            for task, methods in sampled.items() for method, points in methods.items() for p in points]
    metrics = "/".join(sorted({metric[t] for t in sampled}))
    return lines + _table(["task", "method", "temperature", metrics, "self_bleu", "n"], body) + [""]


def stream_section(stream: list[dict]) -> list[str]:
    """Mean acceptance rate per quarter of the request stream (OSD), per configuration."""
    if not stream:
        return []
    lines = ["## Speculative acceptance over the stream", "",
             "Mean acceptance rate α = Σ_v min(p, q) per quarter of the request stream, averaged over runs; "
             "a distribution shift shows as a drop, an online draft as a recovery.", ""]
    body = [[s["task"], s["config"], s["requests"], s["runs"],
             *["" if q is None else f"{q:.3f}" for q in s["quarters"]], f"{s['mean']:.3f}"] for s in stream]
    return lines + _table(["task", "draft", "requests", "runs", "1st quarter", "2nd", "3rd", "4th", "all"], body) + [""]


def missing_section(missing: list[dict], warnings: list[str]) -> list[str]:
    lines = ["## Missing or partial runs", ""]
    if missing:
        lines += _table(["run", "status", "reason"], [[m["run"], m["status"], m["reason"]] for m in missing])
    else:
        lines.append("None: every run has final/ and an evaluation.")
    if warnings:
        lines += ["", "Warnings:", ""] + [f"- {_cell(w)}" for w in warnings]
    return lines + [""]


def plots_section(plots: list[dict]) -> list[str]:
    """``plots``: ``{title, images: [(file, caption)], skipped: [reason]}`` per kind of plot."""
    lines = ["## Plots", ""]
    for plot in plots:
        lines += [f"### {plot['title']}", ""]
        for name, caption in plot["images"]:
            lines += [f"![{caption}]({name})", ""]
        lines += [f"Skipped: {reason}\n" for reason in plot["skipped"]]
    return lines


def render_markdown(context: dict) -> str:
    """report.md from ``sources, runs, rows, swept, groups, sampled, metric, missing, warnings, plots, generated``."""
    params = [k for k in context["swept"] if k != "seed"]
    head = ["# Distillation report", "",
            f"Generated {context['generated']} from: " + ", ".join(f"`{s}`" for s in context["sources"]) + ".", "",
            f"{len(context['runs'])} runs, {len(context['rows'])} rows in [runs.csv](runs.csv), "
            f"{len(context['missing'])} missing or partial. "
            f"Swept settings: {', '.join(f'`{k}`' for k in params) or 'none'} (and `seed`).", ""]
    body = results_section(context["groups"], context["swept"])
    body += paired_section(context.get("pairs", []), context["swept"])
    body += sampled_section(context["sampled"], context["metric"])
    body += stream_section(context.get("stream", []))
    body += missing_section(context["missing"], context["warnings"])
    body += plots_section(context["plots"])
    return "\n".join(head + body)

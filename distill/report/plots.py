"""Plotting: plot data (distill.report.series) -> matplotlib Figures, and PNG writing.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, not
pyplot: no global backend switch, no figure registry to leak, and tests can
inspect the returned objects before anything is saved.
"""

from __future__ import annotations

import io
import math
import textwrap
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from distill.io import atomic_write_bytes
from distill.report.series import format_value, short_names

# One colour per method in every figure of every report: tab10, fixed by name.
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
FIXED = {"sft": 0, "supervised_kd": 1, "seqkd": 2, "gkd": 3, "minillm": 4, "xkd": 5, "osd": 6, "teacher": 7}
# Methods not known here get a colour from their name's hash, so it does not depend on the other runs.
OTHERS = [TAB10[8], TAB10[9], "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]
LINESTYLES = ["-", "--", "-.", ":"]


def method_colour(method: str) -> str:
    if method in FIXED:
        return TAB10[FIXED[method]]
    return OTHERS[zlib.crc32(method.encode()) % len(OTHERS)]


def _shade(colour: str, index: int, count: int) -> tuple:
    """Lighter variants of the method colour tell a method's configurations apart."""
    rgb = np.array(mcolors.to_rgb(colour))
    mix = 0.6 * index / (count - 1) if count > 1 else 0.0
    return tuple(rgb + (1.0 - rgb) * mix)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _fit(text: str, width_inches: float, fontsize: float = 12.0) -> str:
    """Wrap a title to the width it is drawn in (about 0.6 em per character), so it is never cut off."""
    return textwrap.fill(text, max(20, int(width_inches * 72 / (0.6 * fontsize))))


# A line with fewer points than this gets markers: a single logged step is otherwise invisible.
FEW_POINTS = 20


def _legend_below(fig: Figure, handles, labels, title: str) -> None:
    """One legend under the panels, in as many columns as fit: the panels keep the figure's width."""
    width = fig.get_figwidth()
    labels = [textwrap.fill(label, int((width - 0.6) / 0.075)) for label in labels]  # a long label wraps, never cut
    column = max(1.2, 0.075 * max(len(line) for label in labels for line in label.split("\n")) + 0.6)  # inches
    rows = sum(1 + label.count("\n") for label in labels)  # upper bound: one column
    ncol = max(1, min(len(labels), int(width // column)))
    rows = math.ceil(rows / ncol)
    fig.set_figheight(fig.get_figheight() + 0.25 * rows + 0.45)
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize="small", title=title)


def curves_figure(method: str, task: str, terms: dict) -> Figure:
    """One panel per loss term; one line per configuration (mean over its seeds)."""
    cols = min(3, len(terms))
    rows = -(-len(terms) // cols)
    fig = _figure(4.4 * cols, 3.4 * rows)
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[len(terms):]:
        fig.delaxes(ax)
    colour = method_colour(method)
    for ax, (term, series) in zip(axes, terms.items()):
        for i, (label, line) in enumerate(series.items()):
            ax.plot(line["steps"], line["mean"], color=_shade(colour, i, len(series)),
                    linestyle=LINESTYLES[i % len(LINESTYLES)], label=f"{label} (mean of {line['n']})",
                    marker="o" if len(line["steps"]) < FEW_POINTS else None, markersize=3)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.set_ylabel(term)
        ax.grid(alpha=0.3)
    # One legend for all panels, below them: per-panel legends hide the curves once there are many
    # configurations, and a legend at the side takes the panels' width.
    handles, labels = axes[0].get_legend_handles_labels()
    _legend_below(fig, handles, labels, "configuration")
    fig.suptitle(_fit(f"{method} on {task}: training curves (mean over seeds)", fig.get_figwidth()))
    return fig


def tradeoff_figure(task: str, metric: str, data: dict) -> Figure:
    """Score vs Self-BLEU, one line per method through its sampling temperatures."""
    fig = _figure(6.5, 4.8)
    ax = fig.add_subplot()
    for method, points in data.items():
        x = [p["self_bleu"] for p in points]
        y = [p["value"] for p in points]
        ax.plot(x, y, marker="o", color=method_colour(method), label=method)
        for p in points:
            ax.annotate(f"T={p['temperature']:g}", (p["self_bleu"], p["value"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.margins(x=0.12, y=0.08)  # room for the temperature labels
    ax.set_xlabel("Self-BLEU (higher = less diverse samples)")
    ax.set_ylabel(metric)
    ax.set_title(_fit(f"{task}: {metric} vs diversity across sampling temperatures (mean over runs)",
                      0.8 * fig.get_figwidth()))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def efficiency_figure(task: str, metric: str, data: dict, key: str = "task.train_fraction",
                      meaning: str = "fraction of the training set") -> Figure:
    """Score vs a fraction of the training set (``key``), mean ± sample std over seeds, one line per series."""
    fig = _figure(6.5, 4.8)
    ax = fig.add_subplot()
    for series, points in data.items():  # "method" or "method: settings"
        ax.errorbar([p["fraction"] for p in points], [p["mean"] for p in points], yerr=[p["std"] for p in points],
                    marker="o", capsize=3, color=method_colour(series.split(":")[0]), label=series)
    if max(len(series) for series in data) > 30:  # variants' settings: a legend under the panel keeps it readable
        handles, labels = ax.get_legend_handles_labels()
        _legend_below(fig, handles, labels, "")
    fractions = [p["fraction"] for points in data.values() for p in points]
    if fractions and max(fractions) / min(fractions) >= 20:  # 1 %, 5 %, 100 % would crowd a linear axis
        ax.set_xscale("log")
    ax.set_xlabel(_fit(f"{key} ({meaning})", 0.9 * fig.get_figwidth()))
    ax.set_ylabel(f"{metric} (mean ± std over runs)")
    ax.set_title(_fit(f"{task}: data efficiency", 0.8 * fig.get_figwidth()))
    ax.grid(alpha=0.3)
    if not fig.legends:
        ax.legend()
    return fig


def heatmap_figure(task: str, metric: str, a: str, b: str, per_method: dict) -> Figure:
    """One annotated heatmap per method over settings ``a`` (columns) and ``b`` (rows)."""
    names = short_names([a, b])
    fig = _figure(4.8 * len(per_method), 4.2)
    axes = list(fig.subplots(1, len(per_method), squeeze=False).ravel())
    for ax, (method, grid) in zip(axes, per_method.items()):
        values = np.ma.masked_invalid(np.array([[np.nan if v is None else v for v in row] for row in grid["mean"]]))
        image = ax.imshow(values, origin="lower", cmap="viridis", aspect="auto")
        for r, row in enumerate(grid["mean"]):
            for c, value in enumerate(row):
                if value is None:
                    ax.text(c, r, "–", ha="center", va="center", color="grey")
                    continue
                dark = image.norm(value) < 0.6  # light text on the dark end of viridis
                ax.text(c, r, f"{value:.1f}\n(n={grid['n'][r][c]})", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
        ax.set_xticks(range(len(grid["x"])), [format_value(v) for v in grid["x"]])
        ax.set_yticks(range(len(grid["y"])), [format_value(v) for v in grid["y"]])
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        ax.set_title(method, color=method_colour(method))
        fig.colorbar(image, ax=ax, label=metric)
    fig.suptitle(_fit(f"{task}: mean {metric} over {names[a]} × {names[b]} (n = runs averaged per cell)",
                      fig.get_figwidth()))
    return fig


def save_png(fig: Figure, path: Path) -> None:
    """Render in memory, then write atomically: a crash never leaves a truncated PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(path, buffer.getvalue())


def stream_figure(task: str, data: dict) -> Figure:
    """Acceptance rate α over the request stream (trailing mean), one line per configuration."""
    fig = _figure(7.5, 4.6)
    ax = fig.add_subplot()
    methods: dict[str, int] = {}
    counts = Counter(label.split(":")[0] for label in data)
    for label, line in data.items():
        method = label.split(":")[0]
        index = methods[method] = methods.get(method, -1) + 1
        ax.plot(line["requests"], line["smoothed"], color=_shade(method_colour(method), index, counts[method]),
                linestyle=LINESTYLES[index % len(LINESTYLES)], label=f"{label} (mean of {line['n']})",
                marker="o" if len(line["requests"]) < FEW_POINTS else None, markersize=3)
    ax.set_xlabel("request (position in the stream)")
    ax.set_ylabel("acceptance rate α (trailing mean)")
    ax.set_ylim(0, 1)
    ax.set_title(_fit(f"{task}: speculative acceptance over the request stream", 0.8 * fig.get_figwidth()))
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    _legend_below(fig, handles, labels, "draft")
    return fig

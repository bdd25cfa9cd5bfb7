"""Plot data and figures, checked on the matplotlib objects before anything is saved."""

from __future__ import annotations

import pytest
from matplotlib.colors import to_rgb

from distill.report import plots as P
from distill.report import series as S
from distill.report.aggregate import METHODS, build_rows, primary_rows
from distill.report.build import make_figures
from distill.report.collect import collect
from distill.report.plots import FIXED, method_colour


def _figures(root):
    runs = collect([root])
    rows, swept = build_rows(runs)
    return {s["title"]: s for s in make_figures(runs, rows, swept)}


def test_every_known_method_has_a_fixed_colour():
    assert set(FIXED) == set(METHODS)
    assert len({method_colour(m) for m in METHODS}) == len(METHODS)
    assert method_colour("new_method") == method_colour("new_method")


def test_curves_one_figure_per_method_one_line_per_config(sweep):
    section = _figures(sweep)["Training curves"]
    names = [name for name, _, _ in section["figures"]]
    assert names == ["curves_supervised_kd.png", "curves_gkd.png"]  # fixed method order
    gkd = section["figures"][1][2]
    assert [ax.get_title() for ax in gkd.axes] == ["loss", "loss/kd", "val/loss"]
    assert all(len(ax.lines) == 2 for ax in gkd.axes)  # β = 0.1 and 0.9, seeds averaged
    labels = [line.get_label() for line in gkd.axes[0].lines]
    assert labels == ["beta=0.1 (mean of 3)", "beta=0.9 (mean of 2)"]  # the partial run's curve counts
    assert all(ax.get_xlabel() == "step" and ax.get_ylabel() == ax.get_title() for ax in gkd.axes)
    (legend,) = gkd.legends  # one shared legend
    assert [t.get_text() for t in legend.get_texts()] == labels
    assert to_rgb(gkd.axes[0].lines[0].get_color()) == to_rgb(method_colour("gkd"))
    assert [ax.get_title() for ax in section["figures"][0][2].axes] == ["loss", "loss/ce", "loss/kd", "val/loss"]


def test_tradeoff_one_line_per_method_with_temperature_points(sweep):
    (name, _, fig), = _figures(sweep)["Performance vs diversity"]["figures"]
    assert name == "tradeoff.png"
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.lines}
    assert list(lines) == ["teacher", "supervised_kd", "gkd"]  # fixed method order
    for method, line in lines.items():
        assert to_rgb(line.get_color()) == to_rgb(method_colour(method))
        assert list(line.get_xdata()) == [65.0, 50.0]  # self_bleu at T = 0.5, 1.0
    assert list(lines["teacher"].get_ydata()) == [75.0, 70.0]
    assert sorted(t.get_text() for t in ax.texts) == sorted(["T=0.5", "T=1"] * 3)
    assert ax.get_xlabel().startswith("Self-BLEU") and ax.get_ylabel() == "accuracy"


def test_sweep_without_fractions_or_two_settings_skips_those_plots(sweep):
    figures = _figures(sweep)
    for title in ("Data efficiency", "Hyperparameter heatmaps"):
        assert figures[title]["figures"] == [] and figures[title]["skipped"]


def test_heatmap_over_two_swept_settings(grid):
    (name, _, fig), = _figures(grid)["Hyperparameter heatmaps"]["figures"]
    assert name == "heatmap_method.lmbda_divergence.beta.png"
    ax = fig.axes[0]  # fig.axes[1] is the colour bar
    assert ax.images[0].get_array().shape == (2, 2)
    assert ax.get_xlabel() == "method.lmbda" and ax.get_ylabel() == "divergence.beta"
    # cell (λ=1, β=0.9): 50 + 9 + 10 + 10 + {0, 3} -> 80.5
    assert "80.5\n(n=2)" in [t.get_text() for t in ax.texts] and len(ax.texts) == 4


def test_data_efficiency_mean_and_std_by_hand(fractions):
    rows, swept = build_rows(collect([fractions]))
    data = S.efficiency_data(primary_rows(rows))["arith"]
    sft = {p["fraction"]: p for p in data["sft"]}
    assert sft[0.25]["mean"] == pytest.approx(30 + 5 + 2.5 + 1.5)  # sft ignores β: BASE + 10·0.5 + 10·f + mean(0, 3)
    assert sft[0.25]["std"] == pytest.approx(2.1213, abs=1e-4) and sft[0.25]["n"] == 2
    (_, _, fig), = _figures(fractions)["Data efficiency"]["figures"]
    ax = fig.axes[0]
    assert len(ax.containers) == 2  # one errorbar series per method
    assert [len(c.lines[0].get_xdata()) for c in ax.containers] == [3, 3]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["gkd", "sft"]
    assert ax.get_xscale() == "linear"  # 0.25 … 1


def test_data_efficiency_spanning_decades_uses_a_log_axis():
    points = [{"fraction": f, "mean": 50.0, "std": 1.0, "n": 3} for f in (0.01, 0.05, 1.0)]
    ax = P.efficiency_figure("arith", "accuracy", {"sft": points}).axes[0]
    assert ax.get_xscale() == "log" and list(ax.containers[0].lines[0].get_xdata()) == [0.01, 0.05, 1.0]


def _drawn_texts(fig) -> list:
    """Titles, axis labels, tick labels within the view, annotations and legend entries."""
    texts = [*fig.texts, *[t for legend in fig.legends for t in (*legend.get_texts(), legend.get_title())]]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis, (low, high) in ((ax.xaxis, sorted(ax.get_xbound())), (ax.yaxis, sorted(ax.get_ybound()))):
            texts += [tick.label1 for tick in axis.get_major_ticks() if low <= tick.get_loc() <= high]
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
    return texts


def _drawn_inside(fig) -> list[str]:
    """Texts whose drawn box leaves the canvas (cut off in the PNG)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    outside = []
    for text in _drawn_texts(fig):
        if not text.get_visible() or not text.get_text().strip():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < canvas.x0 - 1 or box.x1 > canvas.x1 + 1 or box.y0 < canvas.y0 - 1 or box.y1 > canvas.y1 + 1:
            outside.append(text.get_text())
    return outside


def _visible_lines(ax) -> list:
    """Lines a reader can see: two or more points joined, or points drawn with a marker."""
    return [line for line in ax.lines
            if len(line.get_xdata()) >= 2 and line.get_linestyle() not in ("None", "") or line.get_marker() not in ("None", "", None)]


def test_curves_with_a_single_logged_point_are_still_drawn():
    """Issue 14.4: max_steps < log_every left empty axes."""
    terms = {"loss": {"all runs": {"steps": [4], "mean": [2.0], "n": 1}},
             "val/loss": {"all runs": {"steps": [4], "mean": [2.5], "n": 1}}}
    fig = P.curves_figure("sft", "arith", terms)
    assert all(len(_visible_lines(ax)) == 1 for ax in fig.axes if ax.get_title())
    assert _drawn_inside(fig) == []


def test_a_long_legend_does_not_squash_the_curves():
    series = {f"divergence.beta={b / 10:.1f}, method.lmbda={l / 4:.2f}, trainer.lr=0.00{b}": {
        "steps": [25, 50, 75], "mean": [3.0, 2.0, 1.5], "n": 3} for b in range(1, 5) for l in range(3)}
    fig = P.curves_figure("gkd", "arith", {"loss": series, "loss/kd": series, "val/loss": series})
    assert _drawn_inside(fig) == []
    panels = [ax for ax in fig.axes if ax.get_title()]
    width = sum(ax.get_window_extent().width for ax in panels)
    assert width >= 0.6 * fig.bbox.width  # the panels keep most of the width; the legend goes below them


def test_titles_of_tradeoff_and_heatmap_figures_fit_the_canvas():
    """Issue 14.4: their titles were cut off."""
    points = [{"temperature": t, "self_bleu": 80 - 30 * t, "value": 40 - 10 * t, "n": 2} for t in (0.5, 1.0, 1.5)]
    tradeoff = P.tradeoff_figure("wmt14_en_de", "bleu", {"sft": points, "supervised_kd": points})
    grid = {"x": [0.1, 0.5], "y": [0.0, 1.0], "mean": [[1.0, 2.0], [3.0, None]], "n": [[1, 1], [2, 0]]}
    heatmap = P.heatmap_figure("wmt14_en_de", "bleu", "divergence.beta", "method.lmbda", {"gkd": grid})
    for fig in (tradeoff, heatmap):
        assert _drawn_inside(fig) == []
    efficiency = P.efficiency_figure("arith", "accuracy", {"sft": [
        {"fraction": f, "mean": 40.0 + f, "std": 1.0, "n": 3} for f in (0.01, 0.05, 1.0)]})
    assert _drawn_inside(efficiency) == []


def test_acceptance_over_the_stream_is_averaged_smoothed_and_drawn(tmp_path):
    """OSD runs log per-request α: the report draws α against requests, one line per draft configuration."""
    import json

    from .conftest import write_run

    for seed in (0, 1):
        run = tmp_path / f"osd-{seed}"
        write_run(run, "gkd", seed)
        records = [{"step": r // 4 + 1, "request": r, "acceptance_rate": 0.2 + 0.6 * (r >= 20) + 0.01 * seed}
                   for r in range(40)]
        with (run / "metrics.jsonl").open("a") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in records))
    runs = collect([tmp_path])
    rows, swept = build_rows(runs)
    data = S.stream_data(runs, rows, swept)
    (line,) = data["arith"].values()
    assert line["n"] == 2 and line["requests"] == list(range(40))
    assert line["alpha"][0] == pytest.approx(0.205) and line["alpha"][39] == pytest.approx(0.805)
    quarters = S.stream_quarters(data)[0]["quarters"]
    assert quarters[0] == pytest.approx(0.205) and quarters[3] == pytest.approx(0.805)
    fig = P.stream_figure("arith", data["arith"])
    assert len(_visible_lines(fig.axes[0])) == 1 and _drawn_inside(fig) == []
    section = {s["title"]: s for s in make_figures(runs, rows, swept)}
    assert "Speculative acceptance over the stream" in section


def test_data_efficiency_over_labeled_fraction_keeps_variants_of_a_method_apart():
    """A method's ablation variant evaluated at one fraction is neither pooled into the method's point
    nor drawn as a curve; the plain method's curve is over task.labeled_fraction."""
    row = lambda method, fraction, value, alpha=None: {  # noqa: E731
        "task": "arith", "method": method, "task.labeled_fraction": fraction, "method.alpha": alpha, "value": value}
    primary = [row("xkd", 0.01, 10.0, 0.1), row("xkd", 0.01, 12.0, 0.1), row("xkd", 0.05, 20.0, 0.1),
               row("xkd", 0.01, 50.0, 0.5), row("gkd", 0.01, 8.0), row("gkd", 0.05, 18.0)]
    swept = ["task.labeled_fraction", "method.alpha", "seed"]
    data = S.efficiency_data(primary, swept, "task.labeled_fraction")["arith"]
    assert sorted(data) == ["gkd", "xkd: alpha=0.1"]
    assert [(p["fraction"], p["mean"], p["n"]) for p in data["xkd: alpha=0.1"]] == [(0.01, 11.0, 2), (0.05, 20.0, 1)]
    assert S.efficiency_data(primary, swept) == {}  # no task.train_fraction values
    ax = P.efficiency_figure("arith", "accuracy", data, "task.labeled_fraction", "labelled").axes[0]
    assert ax.get_xlabel() == "task.labeled_fraction (labelled)" and len(ax.containers) == 2


def test_many_configurations_of_one_method_on_the_stream_get_valid_distinct_shades():
    line = {"requests": list(range(20)), "alpha": [0.5] * 20, "smoothed": [0.5] * 20, "n": 1}
    data = {f"osd: lr={i}": line for i in range(7)}
    ax = P.stream_figure("arith", data).axes[0]
    colours = [tuple(line.get_color()) for line in ax.get_lines()]
    assert len(set(colours)) == 7 and all(0.0 <= c <= 1.0 for rgb in colours for c in rgb)

"""Figures of blindspot.report checked on their data and labels (not pixels): reference axes, error bars,
legends beside the data, captions that match the line styles, equal curves that stay visible."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection

from blindspot.report import plot_compare_curves, plot_error_vs_ap, plot_model_curve, plot_sweep

DIMS = (1, 4, 16, 128)
LABELS = {"image_auroc": "image AUROC", "image_ap": "image AP", "error_normal": "normal images"}


def drawn(fig):
    """The figure with its layout done, so that legends and axes have their final boxes."""
    FigureCanvasAgg(fig).draw()
    return fig


def legend_outside(ax) -> bool:
    """Whether the axes' legend box lies wholly outside the axes box (it can cover no data)."""
    legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    return legend.x0 >= box.x1 or legend.x1 <= box.x0 or legend.y1 <= box.y0 or legend.y0 >= box.y1


def sweep_rows(intervals: bool) -> list[dict]:
    """Sweep rows whose means sit in a narrow band (0.312–0.322), as in the issue."""
    rows = []
    for k, d in enumerate(DIMS):
        row = {"d": d, "runs": 3, "error_normal_mean": 0.312 + 0.003 * k, "error_normal_std": 0.001}
        for name, mean in (("image_auroc", 0.79 - 0.01 * k), ("image_ap", 0.6 + 0.01 * k)):
            row.update({f"{name}_mean": mean, f"{name}_std": 0.02})
            if intervals:
                row.update({f"{name}_low": mean - 0.05, f"{name}_high": mean + 0.05,
                            f"{name}_vs_best": "best" if k == 0 else "indistinguishable"})
        rows.append(row)
    return rows


def test_sweep_figure_starts_at_zero_marks_chance_and_keeps_legends_beside_the_panels():
    for intervals in (True, False):
        fig = drawn(plot_sweep(sweep_rows(intervals), LABELS, confidence=0.95))
        left, right = fig.axes[:2]
        assert left.get_ylim()[0] == 0 and right.get_ylim() == (0, 1.02)
        chance = [line for line in right.get_lines() if line.get_label() == "chance (AUROC)"]
        assert len(chance) == 1 and set(chance[0].get_ydata()) == {0.5}
        assert legend_outside(left) and legend_outside(right)
        bars = [c for c in right.collections if isinstance(c, LineCollection)]
        assert len(bars) == 2  # one set of error bars per detection metric
        lows = np.sort(np.concatenate([np.asarray(seg)[:, :, 1].min(axis=1) for seg in (b.get_segments() for b in bars)]))
        expected = [row[f"{m}_mean"] - (0.05 if intervals else 0.02) for row in sweep_rows(intervals) for m in ("image_auroc", "image_ap")]
        np.testing.assert_allclose(lows, np.sort(expected))


def test_sweep_figure_without_auroc_has_no_chance_line():
    rows = [{k: v for k, v in row.items() if not k.startswith("image_auroc")} for row in sweep_rows(True)]
    fig = drawn(plot_sweep(rows, LABELS, confidence=0.95))
    assert not [line for line in fig.axes[1].get_lines() if line.get_label() == "chance (AUROC)"]


def test_error_vs_ap_draws_intervals_from_zero_with_the_legend_outside():
    errors, aps = [0.0312, 0.0322], [0.312, 0.321]
    fig = drawn(plot_error_vs_ap(errors, aps, ["d=16", "d=128"], ap_intervals=[(0.28, 0.34), (0.30, 0.35)]))
    ax = fig.axes[0]
    assert ax.get_ylim() == (0, 1.02) and ax.get_xlim()[0] == 0 and ax.get_xlim()[1] > max(errors)
    segments = [np.asarray(c.get_segments()[0]) for c in ax.collections if isinstance(c, LineCollection)]
    assert sorted((seg[:, 1].min(), seg[:, 1].max()) for seg in segments) == [(0.28, 0.34), (0.30, 0.35)]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["d=16", "d=128"] and legend_outside(ax)
    assert "intervals" in ax.get_title()
    bare = drawn(plot_error_vs_ap(errors, aps, ["d=16", "d=128"])).axes[0]
    assert "no intervals recorded" in bare.get_title() and bare.get_ylim()[0] == 0


def curve_result(matched: bool) -> dict:
    x = np.linspace(0, 1, 7)
    counts, edges = np.histogram(np.linspace(0, 1, 50), bins=10, range=(0, 1))
    return {"intensities": x, "ap": x ** 2, "matched_ap": 0.9 * x ** 2, "matched_sigma": 6.26, "matched": matched,
            "histogram_counts": counts, "histogram_edges": edges}


def test_curve_captions_match_the_line_styles_and_equal_curves_stay_visible():
    fig = drawn(plot_compare_curves([curve_result(True), curve_result(False)], ["A", "B"]))
    ax = next(a for a in fig.axes if a.get_legend() is not None)
    lines = {line.get_label(): line for line in ax.get_lines()}
    model_a, model_b = lines["A"], lines["B"]
    np.testing.assert_array_equal(model_a.get_ydata(), model_b.get_ydata())  # equal curves...
    assert model_a.get_marker() != model_b.get_marker() and model_a.get_linewidth() > model_b.get_linewidth()  # ...both seen
    blur_a = next(line for label, line in lines.items() if "blur σ" in label and "no match" not in label)
    blur_b = next(line for label, line in lines.items() if "no match" in label)
    assert blur_a.get_linestyle() == "--" and blur_b.get_linestyle() == ":"
    assert "dashed" in ax.get_title() and "dotted: no match" in ax.get_title() and legend_outside(ax)
    single = drawn(plot_model_curve(curve_result(False)))
    ax = next(a for a in single.axes if a.get_legend() is not None)
    assert [line.get_linestyle() for line in ax.get_lines()] == ["-", ":"] and "dotted: no match" in ax.get_title()

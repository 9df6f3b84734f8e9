"""Every figure and markdown table, drawn from result arrays only, so any figure can be redrawn from a folder.

Plot functions return a :class:`matplotlib.figure.Figure` (built without pyplot: no backend is
switched, no global state) and leave saving to :func:`save_figure`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from blindspot.results import atomic_write

HISTOGRAM_BINS = 100


def foreground_histogram(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges of the foreground (> 0) intensities over [0, 1], stored with every result."""
    return np.histogram(images[images > 0], bins=HISTOGRAM_BINS, range=(0.0, 1.0))


def save_figure(fig: Figure, path: str | Path) -> None:
    """Save as PNG through a temporary name (atomic)."""
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)


def _axes(width: float, height: float, ncols: int = 1):
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols)


def _legend_outside(ax, *, below: bool = False) -> None:
    """The legend beside (or, where a twin axis takes the right side, below) the axes, never over the data."""
    if below:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, borderaxespad=0)
    else:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)


#: Markers and widths that keep equal curves visible: a later curve is thinner and marked otherwise.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _distinct(k: int) -> dict:
    """Line options of the ``k``-th of several curves, so that a curve drawn over an equal one stays visible."""
    return {"marker": _MARKERS[k % len(_MARKERS)], "markersize": 6 - 1.2 * (k % 4), "markevery": (k % 3, 3),
            "lw": 3.2 - 0.9 * (k % 3), "fillstyle": "none"}


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table; a ``|`` inside a cell (``|ΔAP|``) is escaped so it does not split it."""
    def line(cells) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def blind_spot_markdown(table: list[dict]) -> str:
    """The experiment-1 blind-spot table: AP < 0.5 bands, min AP and where, mean AP, per σ.

    Rows with the uncertainty of :func:`blindspot.experiments.uncertainty.blind_spot_rows` also
    state the intensities whose interval lies entirely below 0.5 and those whose interval straddles
    it, and the intervals of the min and mean AP.
    """
    def bands(pairs):
        return ", ".join(f"{a:.2f}–{b:.2f}" for a, b in pairs) or "none"

    def value(row, key):
        interval = row.get(f"{key}_interval")
        return f"{row[key]:.3f}" + ("" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]")

    uncertain = bool(table) and "below_bands" in table[0]
    rows = []
    for row in table:
        cells = [f"{row['sigma']:.2f}", bands(row["blind_bands"])]
        if uncertain:
            cells += [bands(row["below_bands"]), bands(row["straddle_bands"])]
        rows.append([*cells, value(row, "min_ap"), f"{row['min_at']:.2f}", value(row, "mean_ap")])
    header = ["σ", "intensities with AP < 0.5"]
    if uncertain:
        level = f"{100 * table[0]['confidence']:g} %"
        header += [f"{level} interval entirely below 0.5", f"{level} interval straddles 0.5"]
    return markdown_table([*header, "min AP", "at intensity", "mean AP"], rows)


# --------------------------------------------------------------------------------------------
# experiments 1 and 2


def _span(values: np.ndarray) -> tuple[float, float]:
    """An axis's extent for a heatmap: first to last value; a single value gets a unit-wide cell around it
    (an extent of zero width makes matplotlib warn about singular limits)."""
    first, last = float(values[0]), float(values[-1])
    return (first - 0.5, first + 0.5) if first == last else (first, last)


def _grid_extent(intensities: np.ndarray, sigmas: np.ndarray) -> tuple[float, float, float, float]:
    """The heatmaps' extent: σ on x, intensity on y."""
    return (*_span(sigmas), *_span(intensities))


def plot_ap_heatmap(intensities: np.ndarray, sigmas: np.ndarray, ap: np.ndarray, *, title: str = "") -> Figure:
    """AP over the (intensity, σ) grid: σ on the x axis, anomaly intensity on the y axis (MIDL 2022 Fig. 2)."""
    fig, ax = _axes(5.5, 4.5)
    image = ax.imshow(ap, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis",
                      extent=_grid_extent(intensities, sigmas))
    ax.set_xlabel("σ of the Gaussian blur (simulated reconstruction error)")
    ax.set_ylabel("anomaly intensity")
    ax.set_title(title or "average precision of the residual")
    fig.colorbar(image, ax=ax, label="AP")
    return fig


def plot_histogram(counts: np.ndarray, edges: np.ndarray, *, title: str = "") -> Figure:
    """Foreground intensity histogram, intensity on the y axis to sit beside the heatmap."""
    fig, ax = _axes(2.8, 4.5)
    ax.barh(edges[:-1], counts / max(counts.sum(), 1), height=np.diff(edges), align="edge", color="0.35")
    ax.set_ylim(edges[0], edges[-1])
    ax.set_ylabel("intensity")
    ax.set_xlabel("fraction of brain pixels")
    ax.set_title(title or "foreground histogram")
    return fig


def plot_texture_curves(result: dict) -> Figure:
    """Texture AP over σ, each with its closest intensity curve dashed (dotted: no match), and the σ = 0.25 marker
    (MIDL 2022 Fig. 3)."""
    fig, ax = _axes(7.5, 4)
    sigmas = result["sigmas"]
    for k, name in enumerate(result["textures"]):
        (line,) = ax.plot(sigmas, result["ap"][k], label=str(name), **_distinct(k))
        matched = bool(result["matched"][k]) if "matched" in result else True
        ax.plot(sigmas, result["matched_ap"][k], "--" if matched else ":", color=line.get_color(),
                label=f"intensity {result['matched_intensity'][k]:.2f}" + ("" if matched else " (closest; no match)"))
    ax.axvline(0.25, color="0.5", lw=0.8, ls="-.", label="σ = 0.25")
    ax.set_xlabel("σ of the Gaussian blur")
    ax.set_ylabel("average precision")
    ax.set_ylim(0, 1.02)
    _legend_outside(ax)
    ax.set_title("texture anomalies (solid) vs. matched intensity\n(dashed; dotted: no match)", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------
# experiment 3 and compare


def _histogram_backdrop(ax, result: dict) -> None:
    counts, edges = result["histogram_counts"], result["histogram_edges"]
    twin = ax.twinx()
    twin.bar(edges[:-1], counts / max(counts.sum(), 1), width=np.diff(edges), align="edge", color="0.85")
    twin.set_ylabel("fraction of brain pixels", color="0.5")
    twin.tick_params(colors="0.5")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)


def _curve_axes(ax, title: str) -> None:
    ax.set_xlabel("anomaly intensity")
    ax.set_ylabel("average precision")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    _legend_outside(ax, below=True)


def _blur_label(result: dict) -> tuple[str, str]:
    """Line style and legend label of a model's closest blur curve."""
    sigma = float(result["matched_sigma"])
    if bool(result.get("matched", True)):
        return "--", f"blur σ = {sigma:.2f}"
    return ":", f"closest blur σ = {sigma:.2f} (no match within the grid)"


def plot_model_curve(result: dict, *, label: str = "model") -> Figure:
    """AP over the anomaly intensity for the model (solid) and its closest blur (dashed; dotted: no match), over the histogram."""
    fig, ax = _axes(6, 4)
    _histogram_backdrop(ax, result)
    (line,) = ax.plot(result["intensities"], result["ap"], label=label)
    style, blur = _blur_label(result)
    ax.plot(result["intensities"], result["matched_ap"], style, color=line.get_color(), label=blur)
    _curve_axes(ax, "trained model (solid) vs. closest Gaussian blur\n(dashed; dotted: no match within the grid)")
    return fig


def plot_compare_curves(results: Sequence[dict], labels: Sequence[str]) -> Figure:
    """Several models' AP-over-intensity curves, each with its closest blur dashed (dotted: no match) (MIDL 2022 Fig. 1a/3a).

    Each model has its own marker and line width, so a model whose curve equals another's stays visible.
    """
    fig, ax = _axes(7, 5)
    _histogram_backdrop(ax, results[0])
    for k, (result, label) in enumerate(zip(results, labels)):
        (line,) = ax.plot(result["intensities"], result["ap"], label=label, **_distinct(k))
        style, blur = _blur_label(result)
        ax.plot(result["intensities"], result["matched_ap"], style, color=line.get_color(), lw=1, label=f"  {blur}")
    _curve_axes(ax, "trained models (solid, marked) and their closest Gaussian blur\n(dashed; dotted: no match within the grid)")
    return fig


def plot_error_vs_ap(errors: Sequence[float], aps: Sequence[float], labels: Sequence[str], *,
                     ap_intervals: Sequence[tuple] | None = None) -> Figure:
    """Mean L1 reconstruction error (x) against mean AP (y), one point per model (MIDL 2022 Fig. 4b).

    Both axes start at 0, so that small differences look as small as they are; ``ap_intervals``
    (one ``(low, high)`` per model, or None) are drawn as error bars, and the title says when there
    are none. Each model has its own marker, named in the legend beside the axes.
    """
    fig, ax = _axes(7.5, 4)
    intervals = [(np.nan, np.nan) if i is None or i[0] is None else i for i in (ap_intervals or [None] * len(aps))]
    low, high = np.array(intervals, float).reshape(-1, 2).T
    yerr = np.nan_to_num(np.vstack([np.asarray(aps) - low, high - np.asarray(aps)]).clip(min=0))
    for k, (x, y, label) in enumerate(zip(errors, aps, labels)):
        ax.errorbar([x], [y], yerr=yerr[:, k:k + 1], fmt=_MARKERS[k % len(_MARKERS)], color=f"C{k % 10}", capsize=3,
                    label=label)
    ax.set_xlabel("mean L1 reconstruction error (normal images)")
    ax.set_ylabel("mean AP over intensities")
    shown = "bars: intervals of the mean AP" if np.isfinite(low).any() else "no intervals recorded"
    ax.set_title(f"reconstruction error vs. detection ({shown})", fontsize=9)
    ax.set_xlim(0, 1.15 * max(max(errors), 1e-9))
    ax.set_ylim(0, 1.02)
    _legend_outside(ax)
    return fig


# --------------------------------------------------------------------------------------------
# evaluation and sweep


def _thin(*arrays: np.ndarray, limit: int = 20000) -> tuple[np.ndarray, ...]:
    """At most ``limit`` evenly spaced points (first and last kept), for drawing only."""
    n = len(arrays[0])
    if n <= limit:
        return arrays
    index = np.unique(np.linspace(0, n - 1, limit).round().astype(int))
    return tuple(a[index] for a in arrays)


def plot_eval_curves(sets: Sequence[tuple[str, dict | None, dict]], kind: str) -> Figure:
    """PR (``kind="pr"``) or ROC (``"roc"``) curves of ``(label, curve points, metrics)`` sets, AP / AUROC in the legend."""
    fig, ax = _axes(7.4, 4.4)
    for k, (label, curves, metrics) in enumerate(sets):
        if not curves:
            continue
        width = _distinct(k)["lw"]  # a later set is thinner, so that equal curves stay visible
        if kind == "pr":
            recall, precision = _thin(curves["recall"], curves["precision"])
            (line,) = ax.step(np.r_[0, recall], np.r_[precision[0], precision], where="pre", lw=width,
                              label=f"{label}: AP {metrics.get('ap', float('nan')):.3f}")
            ax.axhline(curves["prevalence"], color=line.get_color(), lw=0.8, ls=":")
        else:
            fpr, tpr = _thin(curves["fpr"], curves["tpr"])
            ax.plot(fpr, tpr, lw=width, label=f"{label}: AUROC {metrics.get('auroc', float('nan')):.3f}")
    if kind == "pr":
        ax.set(xlabel="recall", ylabel="precision", title="precision-recall (dotted: prevalence)")
    else:
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC (dashed: chance)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    _legend_outside(ax)
    return fig


def plot_overlay(item: dict, threshold: float) -> Figure:
    """Image, map, thresholded map and ground truth of one case, side by side."""
    fig, axes = _axes(11, 3.2, ncols=4)
    if item["image"] is not None:
        axes[0].imshow(item["image"], cmap="gray")
        if item["label"].any():
            axes[0].contour(item["label"], levels=[0.5], colors="lime", linewidths=0.7)
    else:
        axes[0].text(0.5, 0.5, "no image\n(give the images)", ha="center", va="center")
    shown = axes[1].imshow(item["map"], cmap="magma")
    fig.colorbar(shown, ax=axes[1], shrink=0.8)
    axes[2].imshow(item["prediction"], cmap="gray", vmin=0, vmax=1)
    axes[3].imshow(item["label"], cmap="gray", vmin=0, vmax=1)
    titles = ["image (green: ground truth)", "anomaly map", f"map ≥ {threshold:.4g}", "ground truth"]
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"{item['kind']}: {item['name']} (Dice {item['dice']:.3f})", fontsize=10)
    return fig


def plot_sweep(rows: list[dict], labels: dict[str, str], *, confidence: float | None = None) -> Figure:
    """Reconstruction error vs d (normal and abnormal) and detection metrics vs d (MICCAI 2024 style).

    ``rows`` hold ``d`` and ``{metric}_mean`` / ``{metric}_std`` for each metric of ``labels``
    (``error_*`` metrics go to the left panel); metrics absent from the rows are skipped. Where the
    rows have bootstrap intervals (``{metric}_low`` / ``_high`` and ``_vs_best``, see
    :func:`blindspot.experiments.sweep.sweep_intervals`) the detection bars are those intervals, the
    best d is a star, the d indistinguishable from it are filled and the others hollow; otherwise
    the bars are ± one std. Both panels start at 0 (the detection panel spans [0, 1], with the
    chance line of AUROC at 0.5); the legends lie beside the panels.
    """
    fig, (left, right) = _axes(13, 4.2, ncols=2)
    dims = np.array([row["d"] for row in rows])
    with_intervals = False
    shown = [n for n in labels if f"{n}_low" in rows[0] and not n.startswith("error")]
    for k, (name, label) in enumerate(labels.items()):
        if f"{name}_mean" not in rows[0]:
            continue
        ax = left if name.startswith("error") else right
        mean = np.array([row[f"{name}_mean"] for row in rows])
        if f"{name}_low" in rows[0] and ax is right:
            with_intervals = True
            low, high = (np.array([row[f"{name}_{end}"] for row in rows]) for end in ("low", "high"))
            yerr = np.nan_to_num(np.vstack([mean - low, high - mean]).clip(min=0))
            x = dims * 2.0 ** (0.07 * (shown.index(name) - (len(shown) - 1) / 2))  # side by side on the log axis
            (line,) = ax.plot(x, mean, lw=1, label=label)
            color = line.get_color()
            ax.errorbar(x, mean, yerr=yerr, fmt="none", ecolor=color, capsize=3, lw=1)
            verdict = np.array([row.get(f"{name}_vs_best", "") for row in rows])
            ax.scatter(x[verdict == "indistinguishable"], mean[verdict == "indistinguishable"], color=color, zorder=3, s=28)
            ax.scatter(x[verdict == "lower"], mean[verdict == "lower"], facecolors="white", edgecolors=color, zorder=3, s=28)
            ax.scatter(x[verdict == "best"], mean[verdict == "best"], color=color, marker="*", zorder=4, s=110)
        else:
            std = np.nan_to_num(np.array([row[f"{name}_std"] for row in rows]))
            ax.errorbar(dims, mean, yerr=std, marker="o", capsize=3, label=label)
    if "image_auroc" in labels and "image_auroc_mean" in rows[0]:
        right.axhline(0.5, color="0.5", lw=0.8, ls="--", label="chance (AUROC)")
    left.set_ylim(bottom=0)
    right.set_ylim(0, 1.02)
    for ax, ylabel in ((left, "mean per-pixel loss"), (right, "metric")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_xlabel("latent size d")
        ax.set_ylabel(ylabel)
        _legend_outside(ax)
    left.set_title("reconstruction error of the test images (± std)")
    if with_intervals:
        level = f"{100 * (confidence or 0.95):g} %"
        right.set_title(f"detection ({level} intervals); star: best d, filled: indistinguishable\nfrom it (paired), "
                        "hollow: lower", fontsize=9)
    else:
        right.set_title("detection (± std over repeats)")
    return fig


def plot_differences(rows: Sequence[dict], confidence: float) -> Figure:
    """Paired differences B − A with their intervals, one line per metric and pair (``blindspot compare``).

    ``rows``: dicts with ``label`` (the metric), ``a``, ``b``, ``difference``, ``low``, ``high``;
    a difference whose interval excludes 0 is drawn filled, otherwise hollow.
    """
    n = max(len(rows), 1)
    fig, ax = _axes(7, 1.2 + 0.32 * n)
    for y, row in enumerate(rows):
        low, high = row["low"], row["high"]
        apart = not (np.isnan(low) or low <= 0 <= high)
        ax.plot([low, high], [y, y], color="C0", lw=1.5)
        ax.scatter([row["difference"]], [y], color="C0" if apart else "white", edgecolors="C0", zorder=3, s=30)
    ax.axvline(0, color="0.5", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)), [f"{row['label']}: {row['b']} − {row['a']}" for row in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(f"paired difference ({100 * confidence:g} % interval; filled: excludes 0)")
    ax.set_title("evaluations compared on the same cases")
    return fig


# --------------------------------------------------------------------------------------------
# audit (blindspot audit): every figure takes the audit's result arrays


def _score_colors(n: int) -> list:
    from matplotlib import colormaps

    return [colormaps["tab10"](k % 10) for k in range(n)]


def _histogram_stairs(ax, result: dict) -> None:
    """The foreground histogram as one filled step patch on a twin axis (fast to draw, unlike 100 bars)."""
    counts, edges = result["histogram_counts"], result["histogram_edges"]
    twin = ax.twinx()
    twin.stairs(counts / max(counts.sum(), 1), edges, fill=True, color="0.87")
    twin.set_ylabel("fraction of brain pixels", color="0.5")
    twin.tick_params(colors="0.5")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)


def _audit_modes(result: dict) -> list[str]:
    return ["normal", "anomalous"] if bool(result["has_anomalous"]) else ["normal"]


def plot_audit_profiles(result: dict) -> Figure:
    """AP over the anomaly intensity for every scoring function, one panel per mode, over the foreground histogram.

    The reference score's matched Gaussian blur (experiment 1 on the same images and centres) is dashed.
    """
    modes = _audit_modes(result)
    fig, axes = _axes(6.2 * len(modes), 4.4, ncols=len(modes))
    axes = np.atleast_1d(axes)
    names = [str(n) for n in result["scores"]]
    colors = _score_colors(len(names))
    reference = str(result["reference_score"])
    for ax, mode in zip(axes, modes):
        _histogram_stairs(ax, result)
        for f, name in enumerate(names):
            ax.plot(result["intensities"], result[f"ap_{mode}"][f], color=colors[f], label=name,
                    lw=2.2 if name == reference else 1.2)
        suffix = "" if mode == "normal" else "_anomalous"
        s = int(result[f"matched_sigma_index{suffix}"])
        if s >= 0:
            ax.plot(result["intensities"], result["blur_ap"][:, s], "--", color="0.2", lw=1,
                    label=f"blur σ = {result['sigmas'][s]:.2f}" + ("" if result[f"matched{suffix}"] else " (closest)"))
        ax.axhline(0.5, color="0.6", lw=0.7, ls=":")
        _curve_axes(ax, f"model reconstructs the {mode} image")
    return fig


def plot_blind_bands(result: dict) -> Figure:
    """The healthy foreground histogram (top) and, per scoring function, the intensities with AP < 0.5 (bottom)."""
    mode = str(result["ranking_mode"])
    names = [str(n) for n in result["scores"]]
    colors = _score_colors(len(names))
    fig = Figure(figsize=(7, 1.6 + 0.38 * len(names)), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[1.3, 0.3 * len(names)])
    counts, edges = result["histogram_counts"], result["histogram_edges"]
    top.stairs(counts / max(counts.sum(), 1), edges, fill=True, color="0.6", label="healthy foreground")
    if "rarity_probability" in result:
        p = np.asarray(result["rarity_probability"])
        width = 1 / len(p)
        top.plot((np.arange(len(p)) + 0.5) * width, p * (np.diff(edges).mean() / width), color="C3", lw=1,
                 label="p̂ of the rarity score")
    top.set_ylabel("fraction of pixels")
    top.legend(fontsize=7)
    top.set_title(f"blind band (AP < 0.5, {mode} mode) vs. the healthy histogram", fontsize=10)
    intensities = result["intensities"]
    step = float(np.diff(intensities).mean()) if len(intensities) > 1 else 1.0
    for f, name in enumerate(names):
        blind = np.concatenate([[0], (result[f"ap_{mode}"][f] < 0.5).astype(np.int8), [0]])
        starts, stops = np.flatnonzero(np.diff(blind) == 1), np.flatnonzero(np.diff(blind) == -1)
        spans = [(intensities[a] - step / 2, intensities[b - 1] - intensities[a] + step) for a, b in zip(starts, stops)]
        bottom.broken_barh(spans, (f - 0.4, 0.8), color=colors[f])
    bottom.set_yticks(range(len(names)), names)
    bottom.set_ylim(len(names) - 0.5, -0.5)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("anomaly intensity")
    return fig


def plot_size_curves(result: dict) -> Figure:
    """AP over the anomaly radius at the blindest and the most visible intensity, every scoring function."""
    mode = str(result["ranking_mode"])
    names = [str(n) for n in result["scores"]]
    colors = _score_colors(len(names))
    fig, axes = _axes(11, 4, ncols=2)
    for j, (ax, what) in enumerate(zip(axes, ("blindest", "most visible"))):
        for f, name in enumerate(names):
            ax.plot(result["radii"], result[f"ap_size_{mode}"][f, j], marker="o", ms=3, color=colors[f], label=name)
        ax.set_xlabel("disk radius (pixels of the prepared images)")
        ax.set_ylabel("average precision")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{what} intensity {result['size_intensities'][j]:.2f} ({mode} mode)")
        ax.legend(fontsize=7)
    return fig


def plot_texture_ap(result: dict) -> Figure:
    """AP of the texture anomalies (anomalous mode) per scoring function, grouped by texture."""
    names = [str(n) for n in result["scores"]]
    textures = [str(t) for t in result["textures"]]
    colors = _score_colors(len(names))
    fig, ax = _axes(7, 3.6)
    width = 0.8 / len(names)
    x = np.arange(len(textures))
    for f, name in enumerate(names):
        ax.bar(x + (f - (len(names) - 1) / 2) * width, np.nan_to_num(result["ap_texture"][f]), width, color=colors[f], label=name)
    ax.set_xticks(x, textures)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("average precision")
    ax.set_title("texture anomalies, the model reconstructing the anomalous image")
    ax.legend(fontsize=7, ncols=min(len(names), 4))
    return fig


def plot_audit_case(result: dict, case: int, *, scores: Sequence[str] = ()) -> Figure:
    """One worst case: the anomalous image with its label, the reconstruction, and the maps of ``scores``."""
    names = [str(n) for n in result["scores"]]
    shown = [s for s in dict.fromkeys(scores) if s in names] or names[:1]
    fig, axes = _axes(2.7 * (2 + len(shown)), 3.0, ncols=2 + len(shown))
    image, label = result["worst_images"][case], result["worst_labels"][case]
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].contour(label, levels=[0.5], colors="lime", linewidths=0.7)
    axes[0].set_title("anomalous image (green: label)", fontsize=8)
    axes[1].imshow(result["worst_reconstructions"][case], cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("reconstruction", fontsize=8)
    for ax, name in zip(axes[2:], shown):
        f = names.index(name)
        shown_map = ax.imshow(result["worst_maps"][case, f], cmap="magma")
        fig.colorbar(shown_map, ax=ax, shrink=0.75)
        ax.set_title(f"{name} map (AP {result['worst_ap'][case, f]:.3f})", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    n = int(result["worst_index"][case])
    fig.suptitle(f"image {n}, intensity {float(result['worst_intensity']):.2f}", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------
# whole volumes (pitfalls --volumes --compare-slices)


def blind_spot_comparison_markdown(volume: list[dict], slices: list[dict]) -> str:
    """The blind-band table of whole volumes beside the 2-D one of their central slices, per σ."""
    rows = []
    for a, b in zip(volume, slices):
        bands = [", ".join(f"{lo:.2f}–{hi:.2f}" for lo, hi in row["blind_bands"]) or "none" for row in (a, b)]
        rows.append([f"{a['sigma']:.2f}", *bands, f"{a['min_ap']:.3f}", f"{b['min_ap']:.3f}", f"{a['mean_ap']:.3f}",
                     f"{b['mean_ap']:.3f}"])
    header = ["σ", "AP < 0.5, whole volume", "AP < 0.5, central slice", "min AP, volume", "min AP, slice",
              "mean AP, volume", "mean AP, slice"]
    return markdown_table(header, rows)


def plot_volume_slice_comparison(result: dict) -> Figure:
    """Experiment 1 on whole volumes beside the 2-D experiment on the same anomalies' central slices.

    Three heatmaps over (σ, intensity): whole volumes, central slices, and their difference, then
    the foreground histograms of the volumes and of the slices.
    """
    fig, axes = _axes(17, 4.5, ncols=4)
    intensities, sigmas = result["intensities"], result["sigmas"]
    extent = _grid_extent(intensities, sigmas)
    panels = [(result["ap"], "whole volumes (3-D blur, every voxel)", "viridis", 0, 1),
              (result["slice_ap"], "central slices (2-D blur, every pixel)", "viridis", 0, 1),
              (result["ap"] - result["slice_ap"], "AP(volume) − AP(slice)", "RdBu_r", -1, 1)]
    for ax, (values, title, cmap, low, high) in zip(axes, panels):
        shown = ax.imshow(values, origin="lower", aspect="auto", vmin=low, vmax=high, cmap=cmap, extent=extent)
        if cmap == "viridis" and min(values.shape) > 1:  # a contour needs a 2-D grid
            ax.contour(values, levels=[0.5], colors="white", linewidths=0.8, extent=extent)
        ax.set_xlabel("σ of the Gaussian blur")
        ax.set_ylabel("anomaly intensity")
        ax.set_title(title, fontsize=9)
        fig.colorbar(shown, ax=ax, label="AP" if cmap == "viridis" else "ΔAP")
    hist = axes[3]
    edges = result["histogram_edges"]
    for counts, label in ((result["histogram_counts"], "volumes"), (result["slice_histogram_counts"], "central slices")):
        hist.stairs(counts / max(counts.sum(), 1), edges, orientation="horizontal", label=label)
    hist.set_ylim(edges[0], edges[-1])
    hist.set_ylabel("intensity")
    hist.set_xlabel("fraction of foreground voxels")
    hist.set_title("foreground histograms", fontsize=9)
    hist.legend(fontsize=8)
    fig.suptitle("Where AP < 0.5 (white line): whole volumes vs. the same anomalies' central slices", fontsize=10)
    return fig


def plot_texture_slice_comparison(result: dict) -> Figure:
    """Texture AP over σ on whole volumes (solid) and on the same anomalies' central slices (dashed)."""
    fig, ax = _axes(8, 4)
    sigmas = result["sigmas"]
    for k, name in enumerate(result["textures"]):
        (line,) = ax.plot(sigmas, result["ap"][k], label=f"{name}, whole volume")
        ax.plot(sigmas, result["slice_ap"][k], "--", color=line.get_color(), label=f"{name}, central slice")
    ax.axvline(0.25, color="0.5", lw=0.8, ls="-.", label="σ = 0.25")
    ax.set_xlabel("σ of the Gaussian blur")
    ax.set_ylabel("average precision")
    ax.set_ylim(0, 1.02)
    _legend_outside(ax)
    ax.set_title("texture anomalies: whole volumes (solid) vs. central slices (dashed)")
    return fig

"""Figures and markdown tables drawn from result arrays only, so any figure can be redrawn from a folder.

Plot functions return a :class:`matplotlib.figure.Figure` and leave saving to the caller.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

HISTOGRAM_BINS = 100


def foreground_histogram(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts and edges of the foreground (> 0) intensities over [0, 1], stored with every result."""
    return np.histogram(images[images > 0], bins=HISTOGRAM_BINS, range=(0.0, 1.0))


def plot_ap_heatmap(intensities: np.ndarray, sigmas: np.ndarray, ap: np.ndarray, *, title: str = "") -> Figure:
    """AP over the (intensity, σ) grid: σ on the x axis, anomaly intensity on the y axis (MIDL 2022 Fig. 2)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    image = ax.imshow(
        ap, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis",
        extent=(sigmas[0], sigmas[-1], intensities[0], intensities[-1]),
    )
    ax.set_xlabel("σ of the Gaussian blur (simulated reconstruction error)")
    ax.set_ylabel("anomaly intensity")
    ax.set_title(title or "average precision of the residual")
    fig.colorbar(image, ax=ax, label="AP")
    return fig


def plot_histogram(counts: np.ndarray, edges: np.ndarray, *, title: str = "") -> Figure:
    """Foreground intensity histogram, intensity on the y axis to sit beside the heatmap."""
    fig, ax = plt.subplots(figsize=(2.8, 4.5), layout="constrained")
    ax.barh(edges[:-1], counts / counts.sum(), height=np.diff(edges), align="edge", color="0.35")
    ax.set_ylim(edges[0], edges[-1])
    ax.set_ylabel("intensity")
    ax.set_xlabel("fraction of brain pixels")
    ax.set_title(title or "foreground histogram")
    return fig


def plot_texture_curves(result: dict) -> Figure:
    """Texture AP over σ, each with its matched intensity curve dashed, and the σ = 0.25 marker (MIDL 2022 Fig. 3)."""
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    sigmas = result["sigmas"]
    for k, name in enumerate(result["textures"]):
        (line,) = ax.plot(sigmas, result["ap"][k], label=str(name))
        if "matched_ap" in result:
            ax.plot(sigmas, result["matched_ap"][k], "--", color=line.get_color(),
                    label=f"intensity {result['matched_intensity'][k]:.2f}")
    ax.axvline(0.25, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("σ of the Gaussian blur")
    ax.set_ylabel("average precision")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("texture anomalies vs. matched intensity")
    return fig


def save_figure(fig: Figure, path: str | Path) -> None:
    """Save as PNG through a temporary name (atomic) and close the figure."""
    from blindspot.results import atomic_write

    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def blind_spot_markdown(table: list[dict]) -> str:
    """The experiment-1 blind-spot table: AP < 0.5 bands, min AP and where, mean AP, per σ."""
    rows = []
    for row in table:
        bands = ", ".join(f"{a:.2f}–{b:.2f}" for a, b in row["blind_bands"]) or "none"
        rows.append([f"{row['sigma']:.2f}", bands, f"{row['min_ap']:.3f}", f"{row['min_at']:.2f}", f"{row['mean_ap']:.3f}"])
    return markdown_table(["σ", "intensities with AP < 0.5", "min AP", "at intensity", "mean AP"], rows)

"""MIDL 2022 experiment 3: the intensity grid with a trained model's reconstruction instead of a blur.

For every image and every anomaly intensity i, a disk of intensity i (radius 20 at 256 px, one centre
per image shared by every intensity) is placed inside the brain, and the anomaly map is
``|x̂ − x_anomalous|`` where x̂ is the model's reconstruction of

* ``"normal"``: the normal image. x̂ then does not depend on i: one model pass per image, and the
  negatives (pixels outside the label) are sorted once and shared by every intensity, exactly as
  the blur grid of experiment 1 shares them (:func:`blindspot.experiments.grid.reconstruction_ap`);
* ``"anomalous"``: the anomalous image itself (what a deployed model sees): one model pass per
  (image, intensity), batched, and AP per map with :func:`blindspot.metrics.average_precision_batch`.

Images whose size differs from the model's input size are first made square (zero padding around
the centre) and resized to it (:func:`fit_to_model`), and the radius is scaled by the same factor.
The model's AP curve is matched to the σ column of an experiment-1 blur grid on the same images and
centres with the smallest L1 distance: "this model behaves like a Gaussian blur of σ".

``compare`` draws several models' curves with their matched blur curves (MIDL 2022 Fig. 1a/3a) and
the reconstruction-error-versus-AP scatter (Fig. 4b).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from blindspot.anomalies import anomaly_labels, sample_centers
from blindspot.data import DataOptions, ImageSet
from blindspot.errors import BlindspotError
from blindspot.experiments.grid import reconstruction_ap
from blindspot.experiments.pitfalls import (
    blind_spot_table,
    intensity_experiment,
    intensity_grid_axes,
    match_curves,
    random_streams,
)
from blindspot.experiments.runs import load_intensity_match
from blindspot.metrics import average_precision_batch
from blindspot.report import foreground_histogram, markdown_table, save_figure
from blindspot.results import CACHE, check_out_dir, load_json, provenance, result_folder, save_npz, write_json

RECONSTRUCT = ("normal", "anomalous")
COMMAND = "pitfalls model"


# --------------------------------------------------------------------------------------------
# model and images


def load_checkpoint_model(checkpoint: str | Path, *, device: str | None = None):
    """The model (eval mode) and the checkpoint record of a ``blindspot train`` checkpoint file.

    ``device=None`` picks CUDA, then MPS, then the CPU. Raises a BlindspotError when the file is
    missing or is not a blindspot checkpoint.
    """
    from blindspot.checkpoint import load_checkpoint, load_model

    path = Path(checkpoint)
    if not path.is_file():
        raise BlindspotError(
            f"--checkpoint '{path}' does not exist or is not a file; expected a .pt file written by blindspot train."
        )
    record = load_checkpoint(path)
    return load_model(path, device=device), record


def fit_to_model(images: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Images ``(N, H, W)`` as the model's ``size`` × ``size`` input, and the scale factor applied.

    The same preparation as the training images (:func:`blindspot.training.resize_images`:
    centred zero padding to a square of side max(H, W), then antialiased bilinear resizing, which
    keeps values in [0, 1] and the far background at exactly 0). Images that already have the
    model's size are returned unchanged (scale 1).
    """
    from blindspot.training import resize_images

    if images.shape[1:] == (size, size):
        return images, 1.0
    return resize_images(images, size), size / max(images.shape[1:])


# --------------------------------------------------------------------------------------------
# the experiment


def model_intensity_experiment(
    model,
    images: np.ndarray,
    *,
    intensities: Sequence[float],
    radius: float = 20,
    seed: int = 0,
    centers: np.ndarray | None = None,
    reconstruct: str = "normal",
    input_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 64,
    device: str | None = None,
) -> dict[str, np.ndarray]:
    """Experiment 3: AP of ``|x̂ − x_anomalous|`` for a disk of every intensity, x̂ from ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        A reconstruction model whose input size equals the images' size.
    images : ndarray of float32, shape (N, H, W)
        Normal images in [0, 1] (foreground > 0).
    intensities : sequence of float, length I
    radius, seed, centers
        As in :func:`blindspot.experiments.pitfalls.intensity_experiment` (same seed and images →
        the same centres as experiment 1).
    reconstruct : {"normal", "anomalous"}
        Which image the model reconstructs (see the module docstring).
    input_range : (float, float)
        The value range the model was trained on (``checkpoint["config"]["input_range"]``).

    Returns
    -------
    dict with ``intensities`` (I,), ``ap`` (I,) mean over images, ``ap_per_image`` (N, I),
    ``residual_mean`` (I,) (mean of the anomaly map over pixels and images), ``centers`` (N, 2),
    ``recon_error`` (scalar: mean |x̂ − x| of the normal images' reconstructions over all pixels),
    ``recon_error_per_image`` (N,) and ``reconstructions`` (N, H, W), the normal reconstructions.
    """
    from blindspot.training import reconstruct as run_model

    if reconstruct not in RECONSTRUCT:
        raise BlindspotError(f"--reconstruct must be 'normal' or 'anomalous'; got {reconstruct!r}.")
    intensities = np.asarray(intensities, float)
    centers = sample_centers(images, random_streams(seed)[0]) if centers is None else np.asarray(centers, np.int64)
    labels = anomaly_labels(images, centers, radius)
    values = intensities.astype(images.dtype)
    options = dict(input_range=tuple(input_range), batch_size=batch_size, device=device)
    normal = run_model(model, images, **options)
    recon_error = np.abs(normal - images).mean(axis=(1, 2), dtype=np.float64)
    n_images, n_values = len(images), len(values)
    ap = np.empty((n_images, n_values))
    residual = np.empty((n_images, n_values))
    if reconstruct == "normal":
        for n in range(n_images):
            ap[n], residual[n] = reconstruction_ap(images[n], labels[n], values[:, None], normal[n])
    else:
        # Several images per model call when the grid is smaller than a batch.
        group = max(1, batch_size // n_values)
        for start in tqdm(range(0, n_images, group), desc="anomalous reconstructions", unit="img", leave=False):
            stop = min(start + group, n_images)
            label = np.repeat(labels[start:stop], n_values, axis=0)  # (g·I, H, W), image-major
            intensity = np.tile(values, stop - start)[:, None, None]
            anomalous = np.where(label, intensity, np.repeat(images[start:stop], n_values, axis=0))
            maps = np.abs(run_model(model, anomalous, **options) - anomalous)
            ap[start:stop] = average_precision_batch(label, maps).reshape(stop - start, n_values)
            residual[start:stop] = maps.mean(axis=(1, 2), dtype=np.float64).reshape(stop - start, n_values)
    return {
        "intensities": intensities,
        "ap": ap.mean(axis=0),
        "ap_per_image": ap,
        "residual_mean": residual.mean(axis=0),
        "centers": centers,
        "recon_error": np.float64(recon_error.mean()),
        "recon_error_per_image": recon_error,
        "reconstructions": normal,
    }


def match_blur(ap: np.ndarray, blur_ap: np.ndarray) -> int:
    """Index of the σ column of ``blur_ap`` (I, S) closest (L1) to the model curve ``ap`` (I,)."""
    return int(match_curves(np.asarray(ap)[None, :], np.asarray(blur_ap).T)[0])


def _reference(imageset: ImageSet, images: np.ndarray, parameters: dict, match: Path | None, folder: Path,
               intensities: np.ndarray, workers: int | None) -> dict:
    """The blur grid to match against: loaded from ``match`` or computed on ``images`` (sampled centres)."""
    if match is None:
        sigmas = intensity_grid_axes(len(intensities))[1]
        return intensity_experiment(images, intensities=intensities, sigmas=sigmas, radius=parameters["radius_used"],
                                    seed=parameters["seed"], workers=workers, cache_dir=folder / CACHE)
    if parameters["scale"] != 1.0:
        raise BlindspotError(
            f"--match '{match}' holds a blur grid at {images.shape[1] / parameters['scale']:g} px but the model takes "
            f"{parameters['size']} px images; omit --match to compute the blur grid on the resized images."
        )
    saved = load_json(match / "config.json").get("parameters", {})
    sigmas = intensity_grid_axes(1, saved.get("n_sigmas", 100), saved.get("sigma_max", 5.0))[1]
    reference = load_intensity_match(match, imageset, parameters["radius"], sigmas)
    if reference["intensities"].shape != intensities.shape or not np.allclose(reference["intensities"], intensities):
        raise BlindspotError(f"--match '{match}' has another intensity grid; use the same --n-intensities.")
    return reference


def write_model(
    folder: Path,
    imageset: ImageSet,
    parameters: dict,
    *,
    model,
    record: dict,
    match: Path | None = None,
    device: str | None = None,
    workers: int | None = None,
) -> dict:
    """Compute experiment 3 for ``model`` on ``imageset`` and write its files into ``folder``; returns the arrays.

    ``parameters`` holds the data options and ``radius``, ``n_intensities``, ``seed``,
    ``reconstruct``, ``batch_size``, ``save_inputs`` and ``checkpoint``; the size, scale and
    scaled radius actually used are added to it.
    """
    intensities = intensity_grid_axes(parameters["n_intensities"])[0]
    images, scale = fit_to_model(imageset.images, model.size)
    parameters = {**parameters, "size": model.size, "scale": scale, "radius_used": parameters["radius"] * scale}
    reference = _reference(imageset, images, parameters, match, folder, intensities, workers)
    input_range = tuple(record["config"].get("input_range", (0.0, 1.0)))
    result = model_intensity_experiment(
        model, images, intensities=intensities, radius=parameters["radius_used"], centers=reference["centers"],
        reconstruct=parameters["reconstruct"], input_range=input_range, batch_size=parameters["batch_size"], device=device,
    )
    reconstructions = result.pop("reconstructions")
    s = match_blur(result["ap"], reference["ap"])
    counts, edges = foreground_histogram(images)
    arrays = {
        **result,
        "sigmas": reference["sigmas"],
        "blur_ap": reference["ap"],
        "matched_sigma_index": np.int64(s),
        "matched_sigma": np.float64(reference["sigmas"][s]),
        "matched_ap": reference["ap"][:, s],
        "matched_l1": np.float64(np.abs(result["ap"] - reference["ap"][:, s]).sum()),
        "histogram_counts": counts,
        "histogram_edges": edges,
    }
    if parameters["save_inputs"]:
        arrays.update(inputs=images, reconstructions=reconstructions)
    save_npz(folder / "results.npz", **arrays)
    config = {
        "command": COMMAND,
        "parameters": parameters,
        "seed": parameters["seed"],
        "model": record["model"],
        "checkpoint": {"path": str(parameters["checkpoint"]), "step": record.get("step"),
                       "preset": record["config"].get("preset"), "input_range": list(input_range),
                       "version": record.get("version")},
        "match": str(match) if match is not None else "computed on the same images and centres",
        "data": imageset.source,
        "images": imageset.names,
        "versions": {**provenance(), "torch": _torch_version()},
    }
    write_json(folder / "config.json", config)
    (folder / "summary.md").write_text(_summary(arrays, config, len(imageset)))
    save_figure(plot_model_curve(arrays, label=model_label(record["model"])), folder / "curve.png")
    return arrays


def _torch_version() -> str:
    import torch

    return torch.__version__


def model_label(model_config: dict) -> str:
    """A short name for a model: its registry name and the options that differ from the defaults."""
    from blindspot.models import model_options

    name = model_config["name"]
    try:
        defaults = model_options(name)
    except BlindspotError:
        defaults = {}
    changed = [f"{k}={v}" for k, v in model_config.items() if k != "name" and defaults.get(k) != v]
    return " ".join([name, *changed])


def _summary(arrays: dict, config: dict, n_images: int) -> str:
    p = config["parameters"]
    label = model_label(config["model"])
    curves = np.stack([arrays["ap"], arrays["matched_ap"]], axis=1)
    table = blind_spot_table(arrays["intensities"], np.array([0.0, 1.0]), curves, at_sigmas=(0.0, 1.0))
    rows = []
    for name, row in zip((label, f"blur σ = {arrays['matched_sigma']:.2f}"), table):
        bands = ", ".join(f"{a:.2f}–{b:.2f}" for a, b in row["blind_bands"]) or "none"
        rows.append([name, f"{row['mean_ap']:.3f}", f"{row['min_ap']:.3f}", f"{row['min_at']:.2f}", bands])
    resized = f", resized to {p['size']} px (radius {p['radius_used']:g})" if p["scale"] != 1.0 else ""
    return (
        f"# Experiment 3: {label}, reconstruction of the {p['reconstruct']} image\n\n"
        f"Checkpoint `{config['checkpoint']['path']}` (step {config['checkpoint']['step']}); {n_images} images from "
        f"`{config['data']['data']}`{resized}; disk radius {p['radius']}, {len(arrays['intensities'])} intensities, "
        f"seed {p['seed']}; blur grid {config['match']}.\n\n"
        f"Mean L1 reconstruction error of the normal images: {float(arrays['recon_error']):.5f}. "
        f"The model's curve is closest to a Gaussian blur of σ = {float(arrays['matched_sigma']):.3f} "
        f"(L1 distance {float(arrays['matched_l1']):.3f} over the intensities).\n\n"
        + markdown_table(["reconstruction", "mean AP", "min AP", "at intensity", "intensities with AP < 0.5"], rows)
        + "\n"
    )


def run_model(
    out: str | Path,
    checkpoint: str | Path,
    data: DataOptions = DataOptions(),
    *,
    reconstruct: str = "normal",
    radius: float = 20,
    n_intensities: int = 100,
    seed: int = 0,
    match: str | Path | None = None,
    save_inputs: bool = False,
    batch_size: int = 64,
    device: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Experiment 3 (``blindspot pitfalls model``) into the result folder ``out``."""
    check_out_dir(out, overwrite=overwrite)
    if reconstruct not in RECONSTRUCT:
        raise BlindspotError(f"--reconstruct must be 'normal' or 'anomalous'; got {reconstruct!r}.")
    if batch_size < 1:
        raise BlindspotError(f"--batch-size must be at least 1; got {batch_size}.")
    intensity_grid_axes(n_intensities)
    model, record = load_checkpoint_model(checkpoint, device=device)
    parameters = dict(asdict(data), checkpoint=str(checkpoint), reconstruct=reconstruct, radius=radius,
                      n_intensities=n_intensities, seed=seed, batch_size=batch_size, save_inputs=save_inputs)
    imageset = data.load()
    with result_folder(out, overwrite=overwrite) as folder:
        write_model(folder, imageset, parameters, model=model, record=record,
                    match=Path(match) if match else None, device=device, workers=workers)
    return Path(out)


# --------------------------------------------------------------------------------------------
# figures


def plot_model_curve(result: dict, *, label: str = "model"):
    """AP over the anomaly intensity for the model (solid) and its matched blur (dashed), over the histogram."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    _histogram_backdrop(ax, result)
    (line,) = ax.plot(result["intensities"], result["ap"], label=label)
    ax.plot(result["intensities"], result["matched_ap"], "--", color=line.get_color(),
            label=f"blur σ = {float(result['matched_sigma']):.2f}")
    _curve_axes(ax, "trained model vs. matched Gaussian blur")
    return fig


def plot_compare_curves(results: Sequence[dict], labels: Sequence[str]):
    """Several models' AP-over-intensity curves, each with its matched blur dashed (MIDL 2022 Fig. 1a/3a)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    _histogram_backdrop(ax, results[0])
    for result, label in zip(results, labels):
        (line,) = ax.plot(result["intensities"], result["ap"], label=label)
        ax.plot(result["intensities"], result["matched_ap"], "--", color=line.get_color(), lw=1,
                label=f"  blur σ = {float(result['matched_sigma']):.2f}")
    _curve_axes(ax, "trained models (solid) and their matched Gaussian blur (dashed)")
    return fig


def plot_error_vs_ap(errors: Sequence[float], aps: Sequence[float], labels: Sequence[str]):
    """Mean L1 reconstruction error (x) against mean AP (y), one labelled point per model (MIDL 2022 Fig. 4b)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    ax.scatter(errors, aps, color="C0")
    for x, y, label in zip(errors, aps, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("mean L1 reconstruction error (normal images)")
    ax.set_ylabel("mean AP over intensities")
    ax.set_title("reconstruction error vs. detection")
    ax.margins(x=0.3, y=0.15)  # room for the labels
    return fig


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
    ax.set_title(title)
    ax.legend(fontsize=7)


# --------------------------------------------------------------------------------------------
# compare


def load_model_result(folder: str | Path) -> tuple[dict, dict]:
    """The arrays and config of an experiment-3 result folder, with clear errors for anything else."""
    folder = Path(folder)
    config = load_json(folder / "config.json")
    if config.get("command") != COMMAND:
        raise BlindspotError(f"'{folder}' is not an experiment-3 (pitfalls model) result folder.")
    keys = ("intensities", "ap", "matched_ap", "matched_sigma", "recon_error", "histogram_counts", "histogram_edges")
    try:
        with np.load(folder / "results.npz") as saved:
            arrays = {k: saved[k] for k in keys}
    except (OSError, KeyError, ValueError) as err:
        raise BlindspotError(f"'{folder}': results.npz is missing or unreadable ({err}).") from None
    return arrays, config


def compare_models(result_dirs: Sequence[str | Path], out: str | Path, *, overwrite: bool = False) -> Path:
    """``blindspot pitfalls compare``: curves, error-vs-AP scatter and a table for several experiment-3 results."""
    check_out_dir(out, overwrite=overwrite)
    if not result_dirs:
        raise BlindspotError("pitfalls compare needs at least one experiment-3 result folder.")
    loaded = [load_model_result(d) for d in result_dirs]
    labels = [model_label(config["model"]) + (" (anomalous)" if config["parameters"]["reconstruct"] == "anomalous" else "")
              for _, config in loaded]
    if len(set(labels)) < len(labels):  # e.g. repeats of one configuration: tell them apart by folder
        labels = [f"{label} [{Path(d).name}]" for label, d in zip(labels, result_dirs)]
    results = [arrays for arrays, _ in loaded]
    errors = [float(r["recon_error"]) for r in results]
    mean_ap = [float(r["ap"].mean()) for r in results]
    rows = []
    for label, (arrays, config), error, ap, folder in zip(labels, loaded, errors, mean_ap, result_dirs):
        options = ", ".join(f"{k}={v}" for k, v in config["model"].items() if k != "name")
        rows.append([label, options, config["parameters"]["reconstruct"], f"{error:.5f}", f"{ap:.3f}",
                     f"{float(arrays['matched_sigma']):.3f}", f"`{folder}`"])
    header = ["model", "options", "reconstructs", "recon error (L1)", "mean AP", "matched σ", "result"]
    with result_folder(out, overwrite=overwrite) as folder:
        write_json(folder / "config.json", {"command": "pitfalls compare", "results": [str(d) for d in result_dirs],
                                             "labels": labels, "versions": provenance()})
        save_npz(folder / "results.npz", labels=np.asarray(labels), recon_error=np.asarray(errors), mean_ap=np.asarray(mean_ap),
                 matched_sigma=np.asarray([float(r["matched_sigma"]) for r in results]))
        (folder / "summary.md").write_text(
            "# Experiment 3: trained models compared\n\n"
            "Mean L1 reconstruction error of the normal images against the mean AP over the intensity grid, and the σ of "
            "the Gaussian blur each model's AP curve is closest to (MIDL 2022 Fig. 1a, 3a and 4b).\n\n"
            f"{markdown_table(header, rows)}\n\n![curves](curves.png) ![error vs AP](error_vs_ap.png)\n"
        )
        save_figure(plot_compare_curves(results, labels), folder / "curves.png")
        save_figure(plot_error_vs_ap(errors, mean_ap, labels), folder / "error_vs_ap.png")
    return Path(out)

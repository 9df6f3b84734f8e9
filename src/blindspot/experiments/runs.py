"""Result-folder runs of the pitfall experiments: load the data, compute, write a self-describing folder.

Each ``run_*`` function is what one CLI command calls. A folder holds ``results.npz`` (every array a
figure needs), ``config.json`` (parameters, seed, data source and files, versions), ``summary.md``
and PNG figures; it appears only when complete (see :func:`blindspot.results.result_folder`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from blindspot.data import DataOptions, ImageSet
from blindspot.errors import BlindspotError
from blindspot.experiments.pitfalls import (
    blind_spot_table,
    intensity_experiment,
    intensity_grid_axes,
    match_curves,
    texture_experiment,
)
from blindspot.report import (
    blind_spot_markdown,
    foreground_histogram,
    markdown_table,
    plot_ap_heatmap,
    plot_histogram,
    plot_texture_curves,
    save_figure,
)
from blindspot.results import CACHE, check_out_dir, load_json, provenance, result_folder, save_npz, write_json


def _config(command: str, imageset: ImageSet, parameters: dict) -> dict:
    return {
        "command": command,
        "parameters": parameters,
        "seed": parameters.get("seed"),
        "data": imageset.source,
        "images": imageset.names,
        "versions": provenance(),
    }


def write_intensity(folder: Path, imageset: ImageSet, parameters: dict, *, workers: int | None = None) -> dict:
    """Compute experiment 1 on ``imageset`` and write its files into ``folder``; returns the arrays."""
    intensities, sigmas = intensity_grid_axes(parameters["n_intensities"], parameters["n_sigmas"], parameters["sigma_max"])
    result = intensity_experiment(
        imageset.images, intensities=intensities, sigmas=sigmas, radius=parameters["radius"],
        seed=parameters["seed"], workers=workers, cache_dir=folder / CACHE,
    )
    counts, edges = foreground_histogram(imageset.images)
    arrays = {**result, "histogram_counts": counts, "histogram_edges": edges}
    if parameters["save_inputs"]:
        arrays["inputs"] = imageset.images
    save_npz(folder / "results.npz", **arrays)
    write_json(folder / "config.json", _config("pitfalls intensity", imageset, parameters))
    equalized = " (histogram-equalised)" if imageset.source.get("equalize") else ""
    table = blind_spot_table(result["intensities"], result["sigmas"], result["ap"])
    (folder / "summary.md").write_text(
        f"# Experiment 1: anomaly intensity × reconstruction error{equalized}\n\n"
        f"{len(imageset)} images from `{imageset.source['data']}`, disk radius {parameters['radius']}, "
        f"{len(intensities)} intensities × {len(sigmas)} σ in [0, {parameters['sigma_max']}], seed {parameters['seed']}.\n\n"
        f"{blind_spot_markdown(table)}\n\n"
        f"Mean AP over the whole grid: {result['ap'].mean():.3f}.\n"
    )
    save_figure(plot_ap_heatmap(result["intensities"], result["sigmas"], result["ap"], title=f"AP of |blur(x) − x_anomalous|{equalized}"), folder / "heatmap.png")
    save_figure(plot_histogram(counts, edges), folder / "histogram.png")
    return arrays


def run_intensity(
    out: str | Path,
    data: DataOptions = DataOptions(),
    *,
    radius: float = 20,
    n_intensities: int = 100,
    n_sigmas: int = 100,
    sigma_max: float = 5.0,
    seed: int = 0,
    save_inputs: bool = False,
    workers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Experiment 1 (``blindspot pitfalls intensity``) into the result folder ``out``."""
    parameters = dict(asdict(data), radius=radius, n_intensities=n_intensities, n_sigmas=n_sigmas,
                      sigma_max=sigma_max, seed=seed, save_inputs=save_inputs)
    return _run(out, data, parameters, overwrite,
                lambda folder, imageset: write_intensity(folder, imageset, parameters, workers=workers))


def _run(out, data: DataOptions, parameters: dict, overwrite: bool, write) -> Path:
    """Check the output and the grid axes, load the data, then ``write(folder, imageset)`` atomically."""
    check_out_dir(out, overwrite=overwrite)
    intensity_grid_axes(parameters["n_intensities"], parameters["n_sigmas"], parameters["sigma_max"])  # fail before loading
    imageset = data.load()
    with result_folder(out, overwrite=overwrite) as folder:
        write(folder, imageset)
    return Path(out)


def load_intensity_match(match: Path, imageset: ImageSet, radius: float, sigmas: np.ndarray) -> dict:
    """An experiment-1 result to match textures against; it must be on the same images and σ grid."""
    config = load_json(match / "config.json")
    if config.get("command") != "pitfalls intensity":
        raise BlindspotError(f"--match '{match}' is not an experiment-1 (pitfalls intensity) result folder.")
    try:
        with np.load(match / "results.npz") as saved:
            result = {k: saved[k] for k in ("intensities", "sigmas", "ap", "centers")}
    except (OSError, KeyError, ValueError) as err:
        raise BlindspotError(f"--match '{match}': results.npz is missing or unreadable ({err}).") from None
    if config["data"] != imageset.source or config["images"] != imageset.names:
        raise BlindspotError(f"--match '{match}' was computed on other images ({config['data']}); use the same data options.")
    if config["parameters"]["radius"] != radius:
        raise BlindspotError(f"--match '{match}' used radius {config['parameters']['radius']}, not {radius}.")
    if result["sigmas"].shape != sigmas.shape or not np.allclose(result["sigmas"], sigmas):
        raise BlindspotError(f"--match '{match}' has another σ grid; use the same --n-sigmas and --sigma-max.")
    return result


def write_texture(
    folder: Path, imageset: ImageSet, parameters: dict, *, match: Path | None = None, workers: int | None = None
) -> dict:
    """Compute experiment 2 on ``imageset`` and write its files into ``folder``; returns the arrays.

    Curves are matched to ``match`` (an experiment-1 folder on the same images, whose centres are
    reused) or to an intensity grid computed in the same pass.
    """
    intensities, sigmas = intensity_grid_axes(parameters["n_intensities"], parameters["n_sigmas"], parameters["sigma_max"])
    common = dict(sigmas=sigmas, radius=parameters["radius"], seed=parameters["seed"], workers=workers, cache_dir=folder / CACHE)
    if match is not None:
        reference = load_intensity_match(Path(match), imageset, parameters["radius"], sigmas)
        result = texture_experiment(imageset.images, centers=reference["centers"], **common)
        intensities, reference_ap = reference["intensities"], reference["ap"]
    else:
        result = texture_experiment(imageset.images, match_intensities=intensities, **common)
        reference_ap = result["intensity_ap"]
    index = match_curves(result["ap"], reference_ap)
    arrays = {
        **result,
        "matched_intensity_index": index,
        "matched_intensity": intensities[index],
        "matched_ap": reference_ap[index],
        "matched_l1": np.abs(result["ap"] - reference_ap[index]).sum(axis=1),
    }
    if parameters["save_inputs"]:
        arrays["inputs"] = imageset.images
    save_npz(folder / "results.npz", **arrays)
    config = _config("pitfalls texture", imageset, parameters)
    config["match"] = str(match) if match is not None else "computed on the same images and centres"
    write_json(folder / "config.json", config)
    s25 = int(np.argmin(np.abs(sigmas - 0.25)))
    s1 = int(np.argmin(np.abs(sigmas - 1.0)))
    rows = [
        [name, f"{arrays['matched_intensity'][k]:.3f}", f"{arrays['matched_l1'][k]:.3f}",
         f"{result['ap'][k, s25]:.3f}", f"{result['ap'][k, s1]:.3f}", f"{result['ap'][k].mean():.3f}"]
        for k, name in enumerate(result["textures"])
    ]
    header = ["texture", "matched intensity", "L1 to match", f"AP at σ={sigmas[s25]:.2f}", f"AP at σ={sigmas[s1]:.2f}", "mean AP"]
    (folder / "summary.md").write_text(
        "# Experiment 2: texture anomalies × reconstruction error\n\n"
        f"{len(imageset)} images from `{imageset.source['data']}`, radius {parameters['radius']}, "
        f"{len(sigmas)} σ in [0, {parameters['sigma_max']}], seed {parameters['seed']}; matched to {config['match']}.\n\n"
        f"{markdown_table(header, rows)}\n"
    )
    save_figure(plot_texture_curves(arrays), folder / "textures.png")
    return arrays


def run_texture(
    out: str | Path,
    data: DataOptions = DataOptions(),
    *,
    radius: float = 20,
    n_intensities: int = 100,
    n_sigmas: int = 100,
    sigma_max: float = 5.0,
    seed: int = 0,
    match: str | Path | None = None,
    save_inputs: bool = False,
    workers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Experiment 2 (``blindspot pitfalls texture``) into the result folder ``out``."""
    parameters = dict(asdict(data), radius=radius, n_intensities=n_intensities, n_sigmas=n_sigmas,
                      sigma_max=sigma_max, seed=seed, save_inputs=save_inputs)
    match = Path(match) if match else None
    return _run(out, data, parameters, overwrite,
                lambda folder, imageset: write_texture(folder, imageset, parameters, match=match, workers=workers))

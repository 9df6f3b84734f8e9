"""Result folders of the pitfall experiments on whole volumes (``blindspot pitfalls … --volumes``).

Each ``run_volume_*`` function is what one CLI command calls with ``--volumes``. A folder holds
``results.npz`` (every array a figure needs), ``config.json`` (parameters, seed, data source,
volume names, input hashes, versions), ``summary.md`` and PNG figures, written through
:mod:`blindspot.results` (the output rule; the folder appears only when complete). Radii are in
voxels, or in millimetres with ``radius_unit="mm"`` (each volume's header spacing).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from blindspot.data import DataConfig, resolve, whole_volumes
from blindspot.data.io import nifti_spacing
from blindspot.data.nifti import DEFAULT_SLICE
from blindspot.errors import BlindspotError
from blindspot.execution import Execution, execution_record, open_pool
from blindspot.metrics.bootstrap import CONFIDENCE, N_RESAMPLES, mean_intervals
from blindspot.experiments.model_pitfalls import RECONSTRUCT, match_blur
from blindspot.experiments.pitfalls import (
    blind_spot_table,
    intensity_grid_axes,
    match_curves,
    match_quality,
    match_rule,
)
from blindspot.experiments.runs import (
    COMMANDS,
    bootstrap_sentence,
    centers_file,
    centers_input,
    grid_parameters,
    model_label,
    sigma_text,
)
from blindspot.experiments.uncertainty import bootstrap_settings, grid_intervals, interval_text
from blindspot.experiments.volumes import (
    RADIUS_UNITS,
    mm_spacing,
    volume_intensity_experiment,
    volume_model_experiment,
    volume_texture_experiment,
)
from blindspot.report import (
    blind_spot_comparison_markdown,
    blind_spot_markdown,
    markdown_table,
    plot_ap_heatmap,
    plot_histogram,
    plot_model_curve,
    plot_texture_curves,
    plot_texture_slice_comparison,
    plot_volume_slice_comparison,
    save_figure,
)
from blindspot.results import CACHE, check_output, input_hashes, load_json, provenance, result_folder, save_npz, write_json, write_text
from blindspot.wording import count

__all__ = ["TEMPLATE_SLICE", "run_volume_intensity", "run_volume_model", "run_volume_texture", "volume_data"]

#: Default central slice of ``compare_slices`` on the embedded template (axis 2): the middle of its 2-D test slices.
TEMPLATE_SLICE = 78
#: Arrays of the volume loop that are not written to results.npz (they go to config.json).
_NOT_ARRAYS = ("names", "fingerprint")


def volume_data(data: DataConfig, *, compare_slices: bool = False) -> tuple[DataConfig, tuple[int, ...] | None]:
    """The data config of a whole-volume run and the slices anomaly centres are drawn on (None: anywhere).

    ``slices`` restrict the centres to those slices along ``axis``; ``compare_slices`` without
    slices uses the protocol's slice (128; the template's middle test slice, 78, along axis 2).
    """
    if data.volume_regex is not None:
        raise BlindspotError("`volume_regex` names the volumes of 2-D images; whole volumes are named by their files.")
    data = resolve(data, default_split="all")
    slices = data.slices
    if slices is None and compare_slices:
        if data.layout == "mni152":
            slices = (TEMPLATE_SLICE,) if data.axis == 2 else None
        else:
            slices = (DEFAULT_SLICE,)
    return data, slices


def _check_grid(**values) -> dict:
    if values["radius_unit"] not in RADIUS_UNITS:
        raise BlindspotError(f"`radius_unit` must be voxel or mm; got {values['radius_unit']!r}.")
    return grid_parameters(**values)


def _intervals(per_volume: np.ndarray, parameters: dict, prefix: str = "") -> dict:
    """``ap_low`` / ``ap_high`` of every cell: percentile bootstrap intervals of the mean over volumes."""
    return {f"{prefix}{k}": v for k, v in grid_intervals(per_volume, parameters).items()}


def _mean_text(per_volume: np.ndarray, parameters: dict) -> str:
    """The mean AP over the grid and volumes, with its interval over volumes when intervals are asked for."""
    n, level, seed = bootstrap_settings(parameters)
    means = per_volume.reshape(len(per_volume), -1).mean(axis=1)
    if not n:
        return f"{means.mean():.3f}"
    low, high = mean_intervals(means, n_resamples=n, confidence=level, seed=seed)
    return interval_text(means.mean(), low, high)


def _volumes(data: DataConfig, radius_unit: str):
    """The volumes of ``data``; with a radius in mm, every header's voxel spacing is checked before any volume is read."""
    volumes = whole_volumes(data)
    if volumes.source["layout"] == "brats":
        warnings.warn("BraTS subjects keep their tumours: a tumour counts as normal tissue (negatives), and an anomaly "
                      "centre may fall on it.", UserWarning, stacklevel=3)
    if radius_unit == "mm":
        for files in volumes.files:
            if files:
                mm_spacing(nifti_spacing(files[0]), f"'{files[0]}'")
    return volumes


def _config(command: str, volumes, parameters: dict, result: dict, *, inputs: Sequence = (), **extra) -> dict:
    files = [*volumes.source["files"], *(str(p) for p in inputs if p is not None)]
    return {"command": command, "volumes": True, "parameters": parameters, "seed": parameters.get("seed"),
            "data": volumes.source, "images": list(result["names"]), "fingerprint": result["fingerprint"], **extra,
            "input_hashes": input_hashes(files), "versions": provenance()}


def _radius_text(parameters: dict, result: dict) -> str:
    radii = np.unique(np.round(result["radius_voxels"], 3), axis=0)
    if parameters["radius_unit"] == "voxel":
        return f"ball radius {parameters['radius']:g} voxels"
    shown = "; ".join("(" + ", ".join(f"{r:g}" for r in row) + ")" for row in radii[:3]) + ("; …" if len(radii) > 3 else "")
    return f"ball radius {parameters['radius']:g} mm, i.e. {shown} voxels along the array axes"


def _volumes_text(volumes, result: dict) -> str:
    shapes = sorted({tuple(int(n) for n in s) for s in result["shapes"]})
    shown = ", ".join("×".join(str(n) for n in s) for s in shapes[:3]) + (", …" if len(shapes) > 3 else "")
    return f"{count(len(result['shapes']), 'whole volume')} from `{volumes.source['data']}` ({shown} voxels)"


def _slices_text(data: DataConfig, slices, result: dict) -> str:
    if slices is None:
        return "centres uniform over each volume's foreground"
    chosen = sorted({int(s) for s in slices})
    where = str(chosen[0]) if len(chosen) == 1 else f"{chosen[0]}–{chosen[-1]}" if chosen == list(range(chosen[0], chosen[-1] + 1)) \
        else ", ".join(str(s) for s in chosen)
    return f"centres uniform over the foreground of slice(s) {where} along axis {data.axis}"


def _arrays(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in _NOT_ARRAYS}


# --------------------------------------------------------------------------------------------
# experiment 1


def write_volume_intensity(folder: Path, volumes, data: DataConfig, slices, parameters: dict, *, centers=None,
                           threads: int | None = None, pool=None) -> dict:
    """Compute experiment 1 on whole volumes and write its files into ``folder``; returns the arrays."""
    intensities, sigmas = intensity_grid_axes(parameters["n_intensities"], parameters["n_sigmas"], parameters["sigma_max"])
    explicit, centers_record = centers_input(centers, dims=3)
    compare = parameters["compare_slices"]
    result = volume_intensity_experiment(volumes, intensities=intensities, sigmas=sigmas, radius=parameters["radius"],
                                         radius_unit=parameters["radius_unit"], seed=parameters["seed"], centers=explicit,
                                         axis=data.axis, slices=slices, compare_slices=compare, threads=threads,
                                         cache_dir=folder / CACHE, keep_inputs=parameters["save_inputs"], pool=pool)
    arrays = {**_arrays(result), **_intervals(result["ap_per_volume"], parameters)}
    if compare:
        arrays.update(_intervals(result["slice_ap_per_volume"], parameters, "slice_"))
    save_npz(folder / "results.npz", **arrays)
    write_json(folder / "config.json", _config(COMMANDS["intensity"], volumes, parameters, result, centers=centers_record,
                                               inputs=[centers_file(centers)], execution=execution_record(pool)))
    equalized = " (histogram-equalised)" if data.preparation.equalize else ""
    table = blind_spot_table(result["intensities"], result["sigmas"], result["ap"])
    text = (f"# Experiment 1 on whole volumes: anomaly intensity × reconstruction error{equalized}\n\n"
            f"{_volumes_text(volumes, result)}, {_radius_text(parameters, result)}, {count(len(intensities), 'intensity')} × "
            f"{sigma_text(sigmas)}, seed {parameters['seed']}, "
            f"{_slices_text(data, slices, result) if explicit is None else 'centres ' + centers_record}. The "
            "reconstruction is the volume blurred with a 3-D Gaussian of σ; AP is over every voxel of each volume "
            f"(background included), then the mean over volumes.{bootstrap_sentence(parameters, len(result['shapes']), 'volume')}\n\n")
    if compare:
        slice_table = blind_spot_table(result["intensities"], result["sigmas"], result["slice_ap"])
        delta = np.abs(result["ap"] - result["slice_ap"])
        text += (f"Beside it, the 2-D experiment on each anomaly's central slice along axis {data.axis} (the ball's "
                 "cross-section as the disk, the slice blurred in 2-D, AP over every pixel of the slice):\n\n"
                 f"{blind_spot_comparison_markdown(table, slice_table)}\n\n"
                 f"Mean AP over the grid: {_mean_text(result['ap_per_volume'], parameters)} on whole volumes, "
                 f"{_mean_text(result['slice_ap_per_volume'], parameters)} on "
                 f"the central slices; mean |ΔAP| {delta.mean():.3f}, largest {delta.max():.3f}. "
                 f"![comparison](compare_slices.png)\n")
        save_figure(plot_volume_slice_comparison(result), folder / "compare_slices.png")
    else:
        text += f"{blind_spot_markdown(table)}\n\nMean AP over the whole grid: {_mean_text(result['ap_per_volume'], parameters)}.\n"
    write_text(folder / "summary.md", text)
    save_figure(plot_ap_heatmap(result["intensities"], result["sigmas"], result["ap"],
                                title=f"AP of |blur(x) − x_anomalous| over whole volumes{equalized}"), folder / "heatmap.png")
    save_figure(plot_histogram(result["histogram_counts"], result["histogram_edges"], title="foreground histogram (volumes)"),
                folder / "histogram.png")
    return arrays


def _start(out, data: DataConfig, inputs: list, overwrite: bool, **grid):
    """The output rule and the grid checked, then the volumes resolved: ``(data, slices, volumes, parameters)``."""
    check_output(out, inputs=inputs, overwrite=overwrite)
    parameters = _check_grid(**grid)
    data, slices = volume_data(data, compare_slices=grid["compare_slices"])
    volumes = _volumes(data, parameters["radius_unit"])
    return data, slices, volumes, {**parameters, "slices": None if slices is None else list(slices), "axis": data.axis}


def run_volume_intensity(out: str | Path, data: DataConfig = DataConfig(), *, radius: float = 20, radius_unit: str = "voxel",
                         n_intensities: int = 100, n_sigmas: int = 100, sigma_max: float = 5.0, seed: int = 0, centers=None,
                         compare_slices: bool = False, save_inputs: bool = False, threads: int | None = None,
                         bootstrap: int = N_RESAMPLES, confidence: float = CONFIDENCE, overwrite: bool = False,
                         execution: Execution | None = None) -> Path:
    """Experiment 1 on whole volumes (``blindspot pitfalls intensity --volumes``) into the result folder ``out``.

    ``centers``: None (sampled from ``seed``), an ``(N, 3)`` array or a file
    (:func:`blindspot.data.io.read_centers` with three columns).
    """
    inputs = [data.data, centers_file(centers)]
    data, slices, volumes, parameters = _start(out, data, inputs, overwrite, radius=radius, radius_unit=radius_unit,
                                               n_intensities=n_intensities, n_sigmas=n_sigmas, sigma_max=sigma_max, seed=seed,
                                               save_inputs=save_inputs, compare_slices=compare_slices, bootstrap=bootstrap,
                                               confidence=confidence)
    with open_pool(execution) as pool, result_folder(out, overwrite=overwrite, inputs=inputs,
                                                     fingerprint="pitfalls intensity --volumes") as folder:
        write_volume_intensity(folder, volumes, data, slices, parameters, centers=centers, threads=threads, pool=pool)
    return Path(out)


# --------------------------------------------------------------------------------------------
# experiment 2


def load_volume_match(match: Path, fingerprint: str, radius_voxels: np.ndarray, sigmas: np.ndarray) -> dict:
    """A whole-volume experiment-1 result to match against: same volumes (voxel for voxel), radius and σ grid."""
    config = load_json(match / "config.json")
    if config.get("command") != COMMANDS["intensity"] or not config.get("volumes"):
        raise BlindspotError(f"`match` '{match}' is not an experiment-1 result on whole volumes (pitfalls intensity --volumes).")
    try:
        with np.load(match / "results.npz") as saved:
            result = {k: saved[k] for k in ("intensities", "sigmas", "ap", "centers", "radius_voxels")}
    except (OSError, KeyError, ValueError) as err:
        raise BlindspotError(f"`match` '{match}': results.npz is missing or unreadable ({err}).") from None
    if config.get("fingerprint") != fingerprint:
        raise BlindspotError(f"`match` '{match}' was computed on other volumes ({config['data'].get('data')}, "
                             f"{len(config.get('images', []))} volumes); use the same data and preparation.")
    if result["radius_voxels"].shape != radius_voxels.shape or not np.allclose(result["radius_voxels"], radius_voxels):
        raise BlindspotError(f"`match` '{match}' used another ball radius; use the same `radius` and `radius_unit`.")
    if result["sigmas"].shape != sigmas.shape or not np.allclose(result["sigmas"], sigmas):
        raise BlindspotError(f"`match` '{match}' has another σ grid; use the same `n_sigmas` and `sigma_max`.")
    return result


def _match_centers(match: Path) -> np.ndarray:
    try:
        with np.load(match / "results.npz") as saved:
            return saved["centers"]
    except (OSError, KeyError, ValueError) as err:
        raise BlindspotError(f"`match` '{match}': results.npz is missing or unreadable ({err}).") from None


def write_volume_texture(folder: Path, volumes, data: DataConfig, slices, parameters: dict, *, match: Path | None = None,
                         centers=None, threads: int | None = None, pool=None) -> dict:
    """Compute experiment 2 on whole volumes, match each texture to an intensity, and write the files."""
    intensities, sigmas = intensity_grid_axes(parameters["n_intensities"], parameters["n_sigmas"], parameters["sigma_max"])
    explicit, centers_record = centers_input(centers, dims=3)
    compare = parameters["compare_slices"]
    if match is not None:
        if explicit is not None:
            raise BlindspotError("give either `match` (whose centres are reused) or `centers`, not both.")
        explicit = _match_centers(match)
        centers_record = f"those of {os.path.relpath(match, folder)}"
    result = volume_texture_experiment(volumes, sigmas=sigmas, radius=parameters["radius"],
                                       radius_unit=parameters["radius_unit"], seed=parameters["seed"], centers=explicit,
                                       match_intensities=None if match is not None else intensities, axis=data.axis,
                                       slices=slices, compare_slices=compare, threads=threads, cache_dir=folder / CACHE,
                                       keep_inputs=parameters["save_inputs"], pool=pool)
    if match is None:
        reference_ap, matched_to = result["intensity_ap"], "an intensity grid computed on the same volumes and centres"
    else:
        reference = load_volume_match(match, result["fingerprint"], result["radius_voxels"], result["sigmas"])
        intensities, reference_ap = reference["intensities"], reference["ap"]
        matched_to = f"`{os.path.relpath(match, folder)}`"
    index = match_curves(result["ap"], reference_ap)
    quality = match_quality(result["ap"], reference_ap, index)
    arrays = {**_arrays(result), **_intervals(result["ap_per_volume"], parameters),
              "matched_intensity_index": index, "matched_intensity": intensities[index],
              "matched_ap": reference_ap[index], "matched_l1": quality["l1"], "matched": quality["matched"]}
    save_npz(folder / "results.npz", **arrays)
    write_json(folder / "config.json", _config(COMMANDS["texture"], volumes, parameters, result, centers=centers_record,
                                               match=None if match is None else os.path.relpath(match, folder),
                                               inputs=[centers_file(centers), match and Path(match) / "results.npz"],
                                               execution=execution_record(pool)))
    s25, s1 = (int(np.argmin(np.abs(sigmas - target))) for target in (0.25, 1.0))
    rows = [[name, f"{arrays['matched_intensity'][k]:.3f}" if quality["matched"][k] else
             f"no match (closest {arrays['matched_intensity'][k]:.3f})", f"{quality['mean_abs'][k]:.3f}",
             f"{result['ap'][k, s25]:.3f}", f"{result['ap'][k, s1]:.3f}",
             _mean_text(result["ap_per_volume"][:, k], parameters)]
            for k, name in enumerate(result["textures"])]
    header = ["texture", "matched intensity", "mean |ΔAP| to it", f"AP at σ={sigmas[s25]:.2f}", f"AP at σ={sigmas[s1]:.2f}", "mean AP"]
    text = ("# Experiment 2 on whole volumes: texture anomalies × reconstruction error\n\n"
            f"{_volumes_text(volumes, result)}, {_radius_text(parameters, result)}, {len(sigmas)} σ in "
            f"[0, {parameters['sigma_max']:g}], seed {parameters['seed']}, "
            f"{_slices_text(data, slices, result) if centers_record == 'sampled from the seed' else 'centres ' + centers_record}; "
            f"3-D pixel shuffle, sink and source inside the ball; matched to {matched_to}. A texture is matched to the "
            f"intensity whose AP curve is closest (L1); {match_rule()}."
            f"{bootstrap_sentence(parameters, len(result['shapes']), 'volume') if 'ap_low' in arrays else ''}\n\n"
            f"{markdown_table(header, rows)}\n")
    if compare:
        rows = [[name, f"{result['ap'][k, s25]:.3f}", f"{result['slice_ap'][k, s25]:.3f}", f"{result['ap'][k, s1]:.3f}",
                 f"{result['slice_ap'][k, s1]:.3f}", f"{result['ap'][k].mean():.3f}", f"{result['slice_ap'][k].mean():.3f}"]
                for k, name in enumerate(result["textures"])]
        header = ["texture", f"volume, σ={sigmas[s25]:.2f}", f"slice, σ={sigmas[s25]:.2f}", f"volume, σ={sigmas[s1]:.2f}",
                  f"slice, σ={sigmas[s1]:.2f}", "mean AP, volume", "mean AP, slice"]
        text += (f"\nBeside it, the 2-D experiment on each anomaly's central slice along axis {data.axis} (the central "
                 "slice of the same 3-D anomalous volume, the slice blurred in 2-D, AP over every pixel of the slice):\n\n"
                 f"{markdown_table(header, rows)}\n\n![comparison](compare_slices.png)\n")
        save_figure(plot_texture_slice_comparison(result), folder / "compare_slices.png")
    write_text(folder / "summary.md", text)
    save_figure(plot_texture_curves(arrays), folder / "textures.png")
    return arrays


def run_volume_texture(out: str | Path, data: DataConfig = DataConfig(), *, radius: float = 20, radius_unit: str = "voxel",
                       n_intensities: int = 100, n_sigmas: int = 100, sigma_max: float = 5.0, seed: int = 0, centers=None,
                       match: str | Path | None = None, compare_slices: bool = False, save_inputs: bool = False,
                       threads: int | None = None, bootstrap: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                       overwrite: bool = False, execution: Execution | None = None) -> Path:
    """Experiment 2 on whole volumes (``blindspot pitfalls texture --volumes``) into the result folder ``out``."""
    inputs = [data.data, match, centers_file(centers)]
    data, slices, volumes, parameters = _start(out, data, inputs, overwrite, radius=radius, radius_unit=radius_unit,
                                               n_intensities=n_intensities, n_sigmas=n_sigmas, sigma_max=sigma_max, seed=seed,
                                               save_inputs=save_inputs, compare_slices=compare_slices, bootstrap=bootstrap,
                                               confidence=confidence)
    with open_pool(execution) as pool, result_folder(out, overwrite=overwrite, inputs=inputs,
                                                     fingerprint="pitfalls texture --volumes") as folder:
        write_volume_texture(folder, volumes, data, slices, parameters, match=Path(match) if match else None,
                             centers=centers, threads=threads, pool=pool)
    return Path(out)


# --------------------------------------------------------------------------------------------
# experiment 3


def run_volume_model(out: str | Path, checkpoint: str | Path, data: DataConfig = DataConfig(), *, reconstruct: str = "normal",
                     radius: float = 20, radius_unit: str = "voxel", n_intensities: int = 100, n_sigmas: int = 100,
                     sigma_max: float = 5.0, seed: int = 0, centers=None, match: str | Path | None = None,
                     save_inputs: bool = False, batch_size: int = 64, device: str | None = None, threads: int | None = None,
                     bootstrap: int = N_RESAMPLES, confidence: float = CONFIDENCE, overwrite: bool = False,
                     execution: Execution | None = None) -> Path:
    """Experiment 3 on whole volumes (``blindspot pitfalls model --volumes``) into the result folder ``out``.

    A 2-D model reconstructs every slice of each volume along ``data.axis`` (batched); the map
    covers the whole volume and AP is over every voxel. The volumes are normalised and equalised
    as the model's checkpoint says; they are not resized, so their slices must have the model's
    size. The model's curve is matched to the whole-volume blur grid on the same volumes and
    centres (computed, or ``match``). On a cluster (``execution``) the workers compute that blur
    grid; the model's passes run in this process.
    """
    from blindspot.models.checkpoint import load_model

    inputs = [checkpoint, data.data, match, centers_file(centers)]
    check_output(out, inputs=inputs, overwrite=overwrite, fingerprint="pitfalls model --volumes")
    if reconstruct not in RECONSTRUCT:
        raise BlindspotError(f"`reconstruct` must be 'normal' or 'anomalous'; got {reconstruct!r}.")
    parameters = _check_grid(radius=radius, radius_unit=radius_unit, n_intensities=n_intensities, n_sigmas=n_sigmas,
                             sigma_max=sigma_max, seed=seed, save_inputs=save_inputs, reconstruct=reconstruct,
                             batch_size=batch_size, checkpoint=str(checkpoint), bootstrap=bootstrap, confidence=confidence)
    model = load_model(checkpoint, device=device)
    prepared = data.prepared_like(model.preparation, what=f"'{checkpoint}'").preparation
    data = replace(data, preparation=replace(prepared, size=None))  # the slices must already have the model's size
    data, slices = volume_data(data)
    volumes = _volumes(data, parameters["radius_unit"])
    parameters.update(slices=None if slices is None else list(slices), axis=data.axis)
    intensities, sigmas = intensity_grid_axes(n_intensities, n_sigmas, sigma_max)
    with open_pool(execution) as pool, result_folder(out, overwrite=overwrite, inputs=inputs,
                                                     fingerprint="pitfalls model --volumes") as folder:
        explicit, centers_record = centers_input(centers, dims=3)
        reference = None
        if match is not None:
            if explicit is not None:
                raise BlindspotError("give either `match` (whose centres are reused) or `centers`, not both.")
            explicit = _match_centers(Path(match))
            matched_to = f"`{os.path.relpath(match, folder)}`"
            centers_record = f"those of {os.path.relpath(match, folder)}"
        else:
            reference = volume_intensity_experiment(volumes, intensities=intensities, sigmas=sigmas, radius=radius,
                                                    radius_unit=radius_unit, seed=seed, centers=explicit, axis=data.axis,
                                                    slices=slices, threads=threads, cache_dir=folder / CACHE, pool=pool)
            explicit = reference["centers"]
            matched_to = "computed on the same volumes and centres"
        result = volume_model_experiment(model, volumes, intensities=intensities, centers=explicit, radius=radius,
                                         radius_unit=radius_unit, reconstruct=reconstruct, axis=data.axis,
                                         batch_size=batch_size, device=device, keep_outputs=save_inputs)
        if reference is None:
            reference = load_volume_match(Path(match), result["fingerprint"], result["radius_voxels"], sigmas)
            if reference["intensities"].shape != intensities.shape or not np.allclose(reference["intensities"], intensities):
                raise BlindspotError(f"`match` '{match}' has another intensity grid; use the same `n_intensities`.")
        match_ = match_blur(result["ap"], reference["ap"])
        s = match_["index"]
        arrays = {**_arrays(result), **_intervals(result["ap_per_volume"], parameters),
                  "sigmas": reference["sigmas"], "blur_ap": reference["ap"],
                  "matched_sigma_index": np.int64(s), "matched_sigma": np.float64(reference["sigmas"][s]),
                  "matched_ap": reference["ap"][:, s], "matched_l1": np.float64(match_["l1"]),
                  "matched": np.bool_(match_["matched"])}
        save_npz(folder / "results.npz", **arrays)
        config = _config(COMMANDS["model"], volumes, parameters, result, model=model.config, centers=centers_record,
                         checkpoint={"path": str(checkpoint), "input_range": list(model.input_range),
                                     "preparation": model.preparation},
                         match=matched_to, inputs=[checkpoint, centers_file(centers), match and Path(match) / "results.npz"],
                         execution=execution_record(pool))
        write_json(folder / "config.json", config)
        write_text(folder / "summary.md", _model_summary(arrays, config, volumes, parameters))
        save_figure(plot_model_curve(arrays, label=model_label(model.config)), folder / "curve.png")
    return Path(out)


def _model_summary(arrays: dict, config: dict, volumes, parameters: dict) -> str:
    label = model_label(config["model"])
    sigma = float(arrays["matched_sigma"])
    curves = np.stack([arrays["ap"], arrays["matched_ap"]], axis=1)
    table = blind_spot_table(arrays["intensities"], np.array([0.0, 1.0]), curves, at_sigmas=(0.0, 1.0))
    blur = f"3-D blur σ = {sigma:.2f}" if arrays["matched"] else f"closest 3-D blur σ = {sigma:.2f}"
    rows = []
    for name, row in zip((label, blur), table):
        bands = ", ".join(f"{a:.2f}–{b:.2f}" for a, b in row["blind_bands"]) or "none"
        rows.append([name, f"{row['mean_ap']:.3f}", f"{row['min_ap']:.3f}", f"{row['min_at']:.2f}", bands])
    mean_abs = float(arrays["matched_l1"]) / len(arrays["intensities"])
    if arrays["matched"]:
        verdict = f"The model's curve matches a 3-D Gaussian blur of σ = {sigma:.3f} (mean |ΔAP| {mean_abs:.3f})."
    else:
        verdict = (f"No match within the grid: the closest 3-D blur, σ = {sigma:.3f}, differs by a mean |ΔAP| of "
                   f"{mean_abs:.3f} (or lies at the grid's edge: extend it with `--sigma-max`).")
    return (f"# Experiment 3 on whole volumes: {label}, reconstruction of the {parameters['reconstruct']} volume\n\n"
            f"Checkpoint `{config['checkpoint']['path']}`; {count(len(arrays['ap_per_volume']), 'whole volume')} from "
            f"`{volumes.source['data']}`, every slice along axis {parameters['axis']} reconstructed by the 2-D model and the "
            f"whole volume scored (AP over every voxel); ball radius {parameters['radius']:g} "
            f"{'voxels' if parameters['radius_unit'] == 'voxel' else 'mm'}, {count(len(arrays['intensities']), 'intensity')}, "
            f"seed {parameters['seed']}, centres {config['centers']}; blur grid {config['match']} "
            f"({sigma_text(arrays['sigmas'])}).\n\n"
            f"Mean L1 reconstruction error of the normal volumes: {float(arrays['recon_error']):.5f}; mean AP over the "
            f"intensities {_mean_text(arrays['ap_per_volume'], parameters)}. {verdict}"
            f"{bootstrap_sentence(parameters, len(arrays['ap_per_volume']), 'volume')}\n\n"
            + markdown_table(["reconstruction", "mean AP", "min AP", "at intensity", "intensities with AP < 0.5"], rows) + "\n")

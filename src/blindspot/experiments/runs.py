"""Every result folder of the pitfall experiments: load the data, compute, write a self-describing folder.

Each ``run_*`` function is what one CLI command calls. A folder holds ``results.npz`` (every array a
figure needs), ``config.json`` (parameters, seed, data source, input hashes, versions),
``summary.md`` and PNG figures; it appears only when complete (:func:`blindspot.results.result_folder`).
Radii are given in pixels of the native images and multiplied by the geometry scale of the data
preparation (:attr:`blindspot.data.ImageSet.scale`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from blindspot.data import DataConfig, ImageSet, load
from blindspot.data.io import read_centers
from blindspot.errors import BlindspotError
from blindspot.execution import Execution, execution_record, open_pool
from blindspot.experiments.grid import check_grid_size, grid_fingerprint
from blindspot.experiments.model_pitfalls import RECONSTRUCT, match_blur, model_intensity_experiment
from blindspot.experiments.pitfalls import (
    MATCH_KEYS,
    blind_spot_table,
    intensity_experiment,
    intensity_grid_axes,
    match_curves,
    match_distance_text,
    match_quality,
    match_rule,
    texture_experiment,
)
from blindspot.experiments.uncertainty import (
    blind_spot_rows,
    bootstrap_settings,
    curve_uncertainty,
    interval_sentence,
    grid_intervals,
    interval_text,
)
from blindspot.metrics.bootstrap import (
    CONFIDENCE,
    N_RESAMPLES,
    multiplicities,
    percentile_interval,
    resample_indices,
    resampled_means,
)
from blindspot.models import model_options
from blindspot.models.checkpoint import load_model
from blindspot.report import (
    blind_spot_markdown,
    foreground_histogram,
    markdown_table,
    plot_ap_heatmap,
    plot_compare_curves,
    plot_error_vs_ap,
    plot_histogram,
    plot_model_curve,
    plot_texture_curves,
    save_figure,
)
from blindspot.results import CACHE, check_output, input_hashes, load_json, provenance, result_folder, save_npz, write_json, write_text
from blindspot.wording import count

__all__ = ["compare_models", "load_model_result", "model_label", "run_intensity", "run_model", "run_texture",
           "write_intensity", "write_model", "write_texture"]

COMMANDS = {"intensity": "pitfalls intensity", "texture": "pitfalls texture", "model": "pitfalls model"}


def experiment_images(data: DataConfig) -> ImageSet:
    """The normal images of a data source for the pitfall experiments (each needs a foreground)."""
    imageset = load(data, default_split="all").normal()
    imageset.require_foreground()
    return imageset


def centers_input(centers, *, dims: int = 2) -> tuple[np.ndarray | None, str]:
    """Explicit centres (an array, or a file of ``dims`` columns) and how they are recorded."""
    if centers is None:
        return None, "sampled from the seed"
    if isinstance(centers, (str, Path)):
        return read_centers(centers, dims=dims), str(centers)
    return np.asarray(centers), "given explicitly"


def _config(command: str, imageset: ImageSet, parameters: dict, *, inputs: Sequence = (), **extra) -> dict:
    """The config.json of a result: ``inputs`` are the files read besides the images (centres, checkpoint, match)."""
    files = [*imageset.source.get("files", []), *(str(p) for p in inputs if p is not None)]
    return {"command": command, "parameters": parameters, "seed": parameters.get("seed"), "data": imageset.source,
            "images": imageset.names, "fingerprint": grid_fingerprint(imageset.images), **extra,
            "input_hashes": input_hashes(files), "versions": provenance()}


def centers_file(centers) -> str | None:
    """The centres file to hash, if the centres came from one."""
    return str(centers) if isinstance(centers, (str, Path)) else None


def radius_text(parameters: dict, size: int) -> str:
    used = parameters["radius_used"]
    resized = f" ({used:g} px at the prepared {size} px)" if used != parameters["radius"] else ""
    return f"disk radius {parameters['radius']:g} px{resized}"


def sigma_text(sigmas) -> str:
    """The σ axis in words: ``1 σ (0)`` or ``100 σ in [0, 5]``."""
    sigmas = np.asarray(sigmas, float)
    if len(sigmas) == 1:
        return f"1 σ ({sigmas[0]:g})"
    return f"{len(sigmas):,} σ in [{sigmas[0]:g}, {sigmas[-1]:g}]"


def distinct_labels(values) -> list[str]:
    """``values`` with the fewest decimals (at least 2) that keep distinct values' labels distinct.

    >>> distinct_labels([0.0, 0.001, 1.0])
    ['0.000', '0.001', '1.000']
    """
    values = [float(v) for v in values]
    for digits in range(2, 10):
        labels = [f"{v:.{digits}f}" for v in values]
        if len(set(labels)) == len(set(values)):
            return labels
    return [repr(v) for v in values]


def with_radius(parameters: dict, imageset: ImageSet) -> dict:
    """The parameters with the radius at the prepared size, which must fit the images."""
    used = parameters["radius"] * imageset.scale
    h, w = imageset.images.shape[1:]
    if not 1 <= used < min(h, w) / 2:
        raise BlindspotError(f"`radius` {parameters['radius']:g} px is {used:g} px in the prepared {h}×{w} images; it must "
                             f"lie in [1, {min(h, w) / 2:g}) px there.")
    return {**parameters, "scale": imageset.scale, "radius_used": used}


# --------------------------------------------------------------------------------------------
# experiment 1


def write_intensity(folder: Path, imageset: ImageSet, parameters: dict, *, centers=None, threads: int | None = None,
                    pool=None) -> dict:
    """Compute experiment 1 on ``imageset`` and write its files into ``folder``; returns the arrays.

    ``pool``: a :class:`blindspot.execution.Pool` whose workers compute the grid (the same numbers).
    """
    intensities, sigmas = intensity_grid_axes(parameters["n_intensities"], parameters["n_sigmas"], parameters["sigma_max"])
    parameters = with_radius(parameters, imageset)
    explicit, centers_record = centers_input(centers)
    result = intensity_experiment(imageset.images, intensities=intensities, sigmas=sigmas, radius=parameters["radius_used"],
                                  seed=parameters["seed"], centers=explicit, threads=threads, cache_dir=folder / CACHE,
                                  pool=pool)
    counts, edges = foreground_histogram(imageset.images)
    arrays = {**result, **grid_intervals(result["ap_per_image"], parameters), "histogram_counts": counts, "histogram_edges": edges}
    if parameters["save_inputs"]:
        arrays["inputs"] = imageset.images
    save_npz(folder / "results.npz", **arrays)
    write_json(folder / "config.json", _config(COMMANDS["intensity"], imageset, parameters, centers=centers_record,
                                               inputs=[centers_file(centers)], execution=execution_record(pool)))
    equalized = " (histogram-equalised)" if imageset.source["config"]["preparation"]["equalize"] else ""
    table = blind_spot_rows(result["intensities"], result["sigmas"], result["ap"], result["ap_per_image"], parameters)
    overall = _grid_mean_interval(result["ap_per_image"], parameters)
    write_text(folder / "summary.md",
               f"# Experiment 1: anomaly intensity × reconstruction error{equalized}\n\n"
               f"{count(len(imageset), 'image')} from `{imageset.source['data']}`, "
               f"{radius_text(parameters, imageset.images.shape[-1])}, "
               f"{count(len(intensities), 'intensity')} × {sigma_text(sigmas)}, seed {parameters['seed']}, "
               f"centres {centers_record}.{bootstrap_sentence(parameters, len(imageset))}\n\n{blind_spot_markdown(table)}\n\n"
               f"Mean AP over the whole grid: {interval_text(result['ap'].mean(), *overall)}.\n")
    save_figure(plot_ap_heatmap(result["intensities"], result["sigmas"], result["ap"],
                                title=f"AP of |blur(x) − x_anomalous|{equalized}"), folder / "heatmap.png")
    save_figure(plot_histogram(counts, edges), folder / "histogram.png")
    return arrays


def _grid_mean_interval(ap_per_image: np.ndarray, parameters: dict) -> tuple:
    """The interval of the mean AP over every cell and image, resampling images; (None, None) without intervals."""
    n, level, seed = bootstrap_settings(parameters)
    if not n:
        return None, None
    per_image = ap_per_image.reshape(len(ap_per_image), -1).mean(axis=1)
    weights = multiplicities(resample_indices(len(per_image), n, seed), len(per_image))
    return percentile_interval(resampled_means(per_image, weights), level)


def grid_parameters(**values) -> dict:
    """The grid's parameters, checked before any data are loaded (the data go to ``config["data"]``)."""
    check_grid_size(values)
    intensity_grid_axes(values["n_intensities"], values["n_sigmas"], values["sigma_max"])
    if not values["radius"] > 0:
        raise BlindspotError(f"`radius` must be > 0; got {values['radius']}.")
    bootstrap_settings(values)
    return values


def bootstrap_sentence(parameters: dict, count: int, unit: str = "image") -> str:
    """:func:`interval_sentence` of a run's parameters, to follow a sentence (a space first; empty without intervals)."""
    sentence = interval_sentence(*bootstrap_settings(parameters), count, unit)
    return f" {sentence}" if sentence else ""


def run_intensity(out: str | Path, data: DataConfig = DataConfig(), *, radius: float = 20, n_intensities: int = 100,
                  n_sigmas: int = 100, sigma_max: float = 5.0, seed: int = 0, centers=None, save_inputs: bool = False,
                  threads: int | None = None, bootstrap: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                  overwrite: bool = False, execution: Execution | None = None) -> Path:
    """Experiment 1 (``blindspot pitfalls intensity``) into the result folder ``out``.

    ``centers``: None (sampled from ``seed``), an ``(N, 2)`` array or a file (:func:`blindspot.data.io.read_centers`).
    ``bootstrap``, ``confidence``: resamples of the images (0: none) and level of the interval of every
    mean AP (:mod:`blindspot.experiments.uncertainty`), seeded by ``seed``; the same for experiments 2 and 3.
    ``execution``: where the grid runs (:class:`blindspot.execution.Execution`: in this process, a
    local Dask cluster or a Dask scheduler); the numbers do not depend on it. The same for every command.
    """
    inputs = [data.data, centers_file(centers)]
    check_output(out, inputs=inputs, overwrite=overwrite, fingerprint=COMMANDS["intensity"])
    parameters = grid_parameters(radius=radius, n_intensities=n_intensities, n_sigmas=n_sigmas, sigma_max=sigma_max,
                                  seed=seed, save_inputs=save_inputs, bootstrap=bootstrap, confidence=confidence)
    with open_pool(execution) as pool:
        imageset = experiment_images(data)
        with result_folder(out, overwrite=overwrite, inputs=inputs, fingerprint=COMMANDS["intensity"]) as folder:
            write_intensity(folder, imageset, parameters, centers=centers, threads=threads, pool=pool)
    return Path(out)


# --------------------------------------------------------------------------------------------
# experiment 2


def match_bootstrap(parameters: dict) -> dict:
    """The bootstrap keywords of :func:`match_quality` for a run's settings; empty when its bootstrap is off."""
    n, level, seed = bootstrap_settings(parameters)
    return {"resamples": n, "level": level, "seed": seed} if n else {}


def load_intensity_match(match: Path, images: np.ndarray, radius: float, sigmas: np.ndarray) -> dict:
    """An experiment-1 result to match against; it must be on the same images (pixel for pixel), radius and σ grid."""
    config = load_json(match / "config.json")
    if config.get("command") != COMMANDS["intensity"]:
        raise BlindspotError(f"`match` '{match}' is not an experiment-1 (pitfalls intensity) result folder.")
    try:
        with np.load(match / "results.npz") as saved:
            result = {k: saved[k] for k in ("intensities", "sigmas", "ap", "centers")}
            if "ap_per_image" in saved.files:
                result["ap_per_image"] = saved["ap_per_image"]
    except (OSError, KeyError, ValueError) as err:
        raise BlindspotError(f"`match` '{match}': results.npz is missing or unreadable ({err}).") from None
    if config.get("fingerprint") != grid_fingerprint(images):
        raise BlindspotError(f"`match` '{match}' was computed on other images ({config['data'].get('data')}, "
                             f"{count(len(config['images']), 'image')}); use the same data and preparation.")
    if config["parameters"]["radius_used"] != radius:
        raise BlindspotError(f"`match` '{match}' used radius {config['parameters']['radius_used']:g} px, not {radius:g}.")
    if result["sigmas"].shape != sigmas.shape or not np.allclose(result["sigmas"], sigmas):
        raise BlindspotError(f"`match` '{match}' has another σ grid; use the same `n_sigmas` and `sigma_max`.")
    return result


def write_texture(folder: Path, imageset: ImageSet, parameters: dict, *, match: Path | None = None, centers=None,
                  threads: int | None = None, pool=None) -> dict:
    """Compute experiment 2 on ``imageset`` and write its files into ``folder``; returns the arrays.

    Curves are matched to ``match`` (an experiment-1 folder on the same images, whose centres are
    reused) or to an intensity grid computed in the same pass on the same centres.
    """
    intensities, sigmas = intensity_grid_axes(parameters["n_intensities"], parameters["n_sigmas"], parameters["sigma_max"])
    parameters = with_radius(parameters, imageset)
    common = dict(sigmas=sigmas, radius=parameters["radius_used"], seed=parameters["seed"], threads=threads,
                  cache_dir=folder / CACHE, pool=pool)
    explicit, centers_record = centers_input(centers)
    if match is not None:
        if explicit is not None:
            raise BlindspotError("give either `match` (whose centres are reused) or `centers`, not both.")
        reference = load_intensity_match(Path(match), imageset.images, parameters["radius_used"], sigmas)
        result = texture_experiment(imageset.images, centers=reference["centers"], **common)
        intensities, reference_ap, reference_per_image = reference["intensities"], reference["ap"], reference.get("ap_per_image")
        centers_record = f"those of {os.path.relpath(match, folder)}"
    else:
        result = texture_experiment(imageset.images, centers=explicit, match_intensities=intensities, **common)
        reference_ap, reference_per_image = result["intensity_ap"], result["intensity_ap_per_image"]
    index = match_curves(result["ap"], reference_ap)
    check = match_bootstrap(parameters)
    paired = {"per_image": result["ap_per_image"], "reference_per_image": reference_per_image, **check} if check else {}
    quality = match_quality(result["ap"], reference_ap, index, **paired)
    arrays = {**result, **grid_intervals(result["ap_per_image"], parameters), "matched_intensity_index": index,
              "matched_intensity": intensities[index], "matched_ap": reference_ap[index], "matched_l1": quality["l1"],
              "matched": quality["matched"], **{f"match_{k}": quality[k] for k in MATCH_KEYS}}
    if parameters["save_inputs"]:
        arrays["inputs"] = imageset.images
    save_npz(folder / "results.npz", **arrays)
    shown = None if match is None else os.path.relpath(match, folder)
    matched_to = f"`{shown}`" if match is not None else "an intensity grid computed on the same images and centres"
    write_json(folder / "config.json", _config(COMMANDS["texture"], imageset, parameters, centers=centers_record, match=shown,
                                               inputs=[centers_file(centers), match and Path(match) / "results.npz"],
                                               execution=execution_record(pool)))
    shown = sorted({int(np.argmin(np.abs(sigmas - target))) for target in (0.25, 1.0)})  # one column on a coarse grid
    low, high = arrays.get("ap_low"), arrays.get("ap_high")

    def cell(k, s):
        return interval_text(result["ap"][k, s], None if low is None else low[k, s], None if high is None else high[k, s])

    texture_means = [_grid_mean_interval(result["ap_per_image"][:, k], parameters) for k in range(len(result["textures"]))]
    rows = [[name, f"{arrays['matched_intensity'][k]:.3f}" if quality["matched"][k] else
             f"no match (closest {arrays['matched_intensity'][k]:.3f})", match_distance_text(*(quality[key][k] for key in MATCH_KEYS[:4])),
             *(cell(k, s) for s in shown), interval_text(result["ap"][k].mean(), *texture_means[k])]
            for k, name in enumerate(result["textures"])]
    header = ["texture", "matched intensity", "mean |ΔAP| to it",
              *(f"AP at σ={label}" for label in distinct_labels(sigmas[shown])), "mean AP"]
    write_text(folder / "summary.md",
               "# Experiment 2: texture anomalies × reconstruction error\n\n"
               f"{count(len(imageset), 'image')} from `{imageset.source['data']}`, "
               f"{radius_text(parameters, imageset.images.shape[-1])}, "
               f"{sigma_text(sigmas)}, seed {parameters['seed']}, centres {centers_record}; "
               f"matched to {matched_to}. A texture is matched to the intensity whose AP curve is closest (L1); "
               f"{match_rule(check.get('level'))}.{bootstrap_sentence(parameters, len(imageset))}\n\n"
               f"{markdown_table(header, rows)}\n")
    save_figure(plot_texture_curves(arrays), folder / "textures.png")
    return arrays


def run_texture(out: str | Path, data: DataConfig = DataConfig(), *, radius: float = 20, n_intensities: int = 100,
                n_sigmas: int = 100, sigma_max: float = 5.0, seed: int = 0, centers=None, match: str | Path | None = None,
                save_inputs: bool = False, threads: int | None = None, bootstrap: int = N_RESAMPLES,
                confidence: float = CONFIDENCE, overwrite: bool = False, execution: Execution | None = None) -> Path:
    """Experiment 2 (``blindspot pitfalls texture``) into the result folder ``out``."""
    inputs = [data.data, match, centers_file(centers)]
    check_output(out, inputs=inputs, overwrite=overwrite, fingerprint=COMMANDS["texture"])
    parameters = grid_parameters(radius=radius, n_intensities=n_intensities, n_sigmas=n_sigmas, sigma_max=sigma_max,
                                  seed=seed, save_inputs=save_inputs, bootstrap=bootstrap, confidence=confidence)
    with open_pool(execution) as pool:
        imageset = experiment_images(data)
        with result_folder(out, overwrite=overwrite, inputs=inputs, fingerprint=COMMANDS["texture"]) as folder:
            write_texture(folder, imageset, parameters, match=Path(match) if match else None, centers=centers,
                          threads=threads, pool=pool)
    return Path(out)


# --------------------------------------------------------------------------------------------
# experiment 3


def model_label(model_config: dict) -> str:
    """A short name for a model: its registry name and the options that differ from the defaults."""
    name = model_config["name"]
    try:
        defaults = model_options(name)
    except BlindspotError:
        defaults = {}
    changed = [f"{k}={v}" for k, v in model_config.items() if k != "name" and defaults.get(k) != v]
    return " ".join([name, *changed])


def write_model(folder: Path, imageset: ImageSet, parameters: dict, *, model, checkpoint: str, match: Path | None = None,
                centers=None, device: str | None = None, threads: int | None = None, checkpoint_file: str | Path | None = None,
                pool=None) -> dict:
    """Compute experiment 3 for ``model`` on ``imageset`` (prepared for the model) and write its files into ``folder``.

    The blur grid it is matched to is loaded from ``match`` or computed on the same images and centres.
    ``checkpoint`` is how the config names the checkpoint; ``checkpoint_file``, the file whose hash it records.
    """
    intensities, sigmas = intensity_grid_axes(parameters["n_intensities"], parameters["n_sigmas"], parameters["sigma_max"])
    parameters = with_radius(parameters, imageset)
    explicit, centers_record = centers_input(centers)
    if match is None:
        reference = intensity_experiment(imageset.images, intensities=intensities, sigmas=sigmas,
                                         radius=parameters["radius_used"], seed=parameters["seed"], centers=explicit,
                                         threads=threads, cache_dir=folder / CACHE, pool=pool)
        matched_to = "computed on the same images and centres"
    else:
        if explicit is not None:
            raise BlindspotError("give either `match` (whose centres are reused) or `centers`, not both.")
        reference = load_intensity_match(match, imageset.images, parameters["radius_used"], sigmas)
        if reference["intensities"].shape != intensities.shape or not np.allclose(reference["intensities"], intensities):
            raise BlindspotError(f"`match` '{match}' has another intensity grid; use the same `n_intensities`.")
        shown = os.path.relpath(match, folder)
        matched_to, centers_record = f"`{shown}`", f"those of {shown}"
    result = model_intensity_experiment(model, imageset.images, intensities=intensities, radius=parameters["radius_used"],
                                        centers=reference["centers"], reconstruct=parameters["reconstruct"],
                                        batch_size=parameters["batch_size"], device=device)
    reconstructions = result.pop("reconstructions")
    check = match_bootstrap(parameters)
    per_image = (result["ap_per_image"], reference.get("ap_per_image")) if check else ()
    match_ = match_blur(result["ap"], reference["ap"], *per_image, **check)
    s = match_["index"]
    counts, edges = foreground_histogram(imageset.images)
    arrays = {**result, **grid_intervals(result["ap_per_image"], parameters), "sigmas": reference["sigmas"],
              "blur_ap": reference["ap"], "matched_sigma_index": np.int64(s),
              "matched_sigma": np.float64(reference["sigmas"][s]), "matched_ap": reference["ap"][:, s],
              "matched_l1": np.float64(match_["l1"]), "matched": np.bool_(match_["matched"]),
              **{f"match_{k}": np.float64(match_[k]) for k in MATCH_KEYS},
              "histogram_counts": counts, "histogram_edges": edges}
    if parameters["save_inputs"]:
        arrays.update(inputs=imageset.images, reconstructions=reconstructions)
    save_npz(folder / "results.npz", **arrays)
    config = _config(COMMANDS["model"], imageset, parameters, model=model.config, centers=centers_record,
                     checkpoint={"path": str(checkpoint), "input_range": list(model.input_range),
                                 "preparation": model.preparation},
                     match=matched_to,
                     inputs=[checkpoint_file, centers_file(centers), match and Path(match) / "results.npz"],
                     execution=execution_record(pool))
    write_json(folder / "config.json", config)
    write_text(folder / "summary.md", _model_summary(arrays, config, imageset, blur_per_image=reference.get("ap_per_image")))
    save_figure(plot_model_curve(arrays, label=model_label(model.config)), folder / "curve.png")
    return arrays


def _model_summary(arrays: dict, config: dict, imageset: ImageSet, *, blur_per_image: np.ndarray | None = None) -> str:
    """The summary of experiment 3; with the per-image APs of the model (and of the blur grid) every AP has its interval."""
    p = config["parameters"]
    label = model_label(config["model"])
    sigma = float(arrays["matched_sigma"])
    curves = np.stack([arrays["ap"], arrays["matched_ap"]], axis=1)
    table = blind_spot_table(arrays["intensities"], np.array([0.0, 1.0]), curves, at_sigmas=(0.0, 1.0))
    n, level, seed = bootstrap_settings(p)
    per_image = [arrays.get("ap_per_image"),
                 None if blur_per_image is None else blur_per_image[:, :, int(arrays["matched_sigma_index"])]]
    if n:
        weights = multiplicities(resample_indices(len(imageset), n, seed), len(imageset))
        for row, values in zip(table, per_image):
            if values is not None:
                row.update(curve_uncertainty(arrays["intensities"], resampled_means(values, weights), level))
    blur = f"blur σ = {sigma:.2f}" if arrays["matched"] else f"closest blur σ = {sigma:.2f}"
    uncertain = any("below_bands" in row for row in table)
    rows = []
    for name, row in zip((label, blur), table):
        bands = ", ".join(f"{a:.2f}–{b:.2f}" for a, b in row["blind_bands"]) or "none"
        cells = [name, interval_text(row["mean_ap"], *row.get("mean_ap_interval", (None, None))),
                 interval_text(row["min_ap"], *row.get("min_ap_interval", (None, None))), f"{row['min_at']:.2f}", bands]
        if uncertain:
            cells += [", ".join(f"{a:.2f}–{b:.2f}" for a, b in row[key]) or "none" if key in row else "n/a"
                      for key in ("below_bands", "straddle_bands")]
        rows.append(cells)
    header = ["reconstruction", "mean AP", "min AP", "at intensity", "intensities with AP < 0.5"]
    if uncertain:
        header += [f"{100 * level:g} % interval entirely below 0.5", f"{100 * level:g} % interval straddles 0.5"]
    distance = match_distance_text(*(float(arrays[f"match_{key}"]) for key in MATCH_KEYS[:4]))
    pointwise = float(arrays["match_pointwise"])
    if arrays["matched"]:
        verdict = (f"The model's curve matches a Gaussian blur of σ = {sigma:.3f} (mean |ΔAP| {distance}; worst point "
                   f"{pointwise:.2f} of its AP).")
    else:
        edge = int(arrays["matched_sigma_index"]) == len(arrays["sigmas"]) - 1
        why = (f"the closest blur is the largest σ of the grid ({sigma:.3f}; mean |ΔAP| {distance}), so the model may "
               "lie beyond it: extend the grid (a larger σ maximum, `--sigma-max`)" if edge
               else f"the closest blur, σ = {sigma:.3f}, differs by a mean |ΔAP| of {distance}, at worst by "
                    f"{pointwise:.2f} of the AP at one intensity")
        verdict = f"No match within the grid: {why}."
    verdict += f" The rule: {match_rule(level if n else None)}."
    return (f"# Experiment 3: {label}, reconstruction of the {p['reconstruct']} image\n\n"
            f"Checkpoint `{config['checkpoint']['path']}`; {count(len(imageset), 'image')} from `{config['data']['data']}` "
            "prepared as "
            f"the model was trained ({imageset.images.shape[-1]} px); {radius_text(p, imageset.images.shape[-1])}, "
            f"{count(len(arrays['intensities']), 'intensity')}, seed {p['seed']}, centres {config['centers']}; blur grid "
            f"{config['match']} ({sigma_text(arrays['sigmas'])}).\n\n"
            f"Mean L1 reconstruction error of the normal images: {float(arrays['recon_error']):.5f}. {verdict}"
            f"{bootstrap_sentence(p, len(imageset)) if uncertain else ''}\n\n" + markdown_table(header, rows) + "\n")


def run_model(out: str | Path, checkpoint: str | Path, data: DataConfig = DataConfig(), *, reconstruct: str = "normal",
              radius: float = 20, n_intensities: int = 100, n_sigmas: int = 100, sigma_max: float = 5.0, seed: int = 0,
              centers=None, match: str | Path | None = None, save_inputs: bool = False, batch_size: int = 64,
              device: str | None = None, threads: int | None = None, bootstrap: int = N_RESAMPLES,
              confidence: float = CONFIDENCE, overwrite: bool = False, execution: Execution | None = None) -> Path:
    """Experiment 3 (``blindspot pitfalls model``) into the result folder ``out``.

    The images are prepared as the model was trained (its checkpoint's preparation); the radius is
    given at the native size and scaled with them. On a cluster (``execution``) the workers compute
    the blur grid the model is matched to; the model's passes run in this process.
    """
    inputs = [checkpoint, data.data, match, centers_file(centers)]
    check_output(out, inputs=inputs, overwrite=overwrite, fingerprint=COMMANDS["model"])
    if reconstruct not in RECONSTRUCT:
        raise BlindspotError(f"`reconstruct` must be 'normal' or 'anomalous'; got {reconstruct!r}.")
    parameters = grid_parameters(radius=radius, n_intensities=n_intensities, n_sigmas=n_sigmas, sigma_max=sigma_max,
                                  seed=seed, save_inputs=save_inputs, bootstrap=bootstrap, confidence=confidence,
                                  reconstruct=reconstruct, batch_size=batch_size,
                                  checkpoint=str(checkpoint))
    model = load_model(checkpoint, device=device)
    imageset = experiment_images(data.prepared_like(model.preparation, what=f"'{checkpoint}'"))
    with open_pool(execution) as pool, result_folder(out, overwrite=overwrite, inputs=inputs,
                                                     fingerprint=COMMANDS["model"]) as folder:
        write_model(folder, imageset, parameters, model=model, checkpoint=str(checkpoint), match=Path(match) if match else None,
                    centers=centers, device=device, threads=threads, checkpoint_file=checkpoint, pool=pool)
    return Path(out)


# --------------------------------------------------------------------------------------------
# compare


def load_model_result(folder: str | Path) -> tuple[dict, dict]:
    """The arrays and config of an experiment-3 result folder, with clear errors for anything else."""
    folder = Path(folder)
    config = load_json(folder / "config.json")
    if config.get("command") != COMMANDS["model"]:
        raise BlindspotError(f"'{folder}' is not an experiment-3 (pitfalls model) result folder.")
    keys = ("intensities", "ap", "matched_ap", "matched_sigma", "matched", "recon_error", "histogram_counts", "histogram_edges")
    try:
        with np.load(folder / "results.npz") as saved:
            arrays = {k: saved[k] for k in keys}
    except (OSError, KeyError, ValueError) as err:
        raise BlindspotError(f"'{folder}': results.npz is missing or unreadable ({err}).") from None
    return arrays, config


def _mean_ap_interval(folder: str | Path, config: dict) -> tuple:
    """The interval of an experiment-3 result's mean AP over the intensities, for the error-vs-AP bars; (None, None) without one."""
    with np.load(Path(folder) / "results.npz") as saved:
        per_image = saved["ap_per_image"] if "ap_per_image" in saved.files else None
    return (None, None) if per_image is None else _grid_mean_interval(per_image, config["parameters"])


def _data_difference(a: dict, b: dict) -> str:
    """What differs between the data of two results' configs, in words: the first differing setting, else the images."""
    def settings(config: dict) -> dict:
        record = dict(config["data"].get("config") or {})
        return {**{k: v for k, v in record.items() if k != "preparation"}, **(record.get("preparation") or {})}

    mine, theirs = settings(a), settings(b)
    for key in [*mine, *(k for k in theirs if k not in mine)]:
        if mine.get(key) != theirs.get(key):
            return f"{key} {mine.get(key)!r} and {theirs.get(key)!r}"
    if len(a["images"]) != len(b["images"]):
        return f"{count(len(a['images']), 'image')} and {count(len(b['images']), 'image')}"
    return "the same settings, but the images' content differs"


def compare_models(result_dirs: Sequence[str | Path], out: str | Path, *, overwrite: bool = False) -> Path:
    """``blindspot pitfalls compare``: curves, error-vs-AP scatter and a table for several experiment-3 results."""
    check_output(out, inputs=result_dirs, overwrite=overwrite, fingerprint="pitfalls compare")
    if not result_dirs:
        raise BlindspotError("pitfalls compare needs at least one experiment-3 result folder.")
    loaded = [load_model_result(d) for d in result_dirs]
    for folder, (_, config) in zip(result_dirs[1:], loaded[1:]):
        if config["fingerprint"] != loaded[0][1]["fingerprint"]:
            raise BlindspotError(f"'{result_dirs[0]}' and '{folder}' were computed on different images "
                                 f"({_data_difference(loaded[0][1], config)}); compare results on the same data.")
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
        sigma = f"{float(arrays['matched_sigma']):.3f}" + ("" if arrays["matched"] else " (no match)")
        rows.append([label, options, config["parameters"]["reconstruct"], f"{error:.5f}", f"{ap:.3f}", sigma, f"`{folder}`"])
    header = ["model", "options", "reconstructs", "recon error (L1)", "mean AP", "matched σ", "result"]
    with result_folder(out, overwrite=overwrite, inputs=result_dirs, fingerprint="pitfalls compare") as folder:
        write_json(folder / "config.json", {"command": "pitfalls compare", "results": [str(d) for d in result_dirs],
                                             "labels": labels, "versions": provenance()})
        save_npz(folder / "results.npz", labels=np.asarray(labels), recon_error=np.asarray(errors), mean_ap=np.asarray(mean_ap),
                 matched_sigma=np.asarray([float(r["matched_sigma"]) for r in results]))
        write_text(folder / "summary.md",
                   "# Experiment 3: trained models compared\n\n"
                   "Mean L1 reconstruction error of the normal images against the mean AP over the intensity grid, and the σ "
                   "of the Gaussian blur each model's AP curve is closest to (MIDL 2022 Fig. 1a, 3a and 4b).\n\n"
                   f"{markdown_table(header, rows)}\n\n![curves](curves.png) ![error vs AP](error_vs_ap.png)\n")
        save_figure(plot_compare_curves(results, labels), folder / "curves.png")
        save_figure(plot_error_vs_ap(errors, mean_ap, labels, ap_intervals=[_mean_ap_interval(d, config) for d, (_, config)
                                                                            in zip(result_dirs, loaded)]),
                    folder / "error_vs_ap.png")
    return Path(out)

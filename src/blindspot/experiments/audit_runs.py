"""The result folder of ``blindspot audit``: load the model and the data, audit, write a self-describing folder.

Everything is computed before the folder is created, so a model that fails, returns another shape
or non-finite values, or a bad reconstructions folder leaves nothing behind. The folder holds:

* ``report.html`` — one self-contained page (:mod:`blindspot.report_html`): the verdict first, then
  the profiles, a table per scoring function, the worst cases, the histogram and the provenance;
* ``results.npz`` — every array the report draws (:func:`blindspot.experiments.audit.audit`):
  ``intensities`` [I], ``scores`` [F], ``centers`` [N, 2] (row, column in the prepared images),
  ``ap_normal`` / ``ap_anomalous`` [F, I] (mean over images), ``ap_per_image_normal`` /
  ``ap_per_image_anomalous`` [N, F, I], ``matched_sigma`` (normal mode; ``matched_sigma_anomalous``),
  ``sigmas`` [S] and ``blur_ap`` [I, S], ``textures`` [T] / ``ap_texture`` [F, T], ``radii`` [R] /
  ``size_intensities`` [2] / ``ap_size_normal`` and ``ap_size_anomalous`` [F, 2, R], the per-score
  summaries (``mean_ap_*``, ``min_ap_*``, ``blind_fraction_*``, ``blind_mass_*`` [F]), ``ranking``
  [F] and ``best_score``, the histogram, the worst cases, and with ``save_inputs`` the prepared
  images ``inputs`` [N, H, W] exactly as scored and their ``reconstructions``. Arrays of the
  anomalous mode are NaN when only reconstructions were given (``has_anomalous`` False);
* ``config.json`` — parameters, seed, the model (spec, kind, file hashes, input range,
  preparation), the data and the healthy statistics, timings and model calls, versions, and
  ``notes``: what the run cannot vouch for (a factory audited without ``weights``), also shown at
  the top of ``summary.md`` and ``report.html`` and warned about in the terminal;
* ``summary.md`` — the verdict and the ranking table.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from blindspot.data import DataConfig, ImageSet, load, refuse_overlap, shared_inputs
from blindspot.errors import BlindspotError
from blindspot.execution import Execution, execution_record, open_pool
from blindspot.experiments.audit import audit
from blindspot.experiments.grid import grid_fingerprint
from blindspot.experiments.pitfalls import intensity_grid_axes
from blindspot.experiments.runs import centers_file, centers_input, grid_parameters, radius_text, sigma_text, with_radius
from blindspot.experiments.uncertainty import audit_intervals, interval_sentence
from blindspot.models.device import torch_threads
from blindspot.models.adapters import ReconstructionFolder, load_adapter, reconstruction_key
from blindspot.report import markdown_table
from blindspot.report_html import audit_verdict, ranking_rows, write_audit_html
from blindspot.results import (check_output, file_sha256, input_hashes, output_lock, provenance, result_folder, save_npz,
                               write_json, write_text)
from blindspot.scoring import SCORES, HealthyStats, score_description
from blindspot.wording import count

__all__ = ["audit_images", "parse_scores", "run_audit", "write_audit"]

#: Arrays of the audit that are not stored in results.npz (they go to config.json) or only with ``save_inputs``.
_NOT_ARRAYS = ("timings", "model_calls", "model_images")


def parse_scores(scores: str | Sequence[str] | None) -> list[str]:
    """Scoring function names from ``"l1,ssim"`` or a list; None: every one (:data:`blindspot.scoring.SCORES`).

    >>> parse_scores("ssim, l1")
    ['ssim', 'l1']
    """
    if scores is None:
        return list(SCORES)
    names = [s.strip() for s in (scores.split(",") if isinstance(scores, str) else scores) if str(s).strip()]
    unknown = [n for n in names if n not in SCORES]
    if unknown or not names:
        raise BlindspotError(f"`scores` must be a comma-separated list of {', '.join(SCORES)}; got {scores!r}.")
    if len(set(names)) != len(names):
        raise BlindspotError(f"`scores` names a scoring function twice: {scores!r}.")
    return names


def audit_images(data: DataConfig) -> ImageSet:
    """The normal images of the audited split (default: test), each with a foreground."""
    imageset = load(data, default_split="test").normal()
    imageset.require_foreground()
    return imageset


def _statistics(data: DataConfig, train_data: DataConfig | None, imageset: ImageSet, scores: list[str]):
    """Healthy statistics for ``rarity`` and ``zscore``: from ``train_data``, else the train split of the data,
    else (no separate healthy images) the audited images themselves, said in the record."""
    if not {"rarity", "zscore"} & set(scores):
        return None, {"source": "none (no score needs them)"}
    if train_data is not None:
        train = load(train_data, default_split="train").normal()
        refuse_overlap(train, imageset, "`train_data` images and the audited images")
        source = f"`{train_data.data}` ({train.source.get('split')} split)"
    else:
        try:
            train = load(replace(data, split=None, slices=None), default_split="train").normal()
        except BlindspotError:
            train = None
        if train is None or len(train) < 2 or shared_inputs(train, imageset) or train.images.shape[1:] != imageset.images.shape[1:]:
            warnings.warn(f"`data` '{data.data}' has no separate healthy train split; the rarity and zscore statistics come "
                          "from the audited images themselves (give `train_data` for separate healthy images).",
                          UserWarning, stacklevel=3)
            train, source = imageset, "the audited images themselves (no separate train split)"
        else:
            source = f"the train split of `{data.data}`"
    if len(train) < 2 and "zscore" in scores:
        raise BlindspotError(f"the zscore score needs at least 2 healthy images; {source} has {len(train)}.")
    stats = HealthyStats.fit(train.images, scores=scores)
    return stats, {"source": source, "n_images": len(train), "files": list(train.source.get("files", [])),
                   **stats.record()}


def run_audit(
    out: str | Path,
    model: str | Path | None = None,
    data: DataConfig = DataConfig(),
    *,
    reconstructions: str | Path | None = None,
    weights: str | Path | None = None,
    input_range: Sequence[float] | str | None = None,
    train_data: DataConfig | None = None,
    scores: Sequence[str] | str | None = None,
    radius: float = 20,
    n_intensities: int = 100,
    n_sigmas: int = 100,
    sigma_max: float = 5.0,
    seed: int = 0,
    centers=None,
    save_inputs: bool = False,
    batch_size: int = 64,
    device: str | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    note: str | None = None,
    label: str | None = None,
    execution: Execution | None = None,
) -> Path:
    """``blindspot audit`` into the result folder ``out``; returns the path of its ``report.html``.

    Parameters
    ----------
    out : path
        The result folder (the output rule of :func:`blindspot.results.check_output`).
    model : path or str, optional
        A checkpoint, TorchScript or ONNX file, or ``package.module:function``
        (:func:`blindspot.models.adapters.load_adapter`); exclusive with ``reconstructions``.
    data : DataConfig
        The images; prepared at the model's input size (a checkpoint's preparation, an ONNX file's
        fixed size) unless ``data`` sets another, which is an error for a checkpoint's size.
    reconstructions : path, optional
        A folder of the normal images' reconstructions (:class:`~blindspot.models.adapters.ReconstructionFolder`);
        only the normal mode is then computed.
    weights, input_range
        A state dict for a factory's network; the model's input range (default 0, 1).
    train_data : DataConfig, optional
        Healthy images for the ``rarity`` and ``zscore`` statistics (default: the train split of ``data``).
    scores : "l1,ssim,..." or list, optional
        Scoring functions (default: all).
    radius, n_intensities, n_sigmas, sigma_max, seed, centers
        The pitfall grid, as in ``blindspot pitfalls model`` (radius in native pixels, scaled with the images).
    save_inputs : bool
        Also store the prepared images and their normal reconstructions in ``results.npz``.
    batch_size, device, threads
        Images per model call; where the model runs; CPU threads (torch, onnxruntime, the per-image work).
    note : str, optional
        A sentence added to the report (e.g. a reduced grid).
    label : str, optional
        How the report names the model (default: ``model`` or ``reconstructions`` as given).
    execution : Execution, optional
        Run the per-image work of the normal mode and the blur grid on a Dask cluster
        (:mod:`blindspot.execution`); the model's passes stay in this process. The numbers are the same.
    """
    if (model is None) == (reconstructions is None):
        raise BlindspotError("give either `model` (a file or package.module:function) or `reconstructions` (a folder), "
                             "not both.")
    model_file = str(model) if model is not None and Path(str(model)).expanduser().exists() else None
    centers_path = centers_file(centers)
    inputs = [model_file, weights, reconstructions, data.data, train_data and train_data.data, centers_path]
    check_output(out, inputs=inputs, overwrite=overwrite, fingerprint="audit")
    with output_lock(out, "audit"):  # held from here until the folder is renamed: one command per --out
        names = parse_scores(scores)
        parameters = grid_parameters(radius=radius, n_intensities=n_intensities, n_sigmas=n_sigmas, sigma_max=sigma_max,
                                      seed=seed, save_inputs=save_inputs, batch_size=batch_size)
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise BlindspotError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
        if reconstructions is not None and weights is not None:
            raise BlindspotError("`weights` applies to a factory `model`, not to `reconstructions`.")
        adapter, folder_source = None, None
        if model is not None:
            adapter = load_adapter(model, weights=weights, input_range=input_range, device=device, threads=threads)
            if adapter.preparation:
                data = data.prepared_like(adapter.preparation, what=f"'{model}'")
            elif adapter.size is not None:
                given = data.preparation.size
                if given is None:
                    data = data.with_preparation(size=adapter.size)
                elif given != adapter.size:
                    raise BlindspotError(f"`size` {given} differs from the {adapter.size} px input that '{model}' declares; omit "
                                         "`size`.")
        else:
            folder_source = ReconstructionFolder(reconstructions, input_range=input_range)
        imageset = audit_images(data)
        parameters = with_radius(parameters, imageset)
        intensities, sigmas = intensity_grid_axes(n_intensities, n_sigmas, sigma_max)
        explicit, centers_record = centers_input(centers)
        stats, stats_record = _statistics(data, train_data, imageset, names)
        normal = folder_source.read(imageset.names, imageset.images.shape[1:]) if folder_source is not None else None
        with torch_threads(threads), open_pool(execution) as pool:
            result = audit(adapter, imageset.images, reconstructions=normal, intensities=intensities, sigmas=sigmas,
                           radius=parameters["radius_used"], scores=names, stats=stats, seed=seed, centers=explicit,
                           batch_size=batch_size, device=device, threads=threads, pool=pool)
            executed = execution_record(pool)
        result.update(audit_intervals(result, parameters))  # intervals over images (1,000 resamples of --seed, 95 %)
        model_record = adapter.record() if adapter is not None else folder_source.record()
        notes = [model_record["note"]] if model_record.get("note") else []  # e.g. a factory without `weights`
        if label is not None:
            model_record["spec"] = label
        if model_file is not None:
            model_record["sha256"] = file_sha256(model_file)
        if weights is not None:
            model_record["weights_sha256"] = file_sha256(weights)
        if model_record.get("source"):
            with contextlib.suppress(OSError):
                model_record["source_sha256"] = file_sha256(model_record["source"])
        files = [*imageset.source.get("files", []), model_file, weights, centers_path, *stats_record.get("files", []),
                 *(folder_source.files() if folder_source is not None else [])]
        config = {
            "command": "audit", "parameters": parameters, "seed": seed, "model": model_record, "data": imageset.source,
            "preparation": imageset.source["config"]["preparation"], "images": imageset.names,
            "reconstruction_keys": [reconstruction_key(n) for n in imageset.names],
            "fingerprint": grid_fingerprint(imageset.images), "centers": centers_record,
            "scores": {name: score_description(name) for name in names},
            "statistics": {k: v for k, v in stats_record.items() if k != "files"},
            "timings": result["timings"], "model_calls": result["model_calls"], "model_images": result["model_images"],
            "execution": executed,
            "note": note, "notes": notes, "input_hashes": input_hashes([f for f in dict.fromkeys(files) if f is not None]),
            "versions": provenance(),
        }
        with result_folder(out, overwrite=overwrite, inputs=inputs, fingerprint="audit") as folder:
            write_audit(folder, result, config, imageset, save_inputs=save_inputs)
    return Path(out) / "report.html"


def write_audit(folder: Path, result: dict, config: dict, imageset: ImageSet, *, save_inputs: bool = False) -> None:
    """Write ``results.npz``, ``config.json``, ``summary.md`` and ``report.html`` of an audit into ``folder``."""
    arrays = {k: v for k, v in result.items() if k not in _NOT_ARRAYS and k != "reconstructions"}
    if save_inputs:
        arrays.update(inputs=imageset.images, reconstructions=result["reconstructions"])
    save_npz(folder / "results.npz", **arrays)
    write_json(folder / "config.json", config)
    write_text(folder / "summary.md", summary_markdown(result, config, imageset))
    write_audit_html(folder / "report.html", result, config)


def summary_markdown(result: dict, config: dict, imageset: ImageSet) -> str:
    """The verdict and the ranking of the scoring functions, in markdown."""
    p = config["parameters"]
    size = imageset.images.shape[-1]
    lines = [f"# Audit of `{config['model']['spec']}`", "",
             f"{len(imageset)} normal images from `{imageset.source['data']}` ({imageset.source.get('split')} split) "
             f"prepared at {size} px; {radius_text(p, size)}, {count(len(result['intensities']), 'intensity')}, "
             f"{sigma_text(result['sigmas'])}, seed {p['seed']}, centres {config['centers']}.", ""]
    if config.get("note"):
        lines += [config["note"], ""]
    lines += [line for text in config.get("notes", []) for line in (f"**Note:** {text}", "")]
    lines += ["## Verdict", "", *[f"- {line}" for line in audit_verdict(result)], ""]
    header, rows = ranking_rows(result)
    lines += [f"## Scoring functions, ranked ({result['ranking_mode']} mode)", "", markdown_table(header, rows), ""]
    if "bootstrap" in result:  # blindspot.experiments.uncertainty.audit_intervals
        lines += [interval_sentence(*(float(v) for v in result["bootstrap"]), len(imageset)), ""]
    lines += ["The full report, with the profiles, the tables per scoring function, the worst cases and the provenance: "
              "[`report.html`](report.html).", ""]
    return "\n".join(lines)

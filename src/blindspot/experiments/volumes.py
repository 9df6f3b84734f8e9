"""MIDL 2022 experiments 1 and 2 on whole 3-D volumes: AP of ``|blur_σ(x) − x_anomalous|`` over every voxel.

The reconstruction of a volume x is ``scipy.ndimage.gaussian_filter(x, σ)`` (3-D, ``truncate=4``,
mode ``reflect``; σ = 0 is the identity); the anomaly is a ball, or a 3-D texture, inside the
foreground (:mod:`blindspot.anomalies3d`); the score is sklearn's average precision over all
voxels of each volume, background included, then the mean over volumes. The engine that makes
this exact and fast is :mod:`blindspot.experiments.volume_engine`. Volumes are read one at a
time (:func:`blindspot.data.whole_volumes`); each finished volume is cached so that an
interrupted run resumes. With ``compare_slices`` the 2-D experiment of
:mod:`blindspot.experiments.grid` runs on each anomaly's central slice beside the 3-D one.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from blindspot.anomalies import TEXTURES
from blindspot.anomalies3d import ball_voxels, check_volume_centers, sample_volume_center, texture_values
from blindspot.data.brats import Volume
from blindspot.errors import BlindspotError
from blindspot.experiments.grid import check_grid_bytes, image_grid
from blindspot.experiments.pitfalls import random_streams
from blindspot.experiments.volume_engine import (
    GridWorkers,
    ap_against_nonzero_negatives,
    ap_against_sorted_negatives,
    foreground_box,
)
from blindspot.progress import progress
from blindspot.report import HISTOGRAM_BINS
from blindspot.results import save_npz

__all__ = [
    "RADIUS_UNITS",
    "mm_spacing",
    "radius_in_voxels",
    "volume_intensity_experiment",
    "volume_texture_experiment",
]

#: Units of ``radius``: voxels (the default) or millimetres (using each volume's voxel spacing).
RADIUS_UNITS = ("voxel", "mm")


# --------------------------------------------------------------------------------------------
# volumes, radii, centres


def mm_spacing(spacing: Sequence[float] | None, name: str) -> np.ndarray:
    """A header's voxel spacing checked for a radius in mm: three finite sizes > 0 (a zero is never taken as 1 mm)."""
    if spacing is None:
        raise BlindspotError(f"{name} has no voxel spacing; give `radius` in voxels (`radius_unit` voxel).")
    spacing = np.asarray(spacing, float)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise BlindspotError(f"{name} has the voxel spacing {spacing.tolist()} in its header; a radius in mm needs "
                             "three finite sizes > 0: give `radius` in voxels (`radius_unit` voxel).")
    return spacing


def radius_in_voxels(radius: float, unit: str, spacing: Sequence[float] | None, shape: Sequence[int], name: str) -> np.ndarray:
    """The ball's radius along each array axis in voxels, checked to fit the volume (``[1, n/2)`` voxels per axis).

    ``unit`` ``"voxel"``: ``radius`` along every axis; ``"mm"``: ``radius / spacing`` per axis (the
    header's voxel size), so the ball is round in millimetres on anisotropic voxels.
    """
    if unit not in RADIUS_UNITS:
        raise BlindspotError(f"`radius_unit` must be voxel or mm; got {unit!r}.")
    if not (np.isfinite(radius) and radius > 0):
        raise BlindspotError(f"`radius` must be > 0; got {radius}.")
    if unit == "mm":
        spacing = mm_spacing(spacing, name)
        radii = radius / spacing
        given = f"{radius:g} mm is {', '.join(f'{r:.3g}' for r in radii)} voxels (spacing " \
                f"{' × '.join(f'{s:g}' for s in spacing)} mm) in {name}"
    else:
        radii = np.full(3, float(radius))
        given = f"{radius:g} voxels in {name}"
    for axis, (r, n) in enumerate(zip(radii, shape)):
        if not 1 <= r < n / 2:
            raise BlindspotError(f"the ball does not fit: `radius` {given} of shape {tuple(int(s) for s in shape)}; "
                                 f"along axis {axis} it must lie in [1, {n / 2:g}) voxels.")
    return radii


def _on_foreground(volume: np.ndarray, center: np.ndarray, k: int, name: str) -> None:
    if not volume[tuple(center)] > 0:
        raise BlindspotError(f"`centers` row {k} {center.tolist()} is a background voxel of {name}; centres lie in the foreground.")


def _slices_in(slices: Sequence[int] | None, depth: int, axis: int, name: str) -> Sequence[int] | None:
    if slices is None:
        return None
    bad = [s for s in slices if not 0 <= s < depth]
    if bad:
        raise BlindspotError(f"slice {bad[0]} is out of range for {name} along axis {axis} (0..{depth - 1}); "
                             "choose other `slices`.")
    return slices


# --------------------------------------------------------------------------------------------
# experiments


def _cached(path: Path | None, keys: Sequence[str]) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        with np.load(path) as saved:
            return {k: saved[k] for k in keys}
    except Exception:  # a file cut short by a crash or a full disk; np.load raises many types
        warnings.warn(f"the cached volume '{path.name}' is unreadable; it is recomputed.", UserWarning, stacklevel=3)
        return None


def _as_volumes(volumes) -> tuple[list[str], Callable[[int], object], int]:
    """(names, reader, count) of a VolumeSet or of a sequence of arrays (spacing unknown)."""
    if hasattr(volumes, "reader") and hasattr(volumes, "names"):
        return list(volumes.names), volumes.read, len(volumes)
    arrays = list(volumes)

    def read(k: int):
        image = np.asarray(arrays[k], dtype=np.float32)
        if image.ndim != 3:
            raise BlindspotError(f"volume {k} has shape {image.shape}; expected a 3-D volume.")
        return Volume(f"volume {k}", image, None, image > 0, (), None)

    return [f"volume {k}" for k in range(len(arrays))], read, len(arrays)


def _display(volume) -> str:
    return f"'{volume.files[0]}'" if volume.files else volume.name


def _run(volumes, rows_for: Callable, *, sigmas: np.ndarray, radius: float, radius_unit: str, seed: int,
         centers, axis: int, slices: Sequence[int] | None, compare_slices: bool, threads: int | None,
         cache_dir: str | Path | None, keep_inputs: bool, kind: str, key_params: dict, pool=None) -> dict:
    """The loop over volumes shared by both experiments: centre, label, rows of values, grid (and the slice grid).

    Volumes are read one at a time here (the centres are drawn volume after volume). With ``pool``
    each volume not in the cache is one task on the cluster (:func:`volume_task`): the worker reads
    the volume again (its path travels, not its voxels; a volume read differently there is an
    error) and computes every σ; this process writes the cache.
    """
    names, read, n = _as_volumes(volumes)
    if n == 0:
        raise BlindspotError("there is no volume to score.")
    if centers is not None:
        centers = np.asarray(centers)
        if centers.shape != (n, 3) or centers.dtype.kind not in "iu":
            raise BlindspotError(f"`centers` must be integers of shape ({n}, 3), one voxel index triple per volume; "
                                 f"got {centers.dtype} {centers.shape}.")
    center_rng, texture_rng = random_streams(seed)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    used, radii_used, spacings, shapes, slice_index, inputs, saved = [], [], [], [], [], [], []
    counts, slice_counts = np.zeros(HISTOGRAM_BINS, np.int64), np.zeros(HISTOGRAM_BINS, np.int64)
    digest = hashlib.sha256()
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    wanted = ("ap", "residual", "slice_ap", "slice_residual") if compare_slices else ("ap", "residual")
    paths: list = []

    def prepared():
        """Each volume in turn, read, with its centre, label, rows and cache entry (the metadata recorded on the way)."""
        nonlocal counts, slice_counts
        for k in range(n):
            volume = read(k)
            x, name = np.ascontiguousarray(volume.image, dtype=np.float32), _display(volume)
            try:
                box = foreground_box(x)
            except BlindspotError:
                raise BlindspotError(f"{name} has an empty foreground (no voxel > 0); an anomaly centre lies in the "
                                     "foreground.") from None
            radii = radius_in_voxels(radius, radius_unit, volume.spacing, x.shape, name)
            chosen = _slices_in(slices, x.shape[axis], axis, name)
            if keep_inputs and shapes and x.shape != shapes[0]:
                raise BlindspotError(f"{name} has the shape {x.shape} but the first volume {shapes[0]}; volumes of "
                                     "different shapes cannot be stacked into `inputs`: omit `save_inputs`.")
            if centers is None:
                center = sample_volume_center(x, center_rng, axis=axis, slices=chosen, name=name)
            else:
                center = check_volume_centers(centers[k : k + 1], [x.shape], names=[name])[0]
                _on_foreground(x, center, k, name)
            index = ball_voxels(x, center, radii)
            rows = np.atleast_2d(np.asarray(rows_for(x, index, center, radii, texture_rng), np.float32))
            if k == 0:  # the memory of the whole grid, estimated from the first volume before any is computed
                check_grid_bytes(n, len(rows), len(sigmas), len(index[0]), x.size,
                                 0 if pool is not None else GridWorkers(threads).workers,
                                 n_intensities=len(rows) if kind == "intensity" else None, unit="volume")
            volume_key = hashlib.sha256(np.ascontiguousarray(x)).hexdigest()
            digest.update(np.ascontiguousarray(x))
            key = hashlib.sha256(json.dumps({"volume": volume_key, "center": center.tolist(), "radii": radii.tolist(),
                                             "sigmas": np.asarray(sigmas).tolist(), "axis": axis,
                                             "compare": compare_slices, **key_params}).encode())
            key.update(np.ascontiguousarray(rows))
            path = cache / f"volume-{key.hexdigest()[:16]}-{k:06d}.npz" if cache is not None else None
            paths.append(path)
            saved.append(_cached(path, wanted))
            used.append(center)
            radii_used.append(radii)
            spacings.append(np.full(3, np.nan) if volume.spacing is None else np.asarray(volume.spacing, float))
            shapes.append(x.shape)
            counts += np.histogram(x[x > 0], bins=edges)[0]
            if compare_slices:
                slice_index.append(int(center[axis]))
                plane = np.take(x, int(center[axis]), axis=axis)
                slice_counts += np.histogram(plane[plane > 0], bins=edges)[0]
            if keep_inputs:
                inputs.append(x)
            yield k, x, box, index, center, rows, volume_key

    def store(k: int, result: dict) -> None:
        saved[k] = result
        if paths[k] is not None:
            save_npz(paths[k], **result)

    if pool is None:
        with GridWorkers(threads, folder=cache) as workers, progress(n * len(sigmas), f"{kind} grid on volumes", unit="σ",
                                                                     every=len(sigmas)) as bar:
            for k, x, box, index, center, rows, _ in prepared():
                if saved[k] is not None:
                    bar.update(len(sigmas))
                    continue
                grid_ap, grid_residual = workers.grid(x, index, rows, sigmas, box=box, on_sigma=lambda: bar.update(1))
                result = {"ap": grid_ap, "residual": grid_residual}
                if compare_slices:
                    result["slice_ap"], result["slice_residual"] = _slice_grid(x, index, center, rows, axis, sigmas)
                store(k, result)
    else:
        todo: list[int] = []

        def tasks():
            for k, x, _, _, center, rows, volume_key in prepared():
                if saved[k] is None:
                    todo.append(k)
                    source = (volumes.read, k) if hasattr(volumes, "reader") else x
                    yield source, volume_key, center, radii_used[k], rows, [float(s) for s in sigmas], compare_slices, axis

        pool.map(volume_task, tasks(), desc=f"{kind} grid on volumes", unit="σ", total=n * len(sigmas),
                 weight=lambda i: len(sigmas), on_result=lambda i, result: store(todo[i], result), every=len(sigmas))
    digest.update(json.dumps({}).encode())
    result = {
        "sigmas": np.asarray(sigmas, float),
        "ap_per_volume": np.stack([entry["ap"] for entry in saved]),
        "residual_per_volume": np.stack([entry["residual"] for entry in saved]),
        "centers": np.stack(used).astype(np.int64),
        "radius_voxels": np.stack(radii_used),
        "spacing": np.stack(spacings),
        "shapes": np.asarray(shapes, np.int64),
        "histogram_counts": counts,
        "histogram_edges": edges,
        "names": names,
        "fingerprint": digest.hexdigest()[:16],
    }
    if compare_slices:
        result.update(slice_axis=np.int64(axis), slice_index=np.asarray(slice_index, np.int64),
                      slice_ap_per_volume=np.stack([entry["slice_ap"] for entry in saved]),
                      slice_residual_per_volume=np.stack([entry["slice_residual"] for entry in saved]),
                      slice_histogram_counts=slice_counts)
    if keep_inputs:
        result["inputs"] = np.stack(inputs)
    return result


def volume_task(source, volume_key: str, center: np.ndarray, radii: np.ndarray, rows: np.ndarray, sigmas: Sequence[float],
                compare_slices: bool, axis: int) -> dict:
    """Every σ of one volume (a task on a Dask worker): read the volume, check it, and compute as :func:`_run` does.

    ``source`` is ``(read, k)`` (the worker reads volume k itself) or the volume's array.
    """
    if isinstance(source, np.ndarray):
        x = source
    else:
        read, k = source
        volume = read(k)
        x = np.ascontiguousarray(volume.image, dtype=np.float32)
        if hashlib.sha256(x).hexdigest() != volume_key:
            raise BlindspotError(f"a worker read {_display(volume)} with other voxels than this process; every worker must "
                                 "read the same data (the same paths, files and versions).")
    index = ball_voxels(x, center, radii)
    with GridWorkers(1) as workers:
        grid_ap, grid_residual = workers.grid(x, index, rows, sigmas, box=foreground_box(x))
    result = {"ap": grid_ap, "residual": grid_residual}
    if compare_slices:
        result["slice_ap"], result["slice_residual"] = _slice_grid(x, index, center, rows, axis, sigmas)
    return result


def _slice_grid(x, index, center, rows, axis, sigmas) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D experiment on the anomaly's central slice: its disk (the ball's cross-section) and 2-D blur."""
    plane = int(center[axis])
    image = np.ascontiguousarray(np.take(x, plane, axis=axis))
    inside = index[axis] == plane
    label = np.zeros(image.shape, bool)
    label[tuple(i[inside] for a, i in enumerate(index) if a != axis)] = True
    values = rows if rows.shape[1] == 1 else rows[:, inside]
    return image_grid(image, label, values, sigmas)


def _mean_over_volumes(result: dict, prefix: str = "") -> None:
    result[f"{prefix}ap"] = result[f"{prefix}ap_per_volume"].mean(axis=0)
    result[f"{prefix}residual_mean"] = result.pop(f"{prefix}residual_per_volume").mean(axis=0)


def volume_intensity_experiment(
    volumes,
    *,
    intensities: Sequence[float],
    sigmas: Sequence[float],
    radius: float = 20,
    radius_unit: str = "voxel",
    seed: int = 0,
    centers: np.ndarray | None = None,
    axis: int = 2,
    slices: Sequence[int] | None = None,
    compare_slices: bool = False,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    keep_inputs: bool = False,
    pool=None,
) -> dict:
    """Experiment 1 on whole volumes: AP of a constant-intensity ball for every (intensity, σ) cell.

    Parameters
    ----------
    volumes : VolumeSet or sequence of ndarray (X, Y, Z)
        Normal volumes in [0, 1] (foreground > 0), read one at a time
        (:func:`blindspot.data.whole_volumes`); plain arrays have no voxel spacing.
    intensities, sigmas : sequences of float
        The grid's axes.
    radius, radius_unit : float, {"voxel", "mm"}
        The ball's radius (:func:`radius_in_voxels`).
    seed, centers
        Centres are drawn uniformly over each volume's foreground from the seed's first stream
        (:func:`blindspot.experiments.pitfalls.random_streams`), one volume after the other, or
        given: int ``(N, 3)`` voxel indices in array index order, on the foreground.
    axis, slices
        With ``slices``, centres are drawn on those slices along ``axis`` only.
    compare_slices : bool
        Also run the 2-D experiment on each anomaly's central slice along ``axis``: the slice's
        pixels, the ball's cross-section as the disk, the 2-D blur (``slice_*`` arrays).

    Returns
    -------
    dict with ``intensities`` (I,), ``sigmas`` (S,), ``ap`` (I, S) mean over volumes,
    ``ap_per_volume`` (N, I, S), ``residual_mean`` (I, S) (mean of the anomaly map over voxels and
    volumes), ``centers`` (N, 3), ``radius_voxels`` (N, 3), ``spacing`` (N, 3), ``shapes`` (N, 3),
    ``histogram_counts`` / ``histogram_edges`` of the foreground, ``names``, ``fingerprint``; with
    ``compare_slices`` also ``slice_axis``, ``slice_index`` (N,), ``slice_ap`` (I, S),
    ``slice_ap_per_volume`` (N, I, S), ``slice_residual_mean`` (I, S), ``slice_histogram_counts``;
    with ``keep_inputs`` the volumes as scored, ``inputs`` (N, X, Y, Z).

    ``pool``: a :class:`blindspot.execution.Pool` whose workers compute the volumes (:func:`_run`).
    """
    intensities = np.asarray(intensities, float)
    values = intensities.astype(np.float32)[:, None]
    result = _run(volumes, lambda x, index, center, radii, rng: values, sigmas=np.asarray(sigmas, float),
                  radius=radius, radius_unit=radius_unit, seed=seed, centers=centers, axis=axis, slices=slices,
                  compare_slices=compare_slices, threads=threads, cache_dir=cache_dir, keep_inputs=keep_inputs, pool=pool,
                  kind="intensity", key_params={"kind": "intensity"})
    _mean_over_volumes(result)
    if compare_slices:
        _mean_over_volumes(result, "slice_")
    return {"intensities": intensities, **result}


def volume_texture_experiment(
    volumes,
    *,
    sigmas: Sequence[float],
    textures: Sequence[str] = TEXTURES,
    radius: float = 20,
    radius_unit: str = "voxel",
    seed: int = 0,
    centers: np.ndarray | None = None,
    match_intensities: Sequence[float] | None = None,
    axis: int = 2,
    slices: Sequence[int] | None = None,
    compare_slices: bool = False,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    keep_inputs: bool = False,
    pool=None,
) -> dict:
    """Experiment 2 on whole volumes: AP of 3-D pixel shuffle, sink and source for every σ.

    Centres as in :func:`volume_intensity_experiment` (the same for the same seed and volumes);
    the seed's second stream draws the shuffle permutations, volume after volume. With
    ``match_intensities`` the intensity grid is computed in the same pass on the same centres
    (``intensity_ap``, ``intensity_ap_per_volume``, ``intensity_residual_mean``). With
    ``compare_slices`` the 2-D grid runs on the central slice of each 3-D anomalous volume.

    Returns
    -------
    dict with ``textures`` (T,), ``sigmas``, ``ap`` (T, S), ``ap_per_volume`` (N, T, S),
    ``residual_mean`` (T, S), the centre and volume arrays of :func:`volume_intensity_experiment`,
    and the ``intensity_*`` and ``slice_*`` arrays when asked.
    """
    textures = list(textures)
    unknown = [t for t in textures if t not in TEXTURES]
    if unknown or not textures:
        raise BlindspotError(f"`textures` must be a non-empty subset of {', '.join(TEXTURES)}; got {textures}.")
    intensity_rows = None if match_intensities is None else np.asarray(match_intensities, float).astype(np.float32)

    def rows_for(x, index, center, radii, rng):
        rows = np.stack([texture_values(x, kind, index, center, radii, rng) for kind in textures])
        if intensity_rows is not None:
            rows = np.concatenate([rows, np.broadcast_to(intensity_rows[:, None], (len(intensity_rows), rows.shape[1]))])
        return rows

    result = _run(volumes, rows_for, sigmas=np.asarray(sigmas, float), radius=radius, radius_unit=radius_unit,
                  seed=seed, centers=centers, axis=axis, slices=slices, compare_slices=compare_slices, threads=threads,
                  cache_dir=cache_dir, keep_inputs=keep_inputs, pool=pool, kind="texture",
                  key_params={"kind": "texture", "textures": textures, "seed": seed})
    t = len(textures)
    out = {"textures": np.asarray(textures), **result}
    for prefix in ("", "slice_") if compare_slices else ("",):
        per_volume, per_residual = out.pop(f"{prefix}ap_per_volume"), out.pop(f"{prefix}residual_per_volume")
        out[f"{prefix}ap_per_volume"] = per_volume[:, :t]
        out[f"{prefix}ap"] = per_volume[:, :t].mean(axis=0)
        out[f"{prefix}residual_mean"] = per_residual[:, :t].mean(axis=0)
        if intensity_rows is not None:
            out[f"{prefix}intensity_ap_per_volume"] = per_volume[:, t:]
            out[f"{prefix}intensity_ap"] = per_volume[:, t:].mean(axis=0)
            out[f"{prefix}intensity_residual_mean"] = per_residual[:, t:].mean(axis=0)
    if intensity_rows is not None:
        out["intensities"] = np.asarray(match_intensities, float)
    return out


# --------------------------------------------------------------------------------------------
# experiment 3 on whole volumes: a 2-D model reconstructs every slice


def _reconstruct_volume(model, volume: np.ndarray, axis: int, name: str, *, batch_size: int, device) -> np.ndarray:
    """The model's reconstruction of every slice of ``volume`` along ``axis``, stacked back (float32, same shape)."""
    from blindspot.models.adapters import as_adapter
    from blindspot.models.inference import reconstruct

    size = as_adapter(model).size
    plane = tuple(n for a, n in enumerate(volume.shape) if a != axis)
    if size is not None and plane != (size, size):
        raise BlindspotError(f"the slices of {name} along axis {axis} are {plane[0]}×{plane[1]} but the model takes "
                             f"{size}×{size} slices; whole volumes are not resized: use volumes whose slices have the "
                             f"model's size, or another `axis`.")
    stack = np.ascontiguousarray(np.moveaxis(volume, axis, 0))
    return np.ascontiguousarray(np.moveaxis(reconstruct(model, stack, batch_size=batch_size, device=device), 0, axis))


def volume_model_experiment(
    model,
    volumes,
    *,
    intensities: Sequence[float],
    centers: np.ndarray,
    radius: float = 20,
    radius_unit: str = "voxel",
    reconstruct: str = "normal",
    axis: int = 2,
    batch_size: int = 64,
    device: str | None = None,
    keep_outputs: bool = False,
) -> dict:
    """Experiment 3 on whole volumes: AP over every voxel of ``|x̂ − x_anomalous|``, x̂ from a 2-D model slice by slice.

    The model reconstructs every slice of the volume along ``axis`` (batched, ``batch_size``
    slices per call); the map covers the whole volume and AP is over all its voxels, as the MOOD
    challenge scores a volume. ``reconstruct``:

    * ``"normal"`` — the model reconstructs the normal volume once; the negatives are shared by
      every intensity (one sort for all, :func:`~blindspot.experiments.volume_engine.ap_against_nonzero_negatives`);
    * ``"anomalous"`` — the model reconstructs the anomalous volume of each intensity. Only the
      slices the ball touches differ from the normal volume, so only they are reconstructed again;
      the other slices' reconstructions are the normal ones (a model in eval mode is a function of
      its input slice) and their negatives are sorted once per volume.

    ``centers`` ``(N, 3)`` are the anomalies' centres (e.g. those of
    :func:`volume_intensity_experiment`, whose blur grid the curve is matched to).

    Returns
    -------
    dict with ``intensities`` (I,), ``ap`` (I,), ``ap_per_volume`` (N, I), ``residual_mean`` (I,),
    ``centers`` (N, 3), ``radius_voxels`` (N, 3), ``recon_error`` (mean |x̂ − x| of the normal
    volumes over every voxel), ``recon_error_per_volume`` (N,), ``histogram_counts`` /
    ``histogram_edges``, ``names``, ``fingerprint``, and with ``keep_outputs`` ``inputs`` and
    ``reconstructions`` (N, X, Y, Z).
    """
    from blindspot.experiments.model_pitfalls import RECONSTRUCT
    from blindspot.models.inference import reconstruct as run_model

    if reconstruct not in RECONSTRUCT:
        raise BlindspotError(f"`reconstruct` must be 'normal' or 'anomalous'; got {reconstruct!r}.")
    intensities = np.asarray(intensities, float)
    values = intensities.astype(np.float32)
    names, read, n = _as_volumes(volumes)
    centers = np.asarray(centers)
    if centers.shape != (n, 3):
        raise BlindspotError(f"`centers` must have shape ({n}, 3); got {centers.shape}.")
    ap, residual, errors, radii_used, inputs, outputs = [], [], [], [], [], []
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    counts, digest = np.zeros(HISTOGRAM_BINS, np.int64), hashlib.sha256()
    with progress(n, f"model ({reconstruct}) on volumes", unit="volume", every=1) as bar:
        for k in range(n):
            volume = read(k)
            x, name = np.ascontiguousarray(volume.image, dtype=np.float32), _display(volume)
            digest.update(x)
            counts += np.histogram(x[x > 0], bins=edges)[0]
            radii = radius_in_voxels(radius, radius_unit, volume.spacing, x.shape, name)
            center = check_volume_centers(centers[k : k + 1], [x.shape], names=[name])[0]
            _on_foreground(x, center, k, name)
            index = ball_voxels(x, center, radii)
            normal = _reconstruct_volume(model, x, axis, name, batch_size=batch_size, device=device)
            errors.append(np.abs(normal - x).mean(dtype=np.float64))
            n_negatives = x.size - len(index[0])
            if reconstruct == "normal":
                positives = np.abs(normal[index][None, :] - values[:, None])
                maps = np.abs(normal - x)
                maps[index] = 0
                total = maps.sum(dtype=np.float64)
                ap.append(ap_against_nonzero_negatives(positives, maps[maps > 0], n_negatives))
                residual.append((total + positives.sum(axis=1, dtype=np.float64)) / x.size)
            else:
                ap_k, residual_k = _anomalous_volume(model, x, normal, index, values, axis, batch_size, device, run_model,
                                                     ap_against_sorted_negatives)
                ap.append(ap_k)
                residual.append(residual_k)
            radii_used.append(radii)
            if keep_outputs:
                inputs.append(x)
                outputs.append(normal)
            bar.update(1)
    result = {
        "intensities": intensities,
        "ap": np.mean(ap, axis=0),
        "ap_per_volume": np.stack(ap),
        "residual_mean": np.mean(residual, axis=0),
        "centers": centers.astype(np.int64),
        "radius_voxels": np.stack(radii_used),
        "recon_error": np.float64(np.mean(errors)),
        "recon_error_per_volume": np.asarray(errors),
        "histogram_counts": counts,
        "histogram_edges": edges,
        "names": names,
        "fingerprint": (digest.update(json.dumps({}).encode()), digest.hexdigest()[:16])[1],
    }
    if keep_outputs:
        if len({v.shape for v in inputs}) > 1:
            raise BlindspotError("the volumes have different shapes and cannot be stacked into `inputs`; omit `save_inputs`.")
        result.update(inputs=np.stack(inputs), reconstructions=np.stack(outputs))
    return result


def _anomalous_volume(model, x, normal, index, values, axis, batch_size, device, run_model, ap_sorted):
    """AP and mean residual (I,) when the model reconstructs each intensity's anomalous volume."""
    touched = np.unique(index[axis])
    n_negatives = x.size - len(index[0])
    # the slices the ball does not touch: the normal reconstruction, negatives sorted once
    untouched = np.ones(x.shape[axis], bool)
    untouched[touched] = False
    shared = np.abs(np.compress(untouched, normal, axis=axis) - np.compress(untouched, x, axis=axis))
    shared_sum = shared.sum(dtype=np.float64)
    shared = np.sort(shared[shared > 0])
    planes = np.ascontiguousarray(np.moveaxis(np.take(x, touched, axis=axis), axis, 0))  # (T, H, W)
    slot = np.searchsorted(touched, index[axis])
    local = (slot, *(i for a, i in enumerate(index) if a != axis))  # the label in (T, H, W)
    label = np.zeros(planes.shape, bool)
    label[local] = True
    group = max(1, batch_size // len(touched))  # several intensities per model call when the touched slices are few
    ap, residual = np.empty(len(values)), np.empty(len(values))
    for start in range(0, len(values), group):
        chunk = values[start : start + group]
        anomalous = np.repeat(planes[None], len(chunk), axis=0)  # (g, T, H, W)
        anomalous[(slice(None), *local)] = chunk[:, None]
        recon = run_model(model, anomalous.reshape(-1, *planes.shape[1:]), batch_size=batch_size, device=device)
        maps = np.abs(recon.reshape(anomalous.shape) - anomalous)
        for j, t in enumerate(range(start, start + len(chunk))):
            positives = maps[(j, *local)]
            negatives = maps[j][~label]
            residual[t] = (shared_sum + negatives.sum(dtype=np.float64) + positives.sum(dtype=np.float64)) / x.size
            ap[t] = ap_sorted(positives, [shared, np.sort(negatives[negatives > 0])], n_negatives)
    return ap, residual

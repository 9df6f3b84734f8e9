"""MIDL 2022 experiments 1 and 2: anomaly intensity and texture against simulated reconstruction error.

The "reconstruction" is the normal image blurred with a Gaussian of σ; the anomaly map is
``|blur_σ(x) − x_anomalous|``; the score is average precision over all pixels of each slice
(background included), then the mean over images. One centre per image, shared by every cell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from blindspot.anomalies import TEXTURES, anomaly_labels, sample_centers, texture_anomaly
from blindspot.errors import BlindspotError
from blindspot.experiments.grid import grid_fingerprint, run_grid


def intensity_grid_axes(n_intensities: int = 100, n_sigmas: int = 100, sigma_max: float = 5.0):
    """The protocol's axes: ``linspace(0, 1, n_intensities)`` and ``linspace(0, sigma_max, n_sigmas)``.

    A grid of several σ needs ``sigma_max > 0`` (else every column is the same σ = 0).
    """
    for name, value in (("n_intensities", n_intensities), ("n_sigmas", n_sigmas)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise BlindspotError(f"`{name}` must be an integer >= 1; got {value!r}.")
    if not sigma_max >= 0:
        raise BlindspotError(f"`sigma_max` must be >= 0; got {sigma_max}.")
    if sigma_max == 0 and n_sigmas > 1:
        raise BlindspotError(f"`sigma_max` 0 makes all {n_sigmas} σ of the grid 0; give a `sigma_max` > 0, or `n_sigmas` 1.")
    return np.linspace(0, 1, n_intensities), np.linspace(0, sigma_max, n_sigmas)


def random_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the centres and for the textures' randomness (pixel shuffle).

    Separate streams make the shuffle identical whether the centres are sampled or given.
    """
    centers_seed, texture_seed = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(centers_seed), np.random.default_rng(texture_seed)


def experiment_centers(images: np.ndarray, centers, seed: int) -> np.ndarray:
    """The anomaly centre of each image: sampled from ``seed`` (its first stream), or ``centers`` checked.

    Explicit centres (e.g. another implementation's) must be one (row, column) per image, inside
    the image and on a foreground pixel.
    """
    if centers is None:
        return sample_centers(images, random_streams(seed)[0])
    centers = np.asarray(centers)
    if centers.shape != (len(images), 2) or centers.dtype.kind not in "iu":
        raise BlindspotError(f"`centers` must be integers of shape ({len(images)}, 2), one (row, column) per image; "
                             f"got {centers.dtype} {centers.shape}.")
    inside = (centers >= 0).all(axis=1) & (centers < np.array(images.shape[1:])).all(axis=1)
    if not inside.all():
        k = int(np.argmin(inside))
        raise BlindspotError(f"`centers` row {k} {centers[k].tolist()} lies outside the image of shape {images.shape[1:]}.")
    on_brain = images[np.arange(len(images)), centers[:, 0], centers[:, 1]] > 0
    if not on_brain.all():
        k = int(np.argmin(on_brain))
        raise BlindspotError(f"`centers` row {k} {centers[k].tolist()} is a background pixel; centres lie in the foreground.")
    return centers.astype(np.int64)


def intensity_experiment(
    images: np.ndarray,
    *,
    intensities: Sequence[float],
    sigmas: Sequence[float],
    radius: float = 20,
    seed: int = 0,
    centers: np.ndarray | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    pool=None,
) -> dict[str, np.ndarray]:
    """Experiment 1: AP of a constant-intensity disk for every (intensity, σ) cell.

    ``pool``: a :class:`blindspot.execution.Pool` whose workers compute the chunks of images
    (:func:`blindspot.experiments.grid.run_grid`); the numbers are the same.

    Returns
    -------
    dict with ``intensities`` (I,), ``sigmas`` (S,), ``ap`` (I, S) mean over images,
    ``ap_per_image`` (N, I, S), ``residual_mean`` (I, S) (mean of the anomaly map over pixels and
    images) and ``centers`` (N, 2).
    """
    intensities, sigmas = np.asarray(intensities, float), np.asarray(sigmas, float)
    centers = experiment_centers(images, centers, seed)
    labels = anomaly_labels(images, centers, radius)
    values = intensities.astype(images.dtype)[:, None]
    key = grid_fingerprint(images, kind="intensity", intensities=intensities, sigmas=sigmas, centers=centers, radius=radius)
    ap, residual = run_grid(
        images, labels, lambda n: values, sigmas, threads=threads, cache_dir=cache_dir, fingerprint=key, desc="intensity grid",
        pool=pool,
    )
    return {
        "intensities": intensities,
        "sigmas": sigmas,
        "ap": ap.mean(axis=0),
        "ap_per_image": ap,
        "residual_mean": residual.mean(axis=0),
        "centers": centers,
    }


def texture_experiment(
    images: np.ndarray,
    *,
    sigmas: Sequence[float],
    textures: Sequence[str] = TEXTURES,
    radius: float = 20,
    seed: int = 0,
    centers: np.ndarray | None = None,
    match_intensities: Sequence[float] | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    pool=None,
) -> dict[str, np.ndarray]:
    """Experiment 2: AP of texture anomalies (pixel shuffle, sink, source) for every σ.

    The seed's first stream draws the centres (so they equal experiment 1's for the same seed and
    images), its second stream the shuffle permutation (see :func:`random_streams`). With ``match_intensities`` the intensity grid of experiment 1 is
    computed in the same pass on the same centres (sharing every blur and sort) and each texture
    curve is matched to its closest intensity row (see :func:`match_curves`).

    Returns
    -------
    dict with ``textures`` (T,), ``sigmas`` (S,), ``ap`` (T, S), ``ap_per_image`` (N, T, S),
    ``residual_mean`` (T, S), ``centers`` (N, 2), and with matching also ``intensities`` (I,),
    ``intensity_ap`` (I, S), ``intensity_ap_per_image`` (N, I, S), ``intensity_residual_mean`` (I, S).
    """
    sigmas = np.asarray(sigmas, float)
    centers = experiment_centers(images, centers, seed)
    rng = random_streams(seed)[1]
    labels = anomaly_labels(images, centers, radius)
    # Only the label pixels of each anomalous image are kept: K values per image and texture.
    texture_values = [[] for _ in images]
    for kind in textures:
        anomalous = texture_anomaly(images, kind, radius=radius, centers=centers, rng=rng).images
        for n in range(len(images)):
            texture_values[n].append(anomalous[n][labels[n]])
    rows = [np.stack(v) for v in texture_values]
    n_textures = len(textures)
    intensity_rows = None
    if match_intensities is not None:
        match_intensities = np.asarray(match_intensities, float)
        intensity_rows = match_intensities.astype(images.dtype)[:, None]
        rows = [np.concatenate([r, np.broadcast_to(intensity_rows, (len(intensity_rows), r.shape[1]))]) for r in rows]
    key = grid_fingerprint(
        images, kind="texture", textures=list(textures), sigmas=sigmas, centers=centers, radius=radius, seed=seed,
        intensities=match_intensities,
    )
    ap, residual = run_grid(
        images, labels, lambda n: rows[n], sigmas, threads=threads, cache_dir=cache_dir, fingerprint=key, desc="texture grid",
        pool=pool,
    )
    result = {
        "textures": np.asarray(textures),
        "sigmas": sigmas,
        "ap": ap[:, :n_textures].mean(axis=0),
        "ap_per_image": ap[:, :n_textures],
        "residual_mean": residual[:, :n_textures].mean(axis=0),
        "centers": centers,
    }
    if intensity_rows is not None:
        result.update(
            intensities=match_intensities,
            intensity_ap=ap[:, n_textures:].mean(axis=0),
            intensity_ap_per_image=ap[:, n_textures:],
            intensity_residual_mean=residual[:, n_textures:].mean(axis=0),
        )
    return result


#: A match's mean |ΔAP| may never exceed this (an absolute cap, on top of the relative rules below).
MATCH_TOLERANCE = 0.1
#: A match's mean |ΔAP| may be at most this fraction of the curves' spread (the larger range over the grid).
MATCH_SPREAD_FRACTION = 0.15
#: At no grid point may |ΔAP| exceed this fraction of the larger of the two APs there.
MATCH_POINTWISE = 0.5
#: The floor of the spread and of the pointwise denominator, so nearly flat or near-zero curves are not judged on noise.
MATCH_FLOOR = 0.05
#: Resamples of the images for the distance's interval, and its two-sided level (defaults; runs pass theirs).
MATCH_RESAMPLES, MATCH_LEVEL = 1000, 0.95


def match_rule(level: float | None = MATCH_LEVEL) -> str:
    """The match criterion of :func:`match_quality` in one sentence; ``level`` None: without the per-image check."""
    rule = (f"a curve matches when its mean |ΔAP| to the reference is at most {MATCH_SPREAD_FRACTION:g} of the larger "
            f"range of the two curves (at least {MATCH_FLOOR:g}) and at most {MATCH_TOLERANCE:g}, and no point differs by "
            f"more than {MATCH_POINTWISE:g} of the larger AP there (at least {MATCH_FLOOR:g})")
    if level is None:
        return rule
    return (f"{rule}; the upper end of the {100 * level:g} % bootstrap interval of the mean |ΔAP| (the per-image "
            "curves, and the reference's with them, resampled) must meet the first bound too")


def match_quality(curves: np.ndarray, reference: np.ndarray, index: np.ndarray, *, upper_edge: bool = False,
                  per_image: np.ndarray | None = None, reference_per_image: np.ndarray | None = None,
                  resamples: int = MATCH_RESAMPLES, level: float = MATCH_LEVEL, seed: int = 0) -> dict:
    """Distances and verdicts of the matches ``index`` of :func:`match_curves` (the rule of :func:`match_rule`).

    An absolute bound alone calls curves whose APs are all low a match however different their shapes,
    so the mean |ΔAP| is judged against the curves' spread and every point against its own AP. With
    ``per_image`` (N, C, S), the per-image curves whose mean is ``curves``, the distance gets a
    bootstrap interval over images, and a match must hold at its upper end too (a match that the
    image-to-image variability cannot confirm is none); with ``reference_per_image`` (N, R, S) on the
    same images the reference is resampled with them (a paired bootstrap; ``resamples`` draws from
    ``seed``, a two-sided percentile interval at ``level``). With ``upper_edge`` the reference row must not
    be the last one (a model matched to the largest σ of the grid may be worse than any σ of it).
    Returns ``l1``, ``mean_abs``, ``limit`` (the bound on ``mean_abs``), ``pointwise`` (the worst
    relative pointwise difference), ``mean_abs_low``, ``mean_abs_high`` (NaN without ``per_image``) and
    ``matched``, each (C,).
    """
    curves = np.asarray(curves, float)
    matched_rows = np.asarray(reference, float)[np.asarray(index)]
    difference = np.abs(curves - matched_rows)
    mean_abs = difference.mean(axis=1)
    spread = np.maximum(np.ptp(curves, axis=1), np.ptp(matched_rows, axis=1))
    limit = np.minimum(MATCH_SPREAD_FRACTION * np.maximum(spread, MATCH_FLOOR), MATCH_TOLERANCE)
    pointwise = (difference / np.maximum(np.maximum(curves, matched_rows), MATCH_FLOOR)).max(axis=1)
    low = high = np.full(len(curves), np.nan)
    matched = (mean_abs <= limit) & (pointwise <= MATCH_POINTWISE)
    if per_image is not None:
        per_image = np.asarray(per_image, float)
        n = len(per_image)
        picks = np.random.default_rng(seed).integers(0, n, (resamples, n))
        weights = np.zeros((resamples, n))
        np.add.at(weights, (np.arange(resamples)[:, None], picks), 1.0 / n)
        resampled = (weights @ per_image.reshape(n, -1)).reshape(resamples, *curves.shape)  # (B, C, S)
        if reference_per_image is not None:
            paired = np.asarray(reference_per_image, float)[:, np.asarray(index)]
            matched_rows = (weights @ paired.reshape(n, -1)).reshape(resamples, *curves.shape)
        distances = np.abs(resampled - matched_rows).mean(axis=2)
        tail = 50 * (1 - level)
        low, high = np.percentile(distances, [tail, 100 - tail], axis=0)
        matched &= high <= limit
    if upper_edge:
        matched &= np.asarray(index) < len(reference) - 1
    return {"l1": difference.sum(axis=1), "mean_abs": mean_abs, "limit": limit, "pointwise": pointwise,
            "mean_abs_low": low, "mean_abs_high": high, "matched": matched}


#: The per-curve entries of :func:`match_quality` that results store (as ``match_<key>``).
MATCH_KEYS = ("mean_abs", "mean_abs_low", "mean_abs_high", "limit", "pointwise")


def match_distance_text(mean_abs: float, low: float, high: float, limit: float) -> str:
    """A match distance for summaries: ``0.012 [0.008, 0.020] (bound 0.030)``; no interval when ``low`` is NaN."""
    interval = "" if np.isnan(low) else f" [{low:.3f}, {high:.3f}]"
    return f"{mean_abs:.3f}{interval} (bound {limit:.3f})"


def match_curves(curves: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each row of ``curves`` (C, S), the index of the ``reference`` row (R, S) at the smallest L1 distance.

    Used to match texture curves to intensity rows (experiment 2) and, transposed, model curves to
    σ columns (experiment 3). Ties go to the lowest index.

    >>> match_curves(np.array([[0.9, 0.5]]), np.array([[1.0, 1.0], [0.8, 0.4], [0.0, 0.0]]))
    array([1])
    """
    distances = np.abs(np.asarray(curves)[:, None, :] - np.asarray(reference)[None, :, :]).sum(axis=2)
    return np.argmin(distances, axis=1)


def blind_spot_table(intensities: np.ndarray, sigmas: np.ndarray, ap: np.ndarray, at_sigmas=(0.5, 1, 2, 3, 5)) -> list[dict]:
    """Per σ (the grid values nearest to ``at_sigmas``): intensity bands with AP < 0.5, min AP and where, mean AP."""
    rows, seen = [], set()
    for target in at_sigmas:
        s = int(np.argmin(np.abs(sigmas - target)))
        if s in seen:
            continue
        seen.add(s)
        curve = ap[:, s]
        rows.append(
            {
                "sigma": float(sigmas[s]),
                "blind_bands": value_bands(intensities, curve < 0.5),
                "min_ap": float(curve.min()),
                "min_at": float(intensities[int(np.argmin(curve))]),
                "mean_ap": float(curve.mean()),
            }
        )
    return rows


def value_bands(values: np.ndarray, inside: np.ndarray) -> list[tuple[float, float]]:
    """Contiguous runs of ``inside`` as (first value, last value) pairs."""
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(float(values[a]), float(values[b])) for a, b in zip(starts, stops)]


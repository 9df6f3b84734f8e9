"""``blindspot audit`` (computation only): where any model is blind, and which anomaly score closes the blind spot.

For every image one disk centre is drawn (shared by every cell, as in experiments 1–3) and the
anomaly map of every scoring function (:func:`blindspot.scoring.score_map`) is scored with
average precision over all pixels of the image (sklearn's AP), then averaged over images:

* **intensity profile, normal mode**: a disk of intensity i, the model reconstructing the normal
  image. x̂ does not depend on i: one model pass per image. A pixelwise score outside the disk
  does not depend on i either, and ``ssim``'s only within its window of the disk: those scores
  are computed once per image (the *shared negatives*, sorted once) and only the disk's bounding
  box, grown by the score's window radius, is recomputed for the intensities, all at once. The
  result is exact: every pixel's score equals the straightforward full-map computation.
* **intensity profile, anomalous mode** (the realistic case): the model reconstructs the anomalous
  image, a full map per intensity; the anomalous images of all intensities (and images) go to the
  model in batches. ``image`` and ``zscore`` do not read x̂: their anomalous-mode profile is the
  normal-mode one.
* **textures** (pixel shuffle, sink, source) in the anomalous mode, as experiment 2 draws them.
* **anomaly size**: AP over the disk radius at the model's blindest intensity and at its most
  visible one (of the reference score ``l1`` in the realistic mode), in both modes.
* **matched blur σ**: the experiment-1 grid on the same images and centres
  (:func:`blindspot.experiments.pitfalls.intensity_experiment`), each mode's ``l1`` curve matched to
  its closest σ column (:func:`blindspot.experiments.model_pitfalls.match_blur`), judged by the rule of
  :func:`blindspot.experiments.pitfalls.match_quality` (relative to the curves' spread, with the
  distance's bootstrap interval over the per-image curves).
* **blind band**: the intensities with AP < :data:`BLIND_AP`, its width (share of the intensity
  grid) and the share of healthy foreground pixels whose intensity lies in it; the scores are
  ranked by band width, then minimum AP, then mean AP.

The result folder (``results.npz``, ``config.json``, ``summary.md``, ``report.html``) is written by
:mod:`blindspot.experiments.audit_runs`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from blindspot.anomalies import TEXTURES, anomaly_labels, texture_anomaly
from blindspot.errors import BlindspotError
from blindspot.experiments.model_pitfalls import match_blur
from blindspot.experiments.pitfalls import MATCH_KEYS
from blindspot.experiments.pitfalls import experiment_centers, intensity_experiment, random_streams
from blindspot.metrics import average_precision_batch
from blindspot.models.adapters import as_adapter
from blindspot.models.inference import reconstruct
from blindspot.progress import progress
from blindspot.report import foreground_histogram
from blindspot.scoring import SCORES, HealthyStats, score_map, score_radius, uses_reconstruction

__all__ = ["BLIND_AP", "MODES", "SIZE_RADII", "audit", "profile_summary", "rank_scores", "shared_negatives_ap", "size_radii"]

#: An intensity is in the blind band when the mean AP there is below this.
BLIND_AP = 0.5
#: Disk radii of the size axis, in pixels at 256 px (scaled with the prepared size).
SIZE_RADII = (4, 6, 8, 12, 16, 20, 24, 32, 40)
#: Which image the model reconstructs.
MODES = ("normal", "anomalous")
#: The score the blind band, the matched σ and the size intensities are read from, when computed.
REFERENCE = "l1"


def size_radii(size: int, radii_at_256: Sequence[float] = SIZE_RADII) -> np.ndarray:
    """The size axis at a prepared size: radii scaled by size / 256, at least 1 px, below size / 2, distinct.

    >>> size_radii(64).tolist()
    [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
    """
    radii = np.maximum(np.asarray(radii_at_256, float) * size / 256, 1.0)
    return np.unique(radii[radii < size / 2])


# --------------------------------------------------------------------------------------------
# AP with shared negatives


def shared_negatives_ap(positives: np.ndarray, local: np.ndarray, shared_sorted: np.ndarray) -> np.ndarray:
    """AP of each row: its ``positives`` against its ``local`` negatives plus negatives shared by every row.

    sklearn's AP (the step rule, ties included): each positive at score v contributes
    ``tp(≥ v) / (tp(≥ v) + fp(≥ v))``, averaged over the K positives, where fp counts the row's
    local negatives and the shared ones ≥ v.

    Parameters
    ----------
    positives : ndarray (V, K)
    local : ndarray (V, L)
        Negatives of each row (L may be 0).
    shared_sorted : ndarray (M,)
        Negatives common to every row, ascending (M may be 0).

    Returns
    -------
    ndarray of float64 (V,); equal to ``average_precision`` of each row's pixels to 1e-12.

    >>> shared_negatives_ap(np.array([[0.9, 0.5]]), np.array([[0.5]]), np.array([0.1]))
    array([0.83333333])
    """
    k = positives.shape[1]
    n_local = local.shape[1]
    scores = np.concatenate([positives, local.astype(positives.dtype, copy=False)], axis=1)
    order = np.argsort(scores, axis=1, kind="stable")  # ascending
    ranked = np.take_along_axis(scores, order, axis=1)
    is_positive = order < k
    width = k + n_local
    starts = np.ones(ranked.shape, bool)
    starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(width), 0), axis=1)  # start of each one's tie group
    positives_before = np.cumsum(is_positive, axis=1) - is_positive  # strictly before each position
    negatives_before = np.arange(width) - positives_before
    tp = k - np.take_along_axis(positives_before, first, axis=1)
    fp = n_local - np.take_along_axis(negatives_before, first, axis=1)
    fp = fp + (len(shared_sorted) - np.searchsorted(shared_sorted, ranked, side="left"))
    precision = tp / (tp + fp)
    return np.where(is_positive, precision, 0.0).sum(axis=1) / k


def _bbox(label: np.ndarray, grow: int) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(label.any(axis=1)), np.flatnonzero(label.any(axis=0))
    h, w = label.shape
    return (slice(max(rows[0] - grow, 0), min(rows[-1] + 1 + grow, h)),
            slice(max(cols[0] - grow, 0), min(cols[-1] + 1 + grow, w)))


def _normal_ap(x: np.ndarray, x_hat: np.ndarray, label: np.ndarray, values: np.ndarray, names: Sequence[str],
               stats: HealthyStats | None, base: list[np.ndarray]) -> np.ndarray:
    """AP ``(F, V)`` of every score for V anomalous versions of one image, its normal reconstruction shared.

    ``values`` ``(V, K)`` are the anomalous images' values at the K label pixels (raster order);
    ``base`` holds each score's map of the normal image. Only the label's bounding box grown by
    twice the largest window radius is recomputed (the window's pixels exactly, from a crop
    wide enough that the filters see what they see in the full image); the rest is ``base``.
    """
    grow = max(score_radius(n) for n in names)
    crop = _bbox(label, 2 * grow)
    n_variants = len(values)
    anomalous = np.repeat(x[crop][None], n_variants, axis=0)
    anomalous[:, label[crop]] = values
    recon = np.repeat(x_hat[crop][None], n_variants, axis=0)
    local_stats = stats.crop(*crop) if stats is not None else None
    ap = np.empty((len(names), n_variants))
    for f, name in enumerate(names):
        window = _bbox(label, score_radius(name))
        inner = tuple(slice(w.start - c.start, w.stop - c.start) for w, c in zip(window, crop))
        maps = score_map(name, anomalous, recon, stats=local_stats)[:, inner[0], inner[1]].reshape(n_variants, -1)
        inside = label[window].ravel()
        outside = np.ones(x.shape, bool)
        outside[window] = False
        ap[f] = shared_negatives_ap(maps[:, inside], maps[:, ~inside], np.sort(base[f][outside]))
    return ap


def _base_maps(x, x_hat, names, stats) -> list[np.ndarray]:
    return [score_map(name, x, x_hat, stats=stats) for name in names]


def normal_profiles(images: np.ndarray, normal: np.ndarray, labels: np.ndarray, values: np.ndarray, names: Sequence[str],
                    stats: HealthyStats | None) -> np.ndarray:
    """AP ``(n, F, I)`` of every score and intensity in the normal mode, for a chunk of images (a task on a cluster)."""
    out = []
    for x, x_hat, label in zip(images, normal, labels):
        k = int(label.sum())
        out.append(_normal_ap(x, x_hat, label, np.broadcast_to(values[:, None], (len(values), k)), names, stats,
                              _base_maps(x, x_hat, names, stats)))
    return np.stack(out)


def normal_size_profiles(images: np.ndarray, normal: np.ndarray, centers: np.ndarray, radii: np.ndarray,
                         size_values: np.ndarray, names: Sequence[str], stats: HealthyStats | None) -> np.ndarray:
    """AP ``(n, F, 2, R)`` of every score over the disk radii at two intensities, normal mode, for a chunk of images."""
    out = np.empty((len(images), len(names), 2, len(radii)))
    for i, (x, x_hat, center) in enumerate(zip(images, normal, centers)):
        base = _base_maps(x, x_hat, names, stats)
        for r, rad in enumerate(radii):
            label = anomaly_labels(x[None], center[None], rad)[0]
            k = int(label.sum())
            out[i, :, :, r] = _normal_ap(x, x_hat, label, np.broadcast_to(size_values[:, None], (2, k)), names, stats, base)
    return out


def _per_image(fn, arrays: Sequence[np.ndarray], shared: tuple, *, threads: int, pool, desc: str, chunk: int = 16) -> np.ndarray:
    """``fn(*per-image arrays, *shared)`` over all images: per image on ``threads`` threads here, or chunks as tasks of ``pool``."""
    n_images = len(arrays[0])
    if pool is None:
        with ThreadPoolExecutor(threads) as executor:
            return np.concatenate(list(executor.map(lambda n: fn(*(a[n : n + 1] for a in arrays), *shared), range(n_images))))
    bounds = [(a, min(a + chunk, n_images)) for a in range(0, n_images, chunk)]
    parts = pool.map(fn, ((*(array[a:b] for array in arrays), *shared) for a, b in bounds), desc=desc, unit="img",
                     total=n_images, weight=lambda i: bounds[i][1] - bounds[i][0])
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------------
# the anomalous mode: full maps, anomalous images reconstructed in batches


def _anomalous_ap(adapter, jobs: list, make: Callable, names: Sequence[str], need: np.ndarray, stats, *,
                  batch_size: int, device, desc: str) -> np.ndarray:
    """AP ``(F, J)`` of every needed (score, job); ``make(job)`` gives the anomalous image and its label.

    The anomalous images are reconstructed ``batch_size`` at a time (one model call each, several
    images and intensities per call); a score is computed only for the jobs ``need[f]`` marks.
    """
    ap = np.full((len(names), len(jobs)), np.nan)
    with progress(len(jobs), desc, unit="img", every=batch_size) as bar:
        for start in range(0, len(jobs), batch_size):
            index = np.arange(start, min(start + batch_size, len(jobs)))
            pairs = [make(jobs[j]) for j in index]
            anomalous = np.stack([p[0] for p in pairs])
            labels = np.stack([p[1] for p in pairs])
            recon = reconstruct(adapter, anomalous, batch_size=batch_size, device=device)
            for f, name in enumerate(names):
                rows = need[f, index]
                if rows.any():
                    maps = score_map(name, anomalous[rows], recon[rows], stats=stats)
                    ap[f, index[rows]] = average_precision_batch(labels[rows], maps)
            bar.update(len(index))
    return ap


# --------------------------------------------------------------------------------------------
# summaries


def profile_summary(ap: np.ndarray, intensities: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> dict:
    """Per score (rows of ``ap`` (F, I)): mean AP, min AP and where, the blind band's width and tissue share.

    ``blind_fraction`` is the share of the intensity grid with AP < :data:`BLIND_AP`; ``blind_mass``
    the share of healthy foreground pixels (histogram ``counts`` over ``edges``) whose intensity is
    closest to a blind grid intensity.
    """
    ap = np.asarray(ap, float)
    blind = ap < BLIND_AP
    centres = (edges[:-1] + edges[1:]) / 2
    nearest = np.argmin(np.abs(intensities[None, :] - centres[:, None]), axis=1)
    total = max(float(counts.sum()), 1.0)
    return {"mean_ap": ap.mean(axis=1), "min_ap": ap.min(axis=1), "min_at": intensities[np.argmin(ap, axis=1)],
            "blind_fraction": blind.mean(axis=1), "blind_mass": (blind[:, nearest] * counts[None, :]).sum(axis=1) / total}


def rank_scores(summary: dict) -> np.ndarray:
    """Score indices, best first: narrowest blind band, then highest minimum AP, then highest mean AP."""
    return np.lexsort((-summary["mean_ap"], -summary["min_ap"], summary["blind_fraction"]))


@contextmanager
def _timed(timings: dict, part: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[part] = timings.get(part, 0.0) + time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# the audit


def audit(
    model,
    images: np.ndarray,
    *,
    intensities: Sequence[float],
    sigmas: Sequence[float],
    radius: float,
    reconstructions: np.ndarray | None = None,
    scores: Sequence[str] = SCORES,
    stats: HealthyStats | None = None,
    seed: int = 0,
    centers: np.ndarray | None = None,
    textures: Sequence[str] = TEXTURES,
    radii: Sequence[float] | None = None,
    batch_size: int = 64,
    device: str | None = None,
    threads: int | None = None,
    n_worst: int = 3,
    pool=None,
) -> dict:
    """Audit a model (or precomputed reconstructions) on normal images: every part of the module docstring.

    Parameters
    ----------
    model : Adapter, torch.nn.Module, callable or None
        The model (:func:`blindspot.models.adapters.load_adapter`); None with ``reconstructions``
        (then only the normal mode is computed).
    images : ndarray of float32, shape (N, H, W)
        Normal images in [0, 1] (foreground > 0), prepared at the model's input size.
    intensities, sigmas : sequences
        The intensity axis (I,) and the σ axis (S,) of the blur grid the ``l1`` curves are matched to.
    radius : float
        Disk radius in pixels of ``images``.
    reconstructions : ndarray (N, H, W), optional
        The normal images' reconstructions in [0, 1] units, instead of running ``model`` on them.
    scores : sequence of str
        Scoring functions (:data:`blindspot.scoring.SCORES`).
    stats : HealthyStats, optional
        Healthy statistics; required by ``rarity`` and ``zscore``.
    seed, centers
        As in :func:`blindspot.experiments.pitfalls.intensity_experiment` (the same seed and images
        give experiment 1's centres; the textures use the seed's second stream, as experiment 2).
    textures : sequence of str
        Texture anomalies of the anomalous mode.
    radii : sequence of float, optional
        The size axis in pixels of ``images`` (default :func:`size_radii` of the image size).
    batch_size, device
        Images per model call; where the model runs.
    threads : int, optional
        Threads for the per-image work of the normal mode and the blur grid (default: all cores).
    n_worst : int
        Worst cases kept as overlays (images with the lowest realistic ``l1`` AP at the blindest intensity).
    pool : blindspot.execution.Pool, optional
        A Dask cluster whose workers compute the normal mode (chunks of images) and the blur grid;
        the model's passes run in this process. The numbers are the same.

    Returns
    -------
    dict
        The arrays of ``results.npz`` (see :mod:`blindspot.experiments.audit_runs`), ``"timings"``
        (seconds per part) and ``"model_calls"`` / ``"model_images"``.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    names = list(scores)
    if not names or len(set(names)) != len(names):
        raise BlindspotError(f"`scores` must name distinct scoring functions; got {names}.")
    for name in names:
        score_radius(name)  # unknown names raise here
    if (model is None) == (reconstructions is None):
        raise BlindspotError("give either a `model` or `reconstructions` of the normal images, not both.")
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.float32:
        raise BlindspotError(f"images must be float32 of shape (N, H, W); got {images.dtype} {images.shape}.")
    adapter = as_adapter(model) if model is not None else None
    calls_before = (adapter.calls, adapter.images) if adapter is not None else (0, 0)
    intensities = np.asarray(intensities, float)
    sigmas = np.asarray(sigmas, float)
    values = intensities.astype(images.dtype)
    n_images, n_scores, n_int = len(images), len(names), len(intensities)
    centers = experiment_centers(images, centers, seed)
    labels = anomaly_labels(images, centers, radius)
    radii = size_radii(images.shape[-1]) if radii is None else np.asarray(radii, float)
    reference = names.index(REFERENCE) if REFERENCE in names else 0
    threads = threads or os.cpu_count() or 1
    model_scores = np.array([uses_reconstruction(n) for n in names])

    # 1. the normal images' reconstructions: one model pass per image
    with _timed(timings, "normal reconstructions"):
        if adapter is not None:
            normal = reconstruct(adapter, images, batch_size=batch_size, device=device, desc="normal reconstructions")
        else:
            normal = np.asarray(reconstructions, np.float32)
            if normal.shape != images.shape:
                raise BlindspotError(f"`reconstructions` have shape {normal.shape}; the images have {images.shape}.")
    recon_error = np.abs(normal - images).mean(axis=(1, 2), dtype=np.float64)

    # 2. intensity profile, normal mode (no model call)
    with _timed(timings, "intensity profile, normal mode"):
        ap_normal = _per_image(normal_profiles, (images, normal, labels), (values, names, stats), threads=threads, pool=pool,
                               desc="intensity profile, normal mode")  # (N, F, I)

    # 3. intensity profile and textures, anomalous mode: batches of anomalous images
    texture_images = None
    ap_anomalous = np.full((n_images, n_scores, n_int), np.nan)
    ap_texture = np.full((n_images, n_scores, len(textures)), np.nan)
    if adapter is not None:
        with _timed(timings, "textures (anomalies)"):
            rng = random_streams(seed)[1]
            texture_images = [texture_anomaly(images, kind, radius=radius, centers=centers, rng=rng).images for kind in textures]
        jobs = [(n, "i", k) for n in range(n_images) for k in range(n_int)]
        jobs += [(n, "t", k) for n in range(n_images) for k in range(len(textures))]

        def make(job):
            n, kind, k = job
            if kind == "i":
                return np.where(labels[n], values[k], images[n]), labels[n]
            return texture_images[k][n], labels[n]

        is_texture = np.array([kind == "t" for _, kind, _ in jobs])
        need = model_scores[:, None] | is_texture[None, :]
        with _timed(timings, "intensity profile and textures, anomalous mode"):
            ap_jobs = _anomalous_ap(adapter, jobs, make, names, need, stats, batch_size=batch_size, device=device,
                                    desc="anomalous reconstructions")
        n_flat = n_images * n_int
        ap_anomalous = ap_jobs[:, :n_flat].reshape(n_scores, n_images, n_int).transpose(1, 0, 2)
        ap_anomalous[:, ~model_scores] = ap_normal[:, ~model_scores]  # these scores do not read x̂
        ap_texture = ap_jobs[:, n_flat:].reshape(n_scores, n_images, len(textures)).transpose(1, 0, 2)
    realistic = ap_anomalous if adapter is not None else ap_normal
    reference_curve = realistic[:, reference].mean(axis=0)
    blindest, visible = int(np.argmin(reference_curve)), int(np.argmax(reference_curve))
    size_values = values[[blindest, visible]]

    # 4. anomaly size at the blindest and the most visible intensity
    with _timed(timings, "anomaly sizes, normal mode"):
        size_normal = _per_image(normal_size_profiles, (images, normal, centers), (radii, size_values, names, stats),
                                 threads=threads, pool=pool, desc="anomaly sizes, normal mode")  # (N, F, 2, R)
    size_anomalous = np.full(size_normal.shape, np.nan)
    if adapter is not None:
        jobs = [(n, r, j) for n in range(n_images) for r in range(len(radii)) for j in range(2)]

        def make_size(job):
            n, r, j = job
            label = anomaly_labels(images[n : n + 1], centers[n : n + 1], radii[r])[0]
            return np.where(label, size_values[j], images[n]), label

        need = np.broadcast_to(model_scores[:, None], (n_scores, len(jobs)))
        with _timed(timings, "anomaly sizes, anomalous mode"):
            ap_jobs = _anomalous_ap(adapter, jobs, make_size, names, need, stats, batch_size=batch_size, device=device,
                                    desc="anomaly sizes")
        size_anomalous = ap_jobs.reshape(n_scores, n_images, len(radii), 2).transpose(1, 0, 3, 2)
        size_anomalous[:, ~model_scores] = size_normal[:, ~model_scores]

    # 5. the experiment-1 blur grid on the same images and centres, and the matched σ (of the l1 residual:
    #    the blur grid scores |blur(x) − x_anomalous|, so only the l1 curve is comparable)
    matches = {"normal": None, "anomalous": None}
    blur = {"ap": np.full((n_int, len(sigmas)), np.nan)}
    if REFERENCE in names:
        with _timed(timings, "blur grid (experiment 1)"):
            blur = intensity_experiment(images, intensities=intensities, sigmas=sigmas, radius=radius, centers=centers,
                                        threads=threads, pool=pool)
        for mode, ap in (("normal", ap_normal), ("anomalous", ap_anomalous)):
            curve = ap[:, reference].mean(axis=0)
            matches[mode] = match_blur(curve, blur["ap"], ap[:, reference], blur["ap_per_image"]) if np.isfinite(curve).all() else None

    # 6. the worst cases: the lowest realistic AP at the blindest intensity
    with _timed(timings, "worst cases"):
        worst = np.argsort(realistic[:, reference, blindest], kind="stable")[: max(0, min(n_worst, n_images))]
        worst_images = np.where(labels[worst], values[blindest], images[worst])
        if adapter is not None and len(worst):
            worst_recon = reconstruct(adapter, worst_images, batch_size=batch_size, device=device)
        else:
            worst_recon = normal[worst]
        worst_maps = np.stack([score_map(name, worst_images, worst_recon, stats=stats) for name in names], axis=1)

    counts, edges = foreground_histogram(images)
    result = {
        "intensities": intensities, "scores": np.asarray(names), "centers": centers, "radius": np.float64(radius),
        "ap_normal": ap_normal.mean(axis=0), "ap_anomalous": ap_anomalous.mean(axis=0),
        "ap_per_image_normal": ap_normal, "ap_per_image_anomalous": ap_anomalous,
        "has_anomalous": np.bool_(adapter is not None), "reference_score": np.str_(names[reference]),
        "textures": np.asarray(textures), "ap_texture": ap_texture.mean(axis=0), "ap_per_image_texture": ap_texture,
        "radii": radii, "size_intensities": intensities[[blindest, visible]],
        "ap_size_normal": size_normal.mean(axis=0), "ap_size_anomalous": size_anomalous.mean(axis=0),
        "ap_per_image_size_normal": size_normal, "ap_per_image_size_anomalous": size_anomalous,
        "sigmas": sigmas, "blur_ap": blur["ap"],
        "histogram_counts": counts, "histogram_edges": edges,
        "recon_error": np.float64(recon_error.mean()), "recon_error_per_image": recon_error,
        "worst_index": worst.astype(np.int64), "worst_intensity": np.float64(intensities[blindest]),
        "worst_images": worst_images, "worst_labels": labels[worst], "worst_reconstructions": worst_recon,
        "worst_maps": worst_maps, "worst_ap": realistic[worst, :, blindest],
        "reconstructions": normal,
    }
    for mode, match in matches.items():
        suffix = "" if mode == "normal" else "_anomalous"
        result[f"matched_sigma{suffix}"] = np.float64(sigmas[match["index"]]) if match else np.float64(np.nan)
        result[f"matched_sigma_index{suffix}"] = np.int64(match["index"] if match else -1)
        result[f"matched{suffix}"] = np.bool_(match["matched"] if match else False)
        for key in MATCH_KEYS:  # the distance, its interval over images, its bound and the worst point
            result[f"matched_{key}{suffix}"] = np.float64(match[key] if match else np.nan)
        summary = profile_summary(result[f"ap_{mode}"], intensities, counts, edges)
        for key, value in summary.items():
            result[f"{key}_{mode}"] = value
    mode = "anomalous" if adapter is not None else "normal"
    order = rank_scores({key: result[f"{key}_{mode}"] for key in ("mean_ap", "min_ap", "blind_fraction")})
    result.update(ranking=order.astype(np.int64), ranking_mode=np.str_(mode), best_score=np.str_(names[int(order[0])]))
    if stats is not None and stats.prior is not None:
        result["rarity_probability"] = stats.prior.probability
    timings["total"] = time.perf_counter() - started
    result["timings"] = timings
    result["model_calls"] = (adapter.calls - calls_before[0]) if adapter is not None else 0
    result["model_images"] = (adapter.images - calls_before[1]) if adapter is not None else 0
    return result

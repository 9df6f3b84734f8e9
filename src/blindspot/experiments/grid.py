"""The shared engine of experiments 1 and 2: AP of |blur_σ(x) − x_anomalous| over a σ grid.

For one image the label (disk ∩ brain) is the same for every anomaly variant (every intensity or
texture), and outside the label the anomalous image equals the normal one. So for each σ the
negatives' scores ``|blur_σ(x) − x|`` do not depend on the variant: they are blurred and sorted once,
and every variant's positives are ranked against them with one ``searchsorted``. AP then follows
from counts (sklearn's step rule, ties included): each positive at score v contributes
``tp(≥v) / (tp(≥v) + fp(≥v)) / K``. Scores stay in the images' dtype (float32), so ties are exactly
the ties the straightforward per-cell computation sees.

Costs are checked before they are paid: :func:`check_grid_size` (from the options alone, before
any data are read) and :func:`run_grid` (with the images) refuse a grid whose memory
(:func:`grid_bytes`) exceeds what is available. The threads work on blocks of
:data:`SIGMA_BLOCK` σ of one image, so progress advances and Ctrl-C is answered within a block.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from blindspot.metrics.ranking import ap_against_negatives
from blindspot.progress import progress
from blindspot.resources import check_memory
from blindspot.results import save_npz
from blindspot.wording import count

#: σ values of one image per thread task: the unit of progress, and of the wait for Ctrl-C.
SIGMA_BLOCK = 4
#: Image × σ cells per progress line at most (a line every few seconds on large grids).
PROGRESS_CELLS = 1000


def grid_bytes(n_images: int, n_variants: int, n_sigmas: int, n_label: int, n_pixels: int, threads: int = 1) -> float:
    """Peak bytes of a grid: the ``(N, V, S)`` AP and residual held twice (chunks, then joined) and, per
    thread, the ``(V, K)`` positives with their sort and ranks (about 48 bytes each) and the image's blur
    and residuals (about 24 bytes a pixel)."""
    return 32.0 * n_images * n_variants * n_sigmas + threads * (48.0 * n_variants * n_label + 24.0 * n_pixels) + 16.0 * n_sigmas


def check_grid_bytes(n_images: int, n_variants: int, n_sigmas: int, n_label: int, n_pixels: int, threads: int = 1, *,
                     n_intensities: int | None = None, unit: str = "image", at_least: bool = False) -> None:
    """Refuse a grid that does not fit in memory, naming the larger of its axes (`n_sigmas` or `n_intensities`).

    ``n_intensities``: the option behind ``n_variants`` (when the variants are intensities);
    ``unit``: "image" or "volume"; ``at_least``: the sizes are lower bounds (before the data are read).
    """
    need = grid_bytes(n_images, n_variants, n_sigmas, n_label, n_pixels, threads)
    what = (f"the grid of {'at least ' if at_least else ''}{count(n_images, unit)} × {n_variants:,} anomalies × "
            f"{n_sigmas:,} σ ({n_label:,} anomaly {'voxels' if unit == 'volume' else 'pixels'} each)")
    if n_intensities is not None and n_intensities >= n_sigmas:
        check_memory(need, what, parameter="n_intensities", value=n_intensities,
                     per_unit=32.0 * n_images * n_sigmas + 48.0 * threads * n_label)
    else:
        check_memory(need, what, parameter="n_sigmas", value=n_sigmas, per_unit=32.0 * n_images * n_variants + 16.0)


def check_grid_size(parameters: dict) -> None:
    """Refuse a grid whose options alone (one image and its disk or ball) exceed the memory available.

    Called before any data are read or any folder is made; :func:`run_grid` checks again with the images.
    ``parameters`` holds ``n_intensities``, ``n_sigmas``, ``radius`` (and ``radius_unit`` for whole volumes).
    """
    n_intensities, n_sigmas, radius = parameters["n_intensities"], parameters["n_sigmas"], parameters["radius"]
    if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and 0 < v < math.inf
               for v in (n_intensities, n_sigmas, radius)):
        return  # the parameter checks name the fault
    # the label (disk or ball ∩ foreground) of a modest radius at most: a radius too large for the images
    # is refused with them, by its own check, and the full estimate follows with the images
    if "radius_unit" not in parameters:
        n_label = math.pi * min(radius, 128) ** 2
    elif parameters["radius_unit"] == "voxel":
        n_label = 4 / 3 * math.pi * min(radius, 32) ** 3
    else:  # millimetres: the voxels are known only with the volumes' spacing
        n_label = 1
    check_grid_bytes(1, int(n_intensities), int(n_sigmas), int(n_label), int(n_label), n_intensities=int(n_intensities),
                     unit="image" if "radius_unit" not in parameters else "volume", at_least=True)


def image_grid(
    image: np.ndarray, label: np.ndarray, values: np.ndarray, sigmas: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """AP and mean residual ``(V, S)`` for one image under every blur σ.

    Parameters
    ----------
    image : ndarray (H, W)
        The normal image; the reconstruction is ``gaussian_filter(image, σ)``.
    label : bool ndarray (H, W)
        Anomaly label; the anomalous image differs from ``image`` only inside it.
    values : ndarray broadcastable to (V, K)
        The anomalous image's values at the K label pixels (raster order), one row per variant.
    """
    values = np.asarray(values, dtype=image.dtype)
    ap = np.empty((values.shape[0], len(sigmas)))
    residual = np.empty((values.shape[0], len(sigmas)))
    for s, sigma in enumerate(sigmas):
        ap[:, s], residual[:, s] = reconstruction_ap(image, label, values, gaussian_filter(image, float(sigma)))
    return ap, residual


def reconstruction_ap(
    image: np.ndarray, label: np.ndarray, values: np.ndarray, reconstruction: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AP and mean residual ``(V,)`` of ``|reconstruction − x_anomalous|`` for every anomaly variant.

    The reconstruction is shared by all variants (a blur of the normal image, or a model's
    reconstruction of it), so the negatives are sorted once. Arguments as in :func:`image_grid`,
    plus ``reconstruction`` ``(H, W)`` in the image's dtype.
    """
    flat = image.ravel()
    inside = label.ravel()
    values = np.asarray(values, dtype=image.dtype)
    recon = reconstruction.ravel()
    negatives = np.abs(recon[~inside] - flat[~inside])
    positives = np.abs(recon[inside][None, :] - values)
    positives = np.broadcast_to(positives, (values.shape[0], positives.shape[1]))
    ap = ap_against_negatives(positives, np.sort(negatives[negatives > 0]), len(negatives))
    residual = (negatives.sum(dtype=np.float64) + positives.sum(axis=1, dtype=np.float64)) / flat.size
    return ap, residual


def grid_fingerprint(images: np.ndarray, **params) -> str:
    """A short hash of the images and every parameter that determines a grid's numbers (for resuming)."""
    digest = hashlib.sha256(np.ascontiguousarray(images))  # hashes the buffer without a copy
    digest.update(json.dumps(params, sort_keys=True, default=lambda a: np.asarray(a).tolist()).encode())
    return digest.hexdigest()[:16]


def _cached(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A finished chunk saved by an earlier run, or None (also when the file is unreadable: it is recomputed)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as saved:
            return saved["ap"], saved["residual"]
    except Exception:  # a chunk cut short by a crash or a full disk; np.load raises many types
        warnings.warn(f"the cached chunk '{path.name}' is unreadable; it is recomputed.", UserWarning, stacklevel=3)
        return None


def chunk_grid(images: np.ndarray, labels: np.ndarray, rows: Sequence[np.ndarray], sigmas: Sequence[float]
               ) -> tuple[np.ndarray, np.ndarray]:
    """AP and mean residual ``(n, V, S)`` of a chunk of images (one task on a Dask worker)."""
    parts = [image_grid(image, label, values, sigmas) for image, label, values in zip(images, labels, rows)]
    return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])


def run_grid(
    images: np.ndarray,
    labels: np.ndarray,
    values_for: Callable[[int], np.ndarray],
    sigmas: Sequence[float],
    *,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    fingerprint: str = "",
    chunk_size: int = 16,
    desc: str = "images",
    pool=None,
) -> tuple[np.ndarray, np.ndarray]:
    """AP and mean residual ``(N, V, S)`` for a stack of images, ``values_for(n)`` giving image n's rows.

    Images are processed by ``threads`` threads (numpy and scipy release the GIL), in chunks; with
    ``cache_dir`` each finished chunk is saved there so an interrupted run resumes where it stopped
    (an unreadable chunk is recomputed, with a warning). Memory is O(V·K + H·W) per thread plus the
    ``(N, V, S)`` results; a grid that does not fit is refused before anything is computed
    (:func:`check_grid_bytes`). Progress counts image × σ cells; Ctrl-C drops the queued σ blocks.

    With ``pool`` (a :class:`blindspot.execution.Pool`) every chunk not in the cache is one task on
    the cluster's workers (:func:`chunk_grid`, the same arithmetic, so the same numbers bit for
    bit), a window of them in flight at a time; the workers return the chunks and this process
    writes them to ``cache_dir``, so the cache needs no storage shared with the workers.
    """
    threads = threads or os.cpu_count() or 1
    if len(images):
        n_label = int(np.asarray(labels).reshape(len(labels), -1).sum(axis=1).max())
        check_grid_bytes(len(images), np.shape(values_for(0))[0], len(sigmas), n_label, images[0].size,
                         threads if pool is None else 0)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    bounds = [(start, min(start + chunk_size, len(images))) for start in range(0, len(images), chunk_size)]
    paths = [cache / f"chunk-{fingerprint}-{start:06d}-{stop:06d}.npz" if cache is not None else None for start, stop in bounds]
    if pool is not None:
        return _grid_on(pool, images, labels, values_for, sigmas, bounds, paths, desc)
    chunks = []
    executor = ThreadPoolExecutor(threads)
    try:
        total = len(images) * len(sigmas)
        with progress(total, desc, unit="σ", every=max(1, min(total // 20, PROGRESS_CELLS))) as bar:
            for (start, stop), path in zip(bounds, paths):
                saved = _cached(path) if path is not None else None
                if saved is None:
                    saved = _chunk_on_threads(executor, threads, images, labels, values_for, sigmas, range(start, stop), bar)
                    if path is not None:
                        save_npz(path, ap=saved[0], residual=saved[1])
                else:
                    bar.update((stop - start) * len(sigmas))
                chunks.append(saved)
    finally:  # after Ctrl-C the queued blocks are dropped: only the blocks running finish
        executor.shutdown(wait=True, cancel_futures=True)
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def _chunk_on_threads(executor, threads: int, images, labels, values_for, sigmas, indices, bar) -> tuple[np.ndarray, np.ndarray]:
    """AP and mean residual ``(n, V, S)`` of the images ``indices``, one task per image and block of
    :data:`SIGMA_BLOCK` σ (the columns of :func:`image_grid` are independent: the same numbers).

    At most two tasks per thread are queued, so an interruption has little to drop.
    """
    parts: dict[int, list] = {n: [] for n in indices}
    pending: deque = deque()

    def collect() -> None:
        n, block, task = pending.popleft()
        parts[n].append(task.result())
        bar.update(len(sigmas[block]))

    for n in indices:
        for start in range(0, len(sigmas), SIGMA_BLOCK):
            block = slice(start, start + SIGMA_BLOCK)
            pending.append((n, block, executor.submit(image_grid, images[n], labels[n], values_for(n), sigmas[block])))
            if len(pending) >= 2 * threads:
                collect()
    while pending:
        collect()
    return (np.stack([np.concatenate([p[0] for p in parts[n]], axis=1) for n in indices]),
            np.stack([np.concatenate([p[1] for p in parts[n]], axis=1) for n in indices]))


def _grid_on(pool, images, labels, values_for, sigmas, bounds, paths, desc) -> tuple[np.ndarray, np.ndarray]:
    """:func:`run_grid` with the uncached chunks as tasks of ``pool``; the client writes the cache."""
    chunks = [_cached(path) if path is not None else None for path in paths]
    todo = [c for c, saved in enumerate(chunks) if saved is None]
    sigmas = [float(s) for s in sigmas]
    tasks = ((images[a:b], labels[a:b], [values_for(n) for n in range(a, b)], sigmas) for a, b in (bounds[c] for c in todo))

    def store(i: int, result) -> None:
        chunks[todo[i]] = result
        if paths[todo[i]] is not None:
            save_npz(paths[todo[i]], ap=result[0], residual=result[1])

    pool.map(chunk_grid, tasks, desc=desc, unit="img", total=sum(b - a for a, b in (bounds[c] for c in todo)),
             weight=lambda i: bounds[todo[i]][1] - bounds[todo[i]][0], on_result=store)
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

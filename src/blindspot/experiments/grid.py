"""The shared engine of experiments 1 and 2: AP of |blur_σ(x) − x_anomalous| over a σ grid.

For one image the label (disk ∩ brain) is the same for every anomaly variant (every intensity or
texture), and outside the label the anomalous image equals the normal one. So for each σ the
negatives' scores ``|blur_σ(x) − x|`` do not depend on the variant: they are blurred and sorted once,
and every variant's positives are ranked against them with one ``searchsorted``. AP then follows
from counts (sklearn's step rule, ties included): each positive at score v contributes
``tp(≥v) / (tp(≥v) + fp(≥v)) / K``. Scores stay in the images' dtype (float32), so ties are exactly
the ties the straightforward per-cell computation sees.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from blindspot.metrics.ranking import ap_against_negatives
from blindspot.progress import progress
from blindspot.results import save_npz


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
    (an unreadable chunk is recomputed, with a warning). Memory is O(V·K + H·W) per thread,
    independent of N.

    With ``pool`` (a :class:`blindspot.execution.Pool`) every chunk not in the cache is one task on
    the cluster's workers (:func:`chunk_grid`, the same arithmetic, so the same numbers bit for
    bit), a window of them in flight at a time; the workers return the chunks and this process
    writes them to ``cache_dir``, so the cache needs no storage shared with the workers.
    """
    threads = threads or os.cpu_count() or 1
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    bounds = [(start, min(start + chunk_size, len(images))) for start in range(0, len(images), chunk_size)]
    paths = [cache / f"chunk-{fingerprint}-{start:06d}-{stop:06d}.npz" if cache is not None else None for start, stop in bounds]
    if pool is not None:
        return _grid_on(pool, images, labels, values_for, sigmas, bounds, paths, desc)
    chunks = []
    with ThreadPoolExecutor(threads) as executor, progress(len(images), desc, unit="img", every=chunk_size) as bar:
        for (start, stop), path in zip(bounds, paths):
            saved = _cached(path) if path is not None else None
            if saved is None:
                parts = list(executor.map(lambda n: image_grid(images[n], labels[n], values_for(n), sigmas), range(start, stop)))
                saved = np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
                if path is not None:
                    save_npz(path, ap=saved[0], residual=saved[1])
            chunks.append(saved)
            bar.update(stop - start)
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


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

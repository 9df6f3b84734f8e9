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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from tqdm.auto import tqdm

from blindspot.results import save_npz


def ap_against_negatives(positives: np.ndarray, negatives_sorted: np.ndarray, n_negatives: int) -> np.ndarray:
    """Average precision of each row of ``positives`` ``(V, K)`` against shared negatives.

    ``negatives_sorted`` holds the negatives' scores that are > 0, ascending; the other
    ``n_negatives - len(negatives_sorted)`` negatives score exactly 0 (scores are non-negative).
    Equals ``sklearn.metrics.average_precision_score`` on the concatenated scores of each row.
    """
    pos = np.sort(positives, axis=1)
    k = pos.shape[1]
    # tp(>= v) for every positive: K minus the index where its tie group starts.
    starts = np.ones(pos.shape, bool)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(k), 0), axis=1)
    tp = k - first
    n_nonzero = len(negatives_sorted)
    fp = n_nonzero - np.searchsorted(negatives_sorted, pos) + (n_negatives - n_nonzero) * (pos <= 0)
    return (tp / (tp + fp)).mean(axis=1)


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


def run_grid(
    images: np.ndarray,
    labels: np.ndarray,
    values_for: Callable[[int], np.ndarray],
    sigmas: Sequence[float],
    *,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    fingerprint: str = "",
    chunk_size: int = 16,
    desc: str = "images",
) -> tuple[np.ndarray, np.ndarray]:
    """AP and mean residual ``(N, V, S)`` for a stack of images, ``values_for(n)`` giving image n's rows.

    Images are processed by ``workers`` threads (numpy and scipy release the GIL), in chunks; with
    ``cache_dir`` each finished chunk is saved there so an interrupted run resumes where it stopped.
    Memory is O(V·K + H·W) per worker, independent of N.
    """
    workers = workers or os.cpu_count() or 1
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    chunks = []
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(images), desc=desc, unit="img", leave=False) as bar:
        for start in range(0, len(images), chunk_size):
            stop = min(start + chunk_size, len(images))
            path = cache / f"chunk-{fingerprint}-{start:06d}-{stop:06d}.npz" if cache is not None else None
            if path is not None and path.exists():
                with np.load(path) as saved:
                    chunks.append((saved["ap"], saved["residual"]))
            else:
                parts = list(pool.map(lambda n: image_grid(images[n], labels[n], values_for(n), sigmas), range(start, stop)))
                ap, residual = np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
                if path is not None:
                    save_npz(path, ap=ap, residual=residual)
                chunks.append((ap, residual))
            bar.update(stop - start)
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

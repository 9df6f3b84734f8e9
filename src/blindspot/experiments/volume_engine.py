"""The engine of the whole-volume grids: AP of ``|blur_σ(x) − x_anomalous|`` over every voxel, fast and exact.

Done cell by cell, one (intensity, σ) cell of a 256³ volume is a 3-D ``gaussian_filter`` and an
AP over 16.7 M voxels. This engine computes the same numbers (to 1e-12) with three shortcuts,
each exact:

1. **One blur per (volume, σ), on the foreground's box.** Outside its bounding box the volume
   is 0, and ``scipy.ndimage.gaussian_filter`` is three 1-D passes (axes 0, 1, 2) whose kernels
   reach ``int(4σ + 0.5)`` voxels (``truncate=4``). Each pass is computed only where its input
   can be non-zero, on the box grown by the reach along the axes filtered so far
   (:func:`blur_box`). Every line of a pass then holds the values it holds in the full volume,
   and where ``reflect`` mirrors across a cut it mirrors zeros, as the full volume does there (or
   the cut is the volume's own edge). So the result is bitwise the full blur inside the grown
   box; outside it every kernel window holds only zeros, the full blur is exactly 0, and so is
   the volume: those residuals are exactly 0.
2. **Negatives shared.** For one volume the label (ball ∩ foreground) is the same in every cell,
   and outside it the anomalous volume equals the normal one, so the negatives' scores
   ``|blur_σ(x) − x|`` depend on σ only. Negatives that score exactly 0 (the far background, and
   any voxel the blur leaves unchanged) are counted, not sorted.
3. **One sort for all variants.** The positives of every variant (each intensity or texture) and
   the non-zero negatives are ranked together by one sort of integer keys: a non-negative
   float32's bit pattern orders like its value, so ties are exactly float32 equality, as in the
   per-cell computation. Each positive's AP term ``tp(≥v) / (tp(≥v) + fp(≥v))`` follows from the
   counts (sklearn's step rule, ties included; :func:`ap_against_nonzero_negatives`).

Memory per worker is a few arrays of the grown box plus the sort keys, never an
``[I, S, volume]`` array. scipy's 1-D filter holds the GIL, so σ values run in worker processes
(:class:`GridWorkers`) that map the volume from a temporary ``.npy`` file; small volumes, and a
single worker, run in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d

from blindspot.errors import BlindspotError

__all__ = [
    "PROCESS_MIN_VOXELS",
    "TRUNCATE",
    "GridWorkers",
    "ap_against_nonzero_negatives",
    "ap_against_sorted_negatives",
    "blur_box",
    "foreground_box",
    "gaussian_reach",
    "sigma_scores",
    "volume_grid",
]

#: scipy's default ``truncate`` of ``gaussian_filter``: the kernel reaches ``int(TRUNCATE·σ + 0.5)`` voxels.
TRUNCATE = 4.0
#: Volumes with fewer voxels run in this process (a worker process costs more than it saves on them).
PROCESS_MIN_VOXELS = 2**22


def gaussian_reach(sigma: float) -> int:
    """How far (voxels) the kernel of ``gaussian_filter(·, σ)`` reaches: ``int(4σ + 0.5)``, 0 for σ = 0.

    >>> gaussian_reach(0.0), gaussian_reach(0.1), gaussian_reach(2.5), gaussian_reach(5.0)
    (0, 0, 10, 20)
    """
    sigma = float(sigma)
    return 0 if sigma <= 1e-15 else int(TRUNCATE * sigma + 0.5)


def foreground_box(volume: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of the voxels > 0 (a BlindspotError when there is none)."""
    box = []
    for axis in range(volume.ndim):
        other = tuple(a for a in range(volume.ndim) if a != axis)
        present = np.flatnonzero((volume > 0).any(axis=other))
        if present.size == 0:
            raise BlindspotError("the volume has an empty foreground (no voxel > 0).")
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def blur_box(volume: np.ndarray, box: Sequence[slice], sigma: float) -> tuple[np.ndarray, tuple[slice, ...]]:
    """``gaussian_filter(volume, σ)`` on ``box`` grown by the kernel's reach: ``(blurred, where)``.

    ``blurred`` is float32 of the grown box's shape and bitwise equal to
    ``scipy.ndimage.gaussian_filter(volume, σ)[where]`` when the volume is 0 outside ``box``;
    outside ``where`` that full blur is exactly 0 (module docstring). The passes run along axes
    0, 1, 2 (scipy's order), each on the region where its input can be non-zero.
    """
    volume = np.asarray(volume)
    if volume.dtype != np.float32 or volume.ndim != 3:
        raise BlindspotError(f"volumes must be float32 of shape (X, Y, Z); got {volume.dtype} {volume.shape}.")
    reach = gaussian_reach(sigma)
    where = tuple(slice(max(b.start - reach, 0), min(b.stop + reach, n)) for b, n in zip(box, volume.shape))
    if float(sigma) <= 1e-15:  # scipy skips every axis: the identity
        return np.array(volume[where]), where
    inner = [slice(b.start - w.start, b.stop - w.start) for b, w in zip(box, where)]
    sizes = [w.stop - w.start for w in where]
    # pass 1 (axis 0): only the lines that cross the box in axes 1 and 2 can be non-zero
    first = np.zeros((sizes[0], sizes[1], box[2].stop - box[2].start), np.float32)
    gaussian_filter1d(volume[where[0], box[1], box[2]], float(sigma), axis=0, output=first[:, inner[1], :],
                      mode="reflect", truncate=TRUNCATE)
    # pass 2 (axis 1) on the box grown along axes 0 and 1; pass 3 (axis 2) on the whole grown box, in place
    out = np.zeros(sizes, np.float32)
    gaussian_filter1d(first, float(sigma), axis=1, output=out[:, :, inner[2]], mode="reflect", truncate=TRUNCATE)
    del first
    gaussian_filter1d(out, float(sigma), axis=2, output=out, mode="reflect", truncate=TRUNCATE)
    return out, where


def ap_against_nonzero_negatives(positives: np.ndarray, negatives: np.ndarray, n_negatives: int) -> np.ndarray:
    """Average precision of each row of ``positives`` against one shared set of negatives.

    Parameters
    ----------
    positives : ndarray of float32, shape (V, K)
        Non-negative scores of the K positives of each of V variants.
    negatives : ndarray of float32, shape (M,)
        The negatives' scores that are > 0 (any order).
    n_negatives : int
        All negatives; the other ``n_negatives − M`` score exactly 0.

    Returns
    -------
    ndarray of float64, shape (V,)
        sklearn's AP of each row with the negatives, to 1e-12 (the sum runs over positives).

    Notes
    -----
    Scores are ranked by their float32 bit patterns, which order non-negative floats like their
    values, so ties are exactly float32 equality. One sort of (bits, flag) keys ranks every
    positive of every row among the negatives (the flag puts negatives after equal positives): a
    positive's place minus its place among the positives is the number of negatives strictly
    below it. A sort of the positives by (bits, row) gives the row of each, and a sort by (row,
    count) lines the counts up with each row's sorted scores (the count grows with the score),
    whose tie groups give ``tp(≥v)``; then ``fp(≥v) = n_negatives − below`` and each positive adds
    ``tp / (tp + fp) / K``. Values must be finite (scores are in [0, 1] here).

    >>> ap_against_nonzero_negatives(np.array([[0.9, 0.5]], np.float32), np.array([0.5, 0.1], np.float32), 2)
    array([0.83333333])
    """
    positives = np.ascontiguousarray(positives, dtype=np.float32)
    negatives = np.ascontiguousarray(negatives, dtype=np.float32).ravel()
    if positives.ndim != 2 or positives.shape[1] == 0 or positives.shape[0] >= 2**32 or negatives.size >= 2**32:
        raise BlindspotError(f"`positives` must have shape (V, K) with K >= 1; got {positives.shape}.")
    n_rows, k = positives.shape
    m, n_q = negatives.size, positives.size
    bits = positives.view(np.uint32)
    # 1. rank the positives among the negatives: one sort of (score bits, flag) keys
    merged = np.empty(n_q + m, np.uint32)
    np.left_shift(bits.ravel(), np.uint32(1), out=merged[:n_q])
    np.left_shift(negatives.view(np.uint32), np.uint32(1), out=merged[n_q:])
    merged[n_q:] |= np.uint32(1)
    merged.sort()
    below = np.flatnonzero((merged & np.uint32(1)) == 0)  # the positives' places, by ascending score
    del merged
    below -= np.arange(n_q)  # non-zero negatives strictly below each positive, by ascending score
    # 2. the row of each of those positives: the positives sorted by (score, row)
    keys = np.empty((n_rows, k), np.uint64)
    np.left_shift(bits, np.uint32(32), out=keys, dtype=np.uint64)
    keys |= np.arange(n_rows, dtype=np.uint64)[:, None]
    keys = keys.ravel()
    keys.sort()
    # 3. the counts row by row, ascending (= at each row's sorted scores: the count grows with the score):
    #    the keys become (row, count) in place, the row moving to the high word
    words = keys.view(np.uint32).reshape(n_q, 2)
    low, high = (0, 1) if np.little_endian else (1, 0)
    words[:, high] = words[:, low]
    words[:, low] = below
    del below
    keys.sort()
    below = words[:, low].reshape(n_rows, k)
    # 4. AP: each positive adds tp(>= v) / (tp(>= v) + fp(>= v)) / K
    scores = np.sort(positives, axis=1)
    fp = np.subtract(float(m), below, dtype=np.float64)  # non-zero negatives at or above each score ...
    del keys, words, below
    zero = scores == 0
    if zero.any():
        fp[zero] += n_negatives - m  # ... and the zero-scored ones, which tie with a score of 0
    ties = scores[:, 1:] == scores[:, :-1]
    if ties.any():  # tp(>= v) counts the whole tie group of v
        starts = np.ones(scores.shape, bool)
        starts[:, 1:] = ~ties
        tp = k - np.maximum.accumulate(np.where(starts, np.arange(k, dtype=np.int32), 0), axis=1).astype(np.float64)
    else:
        tp = np.arange(k, 0, -1, dtype=np.float64)[None, :]
    return (tp / (tp + fp)).mean(axis=1)


def ap_against_sorted_negatives(positives: np.ndarray, negatives: Sequence[np.ndarray], n_negatives: int) -> float:
    """Average precision of one set of positives against negatives given as ascending arrays of scores > 0.

    For a few variants against many negatives (the anomalous-image mode of a model, where the
    negatives of the untouched slices are sorted once): each positive's count of negatives below
    it is a ``searchsorted`` in each array; ``n_negatives`` counts the zero-scored ones too.
    """
    scores = np.sort(np.asarray(positives, dtype=np.float32).ravel())
    k = scores.size
    below = np.zeros(k, np.int64)
    m = 0
    for part in negatives:
        below += np.searchsorted(part, scores, side="left")
        m += part.size
    fp = m - below
    fp[scores == 0] += n_negatives - m
    starts = np.ones(k, bool)
    starts[1:] = scores[1:] != scores[:-1]
    tp = k - np.maximum.accumulate(np.where(starts, np.arange(k), 0))
    return float((tp / (tp + fp)).mean())


def sigma_scores(volume: np.ndarray, box: Sequence[slice], index: tuple[np.ndarray, ...], values: np.ndarray,
                 sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """AP and mean residual ``(V,)`` of every variant for one σ (one blur, one sort).

    ``values`` ``(V, K)`` or ``(V, 1)``: the anomalous volume's values at the K label voxels ``index``.
    """
    n_label = len(index[0])
    blurred, where = blur_box(volume, box, sigma)
    local = tuple(i - w.start for i, w in zip(index, where))
    recon = blurred[local]
    residual = np.subtract(blurred, volume[where], out=blurred)
    np.abs(residual, out=residual)
    residual[local] = 0
    negative_sum = residual.sum(dtype=np.float64)
    negatives = residual[residual > 0]
    del blurred, residual
    positives = np.broadcast_to(np.abs(recon[None, :] - values), (values.shape[0], n_label))
    ap = ap_against_nonzero_negatives(positives, negatives, volume.size - n_label)
    mean = (negative_sum + positives.sum(axis=1, dtype=np.float64)) / volume.size
    return ap, mean


# --------------------------------------------------------------------------------------------
# one volume, every σ, in this process or in worker processes

_MAPPED: dict = {}  # in a worker: the volume file it has open


def _worker_scores(path: str, box, index, values, sigma) -> tuple[np.ndarray, np.ndarray]:
    if _MAPPED.get("path") != path:
        _MAPPED.clear()
        _MAPPED.update(path=path, volume=np.load(path, mmap_mode="r"))
    return sigma_scores(_MAPPED["volume"], box, index, values, sigma)


def _ignore_interrupts() -> None:
    """A worker leaves Ctrl-C to the main process, which stops it (no traceback from every worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class GridWorkers:
    """Worker processes for the σ values of a volume (a context manager; ``workers=1``: none).

    The volume is written once to a temporary ``.npy`` file (in ``folder``, or the system's
    temporary folder) that every worker maps read-only, so memory is the workers' temporaries
    plus one page-cached copy of the volume. When the block is left by an exception (Ctrl-C,
    SIGTERM turned into ``KeyboardInterrupt``, an error) the queued σ are dropped and the worker
    processes are terminated at once, so none outlives the run.
    """

    def __init__(self, workers: int | None = None, *, folder: str | Path | None = None):
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.folder = folder
        self._pool: ProcessPoolExecutor | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._volumes = 0  # one file per volume: a worker maps a new file for a new volume

    def __enter__(self) -> "GridWorkers":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self._pool is not None:
            if exc_type is None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            else:
                self._stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _stop(self) -> None:
        """Drop the queued tasks and terminate the workers without waiting for the running ones."""
        processes = list((self._pool._processes or {}).values())  # the executor has no public handle on them
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            if self.folder is not None:
                Path(self.folder).mkdir(parents=True, exist_ok=True)
            self._tmp = tempfile.TemporaryDirectory(prefix="blindspot-volume-", dir=self.folder)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_ignore_interrupts)
        return self._pool

    def grid(self, volume: np.ndarray, index: tuple[np.ndarray, ...], values: np.ndarray, sigmas: Sequence[float], *,
             box: Sequence[slice] | None = None, on_sigma: Callable[[], None] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`volume_grid` on these workers."""
        volume = np.ascontiguousarray(volume, dtype=np.float32)
        values = np.atleast_2d(np.asarray(values, dtype=np.float32))
        box = foreground_box(volume) if box is None else tuple(box)
        sigmas = [float(s) for s in sigmas]
        parts: list = [None] * len(sigmas)
        if self.workers == 1 or volume.size < PROCESS_MIN_VOXELS or len(sigmas) == 1:
            for s, sigma in enumerate(sigmas):
                parts[s] = sigma_scores(volume, box, index, values, sigma)
                if on_sigma is not None:
                    on_sigma()
        else:
            pool = self._start()
            self._volumes += 1
            path = os.path.join(self._tmp.name, f"volume-{self._volumes}.npy")
            np.save(path, volume)
            # largest σ first: the slowest tasks do not end up last
            order = sorted(range(len(sigmas)), key=lambda s: -sigmas[s])
            futures = {pool.submit(_worker_scores, path, box, index, values, sigmas[s]): s for s in order}
            try:
                for future in as_completed(futures):
                    parts[futures[future]] = future.result()
                    if on_sigma is not None:
                        on_sigma()
            finally:
                for future in futures:
                    future.cancel()
                try:
                    os.remove(path)  # the workers' maps of it stay valid until they map the next volume
                except OSError:  # a platform that does not delete mapped files: the folder goes at the end
                    pass
        return np.stack([p[0] for p in parts], axis=1), np.stack([p[1] for p in parts], axis=1)


def volume_grid(volume: np.ndarray, index: tuple[np.ndarray, ...], values: np.ndarray, sigmas: Sequence[float], *,
                box: Sequence[slice] | None = None, workers: int | None = 1,
                on_sigma: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """AP and mean residual ``(V, S)`` of one volume under every blur σ.

    Parameters
    ----------
    volume : ndarray of float32, shape (X, Y, Z)
        The normal volume (0 outside its foreground box); the reconstruction is its blur.
    index : tuple of three index arrays
        The label voxels (ball ∩ foreground, :func:`blindspot.anomalies3d.ball_voxels`), K of them.
    values : ndarray, shape (V, K) or (V, 1)
        The anomalous volume's values at the label voxels, one row per variant.
    workers : int or None
        Worker processes (None: one per core); 1 runs here.
    """
    with GridWorkers(workers) as pool:
        return pool.grid(volume, index, values, sigmas, box=box, on_sigma=on_sigma)

"""Synthetic anomalies of the MIDL 2022 protocol in three dimensions, for whole volumes.

The 2-D semantics of :mod:`blindspot.anomalies` with three coordinates (``docs/volumes.md``):

* **ball** — voxels p with ``Σ_a ((p_a − c_a) / r_a)² < 1`` (the float test of ``skimage.draw.disk``
  with a third axis); every ball voxel takes one intensity; image and label are then multiplied by
  the foreground (``volume > 0``). As in 2-D, clipping ball coordinates onto the border changes
  nothing because centres lie inside the volume.
* **shuffle** — the values inside ball ∩ foreground are randomly permuted among themselves.
* **source** / **sink** — for p in ball ∩ foreground, ``s = (‖p − c‖ / r)²``; the new value is the
  old value at ``round(c + s·(p − c))`` (source) or ``round(p + (1 − s)·(p − c))`` (sink), rounding
  half to even, coordinates clipped into the volume, values read from the undeformed volume.

The label is always ball ∩ foreground. ``radius`` is one number (voxels along every axis) or three
(voxels per array axis: the ball of a radius in millimetres on anisotropic voxels is the ellipsoid
of radii ``r_mm / spacing``; distances are then measured in units of the largest radius, so ``s``
is the squared normalised distance and one radius gives the 2-D formulas exactly).

Generators take a stack of volumes ``(N, X, Y, Z)`` (foreground = ``volume > 0``), leave it alone
and return an :class:`~blindspot.anomalies.Anomalies` record with ``centers`` ``(N, 3)`` in array
index order. Centres are drawn uniformly over each volume's foreground, one volume after the
other, with one ``rng.integers`` call per volume (so a stack and the same volumes fed one at a
time give the same centres), unless given. Work is vectorised over the voxels of each ball's
bounding box, never over the whole volume.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from blindspot.anomalies import TEXTURES, Anomalies
from blindspot.errors import BlindspotError

__all__ = [
    "ball_anomaly",
    "ball_box",
    "ball_masks",
    "ball_radii",
    "ball_voxels",
    "check_volume_centers",
    "sample_volume_center",
    "sample_volume_centers",
    "texture_anomaly_3d",
    "texture_values",
]


def ball_radii(radius: float | Sequence[float]) -> np.ndarray:
    """``radius`` as three positive radii in voxels, one per array axis (float64 ``(3,)``)."""
    try:
        radii = np.asarray(radius, dtype=np.float64)
    except (TypeError, ValueError):
        radii = np.array([np.nan])
    if radii.ndim == 0:
        radii = np.full(3, float(radii))
    if radii.shape != (3,) or not np.all(np.isfinite(radii)) or not np.all(radii > 0):
        raise BlindspotError(f"`radius` must be a positive number or three positive numbers (voxels per axis); got {radius!r}.")
    return radii


def ball_box(shape: Sequence[int], center: Sequence[int], radii: np.ndarray) -> tuple[slice, slice, slice]:
    """The index box that holds every voxel of the ball (clipped to the volume).

    A voxel at integer offset d along an axis can be in the ball only if ``|d| < r``, i.e.
    ``|d| <= ceil(r) − 1``.
    """
    box = []
    for n, c, r in zip(shape, center, radii):
        reach = math.ceil(r) - 1
        box.append(slice(max(int(c) - reach, 0), min(int(c) + reach + 1, int(n))))
    return tuple(box)


def _local_ball(shape, center, radii) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """The ball's bounding box and its boolean mask there (the float test of the module docstring)."""
    box = ball_box(shape, center, radii)
    terms = [((np.arange(b.start, b.stop, dtype=np.float64) - c) / r) ** 2 for b, c, r in zip(box, center, radii)]
    return box, (terms[0][:, None, None] + terms[1][None, :, None]) + terms[2][None, None, :] < 1


def ball_voxels(volume: np.ndarray, center: Sequence[int], radius) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The label of one volume, ball ∩ foreground, as index arrays ``(i, j, k)`` in raster (C) order."""
    radii = ball_radii(radius)
    box, mask = _local_ball(volume.shape, center, radii)
    mask &= volume[box] > 0
    local = np.nonzero(mask)
    return tuple((idx + b.start).astype(np.intp) for idx, b in zip(local, box))


def ball_masks(shape: Sequence[int], centers: np.ndarray, radius) -> np.ndarray:
    """Boolean balls ``(N, X, Y, Z)``, one per centre (not restricted to a foreground)."""
    radii = ball_radii(radius)
    masks = np.zeros((len(centers), *shape), bool)
    for n, center in enumerate(np.asarray(centers)):
        box, mask = _local_ball(shape, center, radii)
        masks[(n, *box)] = mask
    return masks


def sample_volume_center(volume: np.ndarray, rng: np.random.Generator, *, axis: int | None = None,
                         slices: Sequence[int] | None = None, name: str = "volume") -> np.ndarray:
    """One centre, uniform over the foreground voxels of ``volume`` (int64 ``(3,)``, array index order).

    With ``axis`` and ``slices`` only foreground voxels on those slices along ``axis`` are candidates
    (the anomaly's central slice is then one of them). Draws one ``rng.integers`` call.
    """
    foreground = volume > 0
    if slices is not None:
        allowed = np.zeros(volume.shape[axis], bool)
        allowed[np.asarray(slices, int)] = True
        foreground &= allowed.reshape([-1 if a == axis else 1 for a in range(3)])
    candidates = np.flatnonzero(foreground)
    if candidates.size == 0:
        where = "" if slices is None else f" on slices {_slices_text(slices)} along axis {axis}"
        raise BlindspotError(f"{name} has an empty foreground{where} (no voxel > 0); an anomaly centre lies in the foreground.")
    pick = candidates[rng.integers(0, candidates.size)]
    return np.array(np.unravel_index(pick, volume.shape), dtype=np.int64)


def _slices_text(slices: Sequence[int]) -> str:
    slices = [int(s) for s in slices]
    if len(slices) > 1 and slices == list(range(slices[0], slices[-1] + 1)):
        return f"{slices[0]}–{slices[-1]}"
    return ", ".join(str(s) for s in slices)


def sample_volume_centers(volumes, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """One centre per volume, uniform over its foreground voxels: int64 ``(N, 3)`` in array index order."""
    rng = np.random.default_rng(rng)
    return np.stack([sample_volume_center(v, rng, name=f"volume {n}") for n, v in enumerate(volumes)])


def check_volume_centers(centers, shapes: Sequence[tuple[int, ...]], *, names: Sequence[str] | None = None) -> np.ndarray:
    """Explicit centres checked: integers ``(N, 3)``, one voxel index triple per volume, inside it."""
    centers = np.asarray(centers)
    n = len(shapes)
    if centers.shape != (n, 3) or centers.dtype.kind not in "iu":
        raise BlindspotError(f"`centers` must be integers of shape ({n}, 3), one voxel index triple per volume; "
                             f"got {centers.dtype} {centers.shape}.")
    for k, (center, shape) in enumerate(zip(centers, shapes)):
        if not all(0 <= c < s for c, s in zip(center, shape)):
            what = f"volume {names[k]}" if names else f"volume {k}"
            raise BlindspotError(f"`centers` row {k} {center.tolist()} lies outside {what} of shape {tuple(shape)}.")
    return centers.astype(np.int64)


def _resolve(volumes, centers, rng) -> tuple[np.ndarray, np.ndarray]:
    volumes = np.asarray(volumes)
    if volumes.ndim != 4:
        raise BlindspotError(f"volumes must have shape (N, X, Y, Z); got {volumes.shape}.")
    if centers is None:
        return volumes, sample_volume_centers(volumes, rng)
    return volumes, check_volume_centers(centers, [v.shape for v in volumes])


def ball_anomaly(volumes: np.ndarray, intensity: float | np.ndarray, *, radius=20, centers: np.ndarray | None = None,
                 rng: np.random.Generator | int | None = None) -> Anomalies:
    """A ball of constant ``intensity`` (scalar or one per volume) inside the foreground of each volume.

    Examples
    --------
    >>> v = np.zeros((1, 5, 5, 5), np.float32); v[0, 1:4, 1:4, 1:4] = 0.5
    >>> a = ball_anomaly(v, 1.0, radius=1.2, centers=[[2, 2, 2]])
    >>> int(a.labels.sum()), a.images[0, 2, 2, 1:4].tolist(), a.images[0, 1, 1, 2].item()
    (7, [1.0, 1.0, 1.0], 0.5)
    """
    rng = np.random.default_rng(rng)
    volumes, centers = _resolve(volumes, centers, rng)
    values = np.broadcast_to(np.asarray(intensity, dtype=volumes.dtype).reshape(-1), (len(volumes),))
    out, labels = volumes.copy(), np.zeros(volumes.shape, bool)
    for n, center in enumerate(centers):
        index = ball_voxels(volumes[n], center, radius)
        out[n][index] = values[n]
        labels[n][index] = True
    return Anomalies(out, labels, centers)


def texture_values(volume: np.ndarray, kind: str, index: tuple[np.ndarray, ...], center: Sequence[int], radius,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """The anomalous values at the label voxels ``index`` (from :func:`ball_voxels`) for a texture ``kind``.

    ``rng`` draws the shuffle permutation (``K`` uniform keys); the deformations use no randomness.
    """
    if kind not in TEXTURES:
        raise BlindspotError(f"unknown texture '{kind}'; expected one of {', '.join(TEXTURES)}.")
    values = volume[index]
    if kind == "shuffle":
        rng = np.random.default_rng(rng)
        return values[np.argsort(rng.random(len(values)), kind="stable")]
    radii = ball_radii(radius)
    unit = radii.max()
    factors = unit / radii  # 1 for a ball in voxels: the 2-D formulas exactly
    deltas = [idx - float(c) for idx, c in zip(index, center)]
    scaled = [d * f for d, f in zip(deltas, factors)]
    scale = (np.sqrt(scaled[0] * scaled[0] + scaled[1] * scaled[1] + scaled[2] * scaled[2]) / unit) ** 2
    sources = []
    for axis, (idx, c, d) in enumerate(zip(index, center, deltas)):
        where = c + scale * d if kind == "source" else idx + (1 - scale) * d
        sources.append(np.clip(np.round(where), 0, volume.shape[axis] - 1).astype(np.intp))
    return volume[tuple(sources)]


def texture_anomaly_3d(volumes: np.ndarray, kind: str, *, radius=20, centers: np.ndarray | None = None,
                       rng: np.random.Generator | int | None = None) -> Anomalies:
    """A texture anomaly (``"shuffle"``, ``"sink"`` or ``"source"``) inside ball ∩ foreground of each volume.

    ``rng`` samples the centres (when not given), then the shuffle permutations, volume after volume.
    """
    if kind not in TEXTURES:
        raise BlindspotError(f"unknown texture '{kind}'; expected one of {', '.join(TEXTURES)}.")
    rng = np.random.default_rng(rng)
    volumes, centers = _resolve(volumes, centers, rng)
    out, labels = volumes.copy(), np.zeros(volumes.shape, bool)
    for n, center in enumerate(centers):
        index = ball_voxels(volumes[n], center, radius)
        out[n][index] = texture_values(volumes[n], kind, index, center, radius, rng)
        labels[n][index] = True
    return Anomalies(out, labels, centers)

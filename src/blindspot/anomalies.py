"""Synthetic anomalies of the MIDL 2022 protocol, vectorised and batched over images.

Every generator takes a stack of images ``(N, H, W)`` (foreground = ``image > 0``), returns a new
:class:`Anomalies` record and leaves its input alone. Centres are sampled uniformly over each image's
foreground from ``rng`` unless given explicitly; the centres used are always returned.

Protocol semantics (``docs/protocol.md``):

* **disk** — pixels at distance < ``radius`` from the centre, with the float test of
  ``skimage.draw.disk`` (``(dr/r)**2 + (dc/r)**2 < 1``); the original code clips disk coordinates
  onto the image border. Because centres must lie inside the image, every clipped coordinate is
  closer to the centre than the pixel it came from and is therefore already in the disk, so the
  clipping quirk changes nothing; it is reproduced by construction (and tested against the literal
  clip). All disk pixels take one intensity; image and label are then multiplied by the foreground.
* **shuffle** — the values inside disk ∩ brain are randomly permuted among themselves.
* **source** / **sink** — for p in disk ∩ brain, ``s = (‖p − c‖ / r)²``; the new value is the old
  value at ``round(c + s·(p − c))`` (source: pushes content outward) or ``round(p + (1 − s)·(p − c))``
  (sink: pulls it inward), coordinates clipped into the image, read from the undeformed image,
  rounding half to even as ``numpy.round``.

The label is always disk ∩ brain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blindspot.data.imageset import ImageSet
from blindspot.errors import BlindspotError

TEXTURES = ("shuffle", "sink", "source")
_BLOCK = 32  # images per block in vectorised mask computations


@dataclass(frozen=True)
class Anomalies:
    """Anomalous images ``(N, H, W)``, labels ``(N, H, W)`` bool and centres ``(N, 2)`` (row, column)."""

    images: np.ndarray
    labels: np.ndarray
    centers: np.ndarray


def sample_centers(images: np.ndarray, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """One centre per image, uniform over its foreground pixels; int64 ``(N, 2)`` (row, column).

    Draws exactly one ``rng.integers`` call for the batch, so the same seed gives the same centres.
    """
    rng = np.random.default_rng(rng)
    flat_images = images.reshape(len(images), -1)
    blocks = range(0, len(images), _BLOCK)  # blocks bound the (N, H·W) temporaries
    counts = np.concatenate([(flat_images[b : b + _BLOCK] > 0).sum(axis=1) for b in blocks])
    if (counts == 0).any():
        raise BlindspotError(f"image {int(np.argmin(counts))} has an empty foreground; cannot place an anomaly centre.")
    picks = rng.integers(0, counts)  # the k-th foreground pixel of each image, in raster order
    flat = np.concatenate([
        np.argmax(np.cumsum(flat_images[b : b + _BLOCK] > 0, axis=1) > picks[b : b + _BLOCK, None], axis=1)
        for b in blocks
    ])
    return np.stack(np.unravel_index(flat, images.shape[1:]), axis=1).astype(np.int64)


def _resolve_centers(images: np.ndarray, centers, rng) -> np.ndarray:
    if images.ndim != 3:
        raise BlindspotError(f"images must have shape (N, H, W); got {images.shape}.")
    if centers is None:
        return sample_centers(images, rng)
    centers = np.asarray(centers)
    if centers.shape != (len(images), 2) or not np.issubdtype(centers.dtype, np.integer):
        raise BlindspotError(f"centers must be integers of shape ({len(images)}, 2); got {centers.dtype} {centers.shape}.")
    inside = (centers >= 0).all(axis=1) & (centers < np.array(images.shape[1:])).all(axis=1)
    if not inside.all():
        raise BlindspotError(f"center {centers[int(np.argmin(inside))].tolist()} lies outside the image of shape {images.shape[1:]}.")
    return centers.astype(np.int64)


def disk_masks(shape: tuple[int, int], centers: np.ndarray, radius: float) -> np.ndarray:
    """Boolean disks ``(N, H, W)``: the pixels of ``skimage.draw.disk(center, radius)`` for each centre."""
    if not radius > 0:
        raise BlindspotError(f"`radius` must be positive; got {radius}.")
    rows = ((np.arange(shape[0], dtype=np.float64)[None, :] - centers[:, :1]) / radius) ** 2  # (N, H)
    cols = ((np.arange(shape[1], dtype=np.float64)[None, :] - centers[:, 1:]) / radius) ** 2  # (N, W)
    masks = np.empty((len(centers), *shape), bool)
    for start in range(0, len(centers), _BLOCK):  # blocks bound the float64 temporary
        block = slice(start, start + _BLOCK)
        np.less(rows[block, :, None] + cols[block, None, :], 1, out=masks[block])
    return masks


def anomaly_labels(images: np.ndarray, centers: np.ndarray, radius: float) -> np.ndarray:
    """The protocol's label: disk ∩ brain, bool ``(N, H, W)``."""
    return disk_masks(images.shape[1:], centers, radius) & (images > 0)


def disk_anomaly(
    images: np.ndarray,
    intensity: float | np.ndarray,
    *,
    radius: float = 20,
    centers: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
) -> Anomalies:
    """A disk of constant ``intensity`` (scalar or one per image) inside the brain.

    Examples
    --------
    >>> img = np.zeros((1, 8, 8), np.float32); img[0, 2:6, 2:6] = 0.5
    >>> a = disk_anomaly(img, 1.0, radius=1.2, centers=[[3, 3]])
    >>> a.images[0, 2:5, 2:5]
    array([[0.5, 1. , 0.5],
           [1. , 1. , 1. ],
           [0.5, 1. , 0.5]], dtype=float32)
    """
    images = np.asarray(images)
    centers = _resolve_centers(images, centers, rng)
    labels = anomaly_labels(images, centers, radius)
    values = np.broadcast_to(np.asarray(intensity, dtype=images.dtype).reshape(-1, 1, 1), images.shape)
    return Anomalies(np.where(labels, values, images), labels, centers)


def texture_anomaly(
    images: np.ndarray,
    kind: str,
    *,
    radius: float = 20,
    centers: np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
) -> Anomalies:
    """A texture anomaly (``"shuffle"``, ``"sink"`` or ``"source"``) inside disk ∩ brain.

    ``rng`` samples the centres (when not given) and then the shuffle permutation.
    """
    if kind not in TEXTURES:
        raise BlindspotError(f"unknown texture '{kind}'; expected one of {', '.join(TEXTURES)}.")
    images = np.asarray(images)
    rng = np.random.default_rng(rng)
    centers = _resolve_centers(images, centers, rng)
    labels = anomaly_labels(images, centers, radius)
    n, rows, cols = np.nonzero(labels)
    out = images.copy()
    if kind == "shuffle":
        # Sorting by (image, random key) permutes the label pixels within each image, all at once.
        order = np.lexsort((rng.random(len(n)), n))
        out[n, rows, cols] = images[n[order], rows[order], cols[order]]
    else:
        out[n, rows, cols] = images[(n,) + _deformation_sources(kind, rows, cols, centers[n], radius, images.shape[1:])]
    return Anomalies(out, labels, centers)


def _deformation_sources(kind, rows, cols, centers, radius, shape):
    """Where each deformed pixel reads its value from (the per-pixel formulas of the protocol)."""
    d_row = rows - centers[:, 0].astype(np.float64)
    d_col = cols - centers[:, 1].astype(np.float64)
    scale = (np.sqrt(d_row * d_row + d_col * d_col) / radius) ** 2
    if kind == "source":
        src_row, src_col = centers[:, 0] + scale * d_row, centers[:, 1] + scale * d_col
    else:
        src_row, src_col = rows + (1 - scale) * d_row, cols + (1 - scale) * d_col
    src_row = np.clip(np.round(src_row), 0, shape[0] - 1).astype(np.intp)
    src_col = np.clip(np.round(src_col), 0, shape[1] - 1).astype(np.intp)
    return src_row, src_col


# --------------------------------------------------------------------------------------------
# the one synthetic test set (for sources without labels) and training validation

#: Anomaly kinds of synthetic test images, drawn uniformly per image.
KINDS = ("disk", *TEXTURES)
#: Radius range (uniform) of synthetic test anomalies, in pixels at 256 px (scaled with the image size).
RADIUS_RANGE = (10.0, 30.0)
#: Default seed of the synthetic test set.
SYNTHETIC_SEED = 0


def synthetic_anomalies(
    images: np.ndarray,
    *,
    seed: int = SYNTHETIC_SEED,
    kinds: tuple[str, ...] = KINDS,
    radius: tuple[float, float] = RADIUS_RANGE,
) -> tuple[Anomalies, dict]:
    """One random anomaly in each image: ``(anomalies, record)``.

    Per image, from ``numpy.random.default_rng(seed)`` in this order: the kind (uniform over
    ``kinds``), the intensity (uniform in [0, 1], used by disks), the radius (uniform in ``radius``,
    in pixels of ``images``), the centre (uniform over the brain), then the pixel-shuffle
    permutations. Labels are disk ∩ brain. ``record`` holds ``kind``, ``intensity``, ``radius`` and
    ``center`` per image.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise BlindspotError(f"`kinds` must be a non-empty subset of {', '.join(KINDS)}; got {list(kinds)}.")
    rng = np.random.default_rng(seed)
    n = len(images)
    kind_index = rng.integers(0, len(kinds), n)
    intensities = rng.uniform(0.0, 1.0, n)
    radii = rng.uniform(radius[0], radius[1], n)
    centers = sample_centers(images, rng)
    out, labels = np.empty_like(images), np.zeros(images.shape, bool)
    for i in range(n):  # one anomaly per image, each with its own radius
        one, center = images[i : i + 1], centers[i : i + 1]
        if kinds[kind_index[i]] == "disk":
            made = disk_anomaly(one, intensities[i], radius=radii[i], centers=center)
        else:
            made = texture_anomaly(one, kinds[kind_index[i]], radius=radii[i], centers=center, rng=rng)
        out[i], labels[i] = made.images[0], made.labels[0]
    record = {"kind": [kinds[k] for k in kind_index], "intensity": intensities, "radius": radii, "center": centers}
    return Anomalies(out, labels, centers), record


def synthetic_test_set(normal: ImageSet, *, seed: int = SYNTHETIC_SEED) -> ImageSet:
    """The test set of a source without labels: its normal images, then each with one synthetic anomaly.

    Anomalies as :func:`synthetic_anomalies` with every kind of :data:`KINDS` and radii uniform in
    :data:`RADIUS_RANGE` (given at 256 px: scaled by √(H·W) / 256). Pixel labels (empty
    for the normal images), image labels and volume ids (each copy keeps its image's volume) are set;
    ``source["test_set"]`` records how the anomalies were drawn.
    """
    normal.require_foreground()
    factor = float(np.sqrt(np.prod(normal.images.shape[1:]))) / 256
    radius = (RADIUS_RANGE[0] * factor, RADIUS_RANGE[1] * factor)
    made, record = synthetic_anomalies(normal.images, seed=seed, radius=radius)
    n = len(normal)
    names = [*normal.names, *(f"{name}+{kind}" for name, kind in zip(normal.names, record["kind"]))]
    test_set = {"kind": "synthetic", "seed": seed, "kinds": list(KINDS), "radius_at_256": list(RADIUS_RANGE),
                "radius_range": list(radius), "anomalies": record}
    brain = None if normal.brain is None else np.concatenate([normal.brain, normal.brain])
    return ImageSet(np.concatenate([normal.images, made.images]), names, {**normal.source, "test_set": test_set},
                    labels=np.concatenate([np.zeros(normal.images.shape, bool), made.labels]),
                    anomalous=np.arange(2 * n) >= n, brain=brain, volumes=[*normal.volumes, *normal.volumes],
                    scale=normal.scale)

"""The embedded default data: nilearn's 1 mm MNI152 T1 template, read from the installed wheel."""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from blindspot.data.imageset import ImageSet
from blindspot.errors import BlindspotError

#: Default test slices: every 4th axial slice through the central part of the brain (ventricles to
#: the top of the basal ganglia), where brain tissue fills most of the slice.
DEFAULT_SLICES = tuple(range(60, 100, 4))
CANVAS = 256


@lru_cache(maxsize=1)
def load_mni152_volume() -> np.ndarray:
    """The 1 mm MNI152 T1 template × its brain mask, float32 (197, 233, 189) in [0, 1].

    Both files ship inside the nilearn wheel (``nilearn/datasets/data``), so nothing is downloaded.
    Every voxel inside the brain mask is > 0, so the protocol's foreground ``x > 0`` is the brain.
    """
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    template = load_mni152_template(resolution=1).get_fdata(dtype=np.float32)
    mask = load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32) > 0
    volume = np.where(mask, template, 0).astype(np.float32)
    volume.setflags(write=False)
    return volume


def to_canvas(image: np.ndarray, size: int = CANVAS) -> np.ndarray:
    """Centre a 2D image on a ``size`` × ``size`` canvas (zero padding, or a centre crop)."""
    out = np.zeros((size, size), image.dtype)
    src, dst = [], []
    for n in image.shape:
        start = abs(size - n) // 2
        src.append(slice(start, start + size) if n > size else slice(0, n))
        dst.append(slice(0, size) if n > size else slice(start, start + n))
    out[tuple(dst)] = image[tuple(src)]
    return out


def mni152_slices(
    *, axis: int = 2, slices: Sequence[int] | None = None, normalize: float | None = None
) -> ImageSet:
    """Slices of the MNI152 template, rotated so that anterior is up, centred on a 256 × 256 canvas.

    Parameters
    ----------
    axis : int
        0 sagittal, 1 coronal, 2 axial (default).
    slices : sequence of int or None
        Slice indices along ``axis``; default :data:`DEFAULT_SLICES` (axial).
    normalize : float or None
        Optional percentile normalisation (the template is already in [0, 1]).
    """
    from blindspot.data.preprocess import normalize_percentile

    volume = load_mni152_volume()
    if axis not in (0, 1, 2):
        raise BlindspotError(f"--axis must be 0, 1 or 2; got {axis}.")
    if slices is None:
        if axis != 2:
            raise BlindspotError("the mni152 default slices are axial; pass --slices with --axis 0 or 1.")
        slices = DEFAULT_SLICES
    if normalize is not None:
        volume = normalize_percentile(volume, normalize, name="mni152")
    slices = [int(s) for s in slices]
    depth = volume.shape[axis]
    bad = [s for s in slices if not 0 <= s < depth]
    if bad:
        raise BlindspotError(f"slice {bad[0]} is out of range for the mni152 template along axis {axis} (0..{depth - 1}).")
    images = np.stack([to_canvas(np.rot90(volume[(slice(None),) * axis + (s,)])) for s in slices]).astype(np.float32)
    names = [f"mni152[axis={axis}, slice={s}]" for s in slices]
    source = {"data": "mni152", "axis": axis, "slices": slices, "normalize": normalize, "canvas": CANVAS}
    return ImageSet(images, names, source)

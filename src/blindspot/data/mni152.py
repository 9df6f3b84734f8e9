"""The embedded default data: nilearn's 1 mm MNI152 T1 template, read from the installed wheel.

One brain, so its splits are fixed sets of axial slices (array axis 2 of the closest-canonical RAS
volume), shown by the display rule of every volume source (:func:`~blindspot.data.preprocess.volume_slices`:
anterior up) and centred on a 256 × 256 canvas; no slice belongs to two roles:

=============  ===================================================  ============================
split          axial slices                                         constant
=============  ===================================================  ============================
test, all      60, 64, …, 96 (the experiments' test images)         :data:`TEST_SLICES`
validation     62, 66, …, 98 (training validation)                  :data:`VALIDATION_SLICES`
train          50–59, the odd slices 61–99, 100–109 (40 slices)     :data:`TRAIN_SLICES`
=============  ===================================================  ============================
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from blindspot.data.preprocess import normalize_percentile, volume_slices
from blindspot.errors import BlindspotError

__all__ = ["CANVAS", "TEST_SLICES", "TRAIN_SLICES", "VALIDATION_SLICES", "load_mni152_volume", "mni152_slices", "to_canvas"]

#: Test slices: every 4th axial slice through the central brain (ventricles to the top of the basal
#: ganglia), where brain tissue fills most of the slice.
TEST_SLICES = tuple(range(60, 100, 4))
#: Validation slices, midway between the test slices.
VALIDATION_SLICES = tuple(range(62, 100, 4))
#: Training slices: the other axial slices of 50..109.
TRAIN_SLICES = tuple(s for s in range(50, 110) if s not in TEST_SLICES and s not in VALIDATION_SLICES)
CANVAS = 256
_SPLIT_SLICES = {"all": TEST_SLICES, "test": TEST_SLICES, "train": TRAIN_SLICES, "validation": VALIDATION_SLICES}


@lru_cache(maxsize=1)
def load_mni152_volume() -> np.ndarray:
    """The 1 mm MNI152 T1 template × its brain mask, float32 (197, 233, 189) in [0, 1], closest-canonical RAS.

    Reoriented like every NIfTI volume (:func:`~blindspot.data.io.read_nifti`), so the template
    written to a NIfTI file slices exactly like ``mni152``. Both files ship inside the nilearn wheel (``nilearn/datasets/data``), so nothing is downloaded.
    Every voxel inside the brain mask is > 0, so the protocol's foreground ``x > 0`` is the brain.
    """
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    from nibabel import as_closest_canonical

    template = as_closest_canonical(load_mni152_template(resolution=1)).get_fdata(dtype=np.float32)
    mask = as_closest_canonical(load_mni152_brain_mask(resolution=1)).get_fdata(dtype=np.float32) > 0
    volume = np.where(mask, template, 0).astype(np.float32)
    volume.setflags(write=False)
    return volume


def to_canvas(image: np.ndarray, size: int = CANVAS) -> np.ndarray:
    """Centre a 2-D image on a ``size`` × ``size`` canvas (zero padding, or a centre crop)."""
    out = np.zeros((size, size), image.dtype)
    src, dst = [], []
    for n in image.shape:
        start = abs(size - n) // 2
        src.append(slice(start, start + size) if n > size else slice(0, n))
        dst.append(slice(0, size) if n > size else slice(start, start + n))
    out[tuple(dst)] = image[tuple(src)]
    return out


def mni152_slices(*, split: str = "test", axis: int = 2, slices: Sequence[int] | None = None,
                  normalize: float | None = None) -> tuple[np.ndarray, list[str], list[int]]:
    """Slices of the template on the 256 × 256 canvas: ``(images (N, 256, 256) float32, names, slices)``.

    ``slices=None`` takes the split's fixed axial slices (module docstring); other axes need explicit
    ``slices``. ``normalize`` is an optional percentile normalisation of the volume (it is already in [0, 1]).
    """
    volume = load_mni152_volume()
    if slices is None:
        if axis != 2:
            raise BlindspotError("the mni152 splits are axial slices; give `slices` with `axis` 0 or 1.")
        slices = _SPLIT_SLICES[split]
    if normalize is not None:
        volume = normalize_percentile(volume, normalize, name="mni152")
    slices = [int(s) for s in slices]
    depth = volume.shape[axis]
    bad = [s for s in slices if not 0 <= s < depth]
    if bad:
        raise BlindspotError(f"slice {bad[0]} is out of range for the mni152 template along axis {axis} (0..{depth - 1}).")
    images = np.stack([to_canvas(image) for image in volume_slices(volume, axis, slices)]).astype(np.float32)
    return images, [f"mni152[axis={axis}, slice={s}]" for s in slices], slices

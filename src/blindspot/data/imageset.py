"""The container every data source returns, and the one entry point the CLI uses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import numpy as np

from blindspot.errors import BlindspotError


@dataclass(frozen=True)
class ImageSet:
    """A stack of 2D images ready to be scored.

    Attributes
    ----------
    images : ndarray of float32, shape (N, H, W)
        Values in [0, 1]; the foreground (brain) is ``images > 0``.
    names : list of str
        One human-readable origin per image, e.g. ``"sub-01.nii.gz[axis=2, slice=128]"``.
    source : dict
        What was loaded and how (recorded in ``config.json``).
    """

    images: np.ndarray
    names: list[str]
    source: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_images(self.images, self.names)

    def __len__(self) -> int:
        return len(self.images)

    def with_images(self, images: np.ndarray, **source_updates) -> "ImageSet":
        """A copy with new pixel data (e.g. after equalisation), recording what changed."""
        return replace(self, images=images, source={**self.source, **source_updates})


def check_images(images: np.ndarray, names: Sequence[str]) -> None:
    """Validate a stack of images: 3D float32, finite, in [0, 1], each with a foreground pixel."""
    if images.ndim != 3:
        raise BlindspotError(f"images must have shape (N, H, W); got {images.shape}.")
    if images.dtype != np.float32:
        raise BlindspotError(f"images must be float32; got {images.dtype}.")
    if len(names) != len(images):
        raise BlindspotError(f"got {len(names)} names for {len(images)} images.")
    if len(images) == 0:
        raise BlindspotError("the image set is empty; check the data path and slice options.")
    finite = np.isfinite(images).all(axis=(1, 2))
    if not finite.all():
        bad = names[int(np.argmin(finite))]
        raise BlindspotError(f"{bad} contains NaN or infinite values; expected finite intensities in [0, 1].")
    low, high = images.min(axis=(1, 2)), images.max(axis=(1, 2))
    out_of_range = (low < 0) | (high > 1)
    if out_of_range.any():
        k = int(np.argmax(out_of_range))
        raise BlindspotError(
            f"{names[k]} has intensities in [{low[k]:.4g}, {high[k]:.4g}]; expected [0, 1] "
            "(use --normalize to rescale by a percentile)."
        )
    empty = high <= 0
    if empty.any():
        raise BlindspotError(f"{names[int(np.argmax(empty))]} has an empty foreground (no pixel > 0); choose other slices.")


@dataclass(frozen=True)
class DataOptions:
    """Where the test images come from and how they are prepared (see :func:`load_images`)."""

    data: str = "mni152"
    axis: int = 2
    slices: tuple[int, ...] | None = None
    split: str = "all"
    normalize: float | None = None
    equalize: bool = False

    def load(self) -> ImageSet:
        return load_images(**asdict(self))


def load_images(
    data: str = "mni152",
    *,
    axis: int = 2,
    slices: Sequence[int] | None = None,
    split: str = "all",
    normalize: float | None = None,
    equalize: bool = False,
) -> ImageSet:
    """Load 2D test images from ``"mni152"`` (the embedded template) or a NIfTI file or folder.

    Parameters
    ----------
    data : str
        ``"mni152"`` or a path to a ``.nii``/``.nii.gz`` file or a folder of them.
    axis, slices : int, sequence of int or None
        Slice axis and indices; ``None`` picks the source's default (MNI152: central axial slices;
        NIfTI: slice 128, the MOOD protocol).
    split : {"all", "train", "test"}
        For a folder: all volumes, or the protocol's first 60 % / last 40 % of the sorted list.
    normalize : float or None
        Divide each volume by this percentile of its foreground and clip to [0, 1].
    equalize : bool
        Masked histogram equalisation of every image (see :func:`equalize_histogram`).
    """
    from blindspot.data.mni152 import mni152_slices
    from blindspot.data.nifti import nifti_slices
    from blindspot.data.preprocess import equalize_histogram

    if data == "mni152":
        if split != "all":
            raise BlindspotError("--split applies to a folder of volumes; the mni152 template is a single volume.")
        imageset = mni152_slices(axis=axis, slices=slices, normalize=normalize)
    else:
        imageset = nifti_slices(data, axis=axis, slices=slices, split=split, normalize=normalize)
    if equalize:
        imageset = imageset.with_images(equalize_histogram(imageset.images), equalize=True)
    return imageset

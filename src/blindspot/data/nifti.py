"""NIfTI volumes (one file, or a folder in the MOOD layout): the protocol's split and slice selection.

MOOD layout: a folder of healthy 3-D volumes, 256³, intensities in [0, 1], background exactly 0.
The sorted file list is split 60 / 40 (train / test). Each volume is first brought to nibabel's
closest-canonical RAS orientation (:func:`~blindspot.data.io.read_nifti`), then sliced along array
axis ``axis`` and shown like the embedded template (:func:`~blindspot.data.preprocess.volume_slices`:
axial slices anterior up): by default slice 128 along axis 2 (the MIDL 2022 test images) and
slices 120–139 for the training split (its training images). Since issue 17 a file's slices are
reoriented; earlier versions took them as stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from blindspot.data.imageset import ImageSet, Preparation
from blindspot.data.io import NIFTI_SUFFIXES, files_in, is_nifti, nifti_shape, read_nifti
from blindspot.data.preprocess import fit_geometry, normalize_percentile, volume_slices
from blindspot.errors import BlindspotError

__all__ = ["DEFAULT_SLICE", "TRAIN_SLICES", "list_volumes", "nifti_images", "parse_slices", "read_slices", "split_files"]

#: The MOOD protocol's test slice: index 128 along array axis 2.
DEFAULT_SLICE = 128
#: The MIDL 2022 training slices of each training volume (120–139 along axis 2).
TRAIN_SLICES = tuple(range(120, 140))
#: Share of the sorted volumes in the training split.
TRAIN_FRACTION = 0.6


def parse_slices(text: str) -> range:
    """Parse a half-open slice range ``"A:B"`` (e.g. ``"120:140"``) into ``range(A, B)``.

    >>> parse_slices("120:123")
    range(120, 123)
    """
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise BlindspotError(f"`slices` must look like A:B (a half-open range, e.g. 120:140); got '{text}'.") from None
    if not 0 <= start < stop:
        raise BlindspotError(f"`slices` {text} is empty or negative; expected 0 <= A < B.")
    return range(start, stop)


def list_volumes(path: str | Path) -> list[Path]:
    """One NIfTI file, or the sorted visible ``.nii``/``.nii.gz`` files of a folder."""
    path = Path(path)
    if not path.exists():
        raise BlindspotError(f"'{path}' does not exist; expected 'mni152', a NIfTI file or a folder of them.")
    if path.is_file():
        if not is_nifti(path):
            raise BlindspotError(f"'{path}' is not a NIfTI file; expected a .nii or .nii.gz file.")
        return [path]
    files = files_in(path, NIFTI_SUFFIXES)
    if not files:
        raise BlindspotError(f"folder '{path}' holds no .nii or .nii.gz file.")
    return files


def split_files(files: Sequence, split: str, *, train_fraction: float = TRAIN_FRACTION) -> list:
    """The protocol's split of a sorted list: the first ``floor(0.6 n)`` train, the rest test.

    >>> split_files([f"v{k}" for k in range(5)], "test")
    ['v3', 'v4']
    """
    if split == "all":
        return list(files)
    n_train = int(len(files) * train_fraction)
    if split == "train":
        chosen = list(files[:n_train])
    elif split == "test":
        chosen = list(files[n_train:])
    else:
        raise BlindspotError(f"`split` must be one of all, train, test; got '{split}'.")
    if not chosen:
        raise BlindspotError(f"the {split} split of {len(files)} volume(s) is empty; use split all.")
    return chosen


def check_slices(slices: Sequence[int], depth: int, path, axis: int) -> None:
    bad = [s for s in slices if not 0 <= s < depth]
    if bad:
        raise BlindspotError(f"slice {bad[0]} is out of range for '{path}' along axis {axis} (0..{depth - 1}).")


def read_slices(path: Path, axis: int, slices: Sequence[int], normalize: float | None) -> np.ndarray:
    """The requested slices of one canonical (RAS) volume by the display rule: float32 (len(slices), H, W).

    Without normalisation only the slab between the first and last slice is read from disk (when
    the file is stored in canonical order).
    """
    shape = nifti_shape(path, canonical=True)
    if len(shape) != 3:
        raise BlindspotError(f"'{path}' has shape {shape}; expected a 3-D volume.")
    check_slices(slices, shape[axis], path, axis)
    if normalize is not None:
        volume = normalize_percentile(read_nifti(path, canonical=True), normalize, name=f"'{path}'")
        return volume_slices(volume, axis, slices)
    index = [slice(None)] * 3
    index[axis] = slice(min(slices), max(slices) + 1)
    block = read_nifti(path, index=tuple(index), canonical=True)
    return volume_slices(block, axis, [s - min(slices) for s in slices])


def nifti_images(path: str | Path, *, split: str, axis: int, slices: Sequence[int] | None,
                 preparation: Preparation) -> ImageSet:
    """2-D slices of a NIfTI file or folder, each volume normalised and fitted to the size as it is read.

    All volumes must give slices of one size after the geometry step (so volumes of different
    shapes mix when a size is set).
    """
    if slices is None:
        slices = TRAIN_SLICES if split == "train" else (DEFAULT_SLICE,)
    slices = [int(s) for s in slices]
    files = split_files(list_volumes(path), split)
    images, names, volumes, scales = [], [], [], []
    for file in files:
        block, scale = fit_geometry(read_slices(file, axis, slices, preparation.normalize), preparation.size, preparation.geometry)
        if images and block.shape[1:] != images[0].shape[1:]:
            raise BlindspotError(f"'{file}' gives slices of size {block.shape[1:]} but '{files[0]}' gives {images[0].shape[1:]}; "
                                 "all volumes must have one in-plane size (or set `size`).")
        images.append(block)
        scales.append(scale)
        names += [f"{file.name}[axis={axis}, slice={s}]" for s in slices]
        volumes += [file.name] * len(slices)
    source = {"layout": "nifti", "split": split, "axis": axis, "slices": slices, "files": [str(f) for f in files]}
    return ImageSet(np.concatenate(images).astype(np.float32, copy=False), names, source, volumes=volumes,
                    scale=float(np.mean(scales)))


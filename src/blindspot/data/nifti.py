"""NIfTI volumes (one file, or a folder in the MOOD layout) and slice selection."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from blindspot.data.imageset import ImageSet
from blindspot.errors import BlindspotError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: The MOOD protocol's test slice: index 128 along array axis 2.
DEFAULT_SLICE = 128


def parse_slices(text: str) -> range:
    """Parse a half-open slice range ``"A:B"`` (e.g. ``"120:140"``) into ``range(A, B)``.

    >>> parse_slices("120:123")
    range(120, 123)
    """
    try:
        start, stop = (int(part) for part in text.split(":"))
    except ValueError:
        raise BlindspotError(f"--slices must look like A:B (a half-open range, e.g. 120:140); got '{text}'.") from None
    if not 0 <= start < stop:
        raise BlindspotError(f"--slices {text} is empty or negative; expected 0 <= A < B.")
    return range(start, stop)


def list_volumes(path: str | Path) -> list[Path]:
    """One NIfTI file, or the sorted ``.nii``/``.nii.gz`` files of a folder."""
    path = Path(path)
    if not path.exists():
        raise BlindspotError(f"'{path}' does not exist; expected 'mni152', a NIfTI file or a folder of them.")
    if path.is_file():
        if not path.name.endswith(NIFTI_SUFFIXES):
            raise BlindspotError(f"'{path}' is not a NIfTI file; expected a .nii or .nii.gz file.")
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))
    if not files:
        raise BlindspotError(f"folder '{path}' holds no .nii or .nii.gz file.")
    return files


def split_files(files: Sequence[Path], split: str, *, train_fraction: float = 0.6) -> list[Path]:
    """The protocol's split of a sorted file list: first 60 % train, the rest test.

    ``n_train = floor(train_fraction · n)``; ``split="all"`` returns every file.

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
        raise BlindspotError(f"--split must be one of all, train, test; got '{split}'.")
    if not chosen:
        raise BlindspotError(f"the {split} split of {len(files)} volume(s) is empty; use --split all.")
    return chosen


def _open(path: Path):
    import nibabel as nib

    try:
        return nib.load(str(path))
    except FileNotFoundError:
        raise BlindspotError(f"'{path}' does not exist.") from None
    except Exception as err:  # nibabel raises many types for damaged files
        raise BlindspotError(f"'{path}' is not a readable NIfTI file ({type(err).__name__}: {err}).") from None


def _volume_shape(image, path: Path) -> tuple[int, int, int]:
    shape = tuple(int(n) for n in image.shape)
    while len(shape) > 3 and shape[-1] == 1:  # tolerate trailing singleton dimensions
        shape = shape[:-1]
    if len(shape) != 3:
        raise BlindspotError(f"'{path}' has shape {tuple(image.shape)}; expected a 3-D volume.")
    return shape


def load_volume(path: str | Path) -> np.ndarray:
    """Read a whole 3-D NIfTI volume as float32, with clear errors for unreadable or non-3-D files."""
    path = Path(path)
    image = _open(path)
    shape = _volume_shape(image, path)
    try:
        data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    except Exception as err:
        raise BlindspotError(f"'{path}' could not be read ({type(err).__name__}: {err}); the file may be truncated.") from None
    return data


def _read_slices(path: Path, axis: int, slices: Sequence[int], normalize: float | None) -> np.ndarray:
    """The requested slices of one volume, float32 (len(slices), H, W)."""
    from blindspot.data.preprocess import normalize_percentile

    image = _open(path)
    shape = _volume_shape(image, path)
    depth = shape[axis]
    bad = [s for s in slices if not 0 <= s < depth]
    if bad:
        raise BlindspotError(f"slice {bad[0]} is out of range for '{path}' along axis {axis} (0..{depth - 1}).")
    if normalize is not None:
        volume = normalize_percentile(load_volume(path), normalize, name=f"'{path}'")
        return np.moveaxis(volume.take(list(slices), axis=axis), axis, 0)
    index = [slice(None)] * 3
    index[axis] = slice(min(slices), max(slices) + 1)
    try:
        block = np.asarray(image.dataobj[tuple(index) + (0,) * (image.ndim - 3)], dtype=np.float32)
    except Exception as err:
        raise BlindspotError(f"'{path}' could not be read ({type(err).__name__}: {err}); the file may be truncated.") from None
    block = np.moveaxis(block, axis, 0)
    return block[[s - min(slices) for s in slices]]


def nifti_slices(
    path: str | Path,
    *,
    axis: int = 2,
    slices: Sequence[int] | None = None,
    split: str = "all",
    normalize: float | None = None,
) -> ImageSet:
    """2D slices from a NIfTI file or a folder of volumes (MOOD layout: 256³, values in [0, 1]).

    Slices are taken as stored (array axis ``axis``, no reorientation, no resizing), as in the
    MIDL 2022 protocol (index 128 along axis 2). All volumes must give slices of the same shape.
    """
    if axis not in (0, 1, 2):
        raise BlindspotError(f"--axis must be 0, 1 or 2; got {axis}.")
    slices = [DEFAULT_SLICE] if slices is None else [int(s) for s in slices]
    files = split_files(list_volumes(path), split)
    images, names = [], []
    for file in files:
        block = _read_slices(file, axis, slices, normalize)
        if images and block.shape[1:] != images[0].shape[1:]:
            raise BlindspotError(
                f"'{file}' gives slices of shape {block.shape[1:]} but '{files[0]}' gives {images[0].shape[1:]}; "
                "all volumes must have the same in-plane size."
            )
        images.append(block)
        names += [f"{file.name}[axis={axis}, slice={s}]" for s in slices]
    source = {
        "data": str(path),
        "files": [str(f) for f in files],
        "axis": axis,
        "slices": slices,
        "split": split,
        "normalize": normalize,
    }
    return ImageSet(np.concatenate(images).astype(np.float32, copy=False), names, source)

"""The generic folder layout: ``normal/`` + ``abnormal/`` (+ ``masks/``), and ``train/``::

    ROOT/normal/    normal test images
    ROOT/abnormal/  abnormal test images
    ROOT/masks/     optional pixel annotations, matched to images by file name without extension
    ROOT/train/     optional healthy training images (the ``train`` split)

Files are 2-D images (PNG, JPEG, BMP, TIFF, 2-D ``.npy`` or NIfTI) or 3-D volumes (``.npy``,
NIfTI), which give their slices along ``axis`` (every slice with a non-zero pixel, or ``slices``).
When ``masks/`` exists every abnormal image needs a mask (binarised > 0); a normal image without
one gets an empty mask, and a mask matching no image is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from blindspot.data.imageset import ImageSet, Preparation, check_intensities
from blindspot.data.io import index_by_stem, read_array
from blindspot.data.nifti import check_slices
from blindspot.data.preprocess import fit_geometry, normalize_percentile
from blindspot.errors import BlindspotError

__all__ = ["folder_images"]


def _slices_of(path: Path, axis: int, slices: Sequence[int] | None, preparation: Preparation):
    """(stack (K, H, W) float32, chosen slice indices or None for a 2-D file, the file's array shape)."""
    array = read_array(path).astype(np.float32)
    if preparation.normalize is not None:
        array = normalize_percentile(array, preparation.normalize, name=f"'{path}'")
    check_intensities(array.reshape(1, -1), [f"'{path}'"])
    if array.ndim == 2:
        return array[None], None, array.shape
    volume = np.moveaxis(array, axis, 0)
    if slices is None:
        chosen = np.flatnonzero(volume.reshape(len(volume), -1).max(axis=1) > 0)
    else:
        check_slices(slices, len(volume), path, axis)
        chosen = np.asarray(slices, int)
    return volume[chosen], chosen, array.shape


def _groups(root: Path, split: str) -> list[tuple[dict[str, Path], bool]]:
    """(files by stem, anomalous flag) of each folder the split reads."""
    groups = []
    if split in ("train", "all"):
        if split == "train" or (root / "train").is_dir():
            groups.append((index_by_stem(root / "train", "training"), False))
    if split in ("test", "all"):
        test = [(index_by_stem(root / d, d) if (root / d).is_dir() else {}, flag) for d, flag in (("normal", False), ("abnormal", True))]
        if not any(files for files, _ in test):
            raise BlindspotError(f"'{root}' has neither normal/ nor abnormal/ images; expected the folder layout.")
        groups += test
    return groups


def folder_images(root: str | Path, *, split: str, axis: int, slices: Sequence[int] | None, preparation: Preparation) -> ImageSet:
    """The ``folder`` layout's images of a split (train → ``train/``; test → ``normal/`` then ``abnormal/``)."""
    root = Path(root)
    groups = _groups(root, split)
    masks = index_by_stem(root / "masks", "masks") if split != "train" and (root / "masks").is_dir() else None
    if masks is not None:
        known = {key for files, _ in groups for key in files}
        orphans = sorted(set(masks) - known)
        if orphans:
            raise BlindspotError(f"mask '{masks[orphans[0]]}' matches no image in normal/ or abnormal/ (matched by file name without extension).")
    images, labels, anomalous, names, volumes, files, scales = [], [], [], [], [], [], []
    for group, flag in groups:
        for key, path in group.items():
            stack, chosen, raw_shape = _slices_of(path, axis, slices, preparation)
            stack, scale = fit_geometry(stack, preparation.size, preparation.geometry)
            if images and stack.shape[1:] != images[0].shape[1:]:
                raise BlindspotError(f"'{path}' has size {stack.shape[1:]} but earlier images have {images[0].shape[1:]}; set `size`.")
            images.append(stack)
            files.append(str(path))
            scales.append(scale)
            if masks is not None:
                if key in masks:
                    mask = read_array(masks[key]) > 0
                    if mask.shape != raw_shape:
                        raise BlindspotError(f"mask '{masks[key]}' has shape {mask.shape} but its image '{path}' has {raw_shape}.")
                    mask = mask[None] if chosen is None else np.moveaxis(mask, axis, 0)[chosen]
                    labels.append(fit_geometry(mask, preparation.size, preparation.geometry, labels=True)[0])
                    files.append(str(masks[key]))
                elif flag:
                    raise BlindspotError(f"abnormal image '{path}' has no mask in '{root / 'masks'}' (matched by file name without extension).")
                else:
                    labels.append(np.zeros(stack.shape, bool))
            anomalous += [flag] * len(stack)
            names += [path.name] if chosen is None else [f"{path.name}[slice={k}]" for k in chosen]
            volumes += [key] * len(stack)
    source = {"layout": "folder", "split": split, "axis": axis, "slices": None if slices is None else [int(s) for s in slices],
              "files": files}
    return ImageSet(np.concatenate(images).astype(np.float32, copy=False), names, source,
                    labels=np.concatenate(labels) if labels else None, anomalous=np.array(anomalous, bool),
                    volumes=volumes, scale=float(np.mean(scales)))

"""Generic folder layouts: ``normal/`` + ``abnormal/`` + ``masks/``, and MOOD-style healthy NIfTI folders.

``folder`` layout::

    ROOT/normal/    normal images (test split)
    ROOT/abnormal/  abnormal images (test split)
    ROOT/masks/     optional pixel annotations, matched to images by file name without extension
    ROOT/train/     optional healthy training images (the "train" split, e.g. for the z-score baseline)

Files are 2D images (PNG, JPEG, BMP, TIFF, 2-D ``.npy`` or NIfTI) or 3D volumes (``.npy``, NIfTI),
which give their slices along ``axis`` (every slice with a non-zero pixel, or the chosen ``slices``).
When ``masks/`` exists every abnormal image needs a mask (binarised > 0); a normal image without
one gets an empty mask, and a mask matching no image is an error.

``mood`` layout: a folder of healthy NIfTI volumes in [0, 1] (MOOD), read with
:func:`blindspot.data.nifti.nifti_slices` (slice 128 along axis 2 by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from blindspot.data.benchmark import IMAGE_SUFFIXES, LabelledSet, Preprocessing, check_intensities, read_image
from blindspot.errors import BlindspotError

__all__ = ["ARRAY_SUFFIXES", "index_by_stem", "load_folder", "load_nifti_folder", "read_array", "stem"]

#: Every file type an image, a map, a label or a mask can be stored in.
ARRAY_SUFFIXES = (".nii.gz", ".nii", ".npy", *IMAGE_SUFFIXES)


def stem(path: str | Path) -> str:
    """The file name without its (possibly double) extension: ``case_01.nii.gz`` → ``case_01``."""
    name = Path(path).name
    for suffix in ARRAY_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def read_array(path: str | Path) -> np.ndarray:
    """One 2D or 3D array from a NIfTI, ``.npy`` or image file, with a clear error if unreadable.

    NIfTI arrays are returned as stored (trailing singleton axes dropped); images as float32 in
    [0, 1] (:func:`blindspot.data.benchmark.read_image`).
    """
    path = Path(path)
    name = path.name.lower()
    if not path.is_file():
        raise BlindspotError(f"'{path}' does not exist or is not a file.")
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            array = np.asarray(nib.load(str(path)).dataobj)
        except Exception as err:  # nibabel raises many types for damaged files
            raise BlindspotError(f"'{path}' is not a readable NIfTI file ({type(err).__name__}: {err}).") from None
        while array.ndim > 2 and array.shape[-1] == 1:
            array = array[..., 0]
    elif name.endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as err:  # truncated, pickled or not an .npy file
            raise BlindspotError(f"'{path}' is not a readable .npy array ({type(err).__name__}: {err}).") from None
    elif name.endswith(IMAGE_SUFFIXES):
        array = read_image(path)
    else:
        raise BlindspotError(f"'{path}' has an unsupported type; expected one of {', '.join(ARRAY_SUFFIXES)}.")
    if array.ndim not in (2, 3) or array.dtype.kind not in "biuf":
        raise BlindspotError(f"'{path}' holds a {array.dtype} array of shape {array.shape}; expected a 2-D or 3-D numeric array.")
    return array


def index_by_stem(folder: str | Path, what: str) -> dict[str, Path]:
    """Files of ``folder`` with a supported type, keyed by :func:`stem`; two files with one stem are an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BlindspotError(f"{what} folder '{folder}' does not exist.")
    index: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not path.name.lower().endswith(ARRAY_SUFFIXES):
            continue
        key = stem(path)
        if key in index:
            raise BlindspotError(f"{what} folder '{folder}' has two files named '{key}' ('{index[key].name}' and '{path.name}'); keep one.")
        index[key] = path
    if not index:
        raise BlindspotError(f"{what} folder '{folder}' holds no file of a supported type ({', '.join(ARRAY_SUFFIXES)}).")
    return index


def _slices_of(path: Path, axis: int, slices: Sequence[int] | None, prep: Preprocessing):
    """(stack (K, H, W) float32, chosen slice indices or None for a 2D file, the file's array shape)."""
    from blindspot.data.preprocess import normalize_percentile

    array = read_array(path).astype(np.float32)
    if prep.normalize is not None:
        array = normalize_percentile(array, prep.normalize, name=f"'{path}'")
    check_intensities(array, path)
    if array.ndim == 2:
        return array[None], None, array.shape
    if axis not in (0, 1, 2):
        raise BlindspotError(f"--axis must be 0, 1 or 2; got {axis}.")
    volume = np.moveaxis(array, axis, 0)
    if slices is None:
        chosen = np.flatnonzero(volume.reshape(len(volume), -1).max(axis=1) > 0)
    else:
        chosen = np.asarray(slices, int)
        bad = chosen[(chosen < 0) | (chosen >= len(volume))]
        if len(bad):
            raise BlindspotError(f"slice {bad[0]} is out of range for '{path}' along axis {axis} (0..{len(volume) - 1}).")
    return volume[chosen], chosen, array.shape


def _mask_slices(path: Path, image_path: Path, chosen, axis: int, image_shape: tuple[int, ...]) -> np.ndarray:
    """The mask's slices matching its image's (a 2D mask gives one slice)."""
    mask = read_array(path) > 0
    if mask.shape != image_shape:
        raise BlindspotError(f"mask '{path}' has shape {mask.shape} but its image '{image_path}' has {image_shape}.")
    return mask[None] if chosen is None else np.moveaxis(mask, axis, 0)[chosen]


def load_folder(
    root: str | Path,
    *,
    split: str = "test",
    axis: int = 2,
    slices: Sequence[int] | None = None,
    preprocessing: Preprocessing = Preprocessing(),
) -> LabelledSet:
    """The ``folder`` layout: ``split="test"`` → normal/ then abnormal/ (+ masks/); ``"train"`` → train/."""
    root = Path(root)
    if split == "train":
        groups = [(index_by_stem(root / "train", "training"), False)]
    elif split in ("test", "all"):
        groups = [(index_by_stem(root / d, d) if (root / d).is_dir() else {}, flag) for d, flag in (("normal", False), ("abnormal", True))]
        if not any(files for files, _ in groups):
            raise BlindspotError(f"'{root}' has neither normal/ nor abnormal/ images; expected the folder layout.")
    else:
        raise BlindspotError(f"the folder layout has the splits train and test; got '{split}'.")
    masks = index_by_stem(root / "masks", "masks") if split != "train" and (root / "masks").is_dir() else None
    if masks is not None:
        known = {key for files, _ in groups for key in files}
        orphans = sorted(set(masks) - known)
        if orphans:
            raise BlindspotError(f"mask '{masks[orphans[0]]}' matches no image in normal/ or abnormal/ (matched by file name without extension).")
    images, labels, anomalous, names, volumes = [], [], [], [], []
    for files, flag in groups:
        for key, path in files.items():
            stack, chosen, raw_shape = _slices_of(path, axis, slices, preprocessing)
            stack = preprocessing.shape_image(stack)
            if images and stack.shape[1:] != images[0].shape[1:]:
                raise BlindspotError(f"'{path}' has size {stack.shape[1:]} but earlier images have {images[0].shape[1:]}; pass --resize N (and --crop).")
            images.append(stack)
            if masks is not None:
                if key in masks:
                    mask = _mask_slices(masks[key], path, chosen, axis, raw_shape)
                    labels.append(preprocessing.shape_image(mask, labels=True))
                elif flag:
                    raise BlindspotError(f"abnormal image '{path}' has no mask in '{root / 'masks'}' (matched by file name without extension).")
                else:
                    labels.append(np.zeros(stack.shape, bool))
            anomalous += [flag] * len(stack)
            names += [path.name] if chosen is None else [f"{path.name}[slice={k}]" for k in chosen]
            volumes += [key] * len(stack)
    stack, brain = preprocessing.finish(np.concatenate(images).astype(np.float32, copy=False))
    source = {"data": str(root), "layout": "folder", "split": split, "axis": axis,
              "slices": None if slices is None else [int(s) for s in slices], "preprocessing": preprocessing.__dict__}
    label_stack = np.concatenate(labels) if labels else None
    flags = np.array(anomalous, bool)
    return LabelledSet(stack, flags, label_stack, brain, names, volumes, source)


def load_nifti_folder(
    path: str | Path,
    *,
    split: str = "all",
    axis: int = 2,
    slices: Sequence[int] | None = None,
    preprocessing: Preprocessing = Preprocessing(),
) -> LabelledSet:
    """Healthy NIfTI volumes (MOOD layout) as a normal-only labelled set (no pixel labels).

    Uses :func:`blindspot.data.nifti.nifti_slices` (sorted files, ``split`` = all / the protocol's
    first 60 % train / last 40 % test, slice 128 along axis 2 by default), then crop, resize,
    equalisation and brain masks.
    """
    from blindspot.data.nifti import nifti_slices

    if split not in ("all", "train", "test"):
        raise BlindspotError(f"the mood layout has the splits all, train and test; got '{split}'.")
    imageset = nifti_slices(path, axis=axis, slices=slices, split=split, normalize=preprocessing.normalize)
    per_file = len(imageset) // len(imageset.source["files"])
    volumes = [Path(f).name for f in imageset.source["files"] for _ in range(per_file)]
    images, brain = preprocessing.finish(preprocessing.shape_image(imageset.images).astype(np.float32, copy=False))
    source = {**imageset.source, "layout": "mood", "preprocessing": preprocessing.__dict__}
    return LabelledSet(images, np.zeros(len(images), bool), None, brain, list(imageset.names), volumes, source)

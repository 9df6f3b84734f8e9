"""BraTS-style NIfTI data: one folder per subject with modality files and a segmentation.

Layout (BraTS 2021 naming)::

    ROOT/BraTS2021_00000/BraTS2021_00000_flair.nii.gz   (also _t1, _t1ce, _t2)
    ROOT/BraTS2021_00000/BraTS2021_00000_seg.nii.gz     (labels 1, 2, 4; binarised > 0)

Any subject folder works whose files end with ``_<modality>.nii[.gz]`` and ``_seg.nii[.gz]``.
Subjects are read in sorted order. Volumes are taken as stored, with the slice axis (``axis``, 2 =
axial for BraTS) moved first: ``(D, H, W)``. Raw BraTS intensities are not in [0, 1], so pass a
percentile normalisation (``Preprocessing(normalize=99)``, ``--normalize 99``); the brain is the
non-zero region of the skull-stripped scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from blindspot.data.benchmark import LabelledSet, Preprocessing, check_intensities
from blindspot.errors import BlindspotError

__all__ = ["Volume", "brats_slices", "iter_brats_volumes", "list_subjects", "load_subject"]


@dataclass(frozen=True)
class Volume:
    """One subject: image ``(D, H, W)`` float32 in [0, 1], tumour labels and brain mask of that shape."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    brain: np.ndarray | None


def _one_file(folder: Path, suffix: str) -> Path:
    pattern = re.compile(rf"_{re.escape(suffix)}\.nii(\.gz)?$")
    found = sorted(p for p in folder.iterdir() if p.is_file() and pattern.search(p.name))
    if len(found) != 1:
        what = "no file" if not found else f"{len(found)} files"
        raise BlindspotError(f"subject folder '{folder}' has {what} ending in _{suffix}.nii.gz; expected exactly one.")
    return found[0]


def list_subjects(root: str | Path, modality: str = "flair") -> list[tuple[str, Path, Path]]:
    """``(subject, image file, segmentation file)`` of every subject folder, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise BlindspotError(f"'{root}' is not a folder; the brats layout is one folder per subject.")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise BlindspotError(f"'{root}' holds no subject folder; the brats layout is ROOT/<subject>/<subject>_{modality}.nii.gz.")
    return [(f.name, _one_file(f, modality), _one_file(f, "seg")) for f in folders]


def load_subject(image_path: Path, seg_path: Path, *, axis: int = 2, normalize: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One subject's image and binary tumour mask, slice axis first: two ``(D, H, W)`` arrays."""
    from blindspot.data.nifti import load_volume
    from blindspot.data.preprocess import normalize_percentile

    if axis not in (0, 1, 2):
        raise BlindspotError(f"--axis must be 0, 1 or 2; got {axis}.")
    image, seg = load_volume(image_path), load_volume(seg_path)
    if image.shape != seg.shape:
        raise BlindspotError(f"segmentation '{seg_path}' has shape {seg.shape} but its image '{image_path}' has {image.shape}.")
    if normalize is not None:
        image = normalize_percentile(image, normalize, name=f"'{image_path}'")
    check_intensities(image, image_path)
    return np.moveaxis(image, axis, 0), np.moveaxis(seg > 0, axis, 0)


def _prepared(name: str, image_path: Path, seg_path: Path, axis: int, prep: Preprocessing) -> Volume:
    image, labels = load_subject(image_path, seg_path, axis=axis, normalize=prep.normalize)
    image = prep.shape_image(image)
    labels = prep.shape_image(labels, labels=True)
    image, brain = prep.finish(image.astype(np.float32, copy=False))
    return Volume(name, image, labels, brain)


def _subjects(root, modality: str, split: str):
    from blindspot.data.nifti import split_files

    subjects = list_subjects(root, modality)
    return split_files(subjects, split)


def iter_brats_volumes(
    root: str | Path, *, modality: str = "flair", axis: int = 2, split: str = "all", preprocessing: Preprocessing = Preprocessing()
) -> Iterator[Volume]:
    """Yield the subjects one at a time (for evaluations larger than memory).

    The subject list is checked before the first volume is read, so a wrong layout fails at once.
    """
    subjects = _subjects(root, modality, split)

    def generate() -> Iterator[Volume]:
        for name, image_path, seg_path in subjects:
            yield _prepared(name, image_path, seg_path, axis, preprocessing)

    return generate()


def brats_slices(
    root: str | Path,
    *,
    modality: str = "flair",
    axis: int = 2,
    slices: Sequence[int] | None = None,
    split: str = "all",
    preprocessing: Preprocessing = Preprocessing(),
) -> LabelledSet:
    """2D slices of every subject: the given ``slices``, or every slice with a non-empty brain.

    A slice is anomalous when its tumour mask is non-empty; its volume id is the subject.
    """
    images, labels, brains, names, volumes = [], [], [], [], []
    for name, image_path, seg_path in _subjects(root, modality, split):
        volume = _prepared(name, image_path, seg_path, axis, preprocessing)
        if slices is None:
            chosen = np.flatnonzero(volume.image.reshape(len(volume.image), -1).max(axis=1) > 0)
        else:
            chosen = np.asarray(slices, int)
            bad = chosen[(chosen < 0) | (chosen >= len(volume.image))]
            if len(bad):
                raise BlindspotError(f"slice {bad[0]} is out of range for '{image_path}' along axis {axis} (0..{len(volume.image) - 1}).")
        if images and volume.image.shape[1:] != images[0].shape[1:]:
            raise BlindspotError(f"'{image_path}' gives slices of size {volume.image.shape[1:]} but the first subject gives {images[0].shape[1:]}; pass --resize N.")
        images.append(volume.image[chosen])
        labels.append(volume.labels[chosen])
        if volume.brain is not None:
            brains.append(volume.brain[chosen])
        names += [f"{name}[slice={k}]" for k in chosen]
        volumes += [name] * len(chosen)
    stack = np.concatenate(images)
    label_stack = np.concatenate(labels)
    source = {"data": str(root), "layout": "brats", "modality": modality, "axis": axis,
              "slices": None if slices is None else [int(s) for s in slices], "split": split,
              "preprocessing": preprocessing.__dict__}
    return LabelledSet(stack, label_stack.reshape(len(stack), -1).any(axis=1), label_stack,
                       np.concatenate(brains) if brains else None, names, volumes, source)

"""BraTS-style NIfTI subjects: one folder per subject with modality files and a segmentation.

Layout (BraTS 2021 naming)::

    ROOT/BraTS2021_00000/BraTS2021_00000_flair.nii.gz   (also _t1, _t1ce, _t2)
    ROOT/BraTS2021_00000/BraTS2021_00000_seg.nii.gz     (labels 1, 2, 4; binarised > 0)

Any subject folder works whose files end with ``_<modality>.nii[.gz]`` and ``_seg.nii[.gz]``.
Subjects are read in sorted order and split 60 / 40 like NIfTI volumes. Each volume is brought
to closest-canonical RAS and sliced by the display rule of every volume source
(:func:`~blindspot.data.preprocess.volume_slices`), slice axis (``axis``, 2 = axial) first. Raw BraTS intensities are not in [0, 1]:
prepare them with a percentile normalisation (``normalize=99``); the brain is the non-zero region
of the skull-stripped scan. As 2-D images, every slice with brain is taken by default; a slice is
anomalous when its tumour mask is not empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from blindspot.data.imageset import ImageSet, Preparation, check_intensities
from blindspot.data.io import read_nifti
from blindspot.data.nifti import check_slices, split_files
from blindspot.data.preprocess import finish, fit_geometry, normalize_percentile, volume_slices
from blindspot.errors import BlindspotError

__all__ = ["Volume", "brats_images", "brats_volume", "iter_brats_volumes", "list_subjects"]


@dataclass(frozen=True)
class Volume:
    """One subject: image ``(D, H, W)`` float32 in [0, 1], tumour labels and brain mask of that shape.

    Whole volumes (:func:`blindspot.data.volumes.whole_volumes`) have no labels (None)
    and carry their voxel ``spacing`` per array axis (from the header).
    """

    name: str
    image: np.ndarray
    labels: np.ndarray | None
    brain: np.ndarray
    files: tuple[str, ...]
    spacing: tuple[float, float, float] | None = None


def _one_file(folder: Path, suffix: str) -> Path:
    pattern = re.compile(rf"_{re.escape(suffix)}\.nii(\.gz)?$")
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and pattern.search(p.name))
    if len(found) != 1:
        what = "no file" if not found else f"{len(found)} files"
        raise BlindspotError(f"subject folder '{folder}' has {what} ending in _{suffix}.nii.gz; expected exactly one.")
    return found[0]


def list_subjects(root: str | Path, modality: str = "flair") -> list[tuple[str, Path, Path]]:
    """``(subject, image file, segmentation file)`` of every (visible) subject folder, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise BlindspotError(f"'{root}' is not a folder; the brats layout is one folder per subject.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise BlindspotError(f"'{root}' holds no subject folder; the brats layout is ROOT/<subject>/<subject>_{modality}.nii.gz.")
    return [(f.name, _one_file(f, modality), _one_file(f, "seg")) for f in folders]


def _read_subject(image_path: Path, seg_path: Path, axis: int, preparation: Preparation) -> tuple[np.ndarray, np.ndarray, float]:
    """One subject's image and tumour labels, slice axis first, normalised and fitted to the size slice by slice."""
    image, seg = read_nifti(image_path, canonical=True), read_nifti(seg_path, canonical=True)
    if image.shape != seg.shape:
        raise BlindspotError(f"segmentation '{seg_path}' has shape {seg.shape} but its image '{image_path}' has {image.shape}.")
    if preparation.normalize is not None:
        image = normalize_percentile(image, preparation.normalize, name=f"'{image_path}'")
    image, labels = volume_slices(image, axis), volume_slices(seg > 0, axis)
    check_intensities(image, [f"'{image_path}' slice {k}" for k in range(len(image))])
    image, scale = fit_geometry(image, preparation.size, preparation.geometry)
    return image, fit_geometry(labels, preparation.size, preparation.geometry, labels=True)[0], scale


def iter_brats_volumes(root: str | Path, *, split: str, modality: str, axis: int, preparation: Preparation
                       ) -> Iterator[Volume]:
    """The subjects of a split as whole prepared volumes, read one at a time (evaluations larger than memory).

    The subject list is checked before the first volume is read, so a wrong layout fails at once.
    """
    subjects = split_files(list_subjects(root, modality), split)

    def generate() -> Iterator[Volume]:
        for subject in subjects:
            yield brats_volume(subject, axis=axis, preparation=preparation)

    return generate()


def brats_volume(subject: tuple[str, Path, Path], *, axis: int, preparation: Preparation) -> Volume:
    """One subject of :func:`list_subjects` as a whole prepared volume, with its tumour labels."""
    name, image_path, seg_path = subject
    image, labels, _ = _read_subject(image_path, seg_path, axis, preparation)
    image, brain = finish(image, preparation)
    return Volume(name, image, labels, brain, (str(image_path), str(seg_path)))


def brats_images(root: str | Path, *, split: str, modality: str, axis: int, slices: Sequence[int] | None,
                 preparation: Preparation) -> ImageSet:
    """2-D slices of every subject of a split: ``slices``, or every slice with a non-empty brain."""
    images, labels, names, volumes, files, scales = [], [], [], [], [], []
    for name, image_path, seg_path in split_files(list_subjects(root, modality), split):
        image, label, scale = _read_subject(image_path, seg_path, axis, preparation)
        if slices is None:
            chosen = np.flatnonzero(image.reshape(len(image), -1).max(axis=1) > 0)
        else:
            check_slices(slices, len(image), image_path, axis)
            chosen = np.asarray(slices, int)
        if images and image.shape[1:] != images[0].shape[1:]:
            raise BlindspotError(f"'{image_path}' gives slices of size {image.shape[1:]} but the first subject gives "
                                 f"{images[0].shape[1:]}; set `size`.")
        images.append(image[chosen])
        labels.append(label[chosen])
        names += [f"{name}[slice={k}]" for k in chosen]
        volumes += [name] * len(chosen)
        files += [str(image_path), str(seg_path)]
        scales.append(scale)
    stack, label_stack = np.concatenate(images), np.concatenate(labels)
    source = {"layout": "brats", "split": split, "modality": modality, "axis": axis,
              "slices": None if slices is None else [int(s) for s in slices], "files": files}
    return ImageSet(stack, names, source, labels=label_stack, anomalous=label_stack.reshape(len(stack), -1).any(axis=1),
                    volumes=volumes, scale=float(np.mean(scales)))

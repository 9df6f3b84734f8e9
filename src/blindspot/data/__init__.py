"""One data layer: every source becomes an :class:`ImageSet` through :func:`load`.

Sources (``DataConfig.data`` and ``.layout``; ``"auto"`` detects the layout, see :func:`detect_layout`):

=============  =========================================================================  ================
layout         files                                                                      labels
=============  =========================================================================  ================
``mni152``     the embedded MNI152 template (nilearn's wheel), fixed axial slices          none
``nifti``      a NIfTI file or a folder of volumes (MOOD), sorted, split 60 / 40            none
``benchmark``  ``DIR/images/*.png`` + ``DIR/data.json`` (RSNA, VinDr-CXR, Brain Tumor, LAG)  image labels
``brats2021``  the benchmark's BraTS2021 PNG slices with ``test/annotation`` masks          pixel labels
``brats``      BraTS NIfTI subjects ``DIR/<subject>/<subject>_{flair,…,seg}.nii.gz``          pixel labels
``folder``     ``normal/``, ``abnormal/``, optional ``masks/`` and ``train/``                pixel or image
=============  =========================================================================  ================

Every layout has the splits ``train`` (healthy training images), ``test`` and ``all``. Images are
prepared by the one pipeline of :mod:`blindspot.data.preprocess` (normalise → geometry → equalise
→ foreground mask), float32 in [0, 1] with background exactly 0. Whole 3-D volumes as stored (the
template, NIfTI, BraTS subjects) come from :func:`whole_volumes` (:mod:`blindspot.data.volumes`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from blindspot.data.benchmark import benchmark_images, brats2021_images
from blindspot.data.brats import Volume, brats_images, iter_brats_volumes
from blindspot.data.folder import folder_images
from blindspot.data.imageset import (
    GEOMETRIES,
    LAYOUTS,
    SPLITS,
    DataConfig,
    ImageSet,
    Preparation,
    compile_volume_regex,
    refuse_overlap,
    shared_inputs,
)
from blindspot.data.io import NIFTI_SUFFIXES, is_nifti, stem
from blindspot.data.mni152 import VALIDATION_SLICES, mni152_slices
from blindspot.data.nifti import nifti_images, parse_slices
from blindspot.data.preprocess import equalize_histogram, finish, fit_geometry
from blindspot.data.volumes import VolumeSet, whole_volumes
from blindspot.errors import BlindspotError
from blindspot.wording import count

__all__ = [
    "GEOMETRIES",
    "LAYOUTS",
    "SPLITS",
    "DataConfig",
    "ImageSet",
    "Preparation",
    "Volume",
    "VolumeSet",
    "detect_layout",
    "equalize_histogram",
    "fit_geometry",
    "holdout",
    "iter_volumes",
    "load",
    "load_training",
    "parse_slices",
    "refuse_overlap",
    "resolve",
    "shared_inputs",
    "whole_volumes",
]

#: Share of the training volumes (or images) held out for validation, at least one.
VALIDATION_FRACTION = 0.05


def detect_layout(data: str) -> str:
    """The layout of ``data``, guessed from its files (module docstring)."""
    if data == "mni152":
        return "mni152"
    root = Path(data)
    if not root.exists():
        raise BlindspotError(f"'{root}' does not exist; expected 'mni152', a NIfTI file or a data set folder.")
    if root.is_file():
        if is_nifti(root):
            return "nifti"
        raise BlindspotError(f"'{root}' is a file; expected a data set folder or a NIfTI volume.")
    if (root / "data.json").is_file():
        return "benchmark"
    if (root / "test" / "normal").is_dir() or (root / "test" / "tumor").is_dir():
        return "brats2021"
    if (root / "normal").is_dir() or (root / "abnormal").is_dir():
        return "folder"
    visible = [p for p in root.iterdir() if not p.name.startswith(".")]
    if any(p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES) for p in visible):
        return "nifti"
    for sub in sorted(p for p in visible if p.is_dir()):
        if any(re.search(r"_seg\.nii(\.gz)?$", f.name) for f in sub.iterdir()):
            return "brats"
    raise BlindspotError(
        f"'{root}' matches no known layout; expected data.json + images/ (benchmark), test/normal|tumor (brats2021), "
        "normal/ + abnormal/ (folder), subject folders with *_seg.nii.gz (brats) or NIfTI volumes (nifti)."
    )


def resolve(config: DataConfig, *, default_split: str = "all") -> DataConfig:
    """``config`` with its layout detected and its split chosen (``default_split`` when unset)."""
    layout = detect_layout(config.data) if config.layout == "auto" else config.layout
    if (layout == "mni152") != (config.data == "mni152"):
        raise BlindspotError(f"`layout` mni152 goes with `data` mni152 only; got data '{config.data}' with layout {layout}.")
    split = config.split or default_split
    if split not in SPLITS:
        raise BlindspotError(f"`split` must be one of {', '.join(SPLITS)}; got '{split}'.")
    return replace(config, layout=layout, split=split)


def load(config: DataConfig, *, default_split: str = "all") -> ImageSet:
    """The images ``config`` describes, prepared (:class:`Preparation`), with their labels where the layout has them.

    Slice defaults: mni152 — the split's fixed axial slices (:mod:`blindspot.data.mni152`); NIfTI —
    slice 128, or 120–139 for the train split (MIDL 2022); BraTS subjects and folder volumes — every
    slice with a non-zero pixel. ``source`` records the resolved config and every file read.
    """
    config = resolve(config, default_split=default_split)
    prep, split = config.preparation, config.split
    if config.layout == "mni152":
        raw, names, slices = mni152_slices(split=split, axis=config.axis, slices=config.slices, normalize=prep.normalize)
        images, scale = fit_geometry(raw, prep.size, prep.geometry)
        imageset = ImageSet(images, names, {"layout": "mni152", "split": split, "axis": config.axis, "slices": slices,
                                            "files": []}, scale=scale)
    elif config.layout == "nifti":
        imageset = nifti_images(config.data, split=split, axis=config.axis, slices=config.slices, preparation=prep)
    elif config.layout == "benchmark":
        imageset = benchmark_images(config.data, split=split, preparation=prep)
    elif config.layout == "brats2021":
        imageset = brats2021_images(config.data, split=split, preparation=prep)
    elif config.layout == "brats":
        imageset = brats_images(config.data, split=split, modality=config.modality, axis=config.axis,
                                slices=config.slices, preparation=prep)
    else:
        imageset = folder_images(config.data, split=split, axis=config.axis, slices=config.slices, preparation=prep)
    images, brain = finish(imageset.images, prep)
    volumes = imageset.volumes if config.volume_regex is None else volumes_from_names(imageset.names, config.volume_regex)
    source = {"data": config.data, **imageset.source, "config": config.record(), "images": len(images), "scale": imageset.scale}
    return replace(imageset, images=images, brain=brain, volumes=volumes, source=source)


def volumes_from_names(names: list[str], pattern: str) -> list[str]:
    """The volume id of each name: group 1 of ``re.search(pattern)``."""
    regex = compile_volume_regex(pattern)
    volumes = []
    for name in names:
        match = regex.search(name)
        if match is None:
            raise BlindspotError(f"`volume_regex` '{pattern}' does not match the name '{name}'.")
        volumes.append(match.group(1))
    return volumes


def holdout(imageset: ImageSet, fraction: float = VALIDATION_FRACTION) -> tuple[ImageSet, ImageSet]:
    """Split off the last ``max(1, round(fraction · V))`` of the V volumes (in order of appearance).

    Returns ``(kept, held_out)``; at least two volumes are needed. Each part's ``source["files"]``
    keeps the files of its own volumes (and the files of no volume, such as a manifest).
    """
    order = list(dict.fromkeys(imageset.volumes))
    if len(order) < 2:
        raise BlindspotError(f"'{imageset.source.get('data')}' has {count(len(order), 'volume')} in its {imageset.source.get('split')} "
                             "split; holding out validation images needs at least 2.")
    held = set(order[-max(1, round(fraction * len(order))):])
    mask = np.array([v in held for v in imageset.volumes])
    owners = {f: _volume_of(f, set(order)) for f in imageset.source.get("files", [])}

    def part(chosen: np.ndarray, volumes: set) -> ImageSet:
        subset = imageset.subset(chosen)
        files = [f for f, owner in owners.items() if owner is None or owner in volumes]
        return replace(subset, source={**subset.source, "files": files})

    return part(~mask, set(order) - held), part(mask, held)


def _volume_of(file: str, volumes: set) -> str | None:
    """The volume a file holds: named like the file, like it without extension, or like its folder."""
    path = Path(file)
    for key in (path.name, stem(path), path.parent.name):
        if key in volumes:
            return key
    return None


def load_training(config: DataConfig, *, fraction: float = VALIDATION_FRACTION, hold_out: bool = True
                  ) -> tuple[ImageSet, ImageSet]:
    """Healthy training and validation images: ``(train, validation)``.

    The embedded template uses its fixed training and validation slices; every other source takes
    the normal images of its ``train`` split (unless ``config.split`` says otherwise) and validates
    on the last volumes (:func:`holdout`), which ``hold_out=False`` keeps in the training images too.
    """
    config = resolve(config, default_split="train")
    if config.layout == "mni152":
        if config.slices is not None or config.axis != 2:
            raise BlindspotError("`slices` and `axis` do not apply to training on the embedded template (it uses fixed "
                                 "axial slices); give a folder of volumes as `data` to choose slices.")
        return load(replace(config, split="train")), load(replace(config, slices=VALIDATION_SLICES))
    images = load(config).normal()
    kept, held = holdout(images, fraction)
    return (kept if hold_out else images), held


def iter_volumes(config: DataConfig, *, default_split: str = "test", labelled: bool = True) -> Iterator[Volume]:
    """Whole prepared volumes, one at a time.

    ``labelled=True``: BraTS subjects with their tumour labels, slice axis first and prepared like
    2-D slices (the 3-D cases of ``evaluate --volumes``). ``labelled=False``: the volumes of any
    volumetric source (the embedded template, a NIfTI file or folder, BraTS subjects) as stored,
    in array index order, with their voxel spacing and no labels (:func:`blindspot.data.volumes.whole_volumes`).
    """
    if not labelled:
        return iter(whole_volumes(config, default_split=default_split))
    config = resolve(config, default_split=default_split)
    if config.layout != "brats":
        raise BlindspotError(f"whole volumes are read from BraTS subjects (the brats layout); '{config.data}' has the "
                             f"{config.layout} layout.")
    return iter_brats_volumes(config.data, split=config.split, modality=config.modality, axis=config.axis,
                              preparation=config.preparation)


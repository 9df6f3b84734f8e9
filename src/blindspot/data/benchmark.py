"""The two PNG layouts of the MedIAnomaly benchmark (Cai et al., MICCAI 2024).

* ``benchmark`` (RSNA, VinDr-CXR, Brain Tumor, LAG): ``DIR/images/*.png`` and ``DIR/data.json`` =
  ``{"train": {"0": [files]}, "test": {"0": [normal files], "1": [abnormal files]}}``. Image-level
  labels only.
* ``brats2021`` (the benchmark's BraTS2021 FLAIR slices): ``DIR/train/*.png`` (healthy),
  ``DIR/test/normal/*.png``, ``DIR/test/tumor/*.png`` and ``DIR/test/annotation/*.png``; the mask of
  an image is the file named like it with ``flair`` replaced by ``seg``, binarised > 0 (a normal
  slice without a mask gets an empty one; a tumour slice needs one).

Split ``train``: the healthy training images; ``test``: normal then abnormal test images; ``all``:
both, in that order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from blindspot.data.imageset import ImageSet, Preparation
from blindspot.data.io import IMAGE_SUFFIXES, files_in, read_image
from blindspot.data.preprocess import fit_geometry, normalize_percentile
from blindspot.errors import BlindspotError
from blindspot.progress import progress_over

__all__ = ["benchmark_images", "brats2021_images", "read_image_files"]


def read_image_files(paths: Sequence[Path], preparation: Preparation, *, masks: Sequence[Path | None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Read 2-D image files, each normalised and fitted to the size as it is read.

    Returns ``(images (N, H, W) float32, labels (N, H, W) bool or None, mean scale)``; ``masks``
    pairs a mask file (binarised > 0; None: empty) with each image.
    """
    images, labels, scales = [], [], []
    for k, path in enumerate(progress_over(paths, "reading images")):
        image = read_image(path)
        if preparation.normalize is not None:
            image = normalize_percentile(image, preparation.normalize, name=f"'{path}'")
        native = image.shape
        image, scale = fit_geometry(image, preparation.size, preparation.geometry)
        if images and image.shape != images[0].shape:
            raise BlindspotError(f"'{path}' has size {image.shape} but '{paths[0]}' has {images[0].shape}; "
                                 "set `size` to bring them to one size.")
        images.append(image)
        scales.append(scale)
        if masks is not None:
            mask = np.zeros(native, bool) if masks[k] is None else read_image(masks[k]) > 0
            if mask.shape != native:
                raise BlindspotError(f"mask '{masks[k]}' has size {mask.shape} but its image '{path}' has {native}.")
            labels.append(fit_geometry(mask, preparation.size, preparation.geometry, labels=True)[0])
    stack = np.stack(images).astype(np.float32, copy=False)
    return stack, (np.stack(labels) if masks is not None else None), float(np.mean(scales))


def _file_list(data: dict, keys: tuple[str, str], where: Path) -> list[str]:
    try:
        files = data[keys[0]][keys[1]]
    except (KeyError, TypeError):
        raise BlindspotError(f"'{where}' has no \"{keys[0]}\" → \"{keys[1]}\" list; expected "
                             "{\"train\": {\"0\": [...]}, \"test\": {\"0\": [...], \"1\": [...]}}.") from None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise BlindspotError(f"'{where}': \"{keys[0]}\" → \"{keys[1]}\" must be a list of file names.")
    return files


_GROUPS = {"train": [("train", "0", False)], "test": [("test", "0", False), ("test", "1", True)]}
_GROUPS["all"] = _GROUPS["train"] + _GROUPS["test"]


def benchmark_images(path: str | Path, *, split: str, preparation: Preparation) -> ImageSet:
    """One MedIAnomaly-benchmark data set (``DIR/data.json`` + ``DIR/images/``); image labels only."""
    root = Path(path)
    manifest = root / "data.json"
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise BlindspotError(f"'{manifest}' does not exist; the benchmark layout needs DIR/data.json and DIR/images/.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BlindspotError(f"'{manifest}' is not valid JSON ({err}).") from None
    groups = [(_file_list(data, (part, key), manifest), flag) for part, key, flag in _GROUPS[split]]
    files = [name for names, _ in groups for name in names]
    paths = [root / "images" / name for name in files]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise BlindspotError(f"'{missing[0]}' is listed in '{manifest}' but does not exist ({len(missing)} listed file(s) missing).")
    if not paths:
        raise BlindspotError(f"'{manifest}' lists no image for the {split} split.")
    images, _, scale = read_image_files(paths, preparation)
    anomalous = np.array([flag for names, flag in groups for _ in names], bool)
    source = {"layout": "benchmark", "split": split, "files": [str(manifest), *map(str, paths)]}
    return ImageSet(images, [Path(f).name for f in files], source, anomalous=anomalous, scale=scale)


def brats2021_images(path: str | Path, *, split: str, preparation: Preparation) -> ImageSet:
    """The benchmark's BraTS2021 FLAIR slices, with tumour masks for the test slices."""
    root = Path(path)
    paths, flags, masks = [], [], []
    if split in ("train", "all"):
        train = files_in(root / "train", IMAGE_SUFFIXES)
        paths += train
        flags += [False] * len(train)
        masks += [None] * len(train)
    if split in ("test", "all"):
        annotation = root / "test" / "annotation"
        if not annotation.is_dir():
            raise BlindspotError(f"folder '{annotation}' does not exist; the brats2021 layout needs test/annotation/ with the masks.")
        for group, flag in (("normal", False), ("tumor", True)):
            for image in files_in(root / "test" / group, IMAGE_SUFFIXES):
                mask = annotation / image.name.replace("flair", "seg")
                if not mask.is_file() and flag:
                    raise BlindspotError(f"tumour slice '{image}' has no mask '{mask}'.")
                paths.append(image)
                flags.append(flag)
                masks.append(mask if mask.is_file() else None)
    if not paths:
        raise BlindspotError(f"'{root}' holds no image for the {split} split of the brats2021 layout.")
    images, labels, scale = read_image_files(paths, preparation, masks=masks)
    source = {"layout": "brats2021", "split": split, "files": [str(p) for p in paths] + [str(m) for m in masks if m is not None]}
    has_masks = split != "train"
    return ImageSet(images, [p.name for p in paths], source, labels=labels if has_masks else None,
                    anomalous=np.array(flags, bool), scale=scale)

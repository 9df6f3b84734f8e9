"""Labelled evaluation sets: the container, the PNG benchmark layouts and the layout dispatcher.

Layouts (see ``docs/evaluation.md``):

* ``benchmark``: one data set of the MedIAnomaly benchmark (RSNA, VinDr-CXR, Brain Tumor, LAG):
  ``DIR/images/*.png`` and ``DIR/data.json`` = ``{"train": {"0": [files]}, "test": {"0": [normal
  files], "1": [abnormal files]}}``. Image-level labels only.
* ``brats2021``: the benchmark's BraTS2021 FLAIR slices, ``DIR/train/*.png`` (healthy slices),
  ``DIR/test/normal/*.png``, ``DIR/test/tumor/*.png`` and ``DIR/test/annotation/*.png``; the mask of
  an image is the file named like it with ``flair`` replaced by ``seg``, binarised > 0 (normal
  slices without a mask get an empty one).
* ``brats`` (BraTS-style NIfTI subjects, :mod:`blindspot.data.brats`), ``folder`` (``normal/``,
  ``abnormal/``, ``masks/``) and ``mood`` (a folder of healthy NIfTI volumes)
  (:mod:`blindspot.data.folder`).

Every loader returns a :class:`LabelledSet` of 2D images prepared the same way
(:class:`Preprocessing`): optional percentile normalisation (per image or per volume), centre
crop, resize, histogram equalisation, and a foreground (brain) mask ``image > 0`` with holes filled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from blindspot.errors import BlindspotError

__all__ = [
    "LAYOUTS",
    "LabelledSet",
    "Preprocessing",
    "detect_layout",
    "load_benchmark",
    "load_brats2021_slices",
    "load_labelled",
    "read_image",
]

#: Layout names accepted by :func:`load_labelled` (plus "auto").
LAYOUTS = ("benchmark", "brats2021", "brats", "folder", "mood")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class LabelledSet:
    """2D images with image-level labels and, where annotated, pixel labels and brain masks.

    Attributes
    ----------
    images : ndarray of float32, shape (N, H, W)
        Intensities in [0, 1].
    anomalous : ndarray of bool, shape (N,)
        Image-level label (True = abnormal).
    labels : ndarray of bool, shape (N, H, W), or None
        Pixel annotations (True = anomalous pixel); None when the set has image labels only.
    brain : ndarray of bool, shape (N, H, W), or None
        Foreground (brain) masks; None when not computed.
    names : list of str
        One name per image (file name, or ``file[slice=k]``).
    volumes : list of str
        The volume (subject) each image comes from; the unit of per-volume pooling.
    source : dict
        What was loaded and how (recorded in the result's config).
    """

    images: np.ndarray
    anomalous: np.ndarray
    labels: np.ndarray | None
    brain: np.ndarray | None
    names: list[str]
    volumes: list[str]
    source: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 3 or self.images.dtype != np.float32:
            raise BlindspotError(f"a labelled set needs float32 images of shape (N, H, W); got {self.images.dtype} {self.images.shape}.")
        if n == 0:
            raise BlindspotError(f"the data set '{self.source.get('data', '?')}' holds no image for this split.")
        for what, array in (("labels", self.labels), ("brain", self.brain)):
            if array is not None and array.shape != self.images.shape:
                raise BlindspotError(f"{what} must have the images' shape {self.images.shape}; got {array.shape}.")
        if len(self.anomalous) != n or len(self.names) != n or len(self.volumes) != n:
            raise BlindspotError(f"got {len(self.anomalous)} labels, {len(self.names)} names and {len(self.volumes)} volume ids for {n} images.")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> "LabelledSet":
        """The images at ``index`` (indices or a bool mask), in that order."""
        index = np.arange(len(self))[index]
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return replace(self, images=self.images[index], anomalous=self.anomalous[index], labels=pick(self.labels),
                       brain=pick(self.brain), names=[self.names[i] for i in index],
                       volumes=[self.volumes[i] for i in index])

    def with_volume_regex(self, pattern: str | None) -> "LabelledSet":
        """Volume ids taken from the image names with a regular expression (group 1, or the whole match)."""
        if pattern is None:
            return self
        return replace(self, volumes=volumes_from_names(self.names, pattern), source={**self.source, "volume_regex": pattern})


def volumes_from_names(names: Sequence[str], pattern: str) -> list[str]:
    """The volume id of each name: ``re.search(pattern)``'s group 1 if it has groups, else the match."""
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise BlindspotError(f"--volume-regex '{pattern}' is not a valid regular expression ({err}).") from None
    volumes = []
    for name in names:
        match = regex.search(name)
        if match is None:
            raise BlindspotError(f"--volume-regex '{pattern}' does not match the name '{name}'.")
        volumes.append(match.group(1) if regex.groups else match.group(0))
    return volumes


@dataclass(frozen=True)
class Preprocessing:
    """How every loader prepares images (and, consistently, their masks).

    Order: percentile normalisation (per volume for NIfTI, per image for 2D files) → centre crop →
    resize (images: linear with anti-aliasing; masks: nearest) → histogram equalisation → brain mask.

    Attributes
    ----------
    crop : int or None
        Keep the central ``crop`` × ``crop`` region.
    resize : int or None
        Resize to ``resize`` × ``resize`` (the benchmark uses 64).
    normalize : float or None
        Divide by this percentile of the foreground (values > 0) and clip to [0, 1].
    equalize : bool
        Histogram-equalise each image over its foreground (256 bins), background kept at 0.
    foreground : bool
        Compute brain masks as ``image > 0`` with holes filled (used by masking, the "mask-mean"
        image score and the FPR threshold); False leaves ``brain`` as None.
    """

    crop: int | None = None
    resize: int | None = None
    normalize: float | None = None
    equalize: bool = False
    foreground: bool = True

    def shape_image(self, image: np.ndarray, *, labels: bool = False) -> np.ndarray:
        """Centre crop and resize of one image or a stack (last two axes)."""
        from blindspot.data.preprocess import center_crop, resize

        if self.crop is not None:
            image = center_crop(image, self.crop)
        if self.resize is not None:
            image = resize(image, self.resize, labels=labels)
        return image

    def finish(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Equalisation and brain masks of a prepared stack; returns ``(images, brain)``."""
        from blindspot.data.preprocess import equalize_histogram, foreground_mask

        if self.equalize:
            images = equalize_histogram(images)
        return images, (foreground_mask(images) if self.foreground else None)


def check_intensities(image: np.ndarray, path) -> None:
    """Images must be finite and in [0, 1] (after the optional normalisation)."""
    if not np.isfinite(image).all():
        raise BlindspotError(f"'{path}' contains NaN or infinite values; expected finite intensities.")
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 1:
        raise BlindspotError(f"'{path}' has intensities in [{low:.4g}, {high:.4g}]; expected [0, 1] (use --normalize PERCENTILE to rescale).")


def read_image(path: str | Path) -> np.ndarray:
    """One 2D image file (PNG, JPEG, BMP, TIFF) as float32 in [0, 1]; colour is converted to grayscale.

    8-bit images are divided by 255 and 16-bit ones by 65535; float TIFFs are taken as stored.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "1", "I", "I;16", "I;16B", "I;16L", "F"):
                image = image.convert("L")
            array = np.asarray(image)
    except FileNotFoundError:
        raise BlindspotError(f"'{path}' does not exist.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BlindspotError(f"'{path}' is not a readable image file ({type(err).__name__}: {err}).") from None
    if array.ndim != 2:
        raise BlindspotError(f"'{path}' has shape {array.shape}; expected a 2-D grayscale image.")
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255
    if array.dtype.kind in "iu":
        return array.astype(np.float32) / 65535
    return array.astype(np.float32)


def _read_png_set(paths: Sequence[Path], prep: Preprocessing) -> np.ndarray:
    """Read, normalise, crop and resize 2D image files into one float32 stack."""
    from blindspot.data.preprocess import normalize_percentile

    images = []
    for path in paths:
        image = read_image(path)
        if prep.normalize is not None:
            image = normalize_percentile(image, prep.normalize, name=f"'{path}'")
        check_intensities(image, path)
        image = prep.shape_image(image)
        if images and image.shape != images[0].shape:
            raise BlindspotError(f"'{path}' has size {image.shape} but '{paths[0]}' has {images[0].shape}; pass --resize N (and --crop) to bring them to one size.")
        images.append(image)
    return np.stack(images).astype(np.float32, copy=False)


def _read_masks(paths: Sequence[Path | None], shape: tuple[int, ...], prep: Preprocessing) -> np.ndarray:
    """Binary masks (> 0) for each image; None gives an empty mask. Checked against the image size."""
    masks = np.zeros((len(paths), *shape), bool)
    for k, path in enumerate(paths):
        if path is None:
            continue
        mask = prep.shape_image(read_image(path) > 0, labels=True)
        if mask.shape != shape:
            raise BlindspotError(f"mask '{path}' has size {mask.shape} after preprocessing but its image has {shape}; masks must match their images.")
        masks[k] = mask
    return masks


def _file_list(data: dict, keys: tuple[str, str], where: Path) -> list[str]:
    try:
        files = data[keys[0]][keys[1]]
    except (KeyError, TypeError):
        raise BlindspotError(f"'{where}' has no \"{keys[0]}\" → \"{keys[1]}\" list; expected {{\"train\": {{\"0\": [...]}}, \"test\": {{\"0\": [...], \"1\": [...]}}}}.") from None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise BlindspotError(f"'{where}': \"{keys[0]}\" → \"{keys[1]}\" must be a list of file names.")
    return files


def load_benchmark(path: str | Path, *, split: str = "test", preprocessing: Preprocessing = Preprocessing()) -> LabelledSet:
    """One MedIAnomaly-benchmark data set (``DIR/data.json`` + ``DIR/images/``).

    ``split="train"`` gives the normal training images (``train → 0``), ``"test"`` the normal
    (``test → 0``) then abnormal (``test → 1``) test images. No pixel labels.
    """
    root = Path(path)
    manifest = root / "data.json"
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise BlindspotError(f"'{manifest}' does not exist; the benchmark layout needs DIR/data.json and DIR/images/.") from None
    except json.JSONDecodeError as err:
        raise BlindspotError(f"'{manifest}' is not valid JSON ({err.msg} at line {err.lineno}).") from None
    if split == "train":
        groups = [(_file_list(data, ("train", "0"), manifest), False)]
    elif split == "test":
        groups = [(_file_list(data, ("test", "0"), manifest), False), (_file_list(data, ("test", "1"), manifest), True)]
    else:
        raise BlindspotError(f"the benchmark layout has the splits train and test; got '{split}'.")
    files = [name for names, _ in groups for name in names]
    anomalous = np.array([flag for names, flag in groups for _ in names], bool)
    paths = [root / "images" / name for name in files]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise BlindspotError(f"'{missing[0]}' is listed in '{manifest}' but does not exist ({len(missing)} listed file(s) missing).")
    if not paths:
        raise BlindspotError(f"'{manifest}' lists no image for the {split} split.")
    images, brain = preprocessing.finish(_read_png_set(paths, preprocessing))
    names = [Path(f).name for f in files]
    source = {"data": str(root), "layout": "benchmark", "split": split, "preprocessing": preprocessing.__dict__}
    return LabelledSet(images, anomalous, None, brain, names, list(names), source)


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise BlindspotError(f"folder '{folder}' does not exist; check the data layout.")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_brats2021_slices(path: str | Path, *, split: str = "test", preprocessing: Preprocessing = Preprocessing()) -> LabelledSet:
    """The benchmark's BraTS2021 FLAIR slices with their tumour annotations.

    ``split="train"``: ``train/*.png`` (healthy). ``"test"``: ``test/normal`` then ``test/tumor``;
    the mask of ``test/<group>/X`` is ``test/annotation/`` + X with ``flair`` replaced by ``seg``,
    binarised > 0. Every tumour slice must have a mask; a normal slice without one gets an empty mask.
    """
    root = Path(path)
    if split == "train":
        paths = _image_files(root / "train")
        if not paths:
            raise BlindspotError(f"folder '{root / 'train'}' holds no image file.")
        images, brain = preprocessing.finish(_read_png_set(paths, preprocessing))
        names = [p.name for p in paths]
        source = {"data": str(root), "layout": "brats2021", "split": split, "preprocessing": preprocessing.__dict__}
        return LabelledSet(images, np.zeros(len(paths), bool), None, brain, names, list(names), source)
    if split != "test":
        raise BlindspotError(f"the brats2021 layout has the splits train and test; got '{split}'.")
    normal, tumor = _image_files(root / "test" / "normal"), _image_files(root / "test" / "tumor")
    annotation = root / "test" / "annotation"
    if not annotation.is_dir():
        raise BlindspotError(f"folder '{annotation}' does not exist; the brats2021 layout needs test/annotation/ with the masks.")
    mask_paths: list[Path | None] = []
    for path in normal + tumor:
        mask = annotation / path.name.replace("flair", "seg")
        if mask.is_file():
            mask_paths.append(mask)
        elif path in tumor:
            raise BlindspotError(f"tumour slice '{path}' has no mask '{mask}'.")
        else:
            mask_paths.append(None)
    paths = normal + tumor
    if not paths:
        raise BlindspotError(f"'{root / 'test'}' holds no image in normal/ or tumor/.")
    stack = _read_png_set(paths, preprocessing)
    labels = _read_masks(mask_paths, stack.shape[1:], preprocessing)
    images, brain = preprocessing.finish(stack)
    names = [p.name for p in paths]
    anomalous = np.r_[np.zeros(len(normal), bool), np.ones(len(tumor), bool)]
    source = {"data": str(root), "layout": "brats2021", "split": split, "preprocessing": preprocessing.__dict__}
    return LabelledSet(images, anomalous, labels, brain, names, list(names), source)


def detect_layout(path: str | Path) -> str:
    """Guess a data set's layout from its files (see the module docstring)."""
    from blindspot.data.nifti import NIFTI_SUFFIXES

    root = Path(path)
    if not root.exists():
        raise BlindspotError(f"'{root}' does not exist; expected a data set folder.")
    if root.is_file():
        if root.name.endswith(NIFTI_SUFFIXES):
            return "mood"
        raise BlindspotError(f"'{root}' is a file; expected a data set folder (or a NIfTI volume).")
    if (root / "data.json").is_file():
        return "benchmark"
    if (root / "test" / "normal").is_dir() or (root / "test" / "tumor").is_dir():
        return "brats2021"
    if (root / "normal").is_dir() or (root / "abnormal").is_dir():
        return "folder"
    if any(p.is_file() and p.name.endswith(NIFTI_SUFFIXES) for p in root.iterdir()):
        return "mood"
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if any(re.search(r"seg\.nii(\.gz)?$", f.name) for f in sub.iterdir()):
            return "brats"
    raise BlindspotError(
        f"'{root}' matches no known layout; expected data.json + images/ (benchmark), test/normal|tumor (brats2021), "
        "normal/ + abnormal/ (folder), subject folders with *_seg.nii.gz (brats) or NIfTI volumes (mood)."
    )


def load_labelled(
    path: str | Path,
    *,
    layout: str = "auto",
    split: str | None = None,
    modality: str = "flair",
    axis: int = 2,
    slices: Sequence[int] | None = None,
    preprocessing: Preprocessing = Preprocessing(),
    volume_regex: str | None = None,
) -> LabelledSet:
    """Load 2D images of any supported layout (``layout="auto"`` detects it).

    Parameters
    ----------
    path : folder (or a NIfTI file for "mood")
    layout : {"auto", "benchmark", "brats2021", "brats", "folder", "mood"}
    split : {"test", "train", "all"} or None
        "train" = healthy training images (benchmark, brats2021, folder with ``train/``); the NIfTI
        layouts (brats, mood) split their sorted volumes 60 / 40 % (train / test) or take "all".
        None: "test" for benchmark, brats2021 and folder; "all" for brats and mood.
    modality : str
        BraTS modality file suffix (flair, t1, t1ce, t2).
    axis, slices : int, sequence of int or None
        Slicing of NIfTI volumes (defaults: axis 2; every slice with a non-empty brain for
        brats and folder volumes, slice 128 for mood).
    preprocessing : Preprocessing
    volume_regex : str or None
        Take volume ids from image names (e.g. ``'(BraTS2021_\\d+)'``) for per-volume pooling.
    """
    layout = detect_layout(path) if layout == "auto" else layout
    if split is None:
        split = "all" if layout in ("brats", "mood") else "test"
    if layout == "benchmark":
        result = load_benchmark(path, split=split, preprocessing=preprocessing)
    elif layout == "brats2021":
        result = load_brats2021_slices(path, split=split, preprocessing=preprocessing)
    elif layout == "brats":
        from blindspot.data.brats import brats_slices

        result = brats_slices(path, modality=modality, axis=axis, slices=slices, split=split, preprocessing=preprocessing)
    elif layout == "folder":
        from blindspot.data.folder import load_folder

        result = load_folder(path, split=split, axis=axis, slices=slices, preprocessing=preprocessing)
    elif layout == "mood":
        from blindspot.data.folder import load_nifti_folder

        result = load_nifti_folder(path, split=split, axis=axis, slices=slices, preprocessing=preprocessing)
    else:
        raise BlindspotError(f"--layout must be one of auto, {', '.join(LAYOUTS)}; got '{layout}'.")
    return result.with_volume_regex(volume_regex)

"""The one container every source returns (:class:`ImageSet`) and the one description of what to load
(:class:`DataConfig`, with its :class:`Preparation`), both frozen and validated."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import numpy as np

from blindspot.errors import BlindspotError

__all__ = ["GEOMETRIES", "LAYOUTS", "SPLITS", "DataConfig", "ImageSet", "Preparation", "compile_volume_regex", "refuse_overlap",
           "shared_inputs"]

#: Data set layouts (``"auto"`` detects one, see :func:`blindspot.data.detect_layout`).
LAYOUTS = ("mni152", "nifti", "benchmark", "brats2021", "brats", "folder")
#: Splits every layout has: everything, the healthy training part, the test part.
SPLITS = ("all", "train", "test")
#: How images are brought to a square size: centred zero padding, a centred crop, or stretching.
GEOMETRIES = ("pad", "crop", "stretch")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Preparation:
    """How images are prepared, always in this order (:func:`blindspot.data.preprocess.prepare`).

    1. ``normalize``: divide by this percentile of the foreground (values > 0) and clip to [0, 1]
       (per volume for NIfTI, per image for 2-D files); None keeps the intensities.
    2. geometry: ``size`` × ``size`` by ``geometry`` (``"pad"``: centred zero padding to a square,
       then resizing; ``"crop"``: the largest centred square, then resizing; ``"stretch"``:
       resizing each axis); the factor applied is the :attr:`ImageSet.scale` every radius is
       multiplied by. ``size=None`` keeps the native size.
    3. ``equalize``: histogram equalisation of each image over its foreground (256 bins).
    4. the foreground (brain) mask ``image > 0`` with holes filled.
    """

    size: int | None = None
    geometry: str = "pad"
    normalize: float | None = None
    equalize: bool = False

    def __post_init__(self) -> None:
        if self.size is not None and not (_is_int(self.size) and self.size >= 1):
            raise BlindspotError(f"`size` must be a positive integer or None; got {self.size!r}.")
        if self.geometry not in GEOMETRIES:
            raise BlindspotError(f"`geometry` must be one of {', '.join(GEOMETRIES)}; got {self.geometry!r}.")
        if self.normalize is not None and not (isinstance(self.normalize, (int, float)) and not isinstance(self.normalize, bool)
                                                and 0 < self.normalize <= 100):
            raise BlindspotError(f"`normalize` must be a percentile in (0, 100] or None; got {self.normalize!r}.")
        if not isinstance(self.equalize, bool):
            raise BlindspotError(f"`equalize` must be True or False; got {self.equalize!r}.")
        # plain Python numbers: records go into checkpoints, which torch.load(weights_only=True) reads
        if self.size is not None:
            object.__setattr__(self, "size", int(self.size))
        if self.normalize is not None:
            object.__setattr__(self, "normalize", float(self.normalize))

    def record(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DataConfig:
    """What to load and how to prepare it; :func:`blindspot.data.load` turns it into an :class:`ImageSet`.

    Attributes
    ----------
    data : str
        ``"mni152"`` (the embedded template) or a path: a NIfTI file or folder, or a data set folder.
    layout : str
        One of :data:`LAYOUTS`, or ``"auto"`` (detected from the files).
    split : str or None
        One of :data:`SPLITS`; None lets the caller choose (``load(config, default_split=...)``).
    modality : str
        BraTS modality file suffix (``flair``, ``t1``, ``t1ce``, ``t2``).
    axis : int
        Slice axis of volumes (0, 1 or 2).
    slices : tuple of int or None
        Slice indices of volumes; None: the layout's default (see :func:`blindspot.data.load`).
    preparation : Preparation
    volume_regex : str or None
        Volume id of each image from its name (group 1 of the first match; a pattern without a group is
        refused), for per-volume pooling.
    """

    data: str = "mni152"
    layout: str = "auto"
    split: str | None = None
    modality: str = "flair"
    axis: int = 2
    slices: tuple[int, ...] | None = None
    preparation: Preparation = field(default_factory=Preparation)
    volume_regex: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.data, str) or not self.data:
            raise BlindspotError(f"`data` must be 'mni152' or a path; got {self.data!r}.")
        if self.layout not in ("auto", *LAYOUTS):
            raise BlindspotError(f"`layout` must be auto or one of {', '.join(LAYOUTS)}; got {self.layout!r}.")
        if self.split is not None and self.split not in SPLITS:
            raise BlindspotError(f"`split` must be one of {', '.join(SPLITS)}; got {self.split!r}.")
        if self.axis not in (0, 1, 2) or not _is_int(self.axis):
            raise BlindspotError(f"`axis` must be 0, 1 or 2; got {self.axis!r}.")
        if self.slices is not None:
            slices = tuple(self.slices)
            if not slices or not all(_is_int(s) and s >= 0 for s in slices):
                raise BlindspotError(f"`slices` must be non-negative slice indices; got {self.slices!r}.")
            object.__setattr__(self, "slices", tuple(int(s) for s in slices))
        if not isinstance(self.preparation, Preparation):
            raise BlindspotError(f"`preparation` must be a Preparation; got {type(self.preparation).__name__}.")
        if self.volume_regex is not None:
            compile_volume_regex(self.volume_regex)

    def with_preparation(self, **changes) -> "DataConfig":
        return replace(self, preparation=replace(self.preparation, **changes))

    def prepared_like(self, preparation: dict | None, *, what: str) -> "DataConfig":
        """This config with the preparation a model was trained with (``preparation``, from its checkpoint).

        A field left at its default takes the model's value; a field set to another value than the
        model's is an error naming both (``what`` names the model). None keeps this config.
        """
        if not preparation:
            return self
        trained, default = Preparation(**preparation), Preparation()
        for name in asdict(default):
            given, needed = getattr(self.preparation, name), getattr(trained, name)
            if given != getattr(default, name) and given != needed:
                raise BlindspotError(f"`{name}` {given!r} conflicts with the preparation {what} was trained with "
                                     f"({name}={needed!r}); omit it to use the model's.")
        return replace(self, preparation=trained)

    def record(self) -> dict:
        """JSON-ready description (recorded in results and checkpoints)."""
        return {**asdict(self), "preparation": self.preparation.record(),
                "slices": None if self.slices is None else list(self.slices)}

    @classmethod
    def from_record(cls, record: dict) -> "DataConfig":
        """The inverse of :meth:`record`."""
        values = dict(record)
        values["preparation"] = Preparation(**values.get("preparation", {}))
        if values.get("slices") is not None:
            values["slices"] = tuple(values["slices"])
        return cls(**values)


def compile_volume_regex(pattern: str) -> re.Pattern:
    """``pattern`` compiled, with the capture group that holds the volume id (a pattern without one is refused:
    its whole match, often each image's own name, would quietly change nothing)."""
    try:
        regex = re.compile(pattern)
    except (re.error, TypeError) as err:
        raise BlindspotError(f"`volume_regex` '{pattern}' is not a valid regular expression ({err}).") from None
    if not regex.groups:
        raise BlindspotError(f"`volume_regex` '{pattern}' has no capture group; put the volume id in parentheses, "
                             r"e.g. '(BraTS2021_\d+)_'.")
    return regex


@dataclass(frozen=True)
class ImageSet:
    """A stack of 2-D images ready to be scored, with what is known about them.

    Attributes
    ----------
    images : ndarray of float32, shape (N, H, W)
        Values in [0, 1]; the foreground (brain) is ``images > 0``.
    names : list of str
        One origin per image, e.g. ``"sub-01.nii.gz[axis=2, slice=128]"``.
    source : dict
        What was loaded and how (recorded in every result); ``source["files"]`` lists the files read.
    labels : ndarray of bool (N, H, W) or None
        Pixel annotations (True = anomalous); None when the set has none.
    anomalous : ndarray of bool (N,) or None
        Image-level labels; None when the set has none (e.g. healthy volumes).
    brain : ndarray of bool (N, H, W) or None
        Foreground masks.
    volumes : list of str
        The volume (subject or file) each image comes from; defaults to the names.
    scale : float
        Factor the geometry step applied to the native images (every radius is multiplied by it).
    """

    images: np.ndarray
    names: list[str]
    source: dict = field(default_factory=dict)
    labels: np.ndarray | None = None
    anomalous: np.ndarray | None = None
    brain: np.ndarray | None = None
    volumes: list[str] | None = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        images, n = self.images, len(self.images)
        if images.ndim != 3 or images.dtype != np.float32:
            raise BlindspotError(f"images must be float32 of shape (N, H, W); got {images.dtype} {images.shape}.")
        if n == 0:
            raise BlindspotError(f"'{self.source.get('data', 'the data')}' holds no image for this selection; "
                                 "check the data path, split and slices.")
        if len(self.names) != n:
            raise BlindspotError(f"got {len(self.names)} names for {n} images.")
        for what, array in (("labels", self.labels), ("brain", self.brain)):
            if array is not None and (array.shape != images.shape or array.dtype != np.bool_):
                raise BlindspotError(f"{what} must be bool of the images' shape {images.shape}; got {array.dtype} {array.shape}.")
        if self.anomalous is not None and np.shape(self.anomalous) != (n,):
            raise BlindspotError(f"anomalous must have one flag per image ({n}); got shape {np.shape(self.anomalous)}.")
        if self.volumes is None:
            object.__setattr__(self, "volumes", list(self.names))
        elif len(self.volumes) != n:
            raise BlindspotError(f"got {len(self.volumes)} volume ids for {n} images.")
        if not (isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale > 0):
            raise BlindspotError(f"scale must be a positive number; got {self.scale!r}.")
        check_intensities(images, self.names)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> "ImageSet":
        """The images at ``index`` (indices or a bool mask), in that order (``source["images"]`` counts them)."""
        index = np.arange(len(self))[index]
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        source = {**self.source, "images": len(index)} if "images" in self.source else self.source
        return replace(self, images=self.images[index], names=[self.names[i] for i in index], labels=pick(self.labels),
                       anomalous=pick(self.anomalous), brain=pick(self.brain), volumes=[self.volumes[i] for i in index],
                       source=source)

    def normal(self) -> "ImageSet":
        """The images not labelled anomalous (all of them when there are no labels)."""
        if self.anomalous is None:
            return self
        return self.subset(~np.asarray(self.anomalous, bool))

    def with_images(self, images: np.ndarray, **source_updates) -> "ImageSet":
        """A copy with new pixel data (e.g. after equalisation), recording what changed."""
        return replace(self, images=images, source={**self.source, **source_updates})

    def require_foreground(self) -> None:
        """Raise naming the first image without a foreground pixel (anomalies need a centre in the brain)."""
        empty = self.images.reshape(len(self), -1).max(axis=1) <= 0
        if empty.any():
            raise BlindspotError(f"{self.names[int(np.argmax(empty))]} has an empty foreground (no pixel > 0); choose other slices.")


def check_intensities(images: np.ndarray, names: Sequence[str]) -> None:
    """Every image finite and in [0, 1]; raises naming the first one that is not."""
    flat = images.reshape(len(images), -1)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        raise BlindspotError(f"{names[int(np.argmin(finite))]} contains NaN or infinite values; expected finite intensities in [0, 1].")
    low, high = flat.min(axis=1), flat.max(axis=1)
    bad = (low < 0) | (high > 1)
    if bad.any():
        k = int(np.argmax(bad))
        raise BlindspotError(f"{names[k]} has intensities in [{low[k]:.4g}, {high[k]:.4g}]; expected [0, 1] "
                             "(rescale with a percentile normalisation: `normalize`).")


def shared_inputs(a: ImageSet, b: ImageSet) -> list[str]:
    """Files (or, for the embedded template, slices) that two image sets share."""
    if a.source.get("files") or b.source.get("files"):
        return sorted(set(a.source.get("files", [])) & set(b.source.get("files", [])))
    return sorted(set(a.names) & set(b.names))


def refuse_overlap(a: ImageSet, b: ImageSet, what: str) -> None:
    """Raise when two image sets share an input (e.g. training and test images); ``what`` names the pair."""
    shared = shared_inputs(a, b)
    if shared:
        raise BlindspotError(f"the {what} share '{shared[0]}' ({len(shared)} in all); they must be separate images.")

"""Whole 3-D volumes (closest-canonical RAS), for the experiments that score whole volumes (``--volumes``).

Sources (:class:`~blindspot.data.DataConfig` ``data`` / ``layout``):

* ``mni152`` — the embedded template, one volume of 197 × 233 × 189 voxels of 1 mm;
* ``nifti`` — a NIfTI file or a folder of them (the MOOD layout; sorted, split 60 / 40);
* ``brats`` — BraTS subjects, the ``modality`` file of each (the segmentation is not read: the
  tumour is part of the volume).

Volumes are read one at a time (a 256³ volume is 64 MiB as float32), each brought to nibabel's
closest-canonical RAS orientation like every volume source (the template included), and not
resized (``size`` is refused: it resizes 2-D images). Each is
prepared on its own: ``normalize`` (divide by a foreground percentile, clip to [0, 1]), then
``equalize`` (the volume's foreground histogram, 256 bins, background back to 0). The foreground
is ``volume > 0``. Every volume carries its voxel spacing per array axis, from the header (1 mm
for the template), in the canonical axis order, for radii given in millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from blindspot.data.brats import Volume, list_subjects
from blindspot.data.imageset import DataConfig, check_intensities
from blindspot.data.io import nifti_spacing, read_nifti
from blindspot.data.mni152 import load_mni152_volume
from blindspot.data.nifti import list_volumes, split_files
from blindspot.data.preprocess import normalize_percentile
from blindspot.errors import BlindspotError

__all__ = ["VOLUME_LAYOUTS", "VolumeSet", "equalize_volume", "whole_volumes"]

#: Layouts that hold whole volumes.
VOLUME_LAYOUTS = ("mni152", "nifti", "brats")


@dataclass(frozen=True)
class VolumeSet:
    """The volumes of a source, listed up front and read one at a time (iterate, or :meth:`read`).

    Attributes
    ----------
    names : list of str
        One name per volume (the file name, the subject, or ``"mni152"``).
    files : list of tuple of str
        The files each volume is read from (empty for the embedded template).
    source : dict
        What was loaded and how (recorded in results): ``data``, ``layout``, ``split``, ``files``, ``config``.
    """

    names: list[str]
    files: list[tuple[str, ...]]
    source: dict
    reader: Callable[[int], Volume]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Volume]:
        for k in range(len(self)):
            yield self.reader(k)

    def read(self, k: int) -> Volume:
        """Volume ``k``, read and prepared."""
        return self.reader(k)


def equalize_volume(volume: np.ndarray, *, nbins: int = 256) -> np.ndarray:
    """Histogram-equalise a volume over its foreground (> 0) only; background back to 0.

    The 3-D counterpart of :func:`blindspot.data.preprocess.equalize_histogram`: the semantics of
    ``skimage.exposure.equalize_hist(volume, nbins=256, mask=volume > 0)`` on the whole volume.
    """
    from skimage.exposure import equalize_hist

    mask = volume > 0
    if not mask.any():
        return np.zeros(volume.shape, np.float32)
    return np.where(mask, equalize_hist(volume, nbins=nbins, mask=mask), 0).astype(np.float32)


def _prepare(volume: np.ndarray, config: DataConfig, name: str) -> np.ndarray:
    prep = config.preparation
    if prep.normalize is not None:
        volume = normalize_percentile(volume, prep.normalize, name=name)
    volume = np.asarray(volume, np.float32)
    check_intensities(volume.reshape(1, -1), [name])
    if prep.equalize:
        volume = equalize_volume(volume)
    return volume


def whole_volumes(config: DataConfig, *, default_split: str = "all") -> VolumeSet:
    """The whole volumes ``config`` describes, listed now and read one at a time (module docstring).

    The file list (and the layout) is checked before any volume is read; a file that is not a
    3-D volume, or whose values are not finite in [0, 1] (after ``normalize``), fails when it is
    read, with its name.
    """
    from blindspot.data import resolve  # the package's resolver (layout detection, split)

    config = resolve(config, default_split=default_split)
    if config.layout not in VOLUME_LAYOUTS:
        raise BlindspotError(f"whole volumes come from the embedded mni152 template, a NIfTI file or folder, or BraTS "
                             f"subjects; '{config.data}' has the {config.layout} layout (2-D images).")
    if config.preparation.size is not None:
        raise BlindspotError("`size` resizes 2-D images; whole volumes are scored at their native size (omit `size`).")
    if config.layout == "mni152":
        names, files, spacings = ["mni152"], [()], [(1.0, 1.0, 1.0)]

        def read(k: int) -> Volume:
            image = _prepare(load_mni152_volume(), config, "mni152")
            return Volume("mni152", image, None, image > 0, (), spacings[0])
    else:
        if config.layout == "nifti":
            paths = split_files(list_volumes(config.data), config.split)
            names, files = [p.name for p in paths], [(str(p),) for p in paths]
        else:
            subjects = split_files(list_subjects(config.data, config.modality), config.split)
            names, files = [name for name, _, _ in subjects], [(str(image),) for _, image, _ in subjects]

        def read(k: int) -> Volume:
            path = files[k][0]
            raw = read_nifti(path, canonical=True)  # one sentence naming the file when it is not a 3-D volume
            spacing = nifti_spacing(path, canonical=True)
            image = _prepare(raw, config, f"'{path}'")
            return Volume(names[k], image, None, image > 0, files[k], tuple(spacing))
    source = {"data": config.data, "layout": config.layout, "split": config.split,
              "files": [f for group in files for f in group], "config": config.record(), "volumes": len(names)}
    return VolumeSet(names, files, source, read)


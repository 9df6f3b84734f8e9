"""Image sources and preprocessing: the embedded MNI152 template and NIfTI volumes, as 2D slices.

Every source returns an :class:`ImageSet`: float32 images ``(N, H, W)`` in [0, 1] with background
exactly 0 (the foreground mask everywhere is ``image > 0``), one name per image, and a ``source``
record written into every result's ``config.json``.
"""

from blindspot.data.imageset import DataOptions, ImageSet, load_images
from blindspot.data.mni152 import load_mni152_volume, mni152_slices
from blindspot.data.nifti import list_volumes, load_volume, nifti_slices, parse_slices, split_files
from blindspot.data.preprocess import equalize_histogram, normalize_percentile

__all__ = [
    "DataOptions",
    "ImageSet",
    "equalize_histogram",
    "list_volumes",
    "load_images",
    "load_mni152_volume",
    "load_volume",
    "mni152_slices",
    "nifti_slices",
    "normalize_percentile",
    "parse_slices",
    "split_files",
]

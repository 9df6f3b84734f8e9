"""Intensity preprocessing that keeps the background at exactly 0."""

from __future__ import annotations

import numpy as np
from skimage.exposure import equalize_hist

from blindspot.errors import BlindspotError


def equalize_histogram(images: np.ndarray, *, nbins: int = 256) -> np.ndarray:
    """Histogram-equalise each image over its foreground only, background set back to 0.

    The semantics of ``skimage.exposure.equalize_hist(img, nbins=256, mask=img > 0)`` per image (the
    MIDL 2022 "after equalisation" figures), which flattens the foreground histogram.

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (H, W)

    Returns
    -------
    ndarray of float32, same shape; foreground values in (0, 1].

    Examples
    --------
    >>> img = np.zeros((1, 4, 4), np.float32); img[0, 1:3, 1:3] = [[0.2, 0.2], [0.2, 0.9]]
    >>> equalize_histogram(img)[0, 1:3, 1:3]
    array([[0.75, 0.75],
           [0.75, 1.  ]], dtype=float32)
    """
    stack = np.asarray(images)
    flat = stack.reshape(-1, *stack.shape[-2:])
    out = np.zeros(flat.shape, np.float32)
    for k, image in enumerate(flat):
        mask = image > 0
        if mask.any():
            out[k] = np.where(mask, equalize_hist(image, nbins=nbins, mask=mask), 0)
    return out.reshape(stack.shape)


def normalize_percentile(volume: np.ndarray, percentile: float, *, name: str = "volume") -> np.ndarray:
    """Divide by the given percentile of the foreground (values > 0) and clip to [0, 1].

    Only an upper percentile is used, so background stays 0 and every foreground voxel stays > 0
    (a lower percentile would push dim brain voxels into the background mask).
    """
    if not 0 < percentile <= 100:
        raise BlindspotError(f"--normalize must be a percentile in (0, 100]; got {percentile}.")
    foreground = volume[volume > 0]
    if foreground.size == 0:
        raise BlindspotError(f"{name} has an empty foreground (no voxel > 0); cannot normalise it.")
    scale = np.percentile(foreground, percentile)
    return np.clip(volume / scale, 0, 1).astype(np.float32)

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


def resize(images: np.ndarray, size: int, *, labels: bool = False) -> np.ndarray:
    """Resize each image of a stack ``(N, H, W)`` (or one ``(H, W)`` image) to ``size`` × ``size``.

    The one resize used everywhere (training, experiment 3, evaluation), so a model is evaluated on
    images prepared exactly like its training images. Intensities use antialiased bilinear
    interpolation (``torch.nn.functional.interpolate(..., antialias=True)``, non-negative weights,
    so values stay in the input range) and stay float32. For images with a zero background (no
    negative values) the foreground mask ``x > 0`` is resized with the same kernel and pixels less
    than half covered by it are set to 0, so the outline follows the anatomy instead of growing a
    faint ring of near-zero "foreground" pixels. Label or brain masks (``labels=True``) use
    nearest-neighbour interpolation and stay bool. Non-square images are stretched: centre-crop
    them first (:func:`center_crop`) to keep the aspect ratio.
    """
    import torch
    import torch.nn.functional as F
    from skimage.transform import resize as sk_resize

    if not (isinstance(size, (int, np.integer)) and size >= 1):
        raise BlindspotError(f"--resize must be a positive integer; got {size!r}.")
    stack = np.asarray(images)
    if stack.shape[-2:] == (size, size):
        return stack
    shape = stack.shape[:-2] + (size, size)
    if labels:
        return sk_resize(stack.astype(bool), shape, order=0, anti_aliasing=False, preserve_range=True).astype(bool)
    flat = np.ascontiguousarray(stack.reshape(-1, *stack.shape[-2:]), dtype=np.float32)
    zero_background = flat.size > 0 and flat.min() >= 0
    out = np.empty((len(flat), size, size), np.float32)
    for start in range(0, len(flat), 256):  # bounded memory for large stacks
        chunk = torch.from_numpy(flat[start : start + 256]).unsqueeze(1)
        channels = torch.cat([chunk, (chunk > 0).float()], dim=1) if zero_background else chunk
        resized = F.interpolate(channels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        values = resized[:, 0].clamp_(float(flat.min()), float(flat.max()))
        out[start : start + len(chunk)] = (torch.where(resized[:, 1] >= 0.5, values, 0) if zero_background else values).numpy()
    return out.reshape(shape)


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` × ``size`` region of each image (last two axes); images must be at least that big."""
    stack = np.asarray(images)
    height, width = stack.shape[-2:]
    if not (isinstance(size, (int, np.integer)) and 1 <= size <= min(height, width)):
        raise BlindspotError(f"--crop must be an integer in [1, {min(height, width)}] for images of size {height}×{width}; got {size!r}.")
    top, left = (height - size) // 2, (width - size) // 2
    return stack[..., top:top + size, left:left + size]


def foreground_mask(images: np.ndarray, *, threshold: float = 0.0, fill_holes: bool = True) -> np.ndarray:
    """Foreground (brain) mask of each 2D image: pixels > ``threshold``, holes filled per image.

    With the project's convention (background exactly 0) the default is ``image > 0``; filling holes
    keeps dark lesions or ventricles (value 0 inside the brain) inside the mask.
    """
    from scipy.ndimage import binary_fill_holes, generate_binary_structure

    mask = np.asarray(images) > threshold
    if fill_holes and mask.ndim >= 2:
        structure = generate_binary_structure(2, 1).reshape((1,) * (mask.ndim - 2) + (3, 3))
        mask = binary_fill_holes(mask, structure=structure)
    return mask

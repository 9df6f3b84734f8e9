"""The one preparation pipeline, in one order: normalise → geometry → equalise → foreground mask.

Every command prepares images with these functions in this order (:class:`~blindspot.data.Preparation`),
so a model is evaluated on images prepared exactly like its training images. Normalisation acts
on whole volumes (NIfTI) or single images (2-D files), so the loaders call it as they read;
:func:`fit_geometry` returns the scale that every anomaly radius is multiplied by; :func:`finish`
does the last two steps on the stack. The background stays exactly 0 throughout.
"""

from __future__ import annotations

import numpy as np

from blindspot.data.imageset import Preparation
from blindspot.errors import BlindspotError

__all__ = ["equalize_histogram", "finish", "fit_geometry", "foreground_mask", "normalize_percentile", "volume_slices"]


def normalize_percentile(array: np.ndarray, percentile: float, *, name: str = "volume") -> np.ndarray:
    """Divide by the given percentile of the foreground (values > 0) and clip to [0, 1].

    Only an upper percentile is used, so the background stays 0 and every foreground voxel stays > 0
    (a lower percentile would push dim brain voxels into the background mask).
    """
    if not 0 < percentile <= 100:
        raise BlindspotError(f"`normalize` must be a percentile in (0, 100]; got {percentile}.")
    foreground = array[array > 0]
    if foreground.size == 0:
        raise BlindspotError(f"{name} has an empty foreground (no value > 0); cannot normalise it.")
    return np.clip(array / np.percentile(foreground, percentile), 0, 1).astype(np.float32)


def volume_slices(volume: np.ndarray, axis: int, slices=None) -> np.ndarray:
    """Slices of a closest-canonical RAS volume as 2-D images: the display rule of every volume source.

    Each slice is ``np.rot90`` of the plane of the two other array axes (in order), so an axial
    slice (``axis`` 2) shows anterior up and the patient's right on the image's right. ``slices``
    (indices along ``axis``) defaults to all; the result is ``(len(slices), H, W)``, slice axis first.
    """
    stack = np.moveaxis(volume, axis, 0)
    chosen = range(len(stack)) if slices is None else slices
    # basic indexing per slice: fancy indexing copies a strided (Fortran-ordered) volume far more slowly
    return np.stack([np.rot90(stack[int(s)]) for s in chosen])


def fit_geometry(images: np.ndarray, size: int | None, geometry: str = "pad", *, labels: bool = False
                 ) -> tuple[np.ndarray, float]:
    """Bring images ``(..., H, W)`` to ``size`` × ``size``; returns ``(images, scale)``.

    ``"pad"``: centred zero padding to a square of side max(H, W), then resizing (scale
    size / max(H, W)); ``"crop"``: the centred square of side min(H, W), then resizing (scale
    size / min(H, W)); ``"stretch"``: resizing each axis (scale √(size² / (H·W)), the factor of a
    disk's area). ``size=None`` returns the images unchanged (scale 1). Intensities use
    :func:`_resize`; label masks (``labels=True``) nearest-neighbour interpolation.

    Examples
    --------
    >>> out, scale = fit_geometry(np.ones((1, 2, 4), np.float32), 4)  # centred on a square; already 4 px
    >>> out[0], scale
    (array([[0., 0., 0., 0.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [0., 0., 0., 0.]], dtype=float32), 1.0)
    """
    stack = np.asarray(images)
    if size is None:
        return stack, 1.0
    if not (isinstance(size, (int, np.integer)) and size >= 1):
        raise BlindspotError(f"`size` must be a positive integer; got {size!r}.")
    h, w = stack.shape[-2:]
    if geometry == "pad":
        side = max(h, w)
        if h != w:
            square = np.zeros(stack.shape[:-2] + (side, side), stack.dtype)
            top, left = (side - h) // 2, (side - w) // 2
            square[..., top:top + h, left:left + w] = stack
            stack = square
        scale = size / side
    elif geometry == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        stack = stack[..., top:top + side, left:left + side]
        scale = size / side
    elif geometry == "stretch":
        scale = float(np.sqrt(size * size / (h * w)))
    else:
        raise BlindspotError(f"`geometry` must be pad, crop or stretch; got {geometry!r}.")
    return _resize(stack, size, labels=labels), float(scale)


def _resize(images: np.ndarray, size: int, *, labels: bool = False) -> np.ndarray:
    """Resize the last two axes to ``size`` × ``size`` (a copy, also when the size is already right).

    Intensities: antialiased bilinear interpolation (``torch.nn.functional.interpolate(...,
    antialias=True)``: non-negative weights, so values stay in the input range), float32. For
    images with a zero background the foreground mask ``x > 0`` is resized with the same kernel
    and pixels less than half covered by it are set to 0, so the outline follows the anatomy
    instead of growing a faint ring of near-zero "foreground". Labels: nearest neighbour, bool.
    """
    import torch
    import torch.nn.functional as F
    from skimage.transform import resize as sk_resize

    stack = np.asarray(images)
    if stack.shape[-2:] == (size, size):
        return stack.astype(bool if labels else np.float32, copy=True)
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
    from skimage.exposure import equalize_hist

    stack = np.asarray(images)
    flat = stack.reshape(-1, *stack.shape[-2:])
    out = np.zeros(flat.shape, np.float32)
    for k, image in enumerate(flat):
        mask = image > 0
        if mask.any():
            out[k] = np.where(mask, equalize_hist(image, nbins=nbins, mask=mask), 0)
    return out.reshape(stack.shape)


def foreground_mask(images: np.ndarray) -> np.ndarray:
    """Foreground (brain) mask of each 2-D image: pixels > 0, holes filled per image.

    Filling holes keeps dark lesions or ventricles (value 0 inside the brain) inside the mask.
    """
    from scipy.ndimage import binary_fill_holes, generate_binary_structure

    mask = np.asarray(images) > 0
    structure = generate_binary_structure(2, 1).reshape((1,) * (mask.ndim - 2) + (3, 3))
    return binary_fill_holes(mask, structure=structure)


def finish(images: np.ndarray, preparation: Preparation) -> tuple[np.ndarray, np.ndarray]:
    """The last two steps on a stack of geometry-fitted images: equalisation, then brain masks."""
    images = np.asarray(images, dtype=np.float32)
    if preparation.equalize:
        images = equalize_histogram(images)
    return images, foreground_mask(images)

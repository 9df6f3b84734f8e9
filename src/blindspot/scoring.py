"""Anomaly maps from an image and its reconstruction, post-processing, and image-level scores.

Arrays are 2D images ``(H, W)``, stacks of images ``(N, H, W)`` or volumes ``(D, H, W)``. Spatial
operations act on the last ``dims`` axes (2: each image or slice on its own; 3: a whole volume) and
leading axes are independent, so a stack of 2D images is filtered in one vectorised call. The
neighbourhood of erosion and connected components is face connectivity (4 in 2D, 6 in 3D).

The post-processing pipeline of :func:`postprocess` runs in a fixed, documented order:
positive residual → median filter → multiplication by the (eroded) brain mask. Removing small
connected components acts on a thresholded map (:func:`remove_small_components`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from blindspot.errors import BlindspotError

__all__ = [
    "IMAGE_SCORES",
    "RESIDUALS",
    "erode_mask",
    "image_scores",
    "median_filter",
    "postprocess",
    "remove_small_components",
    "residual_map",
]

#: Per-pixel residual kinds: "l1" |x − x̂|, "l2" (x − x̂)², "signed" x − x̂.
RESIDUALS = ("l1", "l2", "signed")
#: Image-level scores of a map: mean, max, mean inside the brain mask, mean of the top k %.
IMAGE_SCORES = ("mean", "max", "mask-mean", "top-k")


def residual_map(images, reconstructions, *, kind: str = "l1", positive: bool = False) -> np.ndarray:
    """The per-pixel anomaly map of an image and its reconstruction.

    Parameters
    ----------
    images, reconstructions : array-like, same shape
        x and x̂.
    kind : {"l1", "l2", "signed"}
        ``|x − x̂|`` (the L1 loss map), ``(x − x̂)²`` (the MSE loss map), or ``x − x̂``.
    positive : bool
        Keep only positive residuals, r = max(x − x̂, 0), before applying ``kind``: only pixels
        brighter than their reconstruction can be anomalous (hyperintense lesions such as
        tumours in FLAIR).

    Returns
    -------
    ndarray, same shape, float32 (or float64 if an input is float64).

    Examples
    --------
    >>> residual_map([0.5, 0.2], [0.3, 0.4]).round(3).tolist()
    [0.2, 0.2]
    >>> residual_map([0.5, 0.2], [0.3, 0.4], positive=True).round(3).tolist()
    [0.2, 0.0]
    """
    if kind not in RESIDUALS:
        raise BlindspotError(f"residual kind must be one of {', '.join(RESIDUALS)}; got '{kind}'.")
    x, x_hat = np.asarray(images), np.asarray(reconstructions)
    if x.shape != x_hat.shape:
        raise BlindspotError(f"images and reconstructions must have the same shape; got {x.shape} and {x_hat.shape}.")
    dtype = np.result_type(x.dtype, x_hat.dtype, np.float32)
    r = x.astype(dtype, copy=False) - x_hat.astype(dtype, copy=False)
    if positive:
        np.maximum(r, 0, out=r)
    if kind == "l1":
        np.abs(r, out=r)
    elif kind == "l2":
        np.square(r, out=r)
    return r


def _check_dims(array: np.ndarray, dims: int, what: str) -> None:
    if dims not in (2, 3):
        raise BlindspotError(f"{what}: dims must be 2 or 3; got {dims}.")
    if array.ndim < dims:
        raise BlindspotError(f"{what}: a {dims}-D operation needs arrays with at least {dims} axes; got shape {array.shape}.")


def _structure(ndim: int, dims: int) -> np.ndarray:
    """Face-connectivity structuring element over the last ``dims`` of ``ndim`` axes only."""
    inner = ndimage.generate_binary_structure(dims, 1)
    structure = np.zeros((3,) * ndim, bool)
    structure[(1,) * (ndim - dims)] = inner  # only the central plane along leading axes: no connection across them
    return structure


def median_filter(maps, size: int, *, dims: int = 2) -> np.ndarray:
    """Median filter of window ``size`` along the last ``dims`` axes (size 5, dims 3 = 5×5×5).

    Borders are handled by reflection (scipy's default). ``size`` <= 1 returns the input unchanged.
    """
    maps = np.asarray(maps)
    if size <= 1:
        return maps
    _check_dims(maps, dims, "median filter")
    window = (1,) * (maps.ndim - dims) + (int(size),) * dims
    return ndimage.median_filter(maps, size=window)


def erode_mask(mask, iterations: int, *, dims: int = 2) -> np.ndarray:
    """Binary erosion of a brain mask by ``iterations`` steps of face connectivity.

    Pixels outside the array count as background, so the mask also shrinks from the border.
    ``iterations = 0`` returns the mask as bool.
    """
    mask = np.asarray(mask, dtype=bool)
    if iterations < 0:
        raise BlindspotError(f"mask erosion must be >= 0 iterations; got {iterations}.")
    if iterations == 0:
        return mask
    _check_dims(mask, dims, "mask erosion")
    return ndimage.binary_erosion(mask, structure=_structure(mask.ndim, dims), iterations=int(iterations))


def postprocess(
    maps,
    *,
    masks=None,
    positive: bool = False,
    median_size: int = 0,
    median_dims: int = 2,
    mask_erosion: int | None = None,
    dims: int = 2,
) -> np.ndarray:
    """Post-process anomaly maps: positive part → median filter → × (eroded) brain mask.

    Parameters
    ----------
    maps : array-like, (H, W), (N, H, W) or (D, H, W)
    masks : array-like of bool, same shape, optional
        Brain masks; required when ``mask_erosion`` is not None.
    positive : bool
        Clip negative values to 0 (for signed residual maps x − x̂: keep x > x̂ only).
    median_size, median_dims : int
        Median filter window (<= 1: off) and the number of trailing axes it spans (2 or 3).
    mask_erosion : int or None
        None: no masking; k >= 0: multiply by the brain mask eroded by k iterations (0 = as is).
    dims : int
        Trailing axes spanned by the erosion (2 or 3).
    """
    out = np.array(maps, copy=True)
    if out.dtype.kind != "f":
        out = out.astype(np.float32)
    if positive:
        np.maximum(out, 0, out=out)
    out = median_filter(out, median_size, dims=median_dims)
    if mask_erosion is not None:
        if masks is None:
            raise BlindspotError("mask erosion needs brain masks; none were given (pass --masks or use images with a zero background).")
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != out.shape:
            raise BlindspotError(f"brain masks must have the shape of the maps; got {masks.shape} and {out.shape}.")
        out = np.where(erode_mask(masks, mask_erosion, dims=dims), out, out.dtype.type(0))
    return out


def remove_small_components(prediction, min_size: int, *, dims: int = 2) -> np.ndarray:
    """Drop connected components (face connectivity) with fewer than ``min_size`` pixels.

    One labelling call for the whole array; components never connect across the leading axes.
    ``min_size`` <= 1 returns the prediction unchanged (as bool).
    """
    prediction = np.asarray(prediction, dtype=bool)
    if min_size <= 1 or not prediction.any():
        return prediction
    _check_dims(prediction, dims, "connected components")
    labels, n = ndimage.label(prediction, structure=_structure(prediction.ndim, dims))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def image_scores(maps, kind: str = "mean", *, masks=None, top_percent: float = 1.0) -> np.ndarray:
    """One score per image of a stack ``(N, ...)``: higher = more anomalous.

    Parameters
    ----------
    maps : array-like, shape (N, ...)
    kind : {"mean", "max", "mask-mean", "top-k"}
        Mean of the map; its maximum; its mean inside the brain mask (0 for an empty mask); the mean
        of its ``top_percent`` % largest values (at least one pixel: ceil(top_percent/100 · n)).
    masks : array-like of bool, shape (N, ...), optional
        Brain masks, required by "mask-mean".
    top_percent : float in (0, 100]

    Examples
    --------
    >>> image_scores([[0, 1, 2, 3]], "top-k", top_percent=50).tolist()
    [2.5]
    """
    maps = np.asarray(maps)
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    if kind == "mean":
        return flat.mean(axis=1)
    if kind == "max":
        return flat.max(axis=1)
    if kind == "mask-mean":
        if masks is None:
            raise BlindspotError("image score 'mask-mean' needs brain masks; none were given (pass --masks or use images with a zero background).")
        inside = np.asarray(masks, dtype=bool).reshape(flat.shape)
        count = inside.sum(axis=1)
        return np.where(inside, flat, 0).sum(axis=1) / np.maximum(count, 1)
    if kind == "top-k":
        if not 0 < top_percent <= 100:
            raise BlindspotError(f"top-k image score: the percentage must be in (0, 100]; got {top_percent}.")
        k = max(1, int(np.ceil(top_percent / 100 * flat.shape[1])))
        return np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k:].mean(axis=1)
    raise BlindspotError(f"image score must be one of {', '.join(IMAGE_SCORES)}; got '{kind}'.")

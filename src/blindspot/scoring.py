"""Anomaly maps from an image and its reconstruction, post-processing, and image-level scores.

Arrays are 2D images ``(H, W)``, stacks of images ``(N, H, W)`` or volumes ``(D, H, W)``. Spatial
operations act on the last ``dims`` axes (2: each image or slice on its own; 3: a whole volume) and
leading axes are independent, so a stack of 2D images is filtered in one vectorised call. The
neighbourhood of erosion and connected components is face connectivity (4 in 2D, 6 in 3D).

The post-processing pipeline of :func:`postprocess` runs in a fixed, documented order:
positive residual → median filter → multiplication by the (eroded) brain mask. Removing small
connected components acts on a thresholded map (:func:`remove_small_components`).

The scoring functions of ``blindspot audit`` (``l1``, ``positive``, ``negative``, ``ssim``,
``rarity``, ``image``, ``zscore``) are one registry behind :func:`score_map` (section at the end).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from blindspot.baselines import ZScore
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
            raise BlindspotError("mask erosion needs brain masks; none were given (give `masks`, or images with a zero background).")
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
            raise BlindspotError("image score 'mask-mean' needs brain masks; none were given (give `masks`, or images with a zero background).")
        inside = np.asarray(masks, dtype=bool).reshape(flat.shape)
        count = inside.sum(axis=1)
        return np.where(inside, flat, 0).sum(axis=1) / np.maximum(count, 1)
    if kind == "top-k":
        if not 0 < top_percent <= 100:
            raise BlindspotError(f"top-k image score: the percentage must be in (0, 100]; got {top_percent}.")
        k = max(1, int(np.ceil(top_percent / 100 * flat.shape[1])))
        return np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k:].mean(axis=1)
    raise BlindspotError(f"image score must be one of {', '.join(IMAGE_SCORES)}; got '{kind}'.")


# --------------------------------------------------------------------------------------------
# scoring functions of the audit: one pixel map per (image, reconstruction), higher = more anomalous
#
# Each takes images x and reconstructions x̂ of the same shape ``(..., H, W)`` in [0, 1] units
# (a single image or a stack) and the statistics of healthy images where it needs them
# (:class:`HealthyStats`); :func:`score_map` dispatches by name. Every map but ``ssim`` is pixelwise
# (a pixel's score depends on that pixel only); ``ssim``'s depends on the 11 × 11 window around it
# (:data:`SSIM_RADIUS`).

__all__ += ["SCORES", "SSIM_RADIUS", "HealthyStats", "IntensityPrior", "score_description", "score_map", "score_radius", "ssim_index_map",
            "uses_reconstruction"]

#: The audit's scoring functions, in the order results store them.
SCORES = ("l1", "positive", "negative", "ssim", "rarity", "image", "zscore")
#: Gaussian σ, truncation and the resulting window radius of ``ssim`` (skimage's ``gaussian_weights=True``).
SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # 5: an 11 × 11 window


def _float_type(dtype: np.dtype) -> type:
    """skimage's ``_supported_float_type``: float16 and float32 compute in float32, everything else in float64."""
    return np.float32 if np.dtype(dtype) in (np.float16, np.float32) else np.float64


def ssim_index_map(images, reconstructions, *, data_range: float = 1.0) -> np.ndarray:
    """The local SSIM index of each pixel, of each image of a stack ``(..., H, W)``.

    The semantics (and the floating-point operations, in the same order) of
    ``skimage.metrics.structural_similarity(x, y, full=True, gaussian_weights=True, sigma=1.5,
    data_range=data_range)[1]`` for every 2-D image: Gaussian-weighted local means, variances and
    covariance (σ = 1.5, truncated at 3.5 σ: an 11 × 11 window, borders reflected), the sample
    covariance factor 121/120, K1 = 0.01, K2 = 0.03. Leading axes are independent images, filtered
    in one call. Computed in float32 for float16/float32 ``images``, else float64 (as skimage, which
    picks the type from its first image).

    Returns
    -------
    ndarray, shape of ``images``: 1 where the images agree locally, lower where they differ.

    Examples
    --------
    >>> x = np.linspace(0, 1, 144).reshape(12, 12)
    >>> float(ssim_index_map(x, x).min())
    1.0
    """
    x, y = np.asarray(images), np.asarray(reconstructions)
    if x.shape != y.shape or x.ndim < 2:
        raise BlindspotError(f"ssim: images and reconstructions must have one shape (..., H, W); got {x.shape} and {y.shape}.")
    if min(x.shape[-2:]) < 2 * SSIM_RADIUS + 1:
        raise BlindspotError(f"ssim: images must be at least {2 * SSIM_RADIUS + 1} × {2 * SSIM_RADIUS + 1} (the window); "
                             f"got {x.shape[-2]} × {x.shape[-1]}.")
    dtype = _float_type(x.dtype)
    x, y = x.astype(dtype, copy=False), y.astype(dtype, copy=False)
    sigma = (0.0,) * (x.ndim - 2) + (SSIM_SIGMA, SSIM_SIGMA)  # σ 0: that axis is not filtered at all

    def weighted(a):
        return ndimage.gaussian_filter(a, sigma, mode="reflect", truncate=SSIM_TRUNCATE)

    n_window = (2 * SSIM_RADIUS + 1) ** 2
    cov_norm = n_window / (n_window - 1)
    ux, uy = weighted(x), weighted(y)
    uxx, uyy, uxy = weighted(x * x), weighted(y * y), weighted(x * y)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    a1, a2, b1, b2 = 2 * ux * uy + c1, 2 * vxy + c2, ux**2 + uy**2 + c1, vx + vy + c2
    return (a1 * a2) / (b1 * b2)


@dataclass(frozen=True)
class IntensityPrior:
    """A smoothed histogram p̂ of healthy foreground intensities, the estimator behind ``rarity``.

    Estimator: the foreground pixels (x > 0) of healthy images are counted in ``bins`` equal bins
    over [0, 1] (a value of exactly 1 goes to the last bin); the counts are smoothed with a
    Gaussian of ``smoothing`` bins (borders: nearest value) and normalised to probabilities; the
    result is mixed with the uniform distribution, p̂ = (1 − ``floor``) · p_smooth + ``floor`` / bins,
    so that an intensity never seen in healthy tissue has a finite weight:
    −log p̂ ≤ log(bins / ``floor``). The weight of a value x is −log p̂ of its bin.

    Attributes
    ----------
    probability : ndarray of float64, shape (bins,)
        p̂ of each bin; sums to 1.
    n_pixels : int
        Foreground pixels counted.
    bins, smoothing, floor
        The estimator's parameters (defaults 100 bins of width 0.01, σ = 1 bin, floor 0.01).
    """

    probability: np.ndarray
    n_pixels: int
    bins: int = 100
    smoothing: float = 1.0
    floor: float = 0.01

    @classmethod
    def fit(cls, images, *, bins: int = 100, smoothing: float = 1.0, floor: float = 0.01) -> IntensityPrior:
        """Fit p̂ to the foreground of healthy ``images`` (any shape, values in [0, 1]).

        >>> prior = IntensityPrior.fit(np.array([[0.0, 0.5, 0.5, 0.52]]), bins=10, smoothing=0)
        >>> prior.weights(np.array([0.5, 0.95])).astype(float).round(3).tolist()  # common vs. never seen
        [0.009, 6.908]
        """
        if not (isinstance(bins, (int, np.integer)) and bins >= 2):
            raise BlindspotError(f"rarity: `bins` must be an integer >= 2; got {bins!r}.")
        if not smoothing >= 0:
            raise BlindspotError(f"rarity: `smoothing` must be >= 0 (bins); got {smoothing!r}.")
        if not 0 < floor < 1:
            raise BlindspotError(f"rarity: `floor` must lie in (0, 1); got {floor!r}.")
        values = np.asarray(images)
        values = values[values > 0]
        if values.size == 0:
            raise BlindspotError("rarity: the healthy images have no foreground pixel (> 0) to estimate intensities from.")
        counts = np.bincount(np.minimum((values * bins).astype(np.int64), bins - 1), minlength=bins).astype(np.float64)
        if smoothing > 0:
            counts = ndimage.gaussian_filter1d(counts, smoothing, mode="nearest")
        probability = (1 - floor) * counts / counts.sum() + floor / bins
        return cls(probability, int(values.size), int(bins), float(smoothing), float(floor))

    def weights(self, values) -> np.ndarray:
        """−log p̂ of the bin of each value (float32, shape of ``values``)."""
        values = np.asarray(values)
        index = np.clip((values * self.bins).astype(np.int64), 0, self.bins - 1)
        return (-np.log(self.probability)).astype(np.float32)[index]

    def record(self) -> dict:
        return {"estimator": "smoothed foreground histogram", "bins": self.bins, "smoothing_bins": self.smoothing,
                "floor": self.floor, "n_pixels": self.n_pixels}


@dataclass(frozen=True)
class HealthyStats:
    """What the scoring functions need from healthy images: ``rarity``'s p̂ and ``zscore``'s per-pixel μ, σ.

    Either may be None when the scores that need it are not computed.
    """

    prior: IntensityPrior | None = None
    zscore: ZScore | None = None

    @classmethod
    def fit(cls, images: np.ndarray, *, scores=SCORES) -> HealthyStats:
        """Fit what ``scores`` need to healthy images ``(N, H, W)`` (zscore needs at least two)."""
        return cls(IntensityPrior.fit(images) if "rarity" in scores else None,
                   ZScore.fit(images) if "zscore" in scores else None)

    def crop(self, rows: slice, cols: slice) -> HealthyStats:
        """The statistics of a window ``[rows, cols]`` of the images (the z-score's μ and σ cropped)."""
        if self.zscore is None:
            return self
        z = self.zscore
        return replace(self, zscore=replace(z, mean=z.mean[rows, cols], std=z.std[rows, cols]))

    def record(self) -> dict:
        out = {}
        if self.prior is not None:
            out["rarity"] = self.prior.record()
        if self.zscore is not None:
            out["zscore"] = {"n_images": self.zscore.n_images, "min_std": self.zscore.min_std, "std": "population, per pixel"}
        return out


def _score_l1(x, x_hat, stats):
    return np.abs(x - x_hat)


def _score_positive(x, x_hat, stats):
    return np.maximum(x - x_hat, 0)


def _score_negative(x, x_hat, stats):
    return np.maximum(x_hat - x, 0)


def _score_ssim(x, x_hat, stats):
    s = ssim_index_map(x, x_hat)
    return 1 - s


def _score_rarity(x, x_hat, stats):
    if stats is None or stats.prior is None:
        raise BlindspotError("the rarity score needs healthy intensity statistics (HealthyStats with a prior).")
    return np.abs(x - x_hat) * stats.prior.weights(x)


def _score_image(x, x_hat, stats):
    return np.array(x, copy=True)


def _score_zscore(x, x_hat, stats):
    if stats is None or stats.zscore is None:
        raise BlindspotError("the zscore score needs healthy training images (HealthyStats with a z-score).")
    return np.abs(stats.zscore.maps(x))


#: name -> (function, whether it reads the reconstruction, window radius of its map, one line of documentation).
_SCORING = {
    "l1": (_score_l1, True, 0, "|x − x̂|, the residual"),
    "positive": (_score_positive, True, 0, "max(x − x̂, 0): only brighter than the reconstruction"),
    "negative": (_score_negative, True, 0, "max(x̂ − x, 0): only darker than the reconstruction"),
    "ssim": (_score_ssim, True, SSIM_RADIUS, "1 − the local SSIM index (11 × 11 Gaussian window, σ 1.5)"),
    "rarity": (_score_rarity, True, 0, "|x − x̂| · (−log p̂(x)), p̂ the healthy intensity histogram"),
    "image": (_score_image, False, 0, "the image itself (as prepared, equalised with --equalize)"),
    "zscore": (_score_zscore, False, 0, "|x − μ| / max(σ, 0.01) against healthy images, per pixel"),
}


def _check_score(name: str) -> tuple:
    if name not in _SCORING:
        raise BlindspotError(f"`scores`: unknown scoring function '{name}'; choose from {', '.join(SCORES)}.")
    return _SCORING[name]


def uses_reconstruction(name: str) -> bool:
    """Whether the score reads the reconstruction (``image`` and ``zscore`` do not)."""
    return _check_score(name)[1]


def score_radius(name: str) -> int:
    """How far (pixels, per axis) a change of one pixel moves the score map: 0 for pixelwise scores."""
    return _check_score(name)[2]


def score_description(name: str) -> str:
    """One line saying what the score is."""
    return _check_score(name)[3]


def score_map(name: str, images, reconstructions=None, *, stats: HealthyStats | None = None) -> np.ndarray:
    """The anomaly map of scoring function ``name`` (higher = more anomalous), shape of ``images``.

    ============  =====================================================================================
    ``l1``        ``|x − x̂|``, the residual
    ``positive``  ``max(x − x̂, 0)`` (hyperintense anomalies)
    ``negative``  ``max(x̂ − x, 0)`` (hypointense anomalies)
    ``ssim``      ``1 −`` :func:`ssim_index_map` (skimage's local SSIM, Gaussian window σ = 1.5, data range 1)
    ``rarity``    ``|x − x̂| · (−log p̂(x))``, p̂ the healthy intensity histogram (:class:`IntensityPrior`)
    ``image``     ``x`` itself (training-free; equalised when the images are prepared with ``equalize``)
    ``zscore``    ``|x − μ| / max(σ, 0.01)``, μ and σ per pixel of healthy images (:class:`blindspot.baselines.ZScore`)
    ============  =====================================================================================

    Parameters
    ----------
    name : str
        One of :data:`SCORES`.
    images, reconstructions : array-like, shape (..., H, W)
        x (possibly anomalous) and x̂ in [0, 1] units; ``reconstructions`` may be None for
        ``image`` and ``zscore``.
    stats : HealthyStats, optional
        Required by ``rarity`` and ``zscore``.

    Returns
    -------
    ndarray, float32 for float32 inputs (``zscore``: float32 always).

    Examples
    --------
    >>> x, x_hat = np.array([[0.5, 0.2]], np.float32), np.array([[0.3, 0.4]], np.float32)
    >>> score_map("positive", x, x_hat).astype(float).round(3).tolist()
    [[0.2, 0.0]]
    >>> score_map("negative", x, x_hat).astype(float).round(3).tolist()
    [[0.0, 0.2]]
    """
    function, needs_reconstruction, _, _ = _check_score(name)
    x = np.asarray(images)
    x_hat = None
    if needs_reconstruction:
        if reconstructions is None:
            raise BlindspotError(f"the {name} score needs reconstructions.")
        x_hat = np.asarray(reconstructions)
        if x_hat.shape != x.shape:
            raise BlindspotError(f"images and reconstructions must have the same shape; got {x.shape} and {x_hat.shape}.")
    return function(x, x_hat, stats)

"""Training-free baselines that give anomaly maps, to evaluate like any model.

Both are strong on brain MRI (``../shared/docs/protocols.md`` §3):

* ``image``: the image itself is the anomaly map (hyperintense lesions are bright in FLAIR). With
  histogram equalisation of the images (``--equalize``) this is the equalised-FLAIR baseline that
  reached a best Dice of 0.738 on BraTS, above most autoencoders.
* ``zscore``: the per-pixel z-score ``(x − μ) / σ`` against the mean μ and standard deviation σ of
  healthy training slices of the same size (meaningful when images are registered to one atlas).
  σ is floored at ``min_std`` so that pixels with no variation in training (background) do not
  divide by zero.

Maps are *signed* scores (high = anomalous); the evaluation then takes their absolute value, or
their positive part with the positive-residual option, like a residual x − x̂.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blindspot.errors import BlindspotError

__all__ = ["BASELINES", "ZScore", "baseline_maps", "image_baseline"]

#: Baseline names accepted by :func:`baseline_maps` and ``blindspot evaluate --baseline``.
BASELINES = ("image", "zscore")


def image_baseline(images: np.ndarray) -> np.ndarray:
    """The images themselves as anomaly maps (float32 copy)."""
    return np.array(images, dtype=np.float32, copy=True)


@dataclass(frozen=True)
class ZScore:
    """Per-pixel mean and standard deviation of healthy training images ``(H, W)``.

    Attributes
    ----------
    mean, std : ndarray of float64, shape (H, W)
    n_images : int
    min_std : float
        Floor of σ used by :meth:`maps`.
    """

    mean: np.ndarray
    std: np.ndarray
    n_images: int
    min_std: float = 0.01

    @classmethod
    def fit(cls, images: np.ndarray, *, min_std: float = 0.01) -> "ZScore":
        """Statistics of a stack ``(N, H, W)`` of healthy images (population σ, float64)."""
        images = np.asarray(images, dtype=np.float64)
        if images.ndim != 3 or len(images) < 2:
            raise BlindspotError(f"the z-score baseline needs at least 2 healthy training images of shape (N, H, W); got shape {images.shape}.")
        if not min_std > 0:
            raise BlindspotError(f"the z-score σ floor must be > 0; got {min_std}.")
        return cls(images.mean(axis=0), images.std(axis=0), len(images), float(min_std))

    def maps(self, images: np.ndarray) -> np.ndarray:
        """Signed z-scores ``(x − μ) / max(σ, min_std)`` of images ``(..., H, W)`` (float32)."""
        images = np.asarray(images)
        if images.shape[-2:] != self.mean.shape:
            raise BlindspotError(f"the z-score baseline was fitted on images of size {self.mean.shape} but got {images.shape[-2:]}; prepare the training and test images at one `size`.")
        return ((images - self.mean) / np.maximum(self.std, self.min_std)).astype(np.float32)


def baseline_maps(name: str, images: np.ndarray, *, train_images: np.ndarray | None = None) -> np.ndarray:
    """Signed anomaly maps of a baseline for images ``(..., H, W)``.

    Parameters
    ----------
    name : {"image", "zscore"}
    images : ndarray
    train_images : ndarray, shape (N, H, W), optional
        Healthy training images, required by "zscore".
    """
    if name == "image":
        return image_baseline(images)
    if name == "zscore":
        if train_images is None:
            raise BlindspotError("the zscore baseline needs healthy training images; give `train_data` (or use a layout with a train split).")
        return ZScore.fit(train_images).maps(images)
    raise BlindspotError(f"`baseline` must be one of {', '.join(BASELINES)}; got '{name}'.")

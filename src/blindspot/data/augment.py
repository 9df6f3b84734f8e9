"""Random augmentation of normal training images, done in batches on tensors.

The embedded MNI152 template is a single brain, so training on it needs synthetic inter-subject
variation: every training batch is warped and re-contrasted image by image with parameters drawn
from one ``torch.Generator`` (so a batch is a pure function of the generator's seed). One
``grid_sample`` call applies the geometry of the whole batch; everything else is element-wise.

Steps, in order (defaults of :class:`Augmentation`):

1. **geometry** — a small affine map per image (rotation ±10°, isotropic scale ×[1/1.1, 1.1],
   translation ±5 % of the field of view, left-right flip with probability 1/2) plus an **elastic**
   deformation: a random displacement field drawn on a 5 × 5 grid of control points (std 2 % of the
   field of view per axis) and upsampled bicubically to the image, which makes it smooth. Both
   are applied together with bilinear interpolation and zero padding.
2. **gamma** — ``x ** g`` with ``log g`` uniform in [-0.3, 0.3] per image.
3. **bias field** — multiplication by a smooth positive field: ``exp(b)`` with ``b`` Gaussian (std
   0.1) on a 3 × 3 grid of control points, upsampled bicubically.
4. **noise** — additive Gaussian noise with a standard deviation uniform in [0, 0.02] per image.

The foreground after the warp (``warped > 0``) is kept: foreground pixels are clipped to
``[FOREGROUND_FLOOR, 1]`` so that they stay > 0, and the background is set to exactly 0, so the
protocol's brain mask ``x > 0`` stays valid for augmented images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from blindspot.errors import BlindspotError

__all__ = ["FOREGROUND_FLOOR", "Augmentation", "augment"]

#: Smallest value a foreground pixel can take after augmentation (it must stay > 0).
FOREGROUND_FLOOR = 1e-3


@dataclass(frozen=True)
class Augmentation:
    """Magnitudes of the random augmentation (0 switches a step off). See the module docstring."""

    rotation: float = 10.0  # degrees, uniform in [-rotation, rotation]
    scale: float = 0.1  # log-uniform zoom in [1 / (1 + scale), 1 + scale]
    translation: float = 0.05  # fraction of the field of view, uniform per axis
    flip: bool = True  # left-right flip with probability 1/2
    elastic: float = 0.02  # std of the control-point displacements, fraction of the field of view
    elastic_points: int = 5  # control points per axis of the elastic field
    gamma: float = 0.3  # log gamma uniform in [-gamma, gamma]
    bias: float = 0.1  # std of the log bias field at its control points
    bias_points: int = 3  # control points per axis of the bias field
    noise: float = 0.02  # noise std uniform in [0, noise]

    def __post_init__(self) -> None:
        for name in ("rotation", "scale", "translation", "elastic", "gamma", "bias", "noise"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise BlindspotError(f"Augmentation.{name} must be a finite number >= 0; got {value!r}.")
        for name in ("elastic_points", "bias_points"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 2):
                raise BlindspotError(f"Augmentation.{name} must be an integer >= 2; got {value!r}.")

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return augment(images, generator, self)


@lru_cache(maxsize=16)
def _upsampler(points: int, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The (size, points) matrix of bicubic upsampling (``align_corners=True``) along one axis."""
    basis = torch.eye(points, dtype=torch.float64).view(points, 1, points, 1).expand(points, 1, points, 2)
    weights = F.interpolate(basis, size=(size, 2), mode="bicubic", align_corners=True)[:, 0, :, 0]  # (points, size)
    return weights.T.contiguous().to(device=device, dtype=dtype)


def _upsample(coarse: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic upsampling (``align_corners=True``) of (B, C, P, P) to (B, C, H, W).

    Separable, so two small matrix products: equal to ``F.interpolate(coarse, size, mode="bicubic",
    align_corners=True)`` and much cheaper on the CPU for these shapes.
    """
    points = coarse.shape[-1]
    rows = _upsampler(points, size[0], coarse.device, coarse.dtype)
    cols = _upsampler(points, size[1], coarse.device, coarse.dtype)
    return rows @ coarse @ cols.T


@lru_cache(maxsize=16)
def _pixel_centres(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """x (1, W) and y (H, 1) of the pixel centres in [-1, 1] units (``align_corners=False``)."""
    xs = ((2 * torch.arange(w, dtype=torch.float64) + 1) / w - 1).to(device=device, dtype=dtype)
    ys = ((2 * torch.arange(h, dtype=torch.float64) + 1) / h - 1).to(device=device, dtype=dtype)
    return xs.view(1, w), ys.view(h, 1)


def augment(images: Tensor, generator: torch.Generator, params: Augmentation = Augmentation()) -> Tensor:
    """Randomly warp and re-contrast a batch of normal images (see the module docstring).

    Parameters
    ----------
    images : Tensor, shape (B, 1, H, W), float
        Values in [0, 1], background exactly 0 (foreground ``images > 0``).
    generator : torch.Generator
        Source of every random draw, on the device of ``images``; the same generator state gives
        the same batch.
    params : Augmentation
        Magnitudes of each step.

    Returns
    -------
    Tensor, shape (B, 1, H, W)
        A new tensor in [0, 1]: foreground (the warped ``images > 0``) in ``[FOREGROUND_FLOOR, 1]``,
        background exactly 0. The input is left unchanged.

    Examples
    --------
    >>> x = torch.zeros(2, 1, 16, 16); x[:, :, 4:12, 4:12] = 0.5
    >>> y = augment(x, torch.Generator().manual_seed(0))
    >>> y.shape, bool(((y == 0) | (y >= FOREGROUND_FLOOR)).all()), bool(y.max() <= 1)
    (torch.Size([2, 1, 16, 16]), True, True)
    """
    if images.dim() != 4 or images.shape[1] != 1:
        raise BlindspotError(f"augment: images must have shape (B, 1, H, W); got {tuple(images.shape)}.")
    b, _, h, w = images.shape
    like = {"generator": generator, "device": images.device, "dtype": images.dtype}
    u = 2 * torch.rand((b, 7), **like) - 1  # every per-image scalar in one draw, uniform in [-1, 1]

    # 1. geometry: theta maps output coordinates (x, y, 1) in [-1, 1] units to input coordinates
    # (rotate and zoom, flip x, shift), as F.affine_grid(align_corners=False), plus the elastic field.
    angle = u[:, 0] * math.radians(params.rotation)
    zoom = torch.exp(u[:, 1] * math.log1p(params.scale))
    flip = torch.where(u[:, 2] < 0, -1.0, 1.0) if params.flip else torch.ones_like(angle)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    shift = u[:, 3:5] * (2 * params.translation)  # a fraction of the field of view is twice that in [-1, 1] units
    theta = torch.stack([cos * flip, -sin, shift[:, 0], sin * flip, cos, shift[:, 1]], dim=1).view(b, 6, 1, 1)
    if params.elastic > 0:
        coarse = torch.randn((b, 2, params.elastic_points, params.elastic_points), **like) * (2 * params.elastic)
        dx, dy = _upsample(coarse, (h, w)).unbind(1)  # (B, H, W) each
    else:
        dx, dy = torch.zeros((2, b, h, w), device=images.device, dtype=images.dtype)
    xs, ys = _pixel_centres(h, w, images.device, images.dtype)
    grid_x = dx.add_(xs * theta[:, 0]).add_(ys * theta[:, 1]).add_(theta[:, 2])
    grid_y = dy.add_(xs * theta[:, 3]).add_(ys * theta[:, 4]).add_(theta[:, 5])
    grid = torch.stack([grid_x, grid_y], dim=-1)  # (B, H, W, 2)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    foreground = x > 0

    # 2. gamma, 3. bias field (exp of a smooth field, upsampled: smooth and positive), 4. noise.
    if params.gamma > 0:
        x = x.pow_(torch.exp(u[:, 5] * params.gamma).view(b, 1, 1, 1))
    if params.bias > 0:
        coarse = torch.exp(torch.randn((b, 1, params.bias_points, params.bias_points), **like) * params.bias)
        x = x.mul_(_upsample(coarse, (h, w)))
    if params.noise > 0:
        sigma = (u[:, 6] + 1) * (params.noise / 2)
        x = x.addcmul_(torch.randn(x.shape, **like), sigma.view(b, 1, 1, 1))
    return x.clamp_(FOREGROUND_FLOOR, 1.0).mul_(foreground)

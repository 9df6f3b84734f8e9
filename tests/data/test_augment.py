"""Random augmentation of training batches (blindspot.data.augment): seeded, foreground-preserving."""

import math

import pytest
import torch
import torch.nn.functional as F

from blindspot.data import DataConfig, Preparation, load
from blindspot.data.augment import FOREGROUND_FLOOR, Augmentation, _upsample, augment
from blindspot.errors import BlindspotError

pytestmark = pytest.mark.usefixtures("torch_one_thread")

OFF = dict(rotation=0, scale=0, translation=0, flip=False, elastic=0, gamma=0, bias=0, noise=0)


@pytest.fixture(scope="module")
def brains():
    """Eight 64 px template slices, (8, 1, 64, 64)."""
    return torch.from_numpy(load(DataConfig(preparation=Preparation(size=64))).images[:8]).unsqueeze(1)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def test_background_stays_zero_and_foreground_positive(brains):
    before = brains.clone()
    out = augment(brains, generator(0))
    assert out.shape == brains.shape and out.dtype == brains.dtype
    assert torch.equal(brains, before)  # input untouched
    assert bool(((out == 0) | (out >= FOREGROUND_FLOOR)).all()) and float(out.max()) <= 1
    fraction_in, fraction_out = (brains > 0).float().mean((1, 2, 3)), (out > 0).float().mean((1, 2, 3))
    assert torch.allclose(fraction_out, fraction_in, rtol=0.3)  # a small warp, not a different image
    assert float((out - brains).abs().mean()) > 0.01


def test_same_seed_same_batch_other_seed_other_batch(brains):
    assert torch.equal(augment(brains, generator(3)), augment(brains, generator(3)))
    assert not torch.equal(augment(brains, generator(3)), augment(brains, generator(4)))


def test_everything_off_is_the_identity(brains):
    out = augment(brains, generator(0), Augmentation(**OFF))
    expected = torch.where(brains > 0, brains.clamp(min=FOREGROUND_FLOOR), 0)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_geometry_is_the_affine_grid_of_the_drawn_parameters(brains):
    """Without elastic and intensity steps the warp equals F.affine_grid + grid_sample of the same draws."""
    out = augment(brains, generator(7), Augmentation(**{**OFF, "rotation": 10, "scale": 0.1, "translation": 0.05, "flip": True}))
    u = 2 * torch.rand((len(brains), 7), generator=generator(7)) - 1
    angle, zoom = u[:, 0] * math.radians(10), torch.exp(u[:, 1] * math.log1p(0.1))
    flip = torch.where(u[:, 2] < 0, -1.0, 1.0)
    cos, sin, shift = torch.cos(angle) / zoom, torch.sin(angle) / zoom, u[:, 3:5] * 0.1
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    warped = F.grid_sample(brains, F.affine_grid(theta, list(brains.shape), align_corners=False), align_corners=False)
    torch.testing.assert_close(out, torch.where(warped > 0, warped.clamp(FOREGROUND_FLOOR, 1), 0), rtol=0, atol=1e-5)


def test_intensity_steps_keep_the_foreground(brains):
    out = augment(brains, generator(1), Augmentation(**{**OFF, "gamma": 0.3, "bias": 0.1, "noise": 0.02}))
    assert torch.equal(out > 0, brains > 0)
    assert float((out - brains).abs().max()) > 0.01


def test_separable_upsampling_equals_bicubic_interpolate():
    coarse = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    expected = F.interpolate(coarse, size=(40, 24), mode="bicubic", align_corners=True)
    torch.testing.assert_close(_upsample(coarse, (40, 24)), expected)


def test_smooth_elastic_field_moves_pixels_a_little(brains):
    out = augment(brains, generator(2), Augmentation(**{**OFF, "elastic": 0.02}))
    shift = abs(float((out > 0).float().mean() - (brains > 0).float().mean()))
    assert 0 < float((out - brains).abs().mean()) and shift < 0.05


def test_bad_parameters_and_shapes_are_named():
    with pytest.raises(BlindspotError, match="Augmentation.noise must be a finite number >= 0; got -1"):
        Augmentation(noise=-1)
    with pytest.raises(BlindspotError, match="Augmentation.bias_points must be an integer >= 2"):
        Augmentation(bias_points=1)
    with pytest.raises(BlindspotError, match=r"shape \(B, 1, H, W\); got \(4, 4\)"):
        augment(torch.zeros(4, 4), generator(0))

"""blindspot.data.preprocess: the one pipeline (normalise → geometry → equalise → foreground mask)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import brain_volume
from skimage.exposure import equalize_hist

from blindspot.data import DataConfig, Preparation, load
from blindspot.data.preprocess import equalize_histogram, finish, fit_geometry, foreground_mask, normalize_percentile
from blindspot.errors import BlindspotError


@pytest.fixture(scope="module")
def template():
    """The ten test slices of the embedded template, 256 × 256."""
    return load(DataConfig()).images


def ramp(h, w):
    """A strictly positive (H, W) image (no background), float32."""
    return (np.arange(1, h * w + 1, dtype=np.float32) / (h * w)).reshape(h, w)


# --- geometry ------------------------------------------------------------------------------------


def test_pad_of_a_2x4_image_to_4_is_centred():
    out, scale = fit_geometry(np.ones((1, 2, 4), np.float32), 4)
    expected = np.zeros((4, 4), np.float32)
    expected[1:3] = 1
    np.testing.assert_array_equal(out[0], expected)
    assert scale == 1.0 and out.dtype == np.float32


def test_pad_centres_an_odd_margin_and_keeps_the_values():
    image = ramp(3, 6)
    out, scale = fit_geometry(image, 6, "pad")
    assert scale == 1.0
    np.testing.assert_array_equal(out[1:4], image)  # top margin (6 - 3) // 2 = 1
    assert (out[[0, 4, 5]] == 0).all()
    tall, _ = fit_geometry(ramp(6, 3), 6, "pad")
    np.testing.assert_array_equal(tall[:, 1:4], ramp(6, 3))


@pytest.mark.parametrize(
    ("geometry", "shape", "size", "scale"),
    [
        ("pad", (3, 6), 12, 12 / 6),
        ("pad", (40, 30), 10, 10 / 40),
        ("crop", (3, 6), 12, 12 / 3),
        ("crop", (40, 30), 10, 10 / 30),
        ("stretch", (3, 6), 12, math.sqrt(12 * 12 / (3 * 6))),
        ("stretch", (40, 30), 10, math.sqrt(10 * 10 / (40 * 30))),
    ],
)
def test_geometry_shapes_and_scales(geometry, shape, size, scale):
    images = np.stack([ramp(*shape)] * 2)
    out, got = fit_geometry(images, size, geometry)
    assert out.shape == (2, size, size) and out.dtype == np.float32
    assert got == pytest.approx(scale, rel=1e-12) and isinstance(got, float)
    labels, label_scale = fit_geometry(images > 0.5, size, geometry, labels=True)
    assert labels.shape == (2, size, size) and labels.dtype == bool and label_scale == got


def test_crop_takes_the_centred_square_and_stretch_resizes_each_axis():
    image = ramp(4, 8)[None]
    cropped, _ = fit_geometry(image, 8, "crop")
    square, _ = fit_geometry(image[..., 2:6], 8, "pad")  # the centred 4 × 4 square, resized alike
    np.testing.assert_array_equal(cropped, square)
    assert fit_geometry(image, 4, "crop")[0].tolist() == image[..., 2:6].tolist()  # at its own size: the crop itself
    stretched, _ = fit_geometry(image, 6, "stretch")  # no zero pixel: plain antialiased bilinear resizing
    expected = F.interpolate(torch.from_numpy(image)[None], size=(6, 6), mode="bilinear", antialias=True, align_corners=False)
    np.testing.assert_allclose(stretched, expected[0].numpy(), atol=1e-6)


def test_size_none_keeps_the_images():
    images = ramp(3, 5)[None]
    out, scale = fit_geometry(images, None, "crop")
    assert scale == 1.0 and out.shape == (1, 3, 5)
    np.testing.assert_array_equal(out, images)


def test_resizing_keeps_background_zero_and_values_in_range(template):
    out, scale = fit_geometry(template[:3], 64)
    assert scale == 0.25 and out.shape == (3, 64, 64)
    assert out[:, 0, :].max() == 0 and out.min() == 0 and out.max() <= template[:3].max()
    disk = np.zeros((1, 40, 40), np.float32)
    yy, xx = np.mgrid[:40, :40]
    disk[0][(yy - 19.5) ** 2 + (xx - 19.5) ** 2 < 15**2] = 0.5
    small, _ = fit_geometry(disk, 13)
    assert small.max() <= 0.5 and small[small > 0].min() >= 0.25 - 1e-6  # no faint ring: at least half covered
    coverage = F.interpolate(torch.from_numpy((disk > 0).astype(np.float32))[None], size=(13, 13), mode="bilinear",
                             antialias=True, align_corners=False)[0].numpy()
    np.testing.assert_array_equal(small > 0, coverage >= 0.5)


def test_labels_are_resized_nearest_and_stay_bool():
    rng = np.random.default_rng(0)
    mask = rng.random((2, 4, 4)) > 0.5
    up, _ = fit_geometry(mask, 8, "pad", labels=True)
    assert up.dtype == bool
    np.testing.assert_array_equal(up, mask.repeat(2, axis=1).repeat(2, axis=2))
    padded, _ = fit_geometry(np.ones((6, 10), bool), 5, "pad", labels=True)
    assert padded.dtype == bool and padded[1:4].all() and not padded[[0, 4]].any()
    same, _ = fit_geometry(mask, 4, labels=True)
    assert same.dtype == bool and same is not mask
    np.testing.assert_array_equal(same, mask)


def test_geometry_errors():
    with pytest.raises(BlindspotError, match="`geometry` must be pad, crop or stretch; got 'fit'"):
        fit_geometry(np.ones((1, 4, 4), np.float32), 2, "fit")
    with pytest.raises(BlindspotError, match="`size` must be a positive integer; got 0"):
        fit_geometry(np.ones((1, 4, 4), np.float32), 0)


# --- intensities ---------------------------------------------------------------------------------


def test_normalize_percentile_keeps_background_and_foreground():
    volume = brain_volume() * 1000
    out = normalize_percentile(volume, 99)
    assert out.dtype == np.float32
    assert out.max() == 1 and ((out > 0) == (volume > 0)).all()
    assert np.isclose(np.percentile(out[out > 0], 50), np.percentile(volume[volume > 0], 50) / np.percentile(volume[volume > 0], 99))
    with pytest.raises(BlindspotError, match="'v.nii' has an empty foreground"):
        normalize_percentile(np.zeros((2, 2)), 99, name="'v.nii'")
    with pytest.raises(BlindspotError, match=r"`normalize` must be a percentile in \(0, 100\]; got 0"):
        normalize_percentile(volume, 0)


def test_equalize_matches_skimage_with_mask(template):
    out = equalize_histogram(template[:2])
    assert out.dtype == np.float32 and out.shape == (2, 256, 256)
    for image, equalized in zip(template[:2], out):
        mask = image > 0
        expected = np.where(mask, equalize_hist(image, nbins=256, mask=mask), 0).astype(np.float32)
        np.testing.assert_array_equal(equalized, expected)
        assert (equalized[~mask] == 0).all() and (equalized[mask] > 0).all()
        counts, _ = np.histogram(equalized[mask], bins=10, range=(0, 1))
        assert counts.min() > 0.5 * counts.mean()  # close to flat
    single = equalize_histogram(template[0])
    np.testing.assert_array_equal(single, out[0])  # (H, W) works too
    np.testing.assert_array_equal(equalize_histogram(np.zeros((1, 3, 3), np.float32)), np.zeros((1, 3, 3)))


def test_foreground_mask_fills_holes():
    images = np.zeros((2, 7, 7), np.float32)
    images[:, 1:6, 1:6] = 0.5
    images[0, 3, 3] = 0  # a dark hole inside the brain
    images[1, 1:6, 3] = 0  # a cut through: not a hole
    mask = foreground_mask(images)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask[0], images[1] * 0 + (np.pad(np.ones((5, 5)), 1) > 0))
    np.testing.assert_array_equal(mask[1], images[1] > 0)


def test_finish_equalises_then_masks(template):
    images, brain = finish(template[:2], Preparation(equalize=True))
    np.testing.assert_array_equal(images, equalize_histogram(template[:2]))
    np.testing.assert_array_equal(brain, foreground_mask(images))
    plain, plain_brain = finish(template[:2].astype(np.float64), Preparation())
    assert plain.dtype == np.float32
    np.testing.assert_array_equal(plain, template[:2])
    np.testing.assert_array_equal(plain_brain, foreground_mask(template[:2]))

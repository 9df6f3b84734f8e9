"""Anomaly maps and post-processing: each option does what its definition says."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from blindspot.errors import BlindspotError
from blindspot.scoring import erode_mask, image_scores, median_filter, postprocess, remove_small_components, residual_map


def test_residual_kinds_and_positive_part():
    x = np.array([[0.5, 0.2], [0.9, 0.0]], np.float32)
    x_hat = np.array([[0.3, 0.4], [0.9, 0.1]], np.float32)
    r = x - x_hat
    np.testing.assert_allclose(residual_map(x, x_hat), np.abs(r))
    np.testing.assert_allclose(residual_map(x, x_hat, kind="l2"), r**2)
    np.testing.assert_allclose(residual_map(x, x_hat, kind="signed"), r)
    positive = residual_map(x, x_hat, positive=True)
    np.testing.assert_allclose(positive, np.where(r > 0, r, 0))  # only x − x̂ > 0 survives
    assert positive.dtype == np.float32
    with pytest.raises(BlindspotError, match="residual kind"):
        residual_map(x, x_hat, kind="ssim")
    with pytest.raises(BlindspotError, match="same shape"):
        residual_map(x, x_hat[0])


def test_median_filter_2d_per_slice_and_3d_per_volume():
    rng = np.random.default_rng(0)
    volume = rng.random((6, 12, 12)).astype(np.float32)
    per_slice = median_filter(volume, 5, dims=2)
    for k in range(6):
        np.testing.assert_array_equal(per_slice[k], ndimage.median_filter(volume[k], size=5))
    np.testing.assert_array_equal(median_filter(volume, 5, dims=3), ndimage.median_filter(volume, size=5))
    assert not np.array_equal(per_slice, median_filter(volume, 5, dims=3))
    assert median_filter(volume, 1) is volume
    with pytest.raises(BlindspotError, match="at least 3 axes"):
        median_filter(volume[0], 5, dims=3)


def test_erosion_shrinks_the_mask_and_masking_zeroes_outside():
    mask = np.zeros((2, 20, 20), bool)
    mask[:, 4:16, 4:16] = True
    previous = mask
    for iterations in (1, 2, 3):
        eroded = erode_mask(mask, iterations)
        assert eroded.sum() < previous.sum() and not (eroded & ~previous).any()
        assert eroded[0].sum() == (12 - 2 * iterations) ** 2  # face connectivity on a square: one ring per step
        previous = eroded
    maps = np.ones(mask.shape, np.float32)
    out = postprocess(maps, masks=mask, mask_erosion=2)
    np.testing.assert_array_equal(out > 0, erode_mask(mask, 2))
    np.testing.assert_array_equal(postprocess(maps, masks=mask, mask_erosion=0) > 0, mask)
    np.testing.assert_array_equal(postprocess(maps), maps)  # no mask unless asked
    with pytest.raises(BlindspotError, match="needs brain masks"):
        postprocess(maps, mask_erosion=1)


def test_postprocess_order_is_positive_then_median_then_mask():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(3, 16, 16)).astype(np.float32)
    mask = np.zeros(maps.shape, bool)
    mask[:, 2:14, 2:14] = True
    expected = np.where(erode_mask(mask, 1), ndimage.median_filter(np.maximum(maps, 0), size=(1, 3, 3)), 0)
    got = postprocess(maps, masks=mask, positive=True, median_size=3, mask_erosion=1)
    np.testing.assert_array_equal(got, expected)
    assert (postprocess(maps, positive=True) >= 0).all() and (postprocess(maps) < 0).any()


def test_small_components_are_removed_per_image():
    prediction = np.zeros((2, 12, 12), bool)
    prediction[0, 1:3, 1:3] = True  # 4 pixels
    prediction[0, 6:10, 6:10] = True  # 16 pixels
    prediction[1, 1:3, 1:3] = True  # 4 pixels, same place on the next image: not connected across images
    kept = remove_small_components(prediction, 5)
    np.testing.assert_array_equal(kept[0], np.pad(np.ones((4, 4), bool), ((6, 2), (6, 2))))
    assert not kept[1].any()
    assert remove_small_components(prediction, 4).sum() == prediction.sum()
    diagonal = np.eye(4, dtype=bool)  # face connectivity: four 1-pixel components
    assert not remove_small_components(diagonal, 2).any()
    volume = np.zeros((3, 5, 5), bool)
    volume[:, 2, 2] = True  # 3 voxels connected through the slices in 3D only
    assert remove_small_components(volume, 3, dims=3).sum() == 3 and not remove_small_components(volume, 3, dims=2).any()


def test_image_scores():
    rng = np.random.default_rng(2)
    maps = rng.random((4, 10, 10))
    masks = maps > 0.3
    np.testing.assert_allclose(image_scores(maps, "mean"), maps.mean(axis=(1, 2)))
    np.testing.assert_allclose(image_scores(maps, "max"), maps.max(axis=(1, 2)))
    np.testing.assert_allclose(image_scores(maps, "mask-mean", masks=masks), [m[k].mean() for m, k in zip(maps, masks)])
    top = [np.sort(m.ravel())[-5:].mean() for m in maps]  # 5 % of 100 pixels
    np.testing.assert_allclose(image_scores(maps, "top-k", top_percent=5), top)
    np.testing.assert_allclose(image_scores(maps, "top-k", top_percent=0.001), maps.max(axis=(1, 2)))  # at least one pixel
    with pytest.raises(BlindspotError, match="needs brain masks"):
        image_scores(maps, "mask-mean")
    with pytest.raises(BlindspotError, match="image score must be"):
        image_scores(maps, "median")

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


# --------------------------------------------------------------------------------------------
# the audit's scoring functions


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ssim_index_map_is_skimages_full_map_bitwise(dtype):
    from skimage.metrics import structural_similarity

    from blindspot.scoring import ssim_index_map

    rng = np.random.default_rng(0)
    x, y = rng.random((3, 23, 17)).astype(dtype), rng.random((3, 23, 17)).astype(dtype)
    stacked = ssim_index_map(x, y)
    assert stacked.dtype == dtype
    for k in range(3):
        expected = structural_similarity(x[k], y[k], full=True, gaussian_weights=True, sigma=1.5, data_range=1)[1]
        np.testing.assert_array_equal(stacked[k], expected)
        np.testing.assert_array_equal(ssim_index_map(x[k], y[k]), expected)
    # skimage computes in the type of its first image
    mixed = structural_similarity(x[0], y[0].astype(np.float64), full=True, gaussian_weights=True, sigma=1.5, data_range=1)[1]
    np.testing.assert_array_equal(ssim_index_map(x[0], y[0].astype(np.float64)), mixed)
    with pytest.raises(BlindspotError, match="at least 11 × 11"):
        ssim_index_map(x[:, :5], y[:, :5])


def test_a_pixel_moves_the_ssim_score_only_within_its_window():
    from blindspot.scoring import score_map, score_radius

    rng = np.random.default_rng(1)
    x, x_hat = rng.random((40, 40)).astype(np.float32), rng.random((40, 40)).astype(np.float32)
    changed = x.copy()
    changed[20, 20] = 1 - changed[20, 20]
    diff = score_map("ssim", changed, x_hat) != score_map("ssim", x, x_hat)
    r = score_radius("ssim")
    rows, cols = np.nonzero(diff)
    assert r == 5 and rows.min() == 20 - r and rows.max() == 20 + r and cols.min() == 20 - r and cols.max() == 20 + r
    assert score_radius("l1") == score_radius("zscore") == 0


def test_the_rarity_prior_is_a_smoothed_histogram_with_a_uniform_floor():
    from scipy.ndimage import gaussian_filter1d

    from blindspot.scoring import IntensityPrior

    rng = np.random.default_rng(2)
    images = np.where(rng.random((4, 16, 16)) < 0.3, 0, rng.beta(5, 3, (4, 16, 16))).astype(np.float32)
    prior = IntensityPrior.fit(images)
    fg = images[images > 0]
    counts = np.histogram(fg, bins=100, range=(0, 1))[0].astype(float)
    expected = 0.99 * gaussian_filter1d(counts, 1.0, mode="nearest") / counts.sum() + 0.0001
    np.testing.assert_allclose(prior.probability, expected, rtol=1e-12)
    assert prior.probability.sum() == pytest.approx(1.0) and prior.n_pixels == fg.size
    assert prior.weights(np.array([1.0]))[0] == pytest.approx(-np.log(prior.probability[-1]), rel=1e-6)
    assert prior.weights(np.array([0.0, 1.0])).max() <= np.log(100 / 0.01) + 1e-5
    for bad, match in (({"bins": 1}, "`bins`"), ({"smoothing": -1}, "`smoothing`"), ({"floor": 0}, "`floor`")):
        with pytest.raises(BlindspotError, match=match):
            IntensityPrior.fit(images, **bad)
    with pytest.raises(BlindspotError, match="no foreground pixel"):
        IntensityPrior.fit(np.zeros((2, 4, 4)))


def test_every_scoring_function_is_its_definition():
    from blindspot.baselines import ZScore
    from blindspot.scoring import SCORES, HealthyStats, score_map, uses_reconstruction

    rng = np.random.default_rng(3)
    train = rng.random((5, 12, 12)).astype(np.float32)
    x, x_hat = rng.random((2, 12, 12)).astype(np.float32), rng.random((2, 12, 12)).astype(np.float32)
    stats = HealthyStats.fit(train)
    z = ZScore.fit(train)
    expected = {
        "l1": np.abs(x - x_hat), "positive": np.maximum(x - x_hat, 0), "negative": np.maximum(x_hat - x, 0),
        "rarity": np.abs(x - x_hat) * stats.prior.weights(x), "image": x, "zscore": np.abs(z.maps(x)),
    }
    for name in SCORES:
        got = score_map(name, x, x_hat, stats=stats)
        assert got.shape == x.shape and got.dtype == np.float32
        if name in expected:
            np.testing.assert_array_equal(got, expected[name])
    assert [n for n in SCORES if not uses_reconstruction(n)] == ["image", "zscore"]
    np.testing.assert_array_equal(score_map("image", x), x)
    cropped = stats.crop(slice(2, 8), slice(3, 9))
    np.testing.assert_array_equal(score_map("zscore", x[:, 2:8, 3:9], stats=cropped), expected["zscore"][:, 2:8, 3:9])
    with pytest.raises(BlindspotError, match="unknown scoring function 'mse'"):
        score_map("mse", x, x_hat)
    with pytest.raises(BlindspotError, match="the rarity score needs"):
        score_map("rarity", x, x_hat)
    with pytest.raises(BlindspotError, match="the l1 score needs reconstructions"):
        score_map("l1", x)

"""Experiments 1 and 2 (blindspot.experiments.pitfalls) against the straightforward per-cell computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score

from blindspot.anomalies import disk_anomaly, sample_centers, texture_anomaly
from blindspot.data import DataConfig, load
from blindspot.errors import BlindspotError
from blindspot.experiments.pitfalls import (
    MATCH_POINTWISE,
    MATCH_SPREAD_FRACTION,
    MATCH_TOLERANCE,
    blind_spot_table,
    experiment_centers,
    intensity_experiment,
    intensity_grid_axes,
    match_curves,
    match_quality,
    random_streams,
    texture_experiment,
)

INTENSITIES = np.linspace(0, 1, 100)[::11]
SIGMAS = np.linspace(0, 5, 100)[[0, 3, 10, 25, 60, 99]]


@pytest.fixture(scope="module")
def template():
    """The embedded MNI152 test slices (256 px), as the experiments score them."""
    return load(DataConfig()).images


def per_cell(image, anomalous, label, sigma):
    """The straightforward computation of one cell: blur, residual, sklearn AP over the whole slice."""
    residual = np.abs(gaussian_filter(image, sigma) - anomalous)
    return average_precision_score(label.ravel(), residual.ravel()), residual.mean(dtype=np.float64)


def test_intensity_grid_equals_per_cell_computation(template):
    images = template[[0, 7]]
    result = intensity_experiment(images, intensities=INTENSITIES, sigmas=SIGMAS, seed=3, threads=2)
    assert result["ap_per_image"].shape == (2, len(INTENSITIES), len(SIGMAS))
    for i, intensity in enumerate(INTENSITIES):
        anomalies = disk_anomaly(images, intensity, centers=result["centers"])
        for s, sigma in enumerate(SIGMAS):
            for n in range(2):
                ap, residual = per_cell(images[n], anomalies.images[n], anomalies.labels[n], sigma)
                assert result["ap_per_image"][n, i, s] == pytest.approx(ap, abs=1e-12)
            assert result["residual_mean"][i, s] == pytest.approx(
                np.mean([per_cell(images[n], anomalies.images[n], anomalies.labels[n], sigma)[1] for n in range(2)]), rel=1e-5
            )
    np.testing.assert_allclose(result["ap"], result["ap_per_image"].mean(axis=0))


def test_texture_grid_equals_per_cell_computation(template):
    images = template[[2, 9]]
    result = texture_experiment(images, sigmas=SIGMAS, seed=5, match_intensities=INTENSITIES)
    rng = random_streams(5)[1]
    for t, kind in enumerate(result["textures"]):
        anomalies = texture_anomaly(images, str(kind), centers=result["centers"], rng=rng)
        for s, sigma in enumerate(SIGMAS):
            for n in range(2):
                ap, _ = per_cell(images[n], anomalies.images[n], anomalies.labels[n], sigma)
                assert result["ap_per_image"][n, t, s] == pytest.approx(ap, abs=1e-12)
    same = intensity_experiment(images, intensities=INTENSITIES, sigmas=SIGMAS, seed=5)
    np.testing.assert_array_equal(result["intensity_ap_per_image"], same["ap_per_image"])
    np.testing.assert_array_equal(result["centers"], same["centers"])


def test_same_seed_same_numbers_and_threads_do_not_matter(template):
    images = template[:3]
    a = intensity_experiment(images, intensities=INTENSITIES, sigmas=SIGMAS, seed=1, threads=1)
    b = intensity_experiment(images, intensities=INTENSITIES, sigmas=SIGMAS, seed=1, threads=2)
    c = intensity_experiment(images, intensities=INTENSITIES, sigmas=SIGMAS, seed=2, threads=2)
    np.testing.assert_array_equal(a["ap_per_image"], b["ap_per_image"])
    assert not np.array_equal(a["centers"], c["centers"])
    np.testing.assert_array_equal(a["centers"], sample_centers(images, random_streams(1)[0]))


def test_given_centres_reproduce_a_sampled_run_exactly(template):
    images = template[[1, 4, 8]]
    sampled = intensity_experiment(images, intensities=INTENSITIES, sigmas=SIGMAS[:3], seed=7)
    given = intensity_experiment(images, intensities=INTENSITIES, sigmas=SIGMAS[:3], seed=99, centers=sampled["centers"])
    for key in ("ap_per_image", "residual_mean", "centers"):
        np.testing.assert_array_equal(given[key], sampled[key])
    # textures: the shuffle comes from the seed's second stream, so given centres change nothing either
    textures = texture_experiment(images, sigmas=SIGMAS[:3], seed=7)
    with_centers = texture_experiment(images, sigmas=SIGMAS[:3], seed=7, centers=textures["centers"])
    np.testing.assert_array_equal(with_centers["ap_per_image"], textures["ap_per_image"])


@pytest.mark.parametrize(("centers", "message"), [
    (np.zeros((2, 2), np.int64), r"`centers` must be integers of shape \(3, 2\), one \(row, column\) per image; got int64 \(2, 2\)"),
    (np.zeros((3, 3), np.int64), r"`centers` must be integers of shape \(3, 2\)"),
    (np.full((3, 2), 128.0), r"`centers` must be integers .* got float64 \(3, 2\)"),
    (np.array([[128, 128], [128, 256], [128, 128]]), r"`centers` row 1 \[128, 256\] lies outside the image of shape \(256, 256\)"),
    (np.array([[128, 128], [128, 128], [-1, 128]]), r"`centers` row 2 \[-1, 128\] lies outside"),
    (np.array([[128, 128], [0, 0], [128, 128]]), r"`centers` row 1 \[0, 0\] is a background pixel"),
])
def test_bad_centres_are_refused_naming_the_row(template, centers, message):
    with pytest.raises(BlindspotError, match=message):
        experiment_centers(template[:3], centers, seed=0)
    with pytest.raises(BlindspotError, match=message):
        intensity_experiment(template[:3], intensities=INTENSITIES, sigmas=SIGMAS, centers=centers)


def test_grid_axes_and_their_errors():
    intensities, sigmas = intensity_grid_axes(6, 4, 3.0)
    np.testing.assert_array_equal(intensities, np.linspace(0, 1, 6))
    np.testing.assert_array_equal(sigmas, np.linspace(0, 3, 4))
    np.testing.assert_array_equal(intensity_grid_axes(2, 1, 0.0)[1], [0.0])  # one σ = 0 is a grid
    with pytest.raises(BlindspotError, match="`sigma_max` 0 makes all 5 σ of the grid 0; give a `sigma_max` > 0, or `n_sigmas` 1"):
        intensity_grid_axes(3, 5, 0.0)
    with pytest.raises(BlindspotError, match="`sigma_max` must be >= 0"):
        intensity_grid_axes(3, 5, -1.0)
    with pytest.raises(BlindspotError, match="`n_sigmas` must be an integer >= 1; got 0"):
        intensity_grid_axes(3, 0, 1.0)
    with pytest.raises(BlindspotError, match="`n_intensities` must be an integer >= 1; got 2.5"):
        intensity_grid_axes(2.5, 3, 1.0)


def test_match_curves_picks_smallest_l1():
    reference = np.array([[1.0, 1.0, 1.0], [0.9, 0.5, 0.2], [0.1, 0.1, 0.1]])
    np.testing.assert_array_equal(match_curves(np.array([[0.8, 0.5, 0.3], [0.2, 0.0, 0.1]]), reference), [1, 2])
    np.testing.assert_array_equal(match_curves(np.array([[0.55, 0.55, 0.55]]), reference[[0, 2]]), [0])  # tie: lowest index


def test_match_quality_applies_the_absolute_cap_and_the_upper_edge():
    reference = np.array([np.linspace(0.5, 1.0, 5), np.linspace(0.3, 1.0, 5), np.linspace(0.0, 0.3, 5)])
    curves = np.array([reference[0] - 0.02, reference[1] - 0.1 - 1e-9, reference[2]])
    index = match_curves(curves, reference)
    np.testing.assert_array_equal(index, [0, 1, 2])
    quality = match_quality(curves, reference, index)
    np.testing.assert_allclose(quality["mean_abs"], [0.02, 0.1 + 1e-9, 0.0])
    np.testing.assert_allclose(quality["l1"], 5 * quality["mean_abs"])
    # limits: a fraction of the ranges 0.5, 0.7 (0.105: capped at MATCH_TOLERANCE) and 0.3
    np.testing.assert_allclose(quality["limit"], [MATCH_SPREAD_FRACTION * 0.5, MATCH_TOLERANCE, MATCH_SPREAD_FRACTION * 0.3])
    assert MATCH_SPREAD_FRACTION * 0.7 > MATCH_TOLERANCE and quality["pointwise"][1] < MATCH_POINTWISE
    np.testing.assert_array_equal(quality["matched"], [True, False, True])  # 0.1 + 1e-9 > the cap alone
    assert np.isnan(quality["mean_abs_low"]).all() and np.isnan(quality["mean_abs_high"]).all()  # no per-image curves
    edge = match_quality(curves, reference, index, upper_edge=True)
    np.testing.assert_array_equal(edge["matched"], [True, False, False])  # the last row: beyond the grid?


def sixfold_pair():
    """Issue 17's case: all APs low, minima 0.013 vs 0.079, APs at intensity 1 of 0.57 vs 0.28, mean |ΔAP| < 0.1."""
    x = np.linspace(0, 1, 11)
    return 0.013 + 0.557 * x**2, 0.079 + 0.201 * x


def test_low_curves_of_different_shape_are_no_match():
    model, blur = sixfold_pair()
    assert (model.min(), blur.min(), model[-1], blur[-1]) == pytest.approx((0.013, 0.079, 0.57, 0.28))
    assert max(model.max(), blur.max()) < 0.6
    assert np.abs(model - blur).mean() <= MATCH_TOLERANCE  # the old absolute rule called this a match
    quality = match_quality(model[None], blur[None], np.array([0]))
    assert not quality["matched"][0]
    assert quality["limit"][0] == pytest.approx(MATCH_SPREAD_FRACTION * 0.557)
    assert quality["mean_abs"][0] > quality["limit"][0]
    assert quality["pointwise"][0] == pytest.approx(0.066 / 0.079)  # the sixfold minimum
    assert quality["pointwise"][0] > MATCH_POINTWISE


def test_a_curve_matches_itself_plus_tiny_noise_within_its_interval():
    model, _ = sixfold_pair()
    per_image = model + np.random.default_rng(1).normal(0, 0.002, (20, len(model)))
    curve = per_image.mean(axis=0)
    exact = match_quality(model[None], model[None], np.array([0]), per_image=np.repeat(model[None, None], 3, axis=0))
    assert exact["matched"][0] and exact["mean_abs"][0] == 0 and exact["mean_abs_high"][0] == pytest.approx(0, abs=1e-12)
    quality = match_quality(curve[None], model[None], np.array([0]), per_image=per_image[:, None])
    assert quality["matched"][0]
    assert quality["mean_abs"][0] == pytest.approx(np.abs(curve - model).mean())
    assert 0 < quality["mean_abs_low"][0] <= quality["mean_abs_high"][0] < quality["limit"][0]


def test_a_match_the_image_variability_cannot_confirm_is_none():
    model, _ = sixfold_pair()
    curve = model + 0.02  # close enough by the mean curve alone ...
    spread = np.where(np.arange(6) % 2, 0.4, -0.4)[:, None]  # ... but the six images scatter ±0.4 around it
    per_image = curve + spread
    np.testing.assert_allclose(per_image.mean(axis=0), curve)
    alone = match_quality(curve[None], model[None], np.array([0]))
    assert alone["matched"][0]
    quality = match_quality(curve[None], model[None], np.array([0]), per_image=per_image[:, None])
    assert quality["mean_abs_high"][0] > quality["limit"][0] and not quality["matched"][0]


def test_blind_spot_table_reports_bands_and_minimum():
    intensities = np.linspace(0, 1, 11)
    sigmas = np.array([0.0, 1.0])
    ap = np.ones((11, 2))
    ap[3:6, 1] = [0.4, 0.1, 0.3]
    ap[8, 1] = 0.2
    (row0, row1) = blind_spot_table(intensities, sigmas, ap, at_sigmas=(0, 1))
    assert row0["blind_bands"] == [] and row0["min_ap"] == 1.0
    assert row1["blind_bands"] == [(intensities[3], intensities[5]), (intensities[8], intensities[8])]
    assert row1["min_ap"] == 0.1 and row1["min_at"] == pytest.approx(0.4)
    assert row1["mean_ap"] == pytest.approx(ap[:, 1].mean())

"""The whole-volume engine (blindspot.experiments.volume_engine): the cropped blur is scipy's full blur,
the one-sort AP is sklearn's, and a volume's grid equals the straightforward per-cell computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score

import blindspot.experiments.volume_engine as engine
from blindspot.anomalies3d import ball_anomaly, ball_voxels
from blindspot.errors import BlindspotError
from blindspot.experiments.volume_engine import (
    GridWorkers,
    ap_against_nonzero_negatives,
    ap_against_sorted_negatives,
    blur_box,
    foreground_box,
    gaussian_reach,
    volume_grid,
)
from blindspot.metrics import ap_against_negatives

from conftest import brain_volume

# σ = 0 (identity), 0.1 (a radius-0 kernel), and reaches up to 12 voxels
SIGMAS = [0.0, 0.1, 0.6, 1.3, 2.0, 3.0]


@pytest.fixture(scope="module")
def volume():
    """A 40 × 44 × 36 'brain' with a background margin, a few tied values and a dark hole."""
    padded = np.zeros((40, 44, 36), np.float32)
    padded[4:36, 5:39, 3:33] = brain_volume((32, 34, 30), seed=3)
    padded[18:21, 20:23, 16:18] = 0.5
    padded[24:26, 22:24, 18:20] = 0
    return padded


def test_reach_is_scipys():
    for sigma in (0.0, 0.1, 0.124, 0.125, 1.0, 2.37, 5.0):
        size = np.zeros(101)
        size[50] = 1
        support = np.flatnonzero(gaussian_filter(size, sigma))  # where scipy's kernel reaches
        assert gaussian_reach(sigma) == 50 - support[0] == support[-1] - 50


@pytest.mark.parametrize("sigma", SIGMAS)
def test_cropped_blur_is_the_full_blur_and_zero_outside(volume, sigma):
    box = foreground_box(volume)
    blurred, where = blur_box(volume, box, sigma)
    full = gaussian_filter(volume, sigma)
    np.testing.assert_array_equal(blurred, full[where])  # bitwise, not approximately
    outside = np.ones(volume.shape, bool)
    outside[where] = False
    assert (full[outside] == 0).all() and (volume[outside] == 0).all()  # the residual there is exactly 0
    reach = gaussian_reach(sigma)
    assert all(w.start == max(b.start - reach, 0) and w.stop == min(b.stop + reach, n)
               for w, b, n in zip(where, box, volume.shape))


def test_cropped_blur_where_the_box_reaches_the_volume_edge():
    volume = np.zeros((20, 24, 18), np.float32)
    volume[0:9, 3:24, 10:18] = np.random.default_rng(0).random((9, 21, 8)).astype(np.float32) + 0.1
    box = foreground_box(volume)
    for sigma in (1.0, 2.5):
        blurred, where = blur_box(volume, box, sigma)
        np.testing.assert_array_equal(blurred, gaussian_filter(volume, sigma)[where])
        assert where[0].start == 0 and where[1].stop == 24 and where[2].stop == 18  # clipped: reflect at the true edge


def test_one_sort_ap_equals_sklearn_with_many_ties():
    rng = np.random.default_rng(0)
    pool = np.array([0, 0.25, 0.5, 0.75, 1.0], np.float32)
    for _ in range(120):
        n_negatives = int(rng.integers(1, 40))
        negatives = rng.choice(pool, n_negatives)
        positives = rng.choice(pool, (int(rng.integers(1, 4)), int(rng.integers(1, 10)))).astype(np.float32)
        ap = ap_against_nonzero_negatives(positives, negatives[negatives > 0], n_negatives)
        np.testing.assert_allclose(ap, ap_against_negatives(positives, np.sort(negatives[negatives > 0]), n_negatives),
                                   rtol=0, atol=1e-12)
        for row, value in zip(positives, ap):
            labels = np.r_[np.ones(len(row)), np.zeros(n_negatives)]
            assert value == pytest.approx(average_precision_score(labels, np.r_[row, negatives]), abs=1e-12)
            split = [np.sort(part[part > 0]) for part in np.array_split(negatives, 2)]
            assert ap_against_sorted_negatives(row, split, n_negatives) == pytest.approx(value, abs=1e-12)


def test_one_sort_ap_on_continuous_scores_and_float32_ties():
    rng = np.random.default_rng(1)
    negatives = rng.random(5000).astype(np.float32) ** 3
    positives = rng.random((4, 300)).astype(np.float32)
    positives[1, :50] = negatives[:50]  # exact float32 ties with negatives
    positives[2, :10] = 0  # ties with the zero-scored negatives
    ap = ap_against_nonzero_negatives(positives, negatives, 5000 + 700)  # 700 negatives score exactly 0
    full = np.r_[negatives, np.zeros(700, np.float32)]
    for row, value in zip(positives, ap):
        labels = np.r_[np.ones(len(row)), np.zeros(len(full))]
        assert value == pytest.approx(average_precision_score(labels, np.r_[row, full]), abs=1e-12)


def per_cell(volume, center, radius, intensity, sigma):
    """The straightforward computation of one cell: the ball, scipy's 3-D blur, sklearn's AP over every voxel."""
    anomaly = ball_anomaly(volume[None], intensity, radius=radius, centers=[center])
    residual = np.abs(gaussian_filter(volume, sigma) - anomaly.images[0])
    return average_precision_score(anomaly.labels[0].ravel(), residual.ravel()), residual.mean(dtype=np.float64)


def test_volume_grid_equals_the_per_cell_computation_on_sampled_cells(volume):
    center = np.array([20, 22, 18])  # on the tied block: many equal scores at σ = 0
    intensities = np.linspace(0, 1, 11)
    index = ball_voxels(volume, center, 7)
    ap, residual = volume_grid(volume, index, intensities.astype(np.float32)[:, None], SIGMAS)
    rng = np.random.default_rng(2)
    cells = [(0, 0), (5, 0), (3, 2), (10, 5)] + [tuple(c) for c in rng.integers(0, [11, len(SIGMAS)], (6, 2))]
    for i, s in cells:
        expected_ap, expected_residual = per_cell(volume, center, 7, intensities[i], SIGMAS[s])
        assert ap[i, s] == pytest.approx(expected_ap, abs=1e-6), (i, s)
        assert residual[i, s] == pytest.approx(expected_residual, abs=1e-9), (i, s)


def test_worker_processes_give_the_same_grid(volume, monkeypatch):
    monkeypatch.setattr(engine, "PROCESS_MIN_VOXELS", 0)  # these small volumes would otherwise run here
    other = np.ascontiguousarray(volume[::-1])  # a second volume through the same workers
    values = np.linspace(0, 1, 5).astype(np.float32)[:, None]
    done = []
    with GridWorkers(2) as workers:
        for x in (volume, other):
            index = ball_voxels(x, np.array([20, 22, 18]), 6)
            ap, residual = workers.grid(x, index, values, SIGMAS[:4], on_sigma=lambda: done.append(1))
            expected = volume_grid(x, index, values, SIGMAS[:4])
            np.testing.assert_array_equal(ap, expected[0])
            np.testing.assert_array_equal(residual, expected[1])
        assert workers._pool is not None  # it did use processes
    assert len(done) == 8


def test_an_empty_volume_and_wrong_dtypes_are_refused(volume):
    with pytest.raises(BlindspotError, match="empty foreground"):
        foreground_box(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(BlindspotError, match="volumes must be float32"):
        blur_box(volume.astype(np.float64), foreground_box(volume), 1.0)

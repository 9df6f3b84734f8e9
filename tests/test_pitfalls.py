import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score

from blindspot.anomalies import disk_anomaly, texture_anomaly
from blindspot.experiments.grid import ap_against_negatives, run_grid
from blindspot.experiments.pitfalls import (
    blind_spot_table,
    intensity_experiment,
    match_curves,
    texture_experiment,
)

INTENSITIES = np.linspace(0, 1, 100)[::11]
SIGMAS = np.linspace(0, 5, 100)[[0, 3, 10, 25, 60, 99]]


def per_cell(image, anomalous, label, sigma):
    """The straightforward computation of one cell: blur, residual, sklearn AP over the whole slice."""
    residual = np.abs(gaussian_filter(image, sigma) - anomalous)
    return average_precision_score(label.ravel(), residual.ravel()), residual.mean(dtype=np.float64)


def test_intensity_grid_equals_per_cell_computation(mni_images):
    images = mni_images[[0, 7]]
    result = intensity_experiment(images, intensities=INTENSITIES, sigmas=SIGMAS, seed=3, workers=2)
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


def test_texture_grid_equals_per_cell_computation(mni_images):
    images = mni_images[[2, 9]]
    result = texture_experiment(images, sigmas=SIGMAS, seed=5, match_intensities=INTENSITIES)
    from blindspot.experiments.pitfalls import random_streams

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


def test_ap_against_negatives_with_ties_matches_sklearn():
    rng = np.random.default_rng(0)
    pool = np.array([0, 0.25, 0.5, 0.75, 1.0], np.float32)
    for _ in range(200):
        negatives = rng.choice(pool, rng.integers(1, 40))
        positives = rng.choice(pool, (3, rng.integers(1, 10)))
        ap = ap_against_negatives(positives, np.sort(negatives[negatives > 0]), len(negatives))
        for row, value in zip(positives, ap):
            labels = np.r_[np.ones(len(row)), np.zeros(len(negatives))]
            assert value == pytest.approx(average_precision_score(labels, np.r_[row, negatives]), abs=1e-12)


def test_same_seed_same_numbers_and_threads_do_not_matter(mni_images):
    images = mni_images[:3]
    a = intensity_experiment(images, intensities=INTENSITIES, sigmas=SIGMAS, seed=1, workers=1)
    b = intensity_experiment(images, intensities=INTENSITIES, sigmas=SIGMAS, seed=1, workers=2)
    c = intensity_experiment(images, intensities=INTENSITIES, sigmas=SIGMAS, seed=2, workers=2)
    np.testing.assert_array_equal(a["ap_per_image"], b["ap_per_image"])
    assert not np.array_equal(a["centers"], c["centers"])


def test_run_grid_resumes_from_cached_chunks(mni_images, tmp_path):
    images = mni_images[:3]
    labels = np.zeros(images.shape, bool)
    labels[:, 120:130, 120:130] = True
    values = np.full((1, 100), 0.5, np.float32)
    first = run_grid(images, labels, lambda n: values, SIGMAS, cache_dir=tmp_path, fingerprint="k", chunk_size=1)
    chunks = sorted(tmp_path.glob("chunk-k-*.npz"))
    assert len(chunks) == 3
    # Poison one cached chunk: a resumed run must take it from the cache instead of recomputing.
    np.savez(chunks[1], ap=np.full((1, 1, len(SIGMAS)), -1.0), residual=np.zeros((1, 1, len(SIGMAS))))
    resumed = run_grid(images, labels, lambda n: values, SIGMAS, cache_dir=tmp_path, fingerprint="k", chunk_size=1)
    assert (resumed[0][1] == -1).all()
    np.testing.assert_array_equal(resumed[0][[0, 2]], first[0][[0, 2]])


def test_match_curves_picks_smallest_l1():
    reference = np.array([[1.0, 1.0, 1.0], [0.9, 0.5, 0.2], [0.1, 0.1, 0.1]])
    np.testing.assert_array_equal(match_curves(np.array([[0.8, 0.5, 0.3], [0.2, 0.0, 0.1]]), reference), [1, 2])


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

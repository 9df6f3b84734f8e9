"""The shared engine of experiments 1 and 2 (blindspot.experiments.grid)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score

from blindspot.data import DataConfig, load
from blindspot.experiments.grid import grid_fingerprint, image_grid, reconstruction_ap, run_grid
from blindspot.metrics import ap_against_negatives

SIGMAS = np.linspace(0, 5, 100)[[0, 3, 10, 25, 60, 99]]


@pytest.fixture(scope="module")
def images():
    return load(DataConfig()).images[:3]


def square_labels(images):
    labels = np.zeros(images.shape, bool)
    labels[:, 120:130, 120:130] = True
    return labels


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


def test_image_grid_is_reconstruction_ap_of_each_blur(images):
    label = square_labels(images)[0]
    values = np.array([[0.1], [0.9]], np.float32) * np.ones((1, int(label.sum())), np.float32)
    ap, residual = image_grid(images[0], label, values, SIGMAS[:3])
    for s, sigma in enumerate(SIGMAS[:3]):
        blur = gaussian_filter(images[0], float(sigma))
        expected_ap, expected_residual = reconstruction_ap(images[0], label, values, blur)
        np.testing.assert_array_equal(ap[:, s], expected_ap)
        np.testing.assert_array_equal(residual[:, s], expected_residual)
        for v in range(2):
            anomalous = images[0].copy()
            anomalous[label] = values[v]
            score = np.abs(blur - anomalous)
            assert ap[v, s] == pytest.approx(average_precision_score(label.ravel(), score.ravel()), abs=1e-12)
            assert residual[v, s] == pytest.approx(score.mean(dtype=np.float64), rel=1e-6)


def test_threads_do_not_change_the_numbers(images):
    labels = square_labels(images)
    values = np.linspace(0, 1, 5, dtype=np.float32)[:, None]
    one = run_grid(images, labels, lambda n: values, SIGMAS, threads=1, chunk_size=1)
    two = run_grid(images, labels, lambda n: values, SIGMAS, threads=2, chunk_size=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert one[0].shape == (3, 5, len(SIGMAS))


def test_run_grid_resumes_from_cached_chunks(images, tmp_path):
    labels = square_labels(images)
    values = np.full((1, 100), 0.5, np.float32)
    first = run_grid(images, labels, lambda n: values, SIGMAS, cache_dir=tmp_path, fingerprint="k", chunk_size=1)
    chunks = sorted(tmp_path.glob("chunk-k-*.npz"))
    assert len(chunks) == 3
    # Poison one cached chunk: a resumed run must take it from the cache instead of recomputing.
    np.savez(chunks[1], ap=np.full((1, 1, len(SIGMAS)), -1.0), residual=np.zeros((1, 1, len(SIGMAS))))
    resumed = run_grid(images, labels, lambda n: values, SIGMAS, cache_dir=tmp_path, fingerprint="k", chunk_size=1)
    assert (resumed[0][1] == -1).all()
    np.testing.assert_array_equal(resumed[0][[0, 2]], first[0][[0, 2]])
    # Another fingerprint (other images or parameters) never reads these chunks.
    other = run_grid(images, labels, lambda n: values, SIGMAS, cache_dir=tmp_path, fingerprint="j", chunk_size=1)
    np.testing.assert_array_equal(other[0], first[0])


def test_an_unreadable_cached_chunk_is_recomputed_with_a_warning(images, tmp_path):
    labels = square_labels(images)
    values = np.full((1, 100), 0.5, np.float32)
    first = run_grid(images, labels, lambda n: values, SIGMAS, cache_dir=tmp_path, fingerprint="k", chunk_size=1)
    chunk = sorted(tmp_path.glob("chunk-k-*.npz"))[2]
    chunk.write_bytes(chunk.read_bytes()[:40])  # cut short, as by a crash
    with pytest.warns(UserWarning, match=f"the cached chunk '{chunk.name}' is unreadable; it is recomputed"):
        again = run_grid(images, labels, lambda n: values, SIGMAS, cache_dir=tmp_path, fingerprint="k", chunk_size=1)
    np.testing.assert_array_equal(again[0], first[0])
    with np.load(chunk) as saved:  # and saved again, whole
        np.testing.assert_array_equal(saved["ap"], first[0][2:3])


def test_fingerprint_changes_with_the_images_and_every_parameter(images):
    base = grid_fingerprint(images, radius=20, sigmas=SIGMAS)
    assert base == grid_fingerprint(images.copy(), radius=20, sigmas=SIGMAS)
    changed = images.copy()
    changed[0, 100, 100] += 1e-3
    assert grid_fingerprint(changed, radius=20, sigmas=SIGMAS) != base
    assert grid_fingerprint(images, radius=21, sigmas=SIGMAS) != base
    assert grid_fingerprint(images, radius=20, sigmas=SIGMAS[:-1]) != base

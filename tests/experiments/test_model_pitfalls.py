"""Experiment 3, computation (blindspot.experiments.model_pitfalls): a model's reconstruction in the
intensity grid against sklearn, and its match to a blur σ — forced with fake "models"."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score

from blindspot.anomalies import disk_anomaly, sample_centers
from blindspot.data import DataConfig, load
from blindspot.errors import BlindspotError
from blindspot.experiments.model_pitfalls import match_blur, model_intensity_experiment
from blindspot.experiments.pitfalls import MATCH_POINTWISE, MATCH_TOLERANCE, intensity_experiment, intensity_grid_axes, random_streams
from blindspot.models import create_model


class BlurModel(torch.nn.Module):
    """A 'model' whose reconstruction is exactly the experiment-1 blur of σ (scipy, float32); no parameters."""

    def __init__(self, sigma):
        super().__init__()
        self.sigma = sigma

    def forward(self, x):
        blurred = np.stack([gaussian_filter(image, self.sigma) for image in x[:, 0].numpy()])
        return torch.from_numpy(blurred)[:, None]


class ConstantModel(torch.nn.Module):
    """A 'model' that reconstructs every image as one constant grey."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full_like(x, self.value)


def tiny_ae(seed=0, size=32):
    torch.manual_seed(seed)
    return create_model("ae", size=size, d=4, width=4).eval()


@pytest.fixture(scope="module")
def small_images():
    """Three template slices prepared at 32 px (as a 32-px model is fed)."""
    return load(DataConfig().with_preparation(size=32)).images[:3]


@pytest.fixture(scope="module")
def four_images():
    return load(DataConfig().with_preparation(size=32)).images[:4]


def forward(model, images):
    with torch.no_grad():
        return model(torch.from_numpy(images)[:, None])[:, 0].numpy()


def test_normal_mode_equals_per_image_per_intensity_sklearn(small_images, torch_one_thread):
    model, intensities = tiny_ae(), np.linspace(0, 1, 7)
    result = model_intensity_experiment(model, small_images, intensities=intensities, radius=5, seed=1)
    np.testing.assert_array_equal(result["centers"], sample_centers(small_images, random_streams(1)[0]))
    recon = forward(model, small_images)
    expected = np.empty((3, 7))
    residual = np.empty((3, 7))
    for i, intensity in enumerate(intensities):
        anomalies = disk_anomaly(small_images, intensity, radius=5, centers=result["centers"])
        maps = np.abs(recon - anomalies.images)
        residual[:, i] = maps.mean(axis=(1, 2))
        for n in range(3):
            expected[n, i] = average_precision_score(anomalies.labels[n].ravel(), maps[n].ravel())
    np.testing.assert_allclose(result["ap_per_image"], expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result["ap"], expected.mean(axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(result["residual_mean"], residual.mean(axis=0), rtol=1e-6)
    assert result["recon_error"] == pytest.approx(np.abs(recon - small_images).mean(), rel=1e-6)
    np.testing.assert_array_equal(result["reconstructions"], recon)


def test_anomalous_mode_equals_reconstructing_each_anomalous_image(small_images, torch_one_thread):
    model, intensities = tiny_ae(seed=2), np.linspace(0, 1, 5)
    # batch_size = I: one model call per image, as in the reference below.
    result = model_intensity_experiment(model, small_images, intensities=intensities, radius=6, seed=0,
                                        reconstruct="anomalous", batch_size=5)
    for n in range(3):
        made = [disk_anomaly(small_images[n : n + 1], v, radius=6, centers=result["centers"][n : n + 1]) for v in intensities]
        anomalous = np.concatenate([m.images for m in made])
        maps = np.abs(forward(model, anomalous) - anomalous)
        expected = [average_precision_score(m.labels[0].ravel(), s.ravel()) for m, s in zip(made, maps)]
        np.testing.assert_allclose(result["ap_per_image"][n], expected, rtol=0, atol=1e-9)
    normal = model_intensity_experiment(model, small_images, intensities=intensities, radius=6, seed=0)
    assert not np.allclose(result["ap"], normal["ap"])  # the two modes measure different things


def test_a_model_in_another_input_range_is_fed_in_its_range(small_images, torch_one_thread):
    model = tiny_ae(seed=3)
    model.input_range = (-1.0, 1.0)
    result = model_intensity_experiment(model, small_images, intensities=[0.2, 0.9], radius=5, seed=0)
    expected = (forward(model, small_images * 2 - 1) + 1) / 2
    np.testing.assert_allclose(result["reconstructions"], expected, rtol=0, atol=1e-6)


def test_matching_picks_the_sigma_the_reconstruction_is(small_images):
    intensities, sigmas = np.linspace(0, 1, 9), np.linspace(0, 3, 7)
    grid = intensity_experiment(small_images, intensities=intensities, sigmas=sigmas, radius=5, seed=4, threads=1)
    for k in (1, 4):
        result = model_intensity_experiment(BlurModel(sigmas[k]), small_images, intensities=intensities,
                                            radius=5, centers=grid["centers"])
        np.testing.assert_array_equal(result["ap"], grid["ap"][:, k])
        assert core(match_blur(result["ap"], grid["ap"])) == {"index": k, "l1": 0.0, "mean_abs": 0.0, "matched": True}
        checked = match_blur(result["ap"], grid["ap"], result["ap_per_image"], grid["ap_per_image"])  # paired: interval 0
        assert checked["matched"] is True and checked["mean_abs_high"] == pytest.approx(0, abs=1e-12)
    assert match_blur(np.array([0.9, 0.5]), np.array([[1.0, 0.8, 0.0], [1.0, 0.4, 0.0]]))["index"] == 1


def core(verdict: dict) -> dict:
    """The σ index, distances and verdict of :func:`match_blur`, without its bound and interval."""
    return {k: verdict[k] for k in ("index", "l1", "mean_abs", "matched")}


def test_match_blur_verdicts_on_plain_curves():
    columns = np.array([[1.0, 0.6, 0.0]] * 4)  # (I, S): three σ, each a flat curve
    ramp = np.linspace(0.3, 0.9, 4)
    columns[:, 1] = ramp
    assert core(match_blur(ramp + 0.05, columns)) == pytest.approx({"index": 1, "l1": 0.2, "mean_abs": 0.05, "matched": True})
    assert match_blur(np.full(4, 0.65), columns)["matched"] is False  # as close on average, but flat: not the ramp
    far = match_blur(np.full(4, 0.4), columns)  # closest is the middle σ, but 0.25 away on average
    assert far["index"] == 1 and far["mean_abs"] == pytest.approx(0.25) and far["matched"] is False
    edge = match_blur(np.full(4, 0.02), columns)  # closest is the largest σ: the model may lie beyond the grid
    assert edge["index"] == 2 and edge["mean_abs"] < MATCH_TOLERANCE and edge["matched"] is False


def test_a_blur_beyond_the_grid_is_no_match_until_the_grid_is_extended(four_images):
    intensities = np.linspace(0, 1, 11)
    model = BlurModel(4.0)
    short = intensity_experiment(four_images, intensities=intensities, sigmas=intensity_grid_axes(11, 8, 3.5)[1], radius=3, seed=0)
    curve = model_intensity_experiment(model, four_images, intensities=intensities, radius=3, centers=short["centers"])["ap"]
    verdict = match_blur(curve, short["ap"])
    assert verdict["index"] == 7 and verdict["matched"] is False  # the largest σ of the grid (3.5)
    assert verdict["mean_abs"] <= verdict["limit"] and verdict["pointwise"] <= MATCH_POINTWISE  # only the edge refuses it
    _, sigmas = intensity_grid_axes(11, 11, 5.0)
    extended = intensity_experiment(four_images, intensities=intensities, sigmas=sigmas, radius=3, seed=0)
    verdict = match_blur(curve, extended["ap"])
    assert core(verdict) == {"index": 8, "l1": 0.0, "mean_abs": 0.0, "matched": True} and sigmas[8] == 4.0


def test_a_constant_reconstruction_matches_no_blur(four_images):
    intensities, sigmas = intensity_grid_axes(11, 11, 10.0)
    grid = intensity_experiment(four_images, intensities=intensities, sigmas=sigmas, radius=3, seed=0)
    result = model_intensity_experiment(ConstantModel(0.5), four_images, intensities=intensities, radius=3, centers=grid["centers"])
    np.testing.assert_array_equal(result["reconstructions"], np.full(four_images.shape, 0.5, np.float32))
    verdict = match_blur(result["ap"], grid["ap"])
    assert 0 < verdict["index"] < len(sigmas) - 1  # inside the grid: refused by the tolerance alone
    assert verdict["mean_abs"] > MATCH_TOLERANCE and verdict["matched"] is False
    assert verdict["mean_abs"] == pytest.approx(np.abs(result["ap"] - grid["ap"][:, verdict["index"]]).mean(), abs=1e-12)


def test_bad_reconstruct_mode_is_refused():
    with pytest.raises(BlindspotError, match="`reconstruct` must be 'normal' or 'anomalous'"):
        model_intensity_experiment(tiny_ae(), np.ones((1, 32, 32), np.float32), intensities=[0.5], reconstruct="both")

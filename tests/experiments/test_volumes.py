"""Experiments 1–3 on whole volumes (blindspot.experiments.volumes): against the straightforward per-cell
computation, against the 2-D experiments on the central slices, radii in millimetres, resuming."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score

from blindspot.anomalies3d import ball_anomaly, texture_anomaly_3d
from blindspot.data import DataConfig, whole_volumes
from blindspot.errors import BlindspotError
from blindspot.experiments.grid import grid_fingerprint, image_grid
from blindspot.experiments.pitfalls import intensity_experiment, random_streams
from blindspot.experiments.volume_engine import GridWorkers
from blindspot.experiments.volumes import (
    radius_in_voxels,
    volume_intensity_experiment,
    volume_model_experiment,
    volume_texture_experiment,
)
from blindspot.models import create_model
from blindspot.models.inference import reconstruct

from conftest import brain_volume

INTENSITIES = np.linspace(0, 1, 6)
SIGMAS = np.linspace(0, 2, 4)


@pytest.fixture(scope="module")
def volumes():
    return [brain_volume((28, 32, 24), seed=k) for k in range(3)]


def per_cell_ap(volume, label, anomalous, sigma):
    residual = np.abs(gaussian_filter(volume, sigma) - anomalous)
    return average_precision_score(label.ravel(), residual.ravel())


def test_intensity_experiment_equals_the_per_cell_computation(volumes):
    result = volume_intensity_experiment(volumes, intensities=INTENSITIES, sigmas=SIGMAS, radius=5, seed=3, threads=1)
    assert result["ap_per_volume"].shape == (3, 6, 4) and result["centers"].shape == (3, 3)
    np.testing.assert_allclose(result["ap"], result["ap_per_volume"].mean(axis=0))
    rng = random_streams(3)[0]
    for n, volume in enumerate(volumes):
        center = result["centers"][n]
        assert volume[tuple(center)] > 0
        assert list(center) == list(np.unravel_index(np.flatnonzero(volume > 0)[rng.integers(0, (volume > 0).sum())],
                                                     volume.shape))  # uniform over the foreground, seeded
        for i, s in ((0, 0), (2, 1), (4, 3), (5, 2)):
            made = ball_anomaly(volume[None], INTENSITIES[i], radius=5, centers=[center])
            assert result["ap_per_volume"][n, i, s] == pytest.approx(
                per_cell_ap(volume, made.labels[0], made.images[0], SIGMAS[s]), abs=1e-6)
    residuals = [np.abs(gaussian_filter(v, SIGMAS[2]) - ball_anomaly(v[None], INTENSITIES[3], radius=5, centers=[c]).images[0])
                 for v, c in zip(volumes, result["centers"])]
    assert result["residual_mean"][3, 2] == pytest.approx(np.mean([r.mean(dtype=np.float64) for r in residuals]), abs=1e-9)
    assert result["fingerprint"] == grid_fingerprint(np.stack(volumes))
    assert result["histogram_counts"].sum() == sum((v > 0).sum() for v in volumes)


def test_compare_slices_is_the_2d_experiment_on_the_central_slices(volumes):
    result = volume_intensity_experiment(volumes, intensities=INTENSITIES, sigmas=SIGMAS, radius=5, seed=1, axis=1,
                                         slices=[15, 16], compare_slices=True, threads=1)
    assert set(result["centers"][:, 1]) <= {15, 16}
    np.testing.assert_array_equal(result["slice_index"], result["centers"][:, 1])
    slices = np.stack([v[:, c, :] for v, c in zip(volumes, result["centers"][:, 1])])
    flat = intensity_experiment(slices, intensities=INTENSITIES, sigmas=SIGMAS, radius=5,
                                centers=np.delete(result["centers"], 1, axis=1), threads=1)
    np.testing.assert_array_equal(result["slice_ap_per_volume"], flat["ap_per_image"])
    np.testing.assert_array_equal(result["slice_ap"], flat["ap"])
    assert not np.allclose(result["ap"], result["slice_ap"])  # a ball in a volume is not a disk in a slice


def test_texture_experiment_and_its_central_slices(volumes):
    result = volume_texture_experiment(volumes[:2], sigmas=SIGMAS, radius=5, seed=2, match_intensities=INTENSITIES,
                                       compare_slices=True, axis=2, threads=1)
    reference = volume_intensity_experiment(volumes[:2], intensities=INTENSITIES, sigmas=SIGMAS, radius=5, seed=2, threads=1)
    np.testing.assert_array_equal(result["centers"], reference["centers"])  # the same centres as experiment 1
    np.testing.assert_allclose(result["intensity_ap"], reference["ap"], atol=1e-12)
    shuffle_rng = random_streams(2)[1]
    for n, volume in enumerate(volumes[:2]):
        center = result["centers"][n]
        shuffled = texture_anomaly_3d(volume[None], "shuffle", radius=5, centers=[center], rng=shuffle_rng)
        for k, kind in enumerate(("shuffle", "sink", "source")):
            made = shuffled if kind == "shuffle" else texture_anomaly_3d(volume[None], kind, radius=5, centers=[center])
            assert result["ap_per_volume"][n, k, 2] == pytest.approx(
                per_cell_ap(volume, made.labels[0], made.images[0], SIGMAS[2]), abs=1e-6)
            plane = center[2]
            label = made.labels[0][:, :, plane]
            flat_ap, _ = image_grid(volume[:, :, plane], label, made.images[0][:, :, plane][label][None], SIGMAS)
            np.testing.assert_allclose(result["slice_ap_per_volume"][n, k], flat_ap[0], atol=1e-12)


@pytest.fixture
def anisotropic(tmp_path):
    volume = brain_volume((48, 48, 14), seed=5)
    path = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 3.0, 1.0])), str(path))  # 3 mm slices
    return whole_volumes(DataConfig(data=str(path)))


def test_radius_in_millimetres_on_anisotropic_voxels(anisotropic):
    result = volume_intensity_experiment(anisotropic, intensities=INTENSITIES, sigmas=SIGMAS[:2], radius=6,
                                         radius_unit="mm", seed=0, threads=1)
    np.testing.assert_allclose(result["radius_voxels"], [[6, 6, 2]])
    np.testing.assert_allclose(result["spacing"], [[1, 1, 3]])
    volume, center = anisotropic.read(0).image, result["centers"][0]
    made = ball_anomaly(volume[None], 1.0, radius=(6, 6, 2), centers=[center])
    mm = (np.argwhere(made.labels[0]) - center) * [1, 1, 3]
    assert (np.linalg.norm(mm, axis=1) < 6).all()  # round in millimetres
    assert made.labels[0][tuple(center + [0, 0, 1])] and not made.labels[0][tuple(center + [0, 0, 2])]
    assert result["ap_per_volume"][0, 5, 1] == pytest.approx(per_cell_ap(volume, made.labels[0], made.images[0], SIGMAS[1]),
                                                             abs=1e-6)
    voxels = volume_intensity_experiment(anisotropic, intensities=INTENSITIES, sigmas=SIGMAS[:2], radius=6, seed=0, threads=1)
    np.testing.assert_allclose(voxels["radius_voxels"], [[6, 6, 6]])  # the default: voxels along every axis


def test_a_ball_that_does_not_fit_is_named(anisotropic):
    with pytest.raises(BlindspotError, match=r"the ball does not fit: `radius` 21 mm is 21, 21, 7 voxels \(spacing 1 × 1 × 3 mm\) "
                                             r"in '.*thick.nii.gz' of shape \(48, 48, 14\); along axis 2 it must lie in \[1, 7\)"):
        volume_intensity_experiment(anisotropic, intensities=INTENSITIES, sigmas=SIGMAS, radius=21, radius_unit="mm", threads=1)
    with pytest.raises(BlindspotError, match="volume 0 has no voxel spacing"):
        radius_in_voxels(5, "mm", None, (20, 20, 20), "volume 0")
    with pytest.raises(BlindspotError, match=r"along axis 0 it must lie in \[1, 10\)"):
        radius_in_voxels(0.5, "voxel", None, (20, 20, 20), "volume 0")


def test_bad_volumes_and_centres_are_named(volumes):
    empty = [volumes[0], np.zeros((10, 10, 10), np.float32)]
    with pytest.raises(BlindspotError, match="volume 1 has an empty foreground"):
        volume_intensity_experiment(empty, intensities=INTENSITIES, sigmas=SIGMAS, radius=3, threads=1)
    off = np.argwhere(volumes[0] == 0)[0]
    with pytest.raises(BlindspotError, match=r"`centers` row 0 .* is a background voxel of volume 0"):
        volume_intensity_experiment(volumes[:1], intensities=INTENSITIES, sigmas=SIGMAS, radius=3, centers=[off], threads=1)
    with pytest.raises(BlindspotError, match=r"`centers` must be integers of shape \(3, 3\)"):
        volume_intensity_experiment(volumes, intensities=INTENSITIES, sigmas=SIGMAS, radius=3, centers=[[1, 2, 3]], threads=1)
    with pytest.raises(BlindspotError, match="slice 40 is out of range for volume 0 along axis 2"):
        volume_intensity_experiment(volumes, intensities=INTENSITIES, sigmas=SIGMAS, radius=3, slices=[40], threads=1)


def test_finished_volumes_are_cached_and_reused(volumes, tmp_path, monkeypatch):
    options = dict(intensities=INTENSITIES, sigmas=SIGMAS, radius=4, seed=0, threads=1, cache_dir=tmp_path / "cache")
    first = volume_intensity_experiment(volumes[:2], **options)
    assert len(list((tmp_path / "cache").glob("volume-*.npz"))) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed a cached volume")

    monkeypatch.setattr(GridWorkers, "grid", refuse)
    again = volume_intensity_experiment(volumes[:2], **options)
    np.testing.assert_array_equal(again["ap_per_volume"], first["ap_per_volume"])


class Smoothing(torch.nn.Module):
    """A stand-in 2-D 'model' whose output for a slice does not depend on the rest of the batch, bit for bit
    (a trained network's float results can differ in the last bits between batch compositions, which the
    per-cell computation would see too; this isolates the scoring)."""

    size = 32

    def forward(self, x):
        return 0.7 * torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1) + 0.1 * x.square() + 0.02


@pytest.fixture(scope="module")
def model():
    return Smoothing()


@pytest.mark.parametrize("mode", ["normal", "anomalous"])
def test_a_2d_model_scores_whole_volumes_like_the_per_cell_computation(volumes, model, mode, torch_one_thread):
    stack = [np.ascontiguousarray(v[:, :, :20].transpose(2, 0, 1)) for v in volumes[:2]]  # 20 × 28 × 32: slices along axis 0 ...
    stack = [np.pad(v, ((0, 0), (2, 2), (0, 0))) for v in stack]  # ... of 32 × 32, the model's size
    centers = volume_intensity_experiment(stack, intensities=INTENSITIES, sigmas=SIGMAS[:1], radius=4, seed=0,
                                          threads=1)["centers"]
    result = volume_model_experiment(model, stack, intensities=INTENSITIES, centers=centers, radius=4, reconstruct=mode,
                                     axis=0, batch_size=16, keep_outputs=True)
    assert result["ap_per_volume"].shape == (2, 6)
    for n, volume in enumerate(stack):
        normal = reconstruct(model, volume)
        np.testing.assert_allclose(result["reconstructions"][n], normal, atol=1e-6)
        assert result["recon_error_per_volume"][n] == pytest.approx(np.abs(normal - volume).mean(dtype=np.float64))
        for i in (0, 3, 5):
            made = ball_anomaly(volume[None], INTENSITIES[i], radius=4, centers=[centers[n]])
            recon = normal if mode == "normal" else reconstruct(model, made.images[0])
            residual = np.abs(recon - made.images[0])
            assert result["ap_per_volume"][n, i] == pytest.approx(
                average_precision_score(made.labels[0].ravel(), residual.ravel()), abs=1e-6)


def test_slices_of_another_size_than_the_model_are_refused(volumes):
    model = create_model("ae", size=32, d=4, width=4)
    with pytest.raises(BlindspotError, match=r"the slices of volume 0 along axis 2 are 28×32 but the model takes 32×32"):
        volume_model_experiment(model, volumes[:1], intensities=INTENSITIES, centers=[[14, 16, 12]], radius=4, axis=2)

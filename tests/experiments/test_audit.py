"""``blindspot audit`` (computation and result folder): every number equals its straightforward computation.

* every scoring function, in both modes, for intensities, textures and sizes, equals sklearn's AP
  on the full map computed cell by cell with independent code (skimage's SSIM, a histogram by hand);
* a Gaussian-blur "model" reproduces the experiment-1 column of its σ;
* the same network as TorchScript, as ONNX and as a folder of its reconstructions gives the same
  profiles.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import structural_similarity
from sklearn.metrics import average_precision_score

from blindspot.anomalies import anomaly_labels, disk_anomaly, texture_anomaly
from blindspot.data import DataConfig, load
from blindspot.errors import BlindspotError
from blindspot.experiments.audit import audit, rank_scores, shared_negatives_ap, size_radii
from blindspot.experiments.audit_runs import audit_images, parse_scores
from blindspot.experiments.pitfalls import intensity_experiment, random_streams
from blindspot.models.adapters import ReconstructionFolder, load_adapter, reconstruction_key
from blindspot.scoring import SCORES, HealthyStats

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SLICES = (60, 64, 68)  # test slices of the template, none of them a training slice
SIZE = 32
RADIUS = 4.0


def small_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1)).eval()


class GaussianBlur(torch.nn.Module):
    """scipy.ndimage.gaussian_filter(x, σ) (mode reflect, truncate 4) as a float32 torch network."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.radius = int(4.0 * sigma + 0.5)
        offsets = np.arange(-self.radius, self.radius + 1)
        weights = np.exp(-0.5 * offsets**2 / sigma**2)
        self.register_buffer("weights", torch.tensor(weights / weights.sum(), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.radius
        for dim in (2, 3):  # scipy's "reflect" repeats the edge pixel: symmetric padding
            x = torch.cat([x.narrow(dim, 0, r).flip(dim), x, x.narrow(dim, x.shape[dim] - r, r).flip(dim)], dim=dim)
        x = torch.nn.functional.conv2d(x, self.weights.view(1, 1, -1, 1))
        return torch.nn.functional.conv2d(x, self.weights.view(1, 1, 1, -1))


@pytest.fixture(scope="module")
def images():
    return load(DataConfig(slices=SLICES).with_preparation(size=SIZE), default_split="test").images


@pytest.fixture(scope="module")
def train_images():
    return load(DataConfig().with_preparation(size=SIZE), default_split="train").images


@pytest.fixture(scope="module")
def audited(images, train_images):
    """One audit of a small network with every score, on a small grid."""
    net = small_net()
    stats = HealthyStats.fit(train_images)
    result = audit(net, images, intensities=np.linspace(0, 1, 9), sigmas=np.linspace(0, 3, 5), radius=RADIUS,
                   stats=stats, batch_size=7, threads=1)
    return net, stats, result


# --------------------------------------------------------------------------------------------
# an independent computation of one cell


def direct_map(name: str, anomalous: np.ndarray, recon: np.ndarray, train: np.ndarray) -> np.ndarray:
    """The scoring function's map written out from its definition (not through blindspot.scoring)."""
    if name == "l1":
        return np.abs(anomalous - recon)
    if name == "positive":
        return np.clip(anomalous - recon, 0, None)
    if name == "negative":
        return np.clip(recon - anomalous, 0, None)
    if name == "ssim":
        return 1 - structural_similarity(anomalous, recon, full=True, gaussian_weights=True, sigma=1.5, data_range=1)[1]
    if name == "rarity":  # 100 bins over [0, 1], Gaussian σ = 1 bin (nearest), mixed with 1 % uniform
        from scipy.ndimage import gaussian_filter1d

        fg = train[train > 0]
        counts = np.histogram(fg, bins=100, range=(0, 1))[0].astype(float)
        p = 0.99 * gaussian_filter1d(counts, 1.0, mode="nearest") / counts.sum() + 0.01 / 100
        weight = (-np.log(p)).astype(np.float32)[np.clip((anomalous * 100).astype(int), 0, 99)]
        return np.abs(anomalous - recon) * weight
    if name == "image":
        return anomalous
    if name == "zscore":
        mean, std = train.astype(float).mean(axis=0), train.astype(float).std(axis=0)
        return np.abs(((anomalous - mean) / np.maximum(std, 0.01)).astype(np.float32))
    raise AssertionError(name)


def run_net(net, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(image)[None, None])[0, 0].numpy()


def direct_ap(name, anomalous, recon, label, train) -> float:
    return average_precision_score(label.ravel(), direct_map(name, anomalous, recon, train).ravel())


def test_every_score_equals_sklearn_on_the_full_map_for_sampled_intensity_cells(audited, images, train_images):
    net, _, result = audited
    rng = np.random.default_rng(1)
    names = list(result["scores"])
    assert names == list(SCORES)
    for _ in range(6):
        n, k = int(rng.integers(len(images))), int(rng.integers(len(result["intensities"])))
        made = disk_anomaly(images[n : n + 1], float(result["intensities"][k]), radius=RADIUS, centers=result["centers"][n : n + 1])
        anomalous, label = made.images[0], made.labels[0]
        for f, name in enumerate(names):
            normal = direct_ap(name, anomalous, run_net(net, images[n]), label, train_images)
            realistic = direct_ap(name, anomalous, run_net(net, anomalous), label, train_images)
            assert result["ap_per_image_normal"][n, f, k] == pytest.approx(normal, abs=1e-12), (name, n, k)
            assert result["ap_per_image_anomalous"][n, f, k] == pytest.approx(realistic, abs=1e-12), (name, n, k)
    np.testing.assert_allclose(result["ap_normal"], result["ap_per_image_normal"].mean(axis=0))


def test_every_score_equals_sklearn_for_textures_and_sizes(audited, images, train_images):
    net, _, result = audited
    names = list(result["scores"])
    rng = random_streams(0)[1]
    labels = anomaly_labels(images, result["centers"], RADIUS)
    for t, kind in enumerate(result["textures"]):
        anomalous = texture_anomaly(images, str(kind), radius=RADIUS, centers=result["centers"], rng=rng).images
        n = t % len(images)
        for f, name in enumerate(names):
            expected = direct_ap(name, anomalous[n], run_net(net, anomalous[n]), labels[n], train_images)
            assert result["ap_per_image_texture"][n, f, t] == pytest.approx(expected, abs=1e-12), (kind, name)
    radii = result["radii"]
    for n, r, j in ((0, 0, 0), (1, len(radii) - 1, 1), (2, len(radii) // 2, 0)):
        made = disk_anomaly(images[n : n + 1], float(result["size_intensities"][j]), radius=radii[r],
                            centers=result["centers"][n : n + 1])
        for f, name in enumerate(names):
            normal = direct_ap(name, made.images[0], run_net(net, images[n]), made.labels[0], train_images)
            realistic = direct_ap(name, made.images[0], run_net(net, made.images[0]), made.labels[0], train_images)
            assert result["ap_per_image_size_normal"][n, f, j, r] == pytest.approx(normal, abs=1e-12)
            assert result["ap_per_image_size_anomalous"][n, f, j, r] == pytest.approx(realistic, abs=1e-12)


def test_the_size_intensities_are_the_blindest_and_the_most_visible_of_the_realistic_residual(audited):
    _, _, result = audited
    curve = result["ap_anomalous"][list(result["scores"]).index("l1")]
    assert result["size_intensities"].tolist() == [result["intensities"][np.argmin(curve)], result["intensities"][np.argmax(curve)]]
    # scores that do not read the reconstruction are the same in both modes
    for name in ("image", "zscore"):
        f = list(result["scores"]).index(name)
        np.testing.assert_array_equal(result["ap_per_image_anomalous"][:, f], result["ap_per_image_normal"][:, f])


def test_the_audit_calls_the_model_once_per_batch(audited, images):
    _, _, result = audited
    n, i, t, r = len(images), len(result["intensities"]), len(result["textures"]), len(result["radii"])
    anomalous = n * (i + t)
    sizes = n * r * 2
    expected = 1 + -(-anomalous // 7) + -(-sizes // 7) + 1  # normal pass, anomalous batches, sizes, worst cases
    assert result["model_calls"] == expected
    assert result["model_images"] == n + anomalous + sizes + min(3, n)
    assert set(result["timings"]) >= {"normal reconstructions", "blur grid (experiment 1)", "total"}


def test_a_gaussian_blur_model_reproduces_the_experiment_1_column_of_its_sigma(images):
    intensities, sigmas = np.linspace(0, 1, 11), np.linspace(0, 3, 7)
    k = 2  # σ = 1
    result = audit(GaussianBlur(sigmas[k]), images, intensities=intensities, sigmas=sigmas, radius=RADIUS, scores=["l1"],
                   threads=1)
    reference = intensity_experiment(images, intensities=intensities, sigmas=sigmas, radius=RADIUS, centers=result["centers"])
    np.testing.assert_allclose(result["ap_per_image_normal"][:, 0], reference["ap_per_image"][:, :, k], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(result["blur_ap"], reference["ap"])
    assert result["matched_sigma_index"] == k and result["matched_sigma"] == sigmas[k] and result["matched"]
    assert result["matched_mean_abs"] < 1e-3


def test_reconstructions_only_give_the_normal_mode_and_nan_for_the_rest(images):
    recon = np.clip(images + 0.05, 0, 1).astype(np.float32)
    result = audit(None, images, reconstructions=recon, intensities=np.linspace(0, 1, 5), sigmas=[0.0, 1.0], radius=RADIUS,
                   scores=["l1", "ssim"], threads=1)
    assert not result["has_anomalous"] and result["ranking_mode"] == "normal" and result["model_calls"] == 0
    assert np.isnan(result["ap_anomalous"]).all() and np.isnan(result["ap_texture"]).all()
    assert np.isfinite(result["ap_normal"]).all() and np.isnan(result["matched_sigma_anomalous"])
    np.testing.assert_array_equal(result["worst_reconstructions"], recon[result["worst_index"]])


def test_bad_audit_arguments_name_the_parameter(images):
    common = dict(intensities=[0.5], sigmas=[0.0], radius=RADIUS)
    with pytest.raises(BlindspotError, match="either a `model` or `reconstructions`"):
        audit(None, images, **common)
    with pytest.raises(BlindspotError, match="unknown scoring function 'mse'"):
        audit(small_net(), images, scores=["l1", "mse"], **common)
    with pytest.raises(BlindspotError, match="rarity score needs"):
        audit(small_net(), images, scores=["rarity"], **common)
    with pytest.raises(BlindspotError, match="`scores` must be a comma-separated list"):
        parse_scores("l1,mse")


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_shared_negatives_ap_equals_sklearn_with_ties(data):
    pool = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])
    k, n_local, n_shared = data.draw(st.integers(1, 6)), data.draw(st.integers(0, 6)), data.draw(st.integers(0, 8))
    rows = data.draw(st.integers(1, 3))
    positives = np.array(data.draw(st.lists(st.lists(pool, min_size=k, max_size=k), min_size=rows, max_size=rows)))
    local = np.array(data.draw(st.lists(st.lists(pool, min_size=n_local, max_size=n_local), min_size=rows, max_size=rows)))
    local = local.reshape(rows, n_local)
    shared = np.sort(np.array(data.draw(st.lists(pool, min_size=n_shared, max_size=n_shared)), float))
    ap = shared_negatives_ap(positives, local, shared)
    for row in range(rows):
        labels = np.r_[np.ones(k), np.zeros(n_local + n_shared)]
        scores = np.r_[positives[row], local[row], shared]
        assert ap[row] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_ranking_prefers_the_narrowest_band_then_the_highest_minimum():
    summary = {"blind_fraction": np.array([0.5, 0.1, 0.1]), "min_ap": np.array([0.9, 0.2, 0.3]), "mean_ap": np.array([1, 0, 0])}
    assert rank_scores(summary).tolist() == [2, 1, 0]
    assert size_radii(256).tolist() == [4, 6, 8, 12, 16, 20, 24, 32, 40]


# --------------------------------------------------------------------------------------------
# the same network as TorchScript, ONNX and a folder of reconstructions


def test_torchscript_onnx_and_reconstructions_give_the_same_profiles(tmp_path):
    pytest.importorskip("onnxscript", reason="exporting ONNX needs the dev extra (onnx, onnxscript)")
    net = small_net(3)
    example = torch.rand(2, 1, SIZE, SIZE)
    with warnings.catch_warnings():  # torch.jit is deprecated in torch 2.13; TorchScript files are still audited
        warnings.simplefilter("ignore")
        torch.jit.trace(net, example).save(str(tmp_path / "net.ts"))
        torch.onnx.export(net, (example,), str(tmp_path / "net.onnx"), dynamo=True, verbose=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    imageset = audit_images(DataConfig(slices=SLICES).with_preparation(size=SIZE))
    grid = dict(intensities=np.linspace(0, 1, 7), sigmas=np.linspace(0, 3, 4), radius=RADIUS, scores=["l1", "ssim", "rarity"],
                stats=HealthyStats.fit(imageset.images), threads=1, batch_size=16)
    results = {name: audit(load_adapter(tmp_path / name), imageset.images, **grid) for name in ("net.ts", "net.onnx")}
    folder = tmp_path / "recon"
    folder.mkdir()
    from blindspot.models.inference import reconstruct

    for name, image in zip(imageset.names, reconstruct(load_adapter(tmp_path / "net.ts"), imageset.images)):
        np.save(folder / f"{reconstruction_key(name)}.npy", image)
    recon = ReconstructionFolder(folder).read(imageset.names, imageset.images.shape[1:])
    results["folder"] = audit(None, imageset.images, reconstructions=recon, **grid)
    ts, onnx, from_folder = results["net.ts"], results["net.onnx"], results["folder"]
    for key in ("ap_per_image_normal", "ap_per_image_anomalous", "ap_per_image_texture", "ap_per_image_size_anomalous"):
        np.testing.assert_allclose(onnx[key], ts[key], rtol=0, atol=2e-3, err_msg=key)
    np.testing.assert_array_equal(from_folder["ap_per_image_normal"], ts["ap_per_image_normal"])
    np.testing.assert_array_equal(from_folder["ap_per_image_size_normal"], ts["ap_per_image_size_normal"])
    assert ts["matched_sigma"] == onnx["matched_sigma"] == from_folder["matched_sigma"]
    assert np.isnan(from_folder["ap_anomalous"]).all()

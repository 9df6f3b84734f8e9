"""Experiment 3 (trained models in the pitfall grid) and ``pitfalls compare``."""

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score

from blindspot.anomalies import disk_anomaly, sample_centers
from blindspot.checkpoint import save_checkpoint
from blindspot.cli import main
from blindspot.errors import BlindspotError
from blindspot.experiments.model_pitfalls import match_blur, model_intensity_experiment
from blindspot.experiments.pitfalls import intensity_experiment, random_streams
from blindspot.models import create_model
from blindspot.training import resize_images

from conftest import brain_volume, save_nifti


def tiny_ae(seed=0, size=32):
    torch.manual_seed(seed)
    return create_model("ae", size=size, d=4, width=4).eval()


@pytest.fixture(scope="module")
def small_images(mni_images):
    return resize_images(mni_images[:3], 32)


def forward(model, images):
    with torch.no_grad():
        return model(torch.from_numpy(images)[:, None])[:, 0].numpy()


def test_normal_mode_equals_per_image_per_intensity_sklearn(small_images):
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


def test_anomalous_mode_equals_reconstructing_each_anomalous_image(small_images):
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


class BlurModel(torch.nn.Module):
    """A 'model' whose reconstruction is exactly the experiment-1 blur of σ (scipy, float32)."""

    def __init__(self, sigma, size):
        super().__init__()
        self.sigma, self.size = sigma, size
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        blurred = np.stack([gaussian_filter(image, self.sigma) for image in x[:, 0].numpy()])
        return torch.from_numpy(blurred)[:, None]


def test_matching_picks_the_sigma_the_reconstruction_is(small_images):
    intensities, sigmas = np.linspace(0, 1, 9), np.linspace(0, 3, 7)
    grid = intensity_experiment(small_images, intensities=intensities, sigmas=sigmas, radius=5, seed=4, workers=1)
    for k in (1, 4):
        result = model_intensity_experiment(BlurModel(sigmas[k], 32), small_images, intensities=intensities,
                                            radius=5, centers=grid["centers"])
        np.testing.assert_array_equal(result["ap"], grid["ap"][:, k])
        assert match_blur(result["ap"], grid["ap"]) == k
    assert match_blur(np.array([0.9, 0.5]), np.array([[1.0, 0.8, 0.0], [1.0, 0.4, 0.0]])) == 1


@pytest.fixture
def checkpoints(tmp_path):
    paths = []
    for k, d in enumerate((2, 8)):
        model = create_model("ae", size=32, d=d, width=4)
        torch.manual_seed(k)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.1)
        paths.append(save_checkpoint(tmp_path / f"ae{d}.pt", model, step=5, config={"input_range": [0.0, 1.0], "preset": "test"},
                                     metrics={}))
    return paths


@pytest.fixture
def volumes32(tmp_path):
    folder = tmp_path / "vol32"
    folder.mkdir()
    for k in range(3):
        save_nifti(folder / f"case_{k}.nii.gz", brain_volume((32, 32, 8), seed=k))
    return folder


SMALL = ["--n-intensities", "6", "--radius", "6"]


def test_model_command_matches_experiment_1_and_compare_draws_it(checkpoints, volumes32, tmp_path, capsys):
    data = ["--data", str(volumes32), "--slice", "4"]
    exp1 = tmp_path / "exp1"
    assert main(["pitfalls", "intensity", *data, *SMALL, "--n-sigmas", "5", "--seed", "2", "--out", str(exp1)]) == 0
    outs = []
    for checkpoint, mode in zip(checkpoints, ("normal", "anomalous")):
        out = tmp_path / f"exp3-{mode}"
        code = main(["pitfalls", "model", "--checkpoint", str(checkpoint), "--reconstruct", mode, *data, *SMALL,
                     "--match", str(exp1), "--save-inputs", "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        assert {p.name for p in out.iterdir()} == {"results.npz", "config.json", "summary.md", "curve.png"}
        with np.load(out / "results.npz") as saved, np.load(exp1 / "results.npz") as reference:
            assert saved["ap"].shape == (6,) and saved["ap_per_image"].shape == (3, 6) and saved["residual_mean"].shape == (6,)
            np.testing.assert_array_equal(saved["centers"], reference["centers"])
            np.testing.assert_array_equal(saved["matched_ap"], reference["ap"][:, saved["matched_sigma_index"]])
            assert saved["matched_sigma_index"] == match_blur(saved["ap"], reference["ap"])
            assert saved["inputs"].shape == saved["reconstructions"].shape == (3, 32, 32)
            assert 0 < saved["recon_error"] < 1
        config = json.loads((out / "config.json").read_text())
        assert config["command"] == "pitfalls model" and config["parameters"]["reconstruct"] == mode
        assert config["model"]["d"] in (2, 8) and config["checkpoint"]["step"] == 5 and config["parameters"]["scale"] == 1.0
        assert "closest to a Gaussian blur" in (out / "summary.md").read_text()
        outs.append(out)
    compare = tmp_path / "compare"
    assert main(["pitfalls", "compare", *map(str, outs), "--out", str(compare)]) == 0
    assert {"curves.png", "error_vs_ap.png", "summary.md", "results.npz", "config.json"} <= {p.name for p in compare.iterdir()}
    table = (compare / "summary.md").read_text()
    assert "| ae size=32 d=2 width=4 |" in table and "| ae size=32 d=8 width=4 (anomalous) |" in table
    with np.load(compare / "results.npz") as saved, np.load(outs[1] / "results.npz") as second:
        assert saved["mean_ap"][1] == pytest.approx(second["ap"].mean())


def test_images_are_resized_to_the_model_and_the_radius_scaled(checkpoints, nifti_folder, tmp_path, capsys):
    out = tmp_path / "exp3"
    args = ["pitfalls", "model", "--checkpoint", str(checkpoints[0]), "--data", str(nifti_folder), "--slice", "12",
            "--n-intensities", "4", "--radius", "9"]
    assert main([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())["parameters"]
    assert config["size"] == 32 and config["scale"] == pytest.approx(32 / 48) and config["radius_used"] == pytest.approx(6.0)
    with np.load(out / "results.npz") as saved:
        assert saved["blur_ap"].shape == (4, 100)  # the default σ grid, computed on the resized images
    exp1 = tmp_path / "exp1"
    assert main(["pitfalls", "intensity", "--data", str(nifti_folder), "--slice", "12", "--n-intensities", "4",
                 "--n-sigmas", "3", "--radius", "9", "--out", str(exp1)]) == 0
    assert main([*args, "--match", str(exp1), "--out", str(tmp_path / "x")]) == 2
    assert "omit --match" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.pt", "does not exist"),
        (lambda d: (torch.save({"weights": torch.zeros(2)}, d / "other.pt"), d / "other.pt")[1], "is not a blindspot checkpoint"),
        (lambda d: ((d / "text.pt").write_text("hello"), d / "text.pt")[1], "not a readable blindspot checkpoint"),
    ],
)
def test_bad_checkpoints_exit_2_with_a_message(tmp_path, capsys, make, message):
    code = main(["pitfalls", "model", "--checkpoint", str(make(tmp_path)), "--out", str(tmp_path / "out")])
    assert code == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_compare_refuses_other_folders_and_bad_modes(checkpoints, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["pitfalls", "compare", str(tmp_path / "empty"), "--out", str(tmp_path / "c")]) == 2
    assert "config.json' does not exist" in capsys.readouterr().err
    with pytest.raises(BlindspotError, match="--reconstruct must be 'normal' or 'anomalous'"):
        model_intensity_experiment(tiny_ae(), np.ones((1, 32, 32), np.float32), intensities=[0.5], reconstruct="both")


def test_demo_section_trains_a_model_and_matches_its_curve(tmp_path, monkeypatch):
    import blindspot.demo as demo
    from blindspot.data import DataOptions

    monkeypatch.setattr(demo, "MODEL", dict(name="ae", options={"d": 4, "width": 4}, preset="quick",
                                            overrides={"size": 64, "steps": 2, "batch_size": 4}))
    options = DataOptions()
    section = demo._model_experiment(tmp_path, options.load(), options, workers=1)
    assert section.startswith("## Experiment 3") and "trained for 2 steps" in section
    assert "| ae size=64 d=4 width=4 |" in section and "![curve.png](model-pitfalls/curve.png)" in section
    assert (tmp_path / "model-pitfalls/curve.png").exists()
    with np.load(tmp_path / "model-pitfalls/results.npz") as saved:
        assert saved["ap"].shape == (100,) and saved["blur_ap"].shape == (100, 100)
        np.testing.assert_array_equal(saved["matched_ap"], saved["blur_ap"][:, saved["matched_sigma_index"]])

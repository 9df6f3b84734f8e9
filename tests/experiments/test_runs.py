"""Result folders of the pitfall experiments (blindspot.experiments.runs), through the library and the CLI:
explicit centres, the blur match of experiment 3, compare, and the errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

import blindspot.experiments.runs as runs
from blindspot.data import DataConfig
from blindspot.errors import BlindspotError
from blindspot.experiments.model_pitfalls import match_blur
from blindspot.experiments.pitfalls import MATCH_POINTWISE, match_rule
from blindspot.models import create_model
from blindspot.models.checkpoint import save_checkpoint
from blindspot.results import MARKER, file_sha256

from conftest import assert_one_error, brain_volume_folder
from conftest import run_cli as cli

SMALL = ["--n-intensities", "6", "--n-sigmas", "4", "--sigma-max", "3"]
ARRAYS = ("ap", "ap_per_image", "residual_mean", "centers")




def arrays(folder, keys=ARRAYS):
    with np.load(folder / "results.npz") as saved:
        return {k: saved[k] for k in keys}


# ---------------------------------------------------------------------------------------- experiments 1 and 2


def test_run_intensity_scales_the_radius_and_records_everything(tmp_path):
    data = DataConfig().with_preparation(size=64)
    out = runs.run_intensity(tmp_path / "e1", data, radius=16, n_intensities=3, n_sigmas=2, sigma_max=1.0, seed=4, threads=1)
    assert {p.name for p in out.iterdir()} == {"results.npz", "config.json", "summary.md", "heatmap.png", "histogram.png", MARKER}
    config = json.loads((out / "config.json").read_text())
    assert config["parameters"]["scale"] == 0.25 and config["parameters"]["radius_used"] == 4.0
    assert config["data"]["config"]["preparation"]["size"] == 64 and config["seed"] == 4 and len(config["images"]) == 10
    assert config["centers"] == "sampled from the seed" and config["input_hashes"] == {}
    summary = (out / "summary.md").read_text()
    assert "disk radius 16 px (4 px at the prepared 64 px)" in summary and "seed 4" in summary
    assert not (tmp_path / "e1.partial").exists() and not (out / ".cache").exists()
    with pytest.raises(BlindspotError, match="`radius` must be > 0"):
        runs.run_intensity(tmp_path / "bad", data, radius=0)


@pytest.mark.parametrize("form", ["results.npz", "npy", "text"])
def test_a_centres_file_reproduces_a_run_exactly(nifti_folder, tmp_path, capsys, form):
    data = ["--data", nifti_folder, "--slices", "11:13", "--radius", "8", *SMALL]
    first = tmp_path / "first"
    assert cli(["pitfalls", "intensity", *data, "--seed", "3", "--out", first], capsys)[0] == 0
    centers = arrays(first)["centers"]
    path = {"results.npz": first / "results.npz", "npy": tmp_path / "c.npy", "text": tmp_path / "c.txt"}[form]
    if form == "npy":
        np.save(path, centers)
    elif form == "text":  # another implementation's centres: commas or spaces, comments
        path.write_text("# row, column\n" + "".join(f"{r}, {c}\n" if k % 2 else f"{r} {c}  # image {k}\n"
                                                   for k, (r, c) in enumerate(centers)))
    again = tmp_path / "again"
    code, io = cli(["pitfalls", "intensity", *data, "--seed", "11", "--centers", path, "--out", again], capsys)
    assert code == 0, io.err
    for key, value in arrays(again).items():
        np.testing.assert_array_equal(value, arrays(first)[key])
    config = json.loads((again / "config.json").read_text())
    assert config["centers"] == str(path) and config["input_hashes"][str(path)] == file_sha256(path)
    texture = tmp_path / "texture"
    code, io = cli(["pitfalls", "texture", *data, "--seed", "11", "--centers", path, "--out", texture], capsys)
    assert code == 0, io.err
    np.testing.assert_array_equal(arrays(texture, ["centers"])["centers"], centers)
    with np.load(texture / "results.npz") as saved:  # the intensity grid of the same pass is experiment 1's
        np.testing.assert_array_equal(saved["intensity_ap"], arrays(first)["ap"])


@pytest.mark.parametrize(("write", "message"), [
    (lambda p, c: np.save(p.with_suffix(".npy"), np.c_[c, c[:, :1]]), "--centers file '{}' must hold integer (row, column) pairs"),
    (lambda p, c: np.save(p.with_suffix(".npy"), c[:-1]), "--centers must be integers of shape (10, 2), one (row, column) per image"),
    (lambda p, c: np.save(p.with_suffix(".npy"), c + 100), "--centers row 0 "),
    (lambda p, c: np.save(p.with_suffix(".npy"), np.zeros_like(c)), "--centers row 0 [0, 0] is a background pixel"),
    (lambda p, c: p.with_suffix(".txt").write_text("1 2\n3 x\n"), "--centers file '{}' is not readable as two integer columns"),
    (lambda p, c: p.with_suffix(".txt").write_text("1.5 2\n"), "--centers file '{}' must hold integer (row, column) pairs"),
])
def test_bad_centres_give_one_line_naming_the_flag_and_no_folder(nifti_folder, tmp_path, capsys, write, message):
    data = ["--data", nifti_folder, "--slices", "11:13", "--radius", "8", *SMALL]
    assert cli(["pitfalls", "intensity", *data, "--out", tmp_path / "first"], capsys)[0] == 0
    write(tmp_path / "c", arrays(tmp_path / "first")["centers"])
    path = next(tmp_path.glob("c.*"))
    for command in ("intensity", "texture"):
        code, io = cli(["pitfalls", command, *data, "--centers", path, "--out", tmp_path / "o"], capsys)
        assert_one_error(code, io.err, message.format(path))
        assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_texture_matches_carry_a_matched_flag(nifti_folder, tmp_path, capsys):
    exp1, exp2 = tmp_path / "exp1", tmp_path / "exp2"
    common = ["--data", nifti_folder, "--slice", "12", "--radius", "8", *SMALL]
    assert cli(["pitfalls", "intensity", *common, "--out", exp1], capsys)[0] == 0
    code, io = cli(["pitfalls", "texture", *common, "--match", exp1, "--out", exp2], capsys)
    assert code == 0, io.err
    with np.load(exp2 / "results.npz") as saved, np.load(exp1 / "results.npz") as reference:
        assert saved["matched"].dtype == bool and saved["matched"].shape == (3,)
        mean_abs = np.abs(saved["ap"] - reference["ap"][saved["matched_intensity_index"]]).mean(axis=1)
        np.testing.assert_allclose(saved["matched_l1"], mean_abs * saved["ap"].shape[1])
        np.testing.assert_allclose(saved["match_mean_abs"], mean_abs)
        rule = ((mean_abs <= saved["match_limit"]) & (saved["match_pointwise"] <= MATCH_POINTWISE)
                & (saved["match_mean_abs_high"] <= saved["match_limit"]))
        np.testing.assert_array_equal(saved["matched"], rule)
        rows = {line.split(" | ")[0].strip("| "): line for line in (exp2 / "summary.md").read_text().splitlines()
                if line.startswith("| s")}
        for k, name in enumerate(saved["textures"]):
            shown = f"{saved['matched_intensity'][k]:.3f}"
            assert (f"| {shown} |" in rows[name]) == bool(saved["matched"][k])
            assert (f"no match (closest {shown})" in rows[name]) == (not saved["matched"][k])
    config = json.loads((exp2 / "config.json").read_text())
    assert config["match"] == "../exp1" and str(exp1 / "results.npz") in config["input_hashes"]


# ---------------------------------------------------------------------------------------- experiment 3


class FakeModel(torch.nn.Module):
    """What ``load_model`` returns, for a reconstruction no trained model gives on demand: a blur or a constant."""

    def __init__(self, *, sigma=None, value=None):
        super().__init__()
        self.sigma, self.value = sigma, value
        self.config = {"name": "fake", "sigma": sigma, "value": value}
        self.input_range, self.preparation = (0.0, 1.0), None

    def forward(self, x):
        if self.value is not None:
            return torch.full_like(x, self.value)
        return torch.from_numpy(np.stack([gaussian_filter(image, self.sigma) for image in x[:, 0].numpy()]))[:, None]


@pytest.fixture
def fake_checkpoint(tmp_path, monkeypatch):
    """A file to pass as --checkpoint; the model loaded from it is set by the test."""
    path = tmp_path / "fake.pt"
    path.write_bytes(b"not read")
    chosen = {}
    monkeypatch.setattr(runs, "load_model", lambda checkpoint, device=None: chosen["model"])
    return path, chosen


GRID3 = ["--data", "mni152", "--size", "32", "--radius", "24", "--n-intensities", "11"]  # radius 3 px at 32 px


def test_model_summary_says_no_match_within_the_grid_at_its_upper_edge_until_extended(tmp_path, capsys, fake_checkpoint):
    path, chosen = fake_checkpoint
    chosen["model"] = FakeModel(sigma=4.0)
    short = tmp_path / "short"
    code, io = cli(["pitfalls", "model", "--checkpoint", path, *GRID3, "--n-sigmas", "8", "--sigma-max", "3.5", "--out", short], capsys)
    assert code == 0, io.err
    saved = arrays(short, ["matched", "matched_sigma_index", "matched_sigma", "sigmas", "blur_ap", "ap", "matched_l1"])
    assert not saved["matched"] and saved["matched_sigma_index"] == 7 and saved["matched_sigma"] == 3.5
    assert match_blur(saved["ap"], saved["blur_ap"])["matched"] is False
    summary = (short / "summary.md").read_text()
    assert "No match within the grid: the closest blur is the largest σ of the grid (3.500" in summary
    assert "`--sigma-max`" in summary and "matches a Gaussian blur" not in summary
    wide = tmp_path / "wide"
    code, io = cli(["pitfalls", "model", "--checkpoint", path, *GRID3, "--n-sigmas", "11", "--sigma-max", "5", "--out", wide], capsys)
    assert code == 0, io.err
    saved = arrays(wide, ["matched", "matched_sigma", "sigmas", "blur_ap", "matched_l1"])
    np.testing.assert_array_equal(saved["sigmas"], np.linspace(0, 5, 11))
    assert saved["blur_ap"].shape == (11, 11) and saved["matched"] and saved["matched_sigma"] == 4.0 and saved["matched_l1"] == 0
    summary = (wide / "summary.md").read_text()
    assert "The model's curve matches a Gaussian blur of σ = 4.000 (mean |ΔAP| 0.000 [0.000, 0.000] (bound " in summary
    assert "No match" not in summary
    compare = tmp_path / "compare"
    assert cli(["pitfalls", "compare", short, wide, "--out", compare], capsys)[0] == 0
    table = (compare / "summary.md").read_text()
    assert "| 3.500 (no match) |" in table and "| 4.000 |" in table


def test_model_summary_says_no_match_within_the_grid_beyond_the_tolerance(tmp_path, capsys, fake_checkpoint):
    path, chosen = fake_checkpoint
    chosen["model"] = FakeModel(value=0.5)
    out = tmp_path / "constant"
    code, io = cli(["pitfalls", "model", "--checkpoint", path, *GRID3, "--n-sigmas", "11", "--sigma-max", "10", "--out", out], capsys)
    assert code == 0, io.err
    saved = arrays(out, ["matched", "matched_sigma_index", "matched_sigma", "matched_l1", "match_mean_abs", "match_limit",
                         "match_mean_abs_low", "match_mean_abs_high", "match_pointwise"])
    assert not saved["matched"] and 0 < saved["matched_sigma_index"] < 10
    mean_abs = float(saved["matched_l1"]) / 11
    assert mean_abs == pytest.approx(float(saved["match_mean_abs"])) and mean_abs > saved["match_limit"]
    assert saved["match_mean_abs_low"] <= saved["match_mean_abs_high"]
    summary = (out / "summary.md").read_text()
    assert (f"No match within the grid: the closest blur, σ = {float(saved['matched_sigma']):.3f}, differs by a mean |ΔAP| "
            f"of {mean_abs:.3f} [{float(saved['match_mean_abs_low']):.3f}, {float(saved['match_mean_abs_high']):.3f}] "
            f"(bound {float(saved['match_limit']):.3f}), at worst by {float(saved['match_pointwise']):.2f} of the AP") in summary
    assert f"The rule: {match_rule()}." in summary
    assert f"| closest blur σ = {float(saved['matched_sigma']):.2f} |" in summary


@pytest.fixture
def checkpoints(tmp_path, torch_one_thread):
    paths = []
    for k, d in enumerate((2, 8)):
        model = create_model("ae", size=32, d=d, width=4)
        torch.manual_seed(k)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.1)
        model.preparation = {"size": 32, "geometry": "pad", "normalize": None, "equalize": False}  # as training records it
        paths.append(save_checkpoint(tmp_path / f"ae{d}.pt", model, step=5, config={"input_range": [0.0, 1.0], "preset": "test"},
                                     metrics={}))
    return paths


@pytest.fixture
def volumes32(tmp_path):
    return brain_volume_folder(tmp_path / "vol32", 3, (32, 32, 8))


MODEL_SMALL = ["--n-intensities", "6", "--radius", "6"]


def test_model_command_matches_experiment_1_and_compare_draws_it(checkpoints, volumes32, tmp_path, capsys):
    data = ["--data", volumes32, "--slice", "4"]
    exp1 = tmp_path / "exp1"
    assert cli(["pitfalls", "intensity", *data, *MODEL_SMALL, "--n-sigmas", "5", "--seed", "2", "--out", exp1], capsys)[0] == 0
    outs = []
    for checkpoint, mode in zip(checkpoints, ("normal", "anomalous")):
        out = tmp_path / f"exp3-{mode}"
        code, io = cli(["pitfalls", "model", "--checkpoint", checkpoint, "--reconstruct", mode, *data, *MODEL_SMALL,
                        "--n-sigmas", "5", "--match", exp1, "--save-inputs", "--out", out], capsys)
        assert code == 0, io.err
        assert {p.name for p in out.iterdir()} == {"results.npz", "config.json", "summary.md", "curve.png", MARKER}
        with np.load(out / "results.npz") as saved, np.load(exp1 / "results.npz") as reference:
            assert saved["ap"].shape == (6,) and saved["ap_per_image"].shape == (3, 6) and saved["residual_mean"].shape == (6,)
            np.testing.assert_array_equal(saved["centers"], reference["centers"])
            np.testing.assert_array_equal(saved["matched_ap"], reference["ap"][:, saved["matched_sigma_index"]])
            verdict = match_blur(saved["ap"], reference["ap"])
            assert saved["matched_sigma_index"] == verdict["index"] and bool(saved["matched"]) == verdict["matched"]
            assert saved["inputs"].shape == saved["reconstructions"].shape == (3, 32, 32)
            assert 0 < saved["recon_error"] < 1
        config = json.loads((out / "config.json").read_text())
        assert config["command"] == "pitfalls model" and config["parameters"]["reconstruct"] == mode
        assert config["model"]["d"] in (2, 8) and config["parameters"]["scale"] == 1.0
        assert config["checkpoint"]["path"] == str(checkpoint)
        assert config["input_hashes"][str(checkpoint)] == file_sha256(checkpoint)  # the exact checkpoint
        summary = (out / "summary.md").read_text()
        assert ("matches a Gaussian blur" in summary) == verdict["matched"]
        assert ("No match within the grid" in summary) == (not verdict["matched"])
        outs.append(out)
    compare = tmp_path / "compare"
    assert cli(["pitfalls", "compare", *outs, "--out", compare], capsys)[0] == 0
    assert {"curves.png", "error_vs_ap.png", "summary.md", "results.npz", "config.json", MARKER} <= {p.name for p in compare.iterdir()}
    table = (compare / "summary.md").read_text()
    assert "| ae size=32 d=2 width=4 |" in table and "| ae size=32 d=8 width=4 (anomalous) |" in table
    with np.load(compare / "results.npz") as saved, np.load(outs[1] / "results.npz") as second:
        assert saved["mean_ap"][1] == pytest.approx(second["ap"].mean())


def test_images_are_resized_to_the_model_and_the_radius_scaled(checkpoints, nifti_folder, tmp_path, capsys):
    out = tmp_path / "exp3"
    args = ["pitfalls", "model", "--checkpoint", checkpoints[0], "--data", nifti_folder, "--slice", "12",
            "--n-intensities", "4", "--radius", "9"]
    code, io = cli([*args, "--out", out], capsys)
    assert code == 0, io.err
    config = json.loads((out / "config.json").read_text())["parameters"]
    assert config["scale"] == pytest.approx(32 / 48) and config["radius_used"] == pytest.approx(6.0)
    data = json.loads((out / "config.json").read_text())["data"]
    assert data["config"]["preparation"]["size"] == 32  # prepared as the model was trained
    with np.load(out / "results.npz") as saved:
        assert saved["blur_ap"].shape == (4, 100)  # the default σ grid, computed on the resized images
    exp1 = tmp_path / "exp1"
    assert cli(["pitfalls", "intensity", "--data", nifti_folder, "--slice", "12", "--n-intensities", "4",
                "--n-sigmas", "3", "--radius", "9", "--size", "32", "--out", exp1], capsys)[0] == 0
    code, io = cli([*args, "--match", exp1, "--out", tmp_path / "x"], capsys)
    assert_one_error(code, io.err, "has another σ grid; use the same --n-sigmas and --sigma-max")
    assert not (tmp_path / "x").exists()
    code, io = cli([*args, "--n-sigmas", "3", "--match", exp1, "--out", tmp_path / "y"], capsys)
    assert code == 0, io.err
    native = tmp_path / "native"
    assert cli(["pitfalls", "intensity", "--data", nifti_folder, "--slice", "12", "--n-intensities", "4",
                "--n-sigmas", "3", "--radius", "9", "--out", native], capsys)[0] == 0
    code, io = cli([*args, "--n-sigmas", "3", "--match", native, "--out", tmp_path / "z"], capsys)
    assert_one_error(code, io.err, "was computed on other images")
    code, io = cli([*args, "--size", "48", "--out", tmp_path / "w"], capsys)
    assert_one_error(code, io.err, "--size 48 conflicts with the preparation")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.pt", "does not exist"),
        (lambda d: (torch.save({"weights": torch.zeros(2)}, d / "other.pt"), d / "other.pt")[1], "is not a blindspot checkpoint"),
        (lambda d: ((d / "text.pt").write_text("hello"), d / "text.pt")[1], "not a readable blindspot checkpoint"),
    ],
)
def test_bad_checkpoints_exit_2_with_a_message(tmp_path, capsys, make, message):
    code, io = cli(["pitfalls", "model", "--checkpoint", make(tmp_path), "--out", tmp_path / "out"], capsys)
    assert_one_error(code, io.err, message)
    assert not (tmp_path / "out").exists()


def test_compare_refuses_other_folders_and_mixed_images(checkpoints, volumes32, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, io = cli(["pitfalls", "compare", tmp_path / "empty", "--out", tmp_path / "c"], capsys)
    assert_one_error(code, io.err, "config.json' does not exist")
    exp1 = tmp_path / "exp1"
    assert cli(["pitfalls", "intensity", "--data", volumes32, "--slice", "4", *MODEL_SMALL, "--n-sigmas", "2", "--out", exp1],
               capsys)[0] == 0
    code, io = cli(["pitfalls", "compare", exp1, "--out", tmp_path / "c"], capsys)
    assert_one_error(code, io.err, "is not an experiment-3 (pitfalls model) result folder")
    outs = []
    for k, slice_ in enumerate(("3", "4")):
        outs.append(tmp_path / f"m{k}")
        assert cli(["pitfalls", "model", "--checkpoint", checkpoints[0], "--data", volumes32, "--slice", slice_, *MODEL_SMALL,
                    "--n-sigmas", "2", "--out", outs[-1]], capsys)[0] == 0
    code, io = cli(["pitfalls", "compare", *outs, "--out", tmp_path / "c"], capsys)
    assert_one_error(code, io.err, f"'{outs[0]}' and '{outs[1]}' were computed on different images (slices [3] and [4]); "
                                   "compare results on the same data.")
    assert not (tmp_path / "c").exists()

"""``blindspot pitfalls … --volumes`` through ``blindspot.cli.main``: the result folders and the bad inputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from eval_fixtures import make_brats_nifti, make_folder

from blindspot.experiments.grid import grid_fingerprint
from blindspot.models import create_model
from blindspot.models.checkpoint import save_checkpoint
from blindspot.results import MARKER, file_sha256

from conftest import assert_one_error, brain_volume, brain_volume_folder, save_nifti
from conftest import run_cli as cli

SMALL = ["--n-intensities", "6", "--n-sigmas", "4", "--sigma-max", "2", "--threads", "1", "--bootstrap", "100"]


def saved(folder):
    with np.load(folder / "results.npz") as arrays:
        return {k: arrays[k] for k in arrays.files}


@pytest.fixture
def volumes(tmp_path):
    return brain_volume_folder(tmp_path / "volumes", 3, (32, 32, 24))


def test_intensity_on_whole_volumes_writes_a_complete_folder(volumes, tmp_path, capsys):
    out = tmp_path / "e1"
    code, io = cli(["pitfalls", "intensity", "--volumes", "--data", volumes, "--radius", "5", *SMALL, "--seed", "2",
                    "--save-inputs", "--out", out], capsys)
    assert code == 0, io.err
    assert {p.name for p in out.iterdir()} == {"results.npz", "config.json", "summary.md", "heatmap.png", "histogram.png", MARKER}
    arrays = saved(out)
    assert arrays["ap_per_volume"].shape == (3, 6, 4) and arrays["ap"].shape == (6, 4)
    assert arrays["centers"].shape == (3, 3) and arrays["residual_mean"].shape == (6, 4)
    assert arrays["ap_low"].shape == (6, 4) and (arrays["ap_low"] <= arrays["ap"] + 1e-12).all()
    stored = [nib.load(str(volumes / f"case_{k}.nii.gz")).get_fdata(dtype=np.float32) for k in range(3)]
    np.testing.assert_array_equal(arrays["inputs"], np.stack(stored))  # [N, X, Y, Z], exactly as scored
    for volume, center in zip(stored, arrays["centers"]):
        assert volume[tuple(center)] > 0  # array index order
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "pitfalls intensity" and config["volumes"] is True and config["seed"] == 2
    assert config["fingerprint"] == grid_fingerprint(np.stack(stored))
    assert config["input_hashes"] == {str(volumes / f"case_{k}.nii.gz"): file_sha256(volumes / f"case_{k}.nii.gz")
                                      for k in range(3)}
    assert config["parameters"]["radius_unit"] == "voxel" and "numpy" in config["versions"]
    summary = (out / "summary.md").read_text()
    assert "3 whole volumes" in summary and "ball radius 5 voxels" in summary and "| σ | intensities with AP < 0.5 |" in summary
    assert not (tmp_path / "e1.partial").exists() and not (out / ".cache").exists()

    again = tmp_path / "again"  # the centres file reproduces the run exactly
    code, io = cli(["pitfalls", "intensity", "--volumes", "--data", volumes, "--radius", "5", *SMALL, "--seed", "9",
                    "--centers", out / "results.npz", "--out", again], capsys)
    assert code == 0, io.err
    np.testing.assert_array_equal(saved(again)["ap_per_volume"], arrays["ap_per_volume"])


def test_compare_slices_one_figure_one_table(volumes, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, io = cli(["pitfalls", "intensity", "--volumes", "--compare-slices", "--data", volumes, "--radius", "5",
                    "--slices", "11:13", *SMALL, "--out", out], capsys)
    assert code == 0, io.err
    arrays = saved(out)
    assert (out / "compare_slices.png").is_file()
    assert set(arrays["centers"][:, 2]) <= {11, 12} and (arrays["slice_index"] == arrays["centers"][:, 2]).all()
    assert arrays["slice_ap_per_volume"].shape == (3, 6, 4) and arrays["slice_ap"].shape == (6, 4)
    summary = (out / "summary.md").read_text()
    assert summary.count("| σ |") == 1 and "| AP < 0.5, whole volume | AP < 0.5, central slice |" in summary
    assert "on whole volumes" in summary and "mean |ΔAP|" in summary


def test_texture_on_whole_volumes_matched_to_an_intensity_folder(volumes, tmp_path, capsys):
    first = tmp_path / "e1"
    assert cli(["pitfalls", "intensity", "--volumes", "--data", volumes, "--radius", "5", *SMALL, "--out", first], capsys)[0] == 0
    out = tmp_path / "e2"
    code, io = cli(["pitfalls", "texture", "--volumes", "--data", volumes, "--radius", "5", *SMALL, "--match", first,
                    "--compare-slices", "--slices", "12:13", "--out", out], capsys)
    assert code == 0, io.err
    arrays = saved(out)
    np.testing.assert_array_equal(arrays["centers"], saved(first)["centers"])  # --match reuses the centres
    assert arrays["ap_per_volume"].shape == (3, 3, 4) and list(arrays["textures"]) == ["shuffle", "sink", "source"]
    assert arrays["matched_ap"].shape == (3, 4) and arrays["slice_ap"].shape == (3, 4)
    assert {"textures.png", "compare_slices.png"} <= {p.name for p in out.iterdir()}
    bad = tmp_path / "bad"
    code, io = cli(["pitfalls", "texture", "--volumes", "--data", volumes, "--radius", "6", *SMALL, "--match", first,
                    "--out", bad], capsys)
    assert_one_error(code, io.err, "used another ball radius")
    assert not bad.exists() and not (tmp_path / "bad.partial").exists()


def test_radius_in_millimetres_uses_the_header_spacing(tmp_path, capsys):
    path = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(brain_volume((40, 40, 12), seed=1), np.diag([1.0, 1.0, 2.5, 1.0])), str(path))
    out = tmp_path / "mm"
    code, io = cli(["pitfalls", "intensity", "--volumes", "--data", path, "--radius", "5", "--radius-unit", "mm", *SMALL,
                    "--out", out], capsys)
    assert code == 0, io.err
    np.testing.assert_allclose(saved(out)["radius_voxels"], [[5, 5, 2]])
    assert "ball radius 5 mm, i.e. (5, 5, 2) voxels" in (out / "summary.md").read_text()
    code, io = cli(["pitfalls", "intensity", "--volumes", "--data", path, "--radius", "16", "--radius-unit", "mm", *SMALL,
                    "--out", tmp_path / "big"], capsys)
    assert_one_error(code, io.err, "the ball does not fit: --radius 16 mm is 16, 16, 6.4 voxels (spacing 1 × 1 × 2.5 mm) in")
    assert "along axis 2 it must lie in [1, 6) voxels" in io.err and not (tmp_path / "big").exists()


@pytest.fixture
def checkpoint(tmp_path, torch_one_thread):
    model = create_model("ae", size=32, d=4, width=4)
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    model.preparation = {"size": 32, "geometry": "pad", "normalize": None, "equalize": False}
    return save_checkpoint(tmp_path / "ae.pt", model, step=5, config={"input_range": [0.0, 1.0], "preset": "test"}, metrics={})


@pytest.mark.parametrize("mode", ["normal", "anomalous"])
def test_a_2d_model_on_whole_volumes(volumes, checkpoint, tmp_path, capsys, mode):
    out = tmp_path / f"model-{mode}"
    code, io = cli(["pitfalls", "model", "--volumes", "--checkpoint", checkpoint, "--reconstruct", mode, "--data", volumes,
                    "--radius", "5", *SMALL, "--batch-size", "16", "--device", "cpu", "--out", out], capsys)
    assert code == 0, io.err
    arrays = saved(out)
    assert arrays["ap_per_volume"].shape == (3, 6) and arrays["blur_ap"].shape == (6, 4) and arrays["centers"].shape == (3, 3)
    assert 0 <= float(arrays["matched_sigma"]) <= 2 and arrays["recon_error_per_volume"].shape == (3,)
    config = json.loads((out / "config.json").read_text())
    assert config["volumes"] is True and config["model"]["name"] == "ae" and str(checkpoint) in config["input_hashes"]
    summary = (out / "summary.md").read_text()
    assert f"reconstruction of the {mode} volume" in summary and "every slice along axis 2" in summary
    assert (out / "curve.png").is_file()
    code, io = cli(["pitfalls", "compare", out, "--out", tmp_path / "compared"], capsys)  # compare takes these folders
    assert code == 0, io.err


def bad_run(capsys, tmp_path, *args):
    out = tmp_path / "out"
    code, io = cli(["pitfalls", "intensity", *args, *SMALL, "--out", out], capsys)
    assert not out.exists() and not (tmp_path / "out.partial").exists()
    return code, io.err


def test_bad_inputs_are_one_sentence_without_a_folder(volumes, tmp_path, capsys):
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16), np.float32), np.eye(4)), str(flat))
    assert_one_error(*bad_run(capsys, tmp_path, "--volumes", "--data", flat), f"'{flat}' has shape (16, 16); expected a 3-D volume.")
    assert_one_error(*bad_run(capsys, tmp_path, "--volumes", "--data", volumes, "--radius", "12"),
                   "the ball does not fit: --radius 12 voxels in")
    empty = tmp_path / "empty"
    empty.mkdir()
    save_nifti(empty / "a.nii.gz", brain_volume((20, 20, 20)))
    save_nifti(empty / "b.nii.gz", np.zeros((20, 20, 20), np.float32))
    assert_one_error(*bad_run(capsys, tmp_path, "--volumes", "--data", empty, "--radius", "3"),
                   f"'{empty / 'b.nii.gz'}' has an empty foreground (no voxel > 0)")
    assert_one_error(*bad_run(capsys, tmp_path, "--data", volumes, "--radius-unit", "mm"),
                   "--radius-unit mm applies to whole volumes: add --volumes.")
    assert_one_error(*bad_run(capsys, tmp_path, "--compare-slices"), "--compare-slices applies to whole volumes: add --volumes.")
    assert_one_error(*bad_run(capsys, tmp_path, "--volumes", "--size", "64"), "--size resizes 2-D images")
    assert_one_error(*bad_run(capsys, tmp_path, "--volumes", "--data", make_folder(tmp_path / "pngs")),
                   "has the folder layout (2-D images)")
    assert_one_error(*bad_run(capsys, tmp_path, "--volumes", "--data", volumes, "--radius", "3", "--compare-slices"),
                   "slice 128 is out of range for")  # the protocol's slice needs 256-deep volumes: give --slice
    centres = tmp_path / "c.txt"
    centres.write_text("1 2\n3 4\n5 6\n")
    assert_one_error(*bad_run(capsys, tmp_path, "--volumes", "--data", volumes, "--centers", centres),
                   "must hold integer voxel index triples")


def test_brats_subjects_keep_their_tumours_with_a_warning(tmp_path, capsys):
    root = make_brats_nifti(tmp_path / "brats", depth=12)
    out = tmp_path / "brats-out"
    code, io = cli(["pitfalls", "intensity", "--volumes", "--data", root, "--normalize", "99", "--radius", "3", *SMALL,
                    "--out", out], capsys)
    assert code == 0, io.err
    assert "warning: BraTS subjects keep their tumours" in io.err
    assert saved(out)["ap_per_volume"].shape == (3, 6, 4)

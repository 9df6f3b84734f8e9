import json

import numpy as np
import pytest

from blindspot.cli import main

SMALL = ["--n-intensities", "6", "--n-sigmas", "4", "--sigma-max", "3"]


def test_intensity_command_writes_complete_folder(nifti_folder, tmp_path, capsys):
    out = tmp_path / "exp1"
    code = main(["pitfalls", "intensity", "--data", str(nifti_folder), "--slices", "11:13", "--radius", "8",
                 "--seed", "3", "--save-inputs", "--out", str(out), *SMALL])
    assert code == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"results.npz", "config.json", "summary.md", "heatmap.png", "histogram.png"}
    with np.load(out / "results.npz") as saved:
        assert saved["ap"].shape == (6, 4) and saved["ap_per_image"].shape == (10, 6, 4)
        assert saved["residual_mean"].shape == (6, 4) and saved["centers"].shape == (10, 2)
        assert saved["inputs"].shape == (10, 48, 48) and saved["inputs"].dtype == np.float32
        np.testing.assert_array_equal(saved["intensities"], np.linspace(0, 1, 6))
        np.testing.assert_array_equal(saved["sigmas"], np.linspace(0, 3, 4))
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 3 and config["parameters"]["radius"] == 8
    assert len(config["data"]["files"]) == 5 and config["versions"]["blindspot"]
    assert "AP < 0.5" in (out / "summary.md").read_text()
    assert not (tmp_path / "exp1.partial").exists()


def test_texture_command_matches_to_experiment_1(nifti_folder, tmp_path, capsys):
    exp1, exp2 = tmp_path / "exp1", tmp_path / "exp2"
    common = ["--data", str(nifti_folder), "--slice", "12", "--radius", "8", *SMALL]
    assert main(["pitfalls", "intensity", *common, "--out", str(exp1)]) == 0
    assert main(["pitfalls", "texture", *common, "--match", str(exp1), "--out", str(exp2)]) == 0
    with np.load(exp2 / "results.npz") as saved, np.load(exp1 / "results.npz") as reference:
        assert list(saved["textures"]) == ["shuffle", "sink", "source"]
        assert saved["ap"].shape == (3, 4) and saved["ap_per_image"].shape == (5, 3, 4)
        np.testing.assert_array_equal(saved["centers"], reference["centers"])
        np.testing.assert_array_equal(saved["matched_ap"], reference["ap"][saved["matched_intensity_index"]])
    assert (exp2 / "textures.png").exists()
    other = ["--data", str(nifti_folder), "--slice", "13", "--radius", "8", *SMALL]
    assert main(["pitfalls", "texture", *other, "--match", str(exp1), "--out", str(tmp_path / "x")]) == 2
    assert "other images" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{tmp}/nothing.nii.gz"], "does not exist"),
        (["--data", "{folder}", "--slice", "99"], "slice 99 is out of range"),
        (["--data", "{folder}", "--slices", "3"], "--slices must look like A:B"),
        (["--data", "{folder}", "--slice", "3", "--slices", "1:4"], "either --slice or --slices"),
        (["--data", "{folder}", "--slice", "0"], "empty foreground"),
        (["--n-sigmas", "0"], "Invalid value for '--n-sigmas'"),
        (["--colour", "red"], "No such option '--colour'"),
        (["--split", "val"], "Invalid value for '--split'"),
    ],
)
def test_user_errors_exit_2_with_one_line_and_no_folder(nifti_folder, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, folder=nifti_folder) for a in args]
    out = tmp_path / "never"
    assert main(["pitfalls", "intensity", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "never.partial").exists()


def test_existing_output_needs_overwrite(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert main(["pitfalls", "intensity", "--out", str(tmp_path / "out"), *SMALL]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_every_command_has_help(capsys):
    for command in (["--help"], ["pitfalls", "--help"], ["pitfalls", "intensity", "--help"],
                    ["pitfalls", "texture", "--help"], ["demo", "--help"]):
        assert main(command) == 0
    assert "--equalize" in capsys.readouterr().out

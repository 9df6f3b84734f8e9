"""Where evaluation cases come from (blindspot.evaluation.sources): folders of maps paired by name,
and maps of a model or a baseline computed on a data set, each checked for leaks between splits."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from blindspot.anomalies import synthetic_test_set
from blindspot.baselines import ZScore
from blindspot.cli import main
from blindspot.data import DataConfig, load
from blindspot.data.nifti import split_files
from blindspot.errors import BlindspotError
from blindspot.evaluation import MapsFolder, OnData, maps_cases
from blindspot.evaluation import test_images as labelled_test_images
from blindspot.models import create_model
from blindspot.models.checkpoint import save_checkpoint
from blindspot.models.inference import reconstruct

from eval_fixtures import make_brats2021, make_brats_nifti, make_maps, make_mood
from conftest import assert_one_error


def run(args, capsys, overlays=0):
    """Run ``blindspot evaluate`` in-process (overlays off unless tested: figures are the slow part)."""
    if overlays is not None:
        args = [*args, "--overlays", overlays]
    code = main(["evaluate", *map(str, args)])
    return code, capsys.readouterr()


# ---------------------------------------------------------------------------------------- maps folders


def test_maps_cases_pair_files_by_name_and_put_the_slice_axis_first(tmp_path):
    f = make_maps(tmp_path / "m", kind="nii", volumes=True, n=2)
    cases = maps_cases(f["maps"], f["labels"], masks=f["masks"], images=f["images"])
    assert [c.name for c in cases] == ["case_00.nii.gz", "case_01.nii.gz"]
    assert cases[1].map.shape == (4, 24, 24) and cases[1].label.dtype == bool and cases[1].label[1:3].any()
    assert not cases[0].label.any() and cases[0].anomalous is None
    healthy = maps_cases(f["maps"], None)
    assert all(c.anomalous is False and c.label is None for c in healthy)
    stream = maps_cases(f["maps"], f["labels"], stream=True)
    assert stream.count == 2 and [c.name for c in stream] == [c.name for c in cases]


def _break(kind, f):
    if kind == "no label":
        (f["labels"] / "case_02.npy").unlink()
    elif kind == "no map":
        (f["maps"] / "case_02.npy").unlink()
    elif kind == "shape":
        np.save(f["labels"] / "case_02.npy", np.zeros((5, 5)))
    elif kind == "corrupt":
        (f["maps"] / "case_02.npy").write_bytes(b"garbage")
    elif kind == "nan":
        np.save(f["maps"] / "case_02.npy", np.full((24, 24), np.nan, np.float32))


@pytest.mark.parametrize(("kind", "message"), [
    ("no label", r"map '.*case_02.npy' has no label file named 'case_02\.\*'"),
    ("no map", r"label '.*case_02.npy' has no map file"),
    ("shape", r"label '.*case_02.npy' has shape \(5, 5\) but map '.*case_02.npy' has \(24, 24\)"),
    ("corrupt", r"'.*case_02.npy' is not a readable .npy array"),
    ("nan", r"map '.*case_02.npy' contains NaN"),
])
def test_cli_mismatched_and_corrupt_files_give_one_line(tmp_path, capsys, kind, message):
    f = make_maps(tmp_path / "m")
    _break(kind, f)
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--out", tmp_path / "o"], capsys)
    assert_one_error(code, io.err, pattern=message)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "{o}"], "exactly one map source"),
    (["--maps", "{maps}", "--out", "{o}"], "--maps needs --labels"),
    (["--maps", "{maps}", "--labels", "{labels}", "--threshold", "fpr", "--out", "{o}"], "needs validation cases"),
    (["--maps", "{maps}", "--labels", "{labels}", "--mask-erosion", "2", "--out", "{o}"], "needs brain masks"),
    (["--baseline", "image", "--data", "{tmp}/m", "--out", "{o}"], "matches no known layout"),
    (["--baseline", "image", "--data", "{tmp}", "--out", "{o}"], "--out '.*' overlaps the input"),
    (["--maps", "{maps}", "--labels", "{labels}", "--data", "{tmp}", "--out", "{o}"], "--data applies to --checkpoint and --baseline"),
    (["--baseline", "image", "--labels", "{labels}", "--out", "{o}"], "--labels applies to --maps, not to --baseline"),
    (["--baseline", "image", "--train-data", "{tmp}", "--out", "{o}"], "--train-data applies to --baseline zscore only"),
    (["--maps", "{maps}", "--labels", "{labels}", "--val-labels", "{labels}", "--out", "{o}"], "--val-labels and --val-masks need --val-maps"),
    (["--maps", "{maps}", "--labels", "{labels}", "--mask-erosion", "1", "--no-mask", "--out", "{o}"], "either --mask-erosion N or --no-mask"),
])
def test_cli_usage_errors(tmp_path, capsys, args, message):
    f = make_maps(tmp_path / "m", n=2)
    args = [a.format(o=tmp_path / "o", maps=f["maps"], labels=f["labels"], tmp=tmp_path) for a in args]
    code, io = run(args, capsys)
    assert_one_error(code, io.err, pattern=message)
    assert not (tmp_path / "o").exists()


def test_cli_missing_maps_folder_is_a_usage_error(tmp_path, capsys):
    f = make_maps(tmp_path / "m", n=2)
    code, io = run(["--maps", tmp_path / "nowhere", "--labels", f["labels"], "--out", tmp_path / "o"], capsys)
    assert code == 2 and re.search(r"Invalid value for '--maps': Directory '.*nowhere' does not exist", io.err), io.err
    with pytest.raises(BlindspotError, match="maps folder '.*nowhere' does not exist"):
        maps_cases(tmp_path / "nowhere", f["labels"])


def test_validation_maps_identical_to_the_test_maps_are_refused(tmp_path, capsys):
    f = make_maps(tmp_path / "m")
    copy = tmp_path / "copy"
    shutil.copytree(f["maps"], copy)  # same content under another name is still the test maps
    for val_maps in (f["maps"], copy):
        code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--val-maps", val_maps, "--val-labels", f["labels"],
                        "--threshold", "val-dice", "--out", tmp_path / "o"], capsys)
        assert_one_error(code, io.err, pattern=r"--val-maps '.*' holds maps identical to test maps")
    with pytest.raises(BlindspotError, match="`val_maps` .* identical to test maps"):
        MapsFolder(str(f["maps"]), str(f["labels"]), val_maps=str(copy)).cases(0)
    other = make_maps(tmp_path / "v", seed=3)
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--val-maps", other["maps"], "--val-labels", other["labels"],
                    "--threshold", "val-dice", "--out", tmp_path / "o"], capsys)
    assert code == 0, io.err


def test_val_fraction_with_the_oracle_threshold_is_refused(tmp_path, capsys):
    f = make_maps(tmp_path / "m")
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--val-fraction", "0.3", "--out", tmp_path / "o"], capsys)
    assert_one_error(code, io.err, pattern="--val-fraction has no effect here: it applies with --threshold val-dice or fpr")
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--preset", "benchmark", "--val-fraction", "0.3",
                    "--out", tmp_path / "o"], capsys)
    assert_one_error(code, io.err, pattern="--val-fraction has no effect here")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------- baselines on data


def test_cli_baselines_on_a_dataset(tmp_path, capsys):
    root = make_brats2021(tmp_path / "b")
    code, io = run(["--baseline", "zscore", "--data", root, "--out", tmp_path / "z"], capsys)
    assert code == 0, io.err
    test = load(DataConfig(str(root)), default_split="test")
    train = load(DataConfig(str(root)), default_split="train")
    maps = np.abs(ZScore.fit(train.images).maps(test.images))
    rows = list(csv.DictReader((tmp_path / "z" / "per_case.csv").open()))
    np.testing.assert_allclose([float(r["image_score"]) for r in rows], maps.mean(axis=(1, 2)), rtol=1e-5)
    record = json.loads((tmp_path / "z" / "metrics.json").read_text())
    assert record["metrics"]["pixel"]["ap"] == average_precision_score(test.labels.ravel(), maps.ravel())
    code, io = run(["--baseline", "image", "--equalize", "--data", root, "--out", tmp_path / "i"], capsys)
    assert code == 0, io.err
    assert json.loads((tmp_path / "i" / "config.json").read_text())["source"]["data"]["preparation"]["equalize"]


def test_image_baseline_on_the_embedded_template_uses_the_synthetic_test_set(tmp_path, capsys):
    code, io = run(["--data", "mni152", "--baseline", "image", "--size", "32", "--out", tmp_path / "o"], capsys)
    assert code == 0, io.err
    test = synthetic_test_set(load(DataConfig().with_preparation(size=32), default_split="test"), seed=0)
    assert labelled_test_images(DataConfig().with_preparation(size=32), seed=0).names == test.names
    record = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert record["metrics"]["n_cases"] == 2 * 10 and record["metrics"]["image"]["n_anomalous"] == 10
    assert record["metrics"]["pixel"]["ap"] == average_precision_score(test.labels.ravel(), test.images.ravel())
    rows = list(csv.DictReader((tmp_path / "o" / "per_case.csv").open()))
    assert [r["name"] for r in rows] == test.names
    np.testing.assert_allclose([float(r["image_score"]) for r in rows], test.images.mean(axis=(1, 2), dtype=np.float64), rtol=1e-6)
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["source"]["test_set"]["seed"] == 0 and config["source"]["baseline"] == "image"
    assert "the test set is the synthetic one" in (tmp_path / "o" / "summary.md").read_text()
    code, io = run(["--data", "mni152", "--baseline", "image", "--size", "32", "--seed", "1", "--out", tmp_path / "s1"], capsys)
    assert code == 0, io.err
    assert json.loads((tmp_path / "s1" / "metrics.json").read_text())["metrics"]["pixel"]["ap"] != record["metrics"]["pixel"]["ap"]


def test_zscore_on_nifti_volumes_trains_on_the_train_split_only(tmp_path, capsys, monkeypatch):
    mood = make_mood(tmp_path / "mood", n=5)
    fitted = []
    real_fit = ZScore.fit.__func__
    monkeypatch.setattr(ZScore, "fit", classmethod(lambda cls, images, **k: fitted.append(images) or real_fit(cls, images, **k)))
    code, io = run(["--baseline", "zscore", "--data", mood, "--slice", "2", "--out", tmp_path / "z"], capsys)
    assert code == 0, io.err
    files = sorted(str(p) for p in mood.iterdir())
    train_files, test_files = split_files(files, "train"), split_files(files, "test")
    assert set(train_files).isdisjoint(test_files) and len(train_files) == 3
    source = json.loads((tmp_path / "z" / "config.json").read_text())["source"]
    assert source["train_data"]["files"] == train_files and source["train_data"]["split"] == "train"
    assert set(source["train_data"]["files"]).isdisjoint(test_files)
    train = load(DataConfig(str(mood), slices=(2,)), default_split="train")
    assert len(fitted) == 1
    np.testing.assert_array_equal(fitted[0], train.images)  # the train volumes, never a test volume
    test = synthetic_test_set(load(DataConfig(str(mood), slices=(2,)), default_split="test"))
    rows = list(csv.DictReader((tmp_path / "z" / "per_case.csv").open()))
    expected = np.abs(ZScore.fit(train.images).maps(test.images)).mean(axis=(1, 2))
    np.testing.assert_allclose([float(r["image_score"]) for r in rows], expected, rtol=1e-5)


@pytest.mark.parametrize("which", ["nifti", "mni152"])
def test_training_images_overlapping_the_test_images_are_refused(tmp_path, capsys, which):
    data = str(make_mood(tmp_path / "mood", n=5)) if which == "nifti" else "mni152"
    extra = ["--slice", "2"] if which == "nifti" else ["--size", "32"]
    code, io = run(["--baseline", "zscore", "--data", data, "--train-data", data, "--split", "test", *extra,
                    "--out", tmp_path / "o"], capsys)
    assert_one_error(code, io.err, pattern="the zscore training images and the test images share")
    if which == "nifti":  # all volumes include the train split (for the template, "all" is its test slices)
        code, io = run(["--baseline", "zscore", "--data", data, "--split", "all", *extra, "--out", tmp_path / "o"], capsys)
        assert_one_error(code, io.err, pattern="the zscore training images and the test images share")
    assert not (tmp_path / "o").exists()
    code, io = run(["--baseline", "zscore", "--data", data, *extra, "--out", tmp_path / "ok"], capsys)
    assert code == 0, io.err


def test_validation_data_overlapping_the_test_data_are_refused(tmp_path, capsys):
    root = make_brats2021(tmp_path / "b")
    code, io = run(["--baseline", "image", "--data", root, "--val-data", root, "--threshold", "val-dice", "--out", tmp_path / "o"],
                   capsys)
    assert_one_error(code, io.err, pattern="the validation images and the test images share")
    with pytest.raises(BlindspotError, match="validation images and the test images share"):
        OnData(DataConfig(str(root)), baseline="image", val_data=DataConfig(str(root))).cases(0, False)


def test_cli_brats_volumes_streamed(tmp_path, capsys):
    root = make_brats_nifti(tmp_path / "brats")
    code, io = run(["--baseline", "image", "--data", root, "--normalize", "99", "--volumes", "--pooling", "volume",
                    "--split", "all", "--out", tmp_path / "o"], capsys)
    assert code == 0, io.err
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())["metrics"]
    assert metrics["n_cases"] == 3 and metrics["pixel"]["n_units_with_positive"] == 3
    code, io = run(["--baseline", "image", "--data", root, "--normalize", "99", "--volumes", "--pooling", "volume",
                    "--out", tmp_path / "test"], capsys)  # by default, the subjects of the test split only
    assert code == 0, io.err
    subjects = split_files(sorted(p.name for p in root.iterdir()), "test")
    per_case = list(csv.DictReader((tmp_path / "test" / "per_case.csv").open()))
    assert [r["name"] for r in per_case] == subjects and 0 < len(subjects) < 3


# ---------------------------------------------------------------------------------------- checkpoints


@pytest.fixture
def checkpoint(tmp_path, torch_one_thread):
    torch.manual_seed(0)
    net = create_model("bench-ae", size=32, d=4, hidden=16)
    net.input_range = (-1.0, 1.0)
    net.preparation = {"size": 32, "geometry": "pad", "normalize": None, "equalize": False}
    path = save_checkpoint(tmp_path / "m.pt", net, step=0, config={"input_range": (-1.0, 1.0)}, metrics={})
    return path, net


def test_cli_checkpoint_maps_are_the_models_residuals(tmp_path, capsys, checkpoint):
    path, net = checkpoint
    root = make_brats2021(tmp_path / "b")
    code, io = run(["--checkpoint", path, "--data", root, "--out", tmp_path / "o", "--image-score", "max"], capsys)
    assert code == 0, io.err
    data = load(DataConfig(str(root)).with_preparation(size=32), default_split="test")  # the checkpoint's preparation
    recon = reconstruct(net.eval(), data.images)
    expected = ((data.images - recon) ** 2).max(axis=(1, 2))  # bench-ae trains with MSE: squared residual
    rows = list(csv.DictReader((tmp_path / "o" / "per_case.csv").open()))
    np.testing.assert_allclose([float(r["image_score"]) for r in rows], expected, rtol=1e-5)
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["source"]["residual"] == "l2" and config["source"]["data"]["preparation"]["size"] == 32
    assert config["source"]["input_range"] == [-1.0, 1.0]
    code, io = run(["--checkpoint", path, "--data", root, "--size", "32", "--out", tmp_path / "same"], capsys)
    assert code == 0, io.err  # the model's own value may be given


@pytest.mark.parametrize(("flags", "message"), [
    (["--size", "64"], r"--size 64 conflicts with the preparation '.*m\.pt' was trained with \(size=32\)"),
    (["--equalize"], r"--equalize True conflicts with the preparation '.*m\.pt' was trained with \(equalize=False\)"),
    (["--geometry", "crop"], r"--geometry 'crop' conflicts with .* \(geometry='pad'\)"),
])
def test_cli_checkpoint_refuses_another_preparation(tmp_path, capsys, checkpoint, flags, message):
    root = make_brats2021(tmp_path / "b")
    code, io = run(["--checkpoint", checkpoint[0], "--data", root, *flags, "--out", tmp_path / "o"], capsys)
    assert_one_error(code, io.err, pattern=message)
    assert not (tmp_path / "o").exists()

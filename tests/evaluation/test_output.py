"""The result folder of ``blindspot evaluate`` (blindspot.evaluation.output): every file, the summary,
notes and warnings, and the output rule."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from blindspot.cli import main
from blindspot.evaluation import MapsFolder, make_options, run_evaluation
from blindspot.evaluation.output import overlay_files, overlay_name
from blindspot.results import MARKER, file_sha256

from eval_fixtures import SIZE, make_maps


def run(args, capsys, overlays=0):
    """Run ``blindspot evaluate`` in-process (overlays off unless tested: figures are the slow part)."""
    if overlays is not None:
        args = [*args, "--overlays", overlays]
    code = main(["evaluate", *map(str, args)])
    return code, capsys.readouterr()


def brute_best_dice(labels, scores):
    dices = [(2 * np.sum((scores >= t) & labels) / (np.sum(scores >= t) + labels.sum()), t) for t in np.unique(scores)]
    return max(dices)


def healthy_maps(folder, *, n=4, offset=0.0, seed=5):
    """Maps of healthy images (no labels): validation maps for an FPR threshold."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for k in range(n):
        np.save(folder / f"h{k}.npy", (np.abs(rng.normal(0, 0.1, (SIZE, SIZE))) + offset).astype(np.float32))
    return folder


def test_cli_maps_folder_writes_every_output(tmp_path, capsys):
    f = make_maps(tmp_path / "m", kind="npy")
    out = tmp_path / "out"
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--masks", f["masks"], "--images", f["images"],
                    "--out", out, "--preset", "benchmark", "--image-score", "mask-mean"], capsys, overlays=2)
    assert code == 0, io.err
    names = {p.name for p in out.iterdir()}
    assert names == {"metrics.json", "config.json", "per_case.csv", "summary.md", "pr_curve.png", "roc_curve.png", "curves.npz",
                     "bootstrap.npz", "overlays", MARKER}
    assert not (tmp_path / "out.partial").exists()
    # 2 best and 2 worst asked of 3 anomalous cases: each case at most once, named without its extension
    shown = [p.name.split("_", 2)[2] for p in (out / "overlays").iterdir()]
    assert len(shown) == len(set(shown)) >= 2 and set(shown) <= {"case_01.png", "case_03.png", "case_05.png"}
    record = json.loads((out / "metrics.json").read_text())
    assert record["preset"] == "benchmark" and record["protocol"]["pooling"] == "pooled" and record["versions"]["blindspot"]
    keys = sorted(p.stem for p in f["maps"].iterdir())
    labels = np.concatenate([np.load(f["labels"] / f"{k}.npy").ravel() > 0 for k in keys])
    scores = np.concatenate([np.load(f["maps"] / f"{k}.npy").ravel() for k in keys])
    assert record["metrics"]["pixel"]["ap"] == average_precision_score(labels, scores)
    assert record["metrics"]["pixel"]["best_dice"] == pytest.approx(brute_best_dice(labels, scores)[0], abs=1e-12)
    rows = list(csv.DictReader((out / "per_case.csv").open()))
    assert [r["name"] for r in rows] == [f"{k}.npy" for k in keys] and float(rows[1]["pixel_ap"]) > 0
    assert "## Protocol" in (out / "summary.md").read_text()
    config = json.loads((out / "config.json").read_text())
    every_file = [p for folder in f.values() for p in sorted(folder.iterdir())]
    assert config["input_hashes"] == {str(p): file_sha256(p) for p in every_file}
    assert config["cases"] == [f"{k}.npy" for k in keys] and config["source"]["kind"] == "maps"
    with np.load(out / "curves.npz") as curves:
        np.testing.assert_array_equal(curves["image_labels"], [bool(k % 2) for k in range(6)])
        assert curves["pixel_recall"].max() == 1.0 and curves["pixel_prevalence"] == pytest.approx(labels.mean())


def test_cli_nifti_volumes_per_volume_median_3d(tmp_path, capsys):
    f = make_maps(tmp_path / "m", kind="nii", volumes=True, n=4)
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--masks", f["masks"], "--out", tmp_path / "o",
                    "--pooling", "volume", "--median", "3", "--median-dims", "3", "--mask-erosion", "1", "--stream"], capsys)
    assert code == 0, io.err
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())["metrics"]
    assert metrics["pixel"]["n_units"] == 4 and metrics["pixel"]["n_units_with_positive"] == 2
    assert (tmp_path / "o" / "per_volume.csv").exists()


def test_cli_signed_maps_with_brain_mri_preset_and_validation_maps(tmp_path, capsys):
    test, val = make_maps(tmp_path / "t", signed=True, seed=1), make_maps(tmp_path / "v", signed=True, seed=2)
    code, io = run(["--maps", test["maps"], "--labels", test["labels"], "--masks", test["masks"], "--preset", "brain-mri",
                    "--val-maps", val["maps"], "--val-labels", val["labels"], "--val-masks", val["masks"], "--out", tmp_path / "o"], capsys)
    assert code == 0, io.err
    record = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert record["metrics"]["threshold"]["method"] == "val-dice" and record["protocol"]["min_component_size"] == 20
    unsigned = make_maps(tmp_path / "u")
    code, _ = run(["--maps", unsigned["maps"], "--labels", unsigned["labels"], "--positive-residual", "--out", tmp_path / "o2"], capsys)
    assert code == 0
    assert "had no effect" in json.dumps(json.loads((tmp_path / "o2" / "metrics.json").read_text())["notes"])


def test_benchmark_compat_reports_both_best_dice_rules(tmp_path, capsys):
    f = make_maps(tmp_path / "m", n=8)
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--preset", "benchmark-compat", "--out", tmp_path / "o"], capsys)
    assert code == 0, io.err
    pixel = json.loads((tmp_path / "o" / "metrics.json").read_text())["metrics"]["pixel"]
    keys = sorted(p.stem for p in f["maps"].iterdir())
    labels = np.concatenate([np.load(f["labels"] / f"{k}.npy").ravel() > 0 for k in keys])
    scores = np.concatenate([np.load(f["maps"] / f"{k}.npy").ravel() for k in keys])
    ordered = np.sort(scores)
    rule = max(2 * np.sum((scores > t) & labels) / (np.sum(scores > t) + labels.sum()) for t in ordered[:: len(scores) // 200])
    assert pixel["best_dice_rule"] == "benchmark" and pixel["best_dice"] == pytest.approx(rule, abs=1e-12)
    assert pixel["best_dice_exact"] == pytest.approx(brute_best_dice(labels, scores)[0], abs=1e-12)
    summary = (tmp_path / "o" / "summary.md").read_text()
    assert f"| best Dice (the benchmark's 200-threshold rule; on the test labels: an upper bound) | {pixel['best_dice']:.4f} |" in summary
    assert f"| best Dice (exact maximum) | {pixel['best_dice_exact']:.4f} [" in summary  # then its bootstrap interval
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--preset", "benchmark", "--out", tmp_path / "e"], capsys)
    summary = (tmp_path / "e" / "summary.md").read_text()
    assert "| best Dice (exact; on the test labels: an upper bound) |" in summary and "exact maximum" not in summary


def test_cli_fpr_is_in_percent_and_a_fraction_like_value_warns(tmp_path, capsys):
    f = make_maps(tmp_path / "m")
    val = healthy_maps(tmp_path / "val")
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--threshold", "fpr", "--fpr", "5", "--val-maps", val,
                    "--out", tmp_path / "five"], capsys)
    assert code == 0 and "warning" not in io.err, io.err
    threshold = json.loads((tmp_path / "five" / "metrics.json").read_text())["metrics"]["threshold"]
    inside = np.concatenate([np.load(p).ravel() for p in sorted(val.iterdir())])
    assert threshold["target_fpr_percent"] == 5
    assert threshold["validation_fpr_percent"] == 100 * np.mean(inside >= threshold["value"]) == 100 * int(0.05 * inside.size) / inside.size
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--threshold", "fpr", "--fpr", "0.05", "--val-maps", val,
                    "--out", tmp_path / "small"], capsys)
    assert code == 0, io.err
    warnings = [line for line in io.err.splitlines() if line.startswith("warning:")]
    assert warnings[0] == "warning: --fpr is a percentage: 0.05 means 0.05 % of healthy pixels (for 5 % give 5)."
    assert json.loads((tmp_path / "small" / "metrics.json").read_text())["metrics"]["threshold"]["target_fpr_percent"] == 0.05
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--fpr", "5", "--out", tmp_path / "x"], capsys)
    assert code == 2 and "error: --fpr has no effect here: it applies with --threshold fpr" in io.err


def test_a_threshold_that_predicts_no_pixel_is_noted_and_warned(tmp_path, capsys):
    f = make_maps(tmp_path / "m")
    val = healthy_maps(tmp_path / "val", offset=10.0)  # every healthy validation score above every test score
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--threshold", "fpr", "--val-maps", val, "--out", tmp_path / "o"],
                   capsys)
    assert code == 0, io.err
    message = "the threshold at 5 % false positives predicts no test pixel: Dice is 0 (is --fpr meant in percent?)."
    assert f"warning: {message}" in io.err.splitlines()
    record = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert record["metrics"]["at_threshold"]["predicted"] == 0 and record["metrics"]["at_threshold"]["dice"] == 0
    assert any("predicts no test pixel" in note for note in record["notes"])
    assert "predicts no test pixel" in (tmp_path / "o" / "summary.md").read_text()


def test_run_evaluation_writes_a_marked_folder_and_respects_the_output_rule(tmp_path):
    f = make_maps(tmp_path / "m", n=4)
    source = MapsFolder(str(f["maps"]), str(f["labels"]))
    out = run_evaluation(tmp_path / "o", source, make_options("benchmark"), preset="benchmark", n_overlays=0)
    assert out == tmp_path / "o" and (out / MARKER).is_file()
    first = json.loads((out / "metrics.json").read_text())["metrics"]
    from blindspot.errors import BlindspotError

    with pytest.raises(BlindspotError, match="already exists; pass --overwrite"):
        run_evaluation(out, source, make_options("benchmark"), n_overlays=0)
    run_evaluation(out, source, make_options("benchmark"), n_overlays=0, overwrite=True)
    assert json.loads((out / "metrics.json").read_text())["metrics"] == first and (out / MARKER).is_file()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(BlindspotError, match="was not written by blindspot"):
        run_evaluation(foreign, source, make_options("benchmark"), n_overlays=0, overwrite=True)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(BlindspotError, match="overlaps the input"):
        run_evaluation(f["maps"] / "results", source, make_options("benchmark"), n_overlays=0)


def test_a_failed_evaluation_leaves_no_folder(tmp_path, capsys):
    f = make_maps(tmp_path / "m", n=4)
    np.save(f["maps"] / "case_01.npy", np.full((SIZE, SIZE), np.inf, np.float32))
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--out", tmp_path / "o"], capsys)
    assert code == 2 and "contains NaN or infinite values" in io.err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_overlay_names_drop_extensions_and_write_slices_plainly():
    assert overlay_name("case_000.nii.gz[slice=16]") == "case_000_slice16"
    assert overlay_name("c1.npy") == "c1" and overlay_name("BraTS2021_2_flair_70.png") == "BraTS2021_2_flair_70"
    assert overlay_name("a b/c.d.png") == "c.d" and overlay_name("vol[slice=2]") == "vol_slice2"


@pytest.mark.parametrize("n_cases", [1, 2, 3, 5])
def test_overlays_show_each_case_once_however_many_are_asked(n_cases):
    names = [f"c{k}.npy" for k in range(n_cases)]
    for asked in (1, 2, n_cases, 100):
        best = [{"kind": "best", "name": n} for n in names[:asked]]
        worst = [{"kind": "worst", "name": n} for n in names[::-1][:asked]]
        files = [name for name, _ in overlay_files(best + worst)]
        shown = [name.split("_", 2)[2] for name in files]
        assert len(shown) == len(set(shown)) == min(2 * asked, n_cases)
        assert files[0] == "best_1_c0.png" and (n_cases == 1 or files[1] == f"worst_1_c{n_cases - 1}.png")

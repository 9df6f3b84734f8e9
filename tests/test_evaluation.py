"""The evaluation protocol: every metric against an independent computation, every option toggled."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from eval_fixtures import make_brats2021, make_brats_nifti, make_maps
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from blindspot.cli import main
from blindspot.errors import BlindspotError
from blindspot.evaluation import PRESETS, Case, CaseStream, EvaluationOptions, evaluate, make_options, split_validation
from blindspot.scoring import erode_mask


def random_cases(seed=0, n=8, size=16, signed=False, per_volume=2):
    """2D cases in volumes of ``per_volume`` slices; odd cases have a lesion with higher scores."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(n):
        label = np.zeros((size, size), bool)
        if k % 2:
            label[3 + k % 5: 8 + k % 5, 4:9] = True
        brain = np.zeros((size, size), bool)
        brain[1:-1, 1:-1] = True
        noise = rng.normal(0, 0.3, label.shape) if signed else rng.random(label.shape)
        scores = np.round(noise + 0.6 * label * rng.random(label.shape), 3).astype(np.float32)
        cases.append(Case(f"c{k}", scores, label, brain, volume=f"v{k // per_volume}"))
    return cases


def pooled(cases, transform=lambda c: c.map):
    labels = np.concatenate([c.label.ravel() for c in cases])
    scores = np.concatenate([np.asarray(transform(c)).ravel() for c in cases])
    return labels, scores


def brute_best_dice(labels, scores):
    dices = [(2 * np.sum((scores >= t) & labels) / (np.sum(scores >= t) + labels.sum()), t) for t in np.unique(scores)]
    return max(dices)


def same_metrics(a, b):
    return json.dumps(a.metrics, sort_keys=True, default=str) == json.dumps(b.metrics, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------- metrics


def test_pooled_metrics_equal_sklearn_and_brute_force():
    cases = random_cases()
    result = evaluate(cases, make_options("benchmark"))
    labels, scores = pooled(cases)
    pixel = result.metrics["pixel"]
    assert pixel["ap"] == average_precision_score(labels, scores)
    assert pixel["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    dice, threshold = brute_best_dice(labels, scores)
    assert pixel["best_dice"] == pytest.approx(dice, abs=1e-12) and pixel["best_dice_threshold"] == threshold
    at = result.metrics["at_threshold"]  # oracle threshold, no component filter: Dice at t is the best Dice
    assert result.metrics["threshold"]["value"] == threshold and at["dice"] == pytest.approx(dice, abs=1e-12)
    assert at["precision"] == np.sum((scores >= threshold) & labels) / np.sum(scores >= threshold)
    for row, case in zip(result.per_case, cases):
        if case.label.any():
            assert row["pixel_ap"] == average_precision_score(case.label.ravel(), case.map.ravel())
            assert row["best_dice"] == pytest.approx(brute_best_dice(case.label.ravel(), case.map.ravel())[0], abs=1e-12)
        assert row["tp"] == np.sum((case.map >= threshold) & case.label)


@pytest.mark.parametrize(("kind", "manual"), [
    ("mean", lambda c: c.map.mean()),
    ("max", lambda c: c.map.max()),
    ("mask-mean", lambda c: c.map[c.brain].mean()),
    ("top-k", lambda c: np.sort(c.map.ravel())[-13:].mean()),  # 5 % of 256 pixels → 13
])
def test_image_scores_and_image_metrics(kind, manual):
    cases = random_cases(seed=1)
    result = evaluate(cases, make_options(image_score=kind, top_percent=5))
    expected = np.array([manual(c) for c in cases])
    np.testing.assert_allclose([r["image_score"] for r in result.per_case], expected, rtol=1e-6)
    anomalous = np.array([c.label.any() for c in cases])
    scores = np.array([r["image_score"] for r in result.per_case])
    assert result.metrics["image"]["auroc"] == pytest.approx(roc_auc_score(anomalous, scores), abs=1e-12)
    assert result.metrics["image"]["ap"] == average_precision_score(anomalous, scores)


@pytest.mark.parametrize("pooling", ["volume", "image"])
def test_per_unit_pooling_matches_manual_means_and_differs_from_pooled(pooling):
    cases = random_cases(seed=2)
    result = evaluate(cases, make_options(pooling=pooling))
    groups = {}
    for c in cases:
        groups.setdefault(c.volume if pooling == "volume" else c.name, []).append(c)
    units = [pooled(g) for g in groups.values()]
    units = [(y, s) for y, s in units if y.any()]
    pixel = result.metrics["pixel"]
    assert pixel["n_units_with_positive"] == len(units)
    assert pixel["ap"] == pytest.approx(np.mean([average_precision_score(y, s) for y, s in units]), abs=1e-12)
    assert pixel["auroc"] == pytest.approx(np.mean([roc_auc_score(y, s) for y, s in units]), abs=1e-12)
    assert pixel["best_dice"] == pytest.approx(np.mean([brute_best_dice(y, s)[0] for y, s in units]), abs=1e-12)
    # the oracle threshold maximises the mean Dice over units, checked over every distinct score
    candidates = np.unique(np.concatenate([s for _, s in units]))
    mean_dice = [np.mean([2 * np.sum((s >= t) & y) / (np.sum(s >= t) + y.sum()) for y, s in units]) for t in candidates]
    assert result.metrics["at_threshold"]["dice"] == pytest.approx(max(mean_dice), abs=1e-12)
    pooled_result = evaluate(cases, make_options(pooling="pooled"))
    assert pixel["ap"] != pooled_result.metrics["pixel"]["ap"]
    assert len(result.per_unit) == len(groups)


def test_volume_cases_and_per_slice_units():
    rng = np.random.default_rng(3)
    label = np.zeros((4, 12, 12), bool)
    label[1:3, 4:8, 4:8] = True
    volume = Case("vol", (rng.random(label.shape) + label).astype(np.float32), label)
    by_slice = evaluate([volume], make_options(pooling="image"))
    assert [u["unit"] for u in by_slice.per_unit] == [f"vol[slice={k}]" for k in range(4)]
    expected = np.mean([average_precision_score(label[k].ravel(), volume.map[k].ravel()) for k in (1, 2)])
    assert by_slice.metrics["pixel"]["ap"] == pytest.approx(expected, abs=1e-12)
    assert by_slice.overlays[0]["name"] in ("vol[slice=1]", "vol[slice=2]")


# ---------------------------------------------------------------------------------------- options


def test_positive_residual_keeps_only_positive_values():
    cases = random_cases(seed=4, signed=True)
    on = evaluate(cases, make_options(positive_residual=True))
    clipped = [Case(c.name, np.maximum(c.map, 0), c.label, c.brain, volume=c.volume) for c in cases]
    assert same_metrics(on, evaluate(clipped, make_options()))
    assert not same_metrics(on, evaluate(cases, make_options()))
    assert on.n_signed == len(cases)


def test_mask_erosion_shrinks_the_mask():
    cases = random_cases(seed=5)
    for iterations in (0, 2):
        result = evaluate(cases, make_options(mask_erosion=iterations))
        manual = [Case(c.name, np.where(erode_mask(c.brain, iterations), c.map, 0), c.label, c.brain, volume=c.volume) for c in cases]
        assert same_metrics(result, evaluate(manual, make_options()))
    two = evaluate(cases, make_options(mask_erosion=2, image_score="mask-mean"))
    expected = [c.map[erode_mask(c.brain, 2)].mean() for c in cases]  # mask-mean uses the eroded mask
    np.testing.assert_allclose([r["image_score"] for r in two.per_case], expected, rtol=1e-6)
    assert not same_metrics(evaluate(cases, make_options(mask_erosion=0)), evaluate(cases, make_options(mask_erosion=2)))


def test_median_filter_2d_and_3d():
    rng = np.random.default_rng(6)
    label = np.zeros((5, 12, 12), bool)
    label[2, 3:9, 3:9] = True
    volume = Case("v", (rng.random(label.shape) + 0.5 * label).astype(np.float32), label)
    for dims, size in ((2, (1, 5, 5)), (3, (5, 5, 5))):
        result = evaluate([volume], make_options(median_size=5, median_dims=dims))
        manual = Case("v", ndimage.median_filter(volume.map, size=size), label)
        assert same_metrics(result, evaluate([manual], make_options()))
    assert not same_metrics(evaluate([volume], make_options(median_size=5, median_dims=2)),
                            evaluate([volume], make_options(median_size=5, median_dims=3)))
    with pytest.raises(BlindspotError, match="--median-dims 3 needs 3-D maps"):
        evaluate(random_cases(), make_options(median_size=3, median_dims=3))


def test_component_filter_changes_only_the_thresholded_metrics():
    cases = random_cases(seed=7)
    plain, filtered = evaluate(cases, make_options()), evaluate(cases, make_options(min_component_size=6))
    assert plain.metrics["pixel"] == filtered.metrics["pixel"]  # threshold-free metrics are unchanged
    t = filtered.metrics["threshold"]["value"]
    tp = fp = fn = 0
    for c in cases:
        labels, n = ndimage.label(c.map >= t)
        sizes = np.bincount(labels.ravel())
        keep = (sizes >= 6)[labels] & (labels > 0)
        tp, fp, fn = tp + np.sum(keep & c.label), fp + np.sum(keep & ~c.label), fn + np.sum(~keep & c.label)
    at = filtered.metrics["at_threshold"]
    assert (at["tp"], at["fp"], at["fn"]) == (tp, fp, fn)
    assert at["fp"] < plain.metrics["at_threshold"]["fp"]


def test_fpr_threshold_gives_the_rate_on_healthy_validation_pixels():
    rng = np.random.default_rng(8)
    brain = np.zeros((20, 20), bool)
    brain[2:18, 2:18] = True
    healthy = [Case(f"h{k}", rng.random((20, 20)).astype(np.float32), brain=brain, anomalous=False) for k in range(4)]
    inside = np.concatenate([c.map[brain] for c in healthy])
    for rate in (0.01, 0.05, 0.1):
        result = evaluate(random_cases(seed=9, size=20), make_options(threshold="fpr", fpr=rate), validation=healthy)
        threshold = result.metrics["threshold"]
        assert np.mean(inside >= threshold["value"]) == threshold["validation_fpr"] == int(rate * inside.size) / inside.size
    with pytest.raises(BlindspotError, match="needs healthy"):
        evaluate(random_cases(), make_options(threshold="fpr"), validation=random_cases()[1::2])


def test_validation_dice_threshold_and_hold_out():
    cases, validation = random_cases(seed=10), random_cases(seed=11)
    result = evaluate(cases, make_options(threshold="val-dice"), validation=validation)
    dice, threshold = brute_best_dice(*pooled(validation))
    assert result.metrics["threshold"]["value"] == threshold
    assert result.metrics["threshold"]["validation_dice"] == pytest.approx(dice, abs=1e-12)
    test, held = split_validation(cases, 0.25, seed=0)
    assert {c.volume for c in test}.isdisjoint({c.volume for c in held}) and len(held) == 2
    assert [c.name for c in split_validation(cases, 0.25, seed=0)[1]] == [c.name for c in held]
    auto = evaluate(cases, make_options(threshold="val-dice", val_fraction=0.25))
    assert auto.metrics["n_cases"] == 6
    with pytest.raises(BlindspotError, match="needs validation cases"):
        evaluate(cases, make_options(threshold="val-dice"))


def test_stream_equals_in_memory_and_binned_is_within_bounds():
    cases = random_cases(seed=12, n=10)
    for pooling in ("pooled", "volume"):
        memory = evaluate(cases, make_options(pooling=pooling, min_component_size=3))
        stream = evaluate(CaseStream(lambda: iter(cases), has_labels=True), make_options(pooling=pooling, min_component_size=3))
        assert same_metrics(memory, stream) and json.dumps(memory.per_case) == json.dumps(stream.per_case)
    exact = evaluate(cases, make_options())
    binned = evaluate(cases, make_options(accumulator="binned", bits=12))
    for name in ("ap", "auroc", "best_dice"):
        low, high = binned.metrics["pixel"]["bounds"][name]
        assert low - 1e-12 <= exact.metrics["pixel"][name] <= high + 1e-12
    at = binned.metrics["at_threshold"]  # counts at a bin edge are exact
    labels, scores = pooled(cases)
    assert at["tp"] == np.sum((scores >= binned.metrics["threshold"]["value"]) & labels)


def test_presets_are_the_issue_conventions_with_overrides_on_top():
    bench = make_options("benchmark")
    assert (bench.image_score, bench.pooling, bench.threshold, bench.positive_residual, bench.mask_erosion,
            bench.median_size, bench.min_component_size) == ("mean", "pooled", "oracle", False, None, 0, 0)
    brain = make_options("brain-mri")
    assert brain.positive_residual and brain.mask_erosion == 3 and brain.median_size == 5
    assert brain.min_component_size == 20 and brain.threshold == "val-dice"
    assert make_options("brain-mri", median_size=3, pooling="volume").median_size == 3
    assert make_options("brain-mri", mask_erosion=None).mask_erosion is None
    assert set(PRESETS) == {"benchmark", "brain-mri"}
    with pytest.raises(BlindspotError, match="--preset must be one of"):
        make_options("miccai")
    with pytest.raises(BlindspotError, match="--fpr must be"):
        EvaluationOptions(fpr=5)
    with pytest.raises(BlindspotError, match="unknown evaluation option 'pool'"):
        make_options(pool="x")


# ---------------------------------------------------------------------------------------- command line


def run(args, capsys, overlays=0):
    """Run ``blindspot evaluate`` in-process (overlays off unless tested: figures are the slow part)."""
    if overlays is not None:
        args = [*args, "--overlays", overlays]
    code = main(["evaluate", *map(str, args)])
    return code, capsys.readouterr()


def test_cli_maps_folder_writes_every_output(tmp_path, capsys):
    f = make_maps(tmp_path / "m", kind="npy")
    out = tmp_path / "out"
    code, io = run(["--maps", f["maps"], "--labels", f["labels"], "--masks", f["masks"], "--images", f["images"],
                    "--out", out, "--preset", "benchmark"], capsys, overlays=2)
    assert code == 0, io.err
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "config.json", "per_case.csv", "summary.md", "pr_curve.png", "roc_curve.png", "curves.npz", "overlays"} <= names
    assert len(list((out / "overlays").glob("best_*.png"))) == 2 and len(list((out / "overlays").glob("worst_*.png"))) == 2
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
    assert "had no effect" in json.dumps(json.loads((tmp_path / "o2" / "metrics.json").read_text())["notes"])


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
    assert code == 2 and len(io.err.strip().splitlines()) == 1
    import re

    assert re.search(message, io.err), io.err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "{o}"], "exactly one map source"),
    (["--maps", "{maps}", "--out", "{o}"], "--maps needs --labels"),
    (["--maps", "{maps}", "--labels", "{labels}", "--threshold", "fpr", "--out", "{o}"], "needs validation cases"),
    (["--maps", "{maps}", "--labels", "{labels}", "--mask-erosion", "2", "--out", "{o}"], "needs brain masks"),
    (["--baseline", "image", "--data", "{tmp}", "--out", "{o}"], "matches no known layout"),
    (["--maps", "{tmp}/nowhere", "--labels", "{labels}", "--out", "{o}"], "maps folder .* does not exist"),
])
def test_cli_usage_errors(tmp_path, capsys, args, message):
    f = make_maps(tmp_path / "m", n=2)
    args = [a.format(o=tmp_path / "o", maps=f["maps"], labels=f["labels"], tmp=tmp_path) for a in args]
    code, io = run(args, capsys)
    import re

    assert code == 2 and re.search(message, io.err), io.err


def test_cli_baselines_on_a_dataset(tmp_path, capsys):
    from blindspot.baselines import ZScore
    from blindspot.data.benchmark import load_labelled

    root = make_brats2021(tmp_path / "b")
    code, io = run(["--baseline", "zscore", "--data", root, "--out", tmp_path / "z"], capsys)
    assert code == 0, io.err
    test, train = load_labelled(root), load_labelled(root, split="train")
    maps = np.abs(ZScore.fit(train.images).maps(test.images))
    rows = list(csv.DictReader((tmp_path / "z" / "per_case.csv").open()))
    np.testing.assert_allclose([float(r["image_score"]) for r in rows], maps.mean(axis=(1, 2)), rtol=1e-5)
    record = json.loads((tmp_path / "z" / "metrics.json").read_text())
    assert record["metrics"]["pixel"]["ap"] == average_precision_score(test.labels.ravel(), maps.ravel())
    code, io = run(["--baseline", "image", "--equalize", "--data", root, "--out", tmp_path / "i"], capsys)
    assert code == 0, io.err
    assert json.loads((tmp_path / "i" / "config.json").read_text())["source"]["data"]["preprocessing"]["equalize"]


def test_cli_brats_volumes_streamed(tmp_path, capsys):
    root = make_brats_nifti(tmp_path / "brats")
    code, io = run(["--baseline", "image", "--data", root, "--normalize", "99", "--volumes", "--pooling", "volume",
                    "--out", tmp_path / "o"], capsys)
    assert code == 0, io.err
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())["metrics"]
    assert metrics["n_cases"] == 3 and metrics["pixel"]["n_units_with_positive"] == 3


def test_cli_checkpoint_maps_are_the_models_residuals(tmp_path, capsys):
    from blindspot.checkpoint import save_checkpoint
    from blindspot.data.benchmark import Preprocessing, load_labelled
    from blindspot.models import create_model
    from blindspot.training import reconstruct

    net = create_model("bench-ae", size=32, d=4, hidden=16)
    path = save_checkpoint(tmp_path / "m.pt", net, step=0, config={"input_range": (-1.0, 1.0)}, metrics={})
    root = make_brats2021(tmp_path / "b")
    code, io = run(["--checkpoint", path, "--data", root, "--out", tmp_path / "o", "--image-score", "max"], capsys)
    assert code == 0, io.err
    data = load_labelled(root, preprocessing=Preprocessing(resize=32))
    recon = reconstruct(net.eval(), data.images, input_range=(-1.0, 1.0))
    expected = ((data.images - recon) ** 2).max(axis=(1, 2))  # bench-ae trains with MSE: squared residual
    rows = list(csv.DictReader((tmp_path / "o" / "per_case.csv").open()))
    np.testing.assert_allclose([float(r["image_score"]) for r in rows], expected, rtol=1e-5)
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["source"]["residual"] == "l2" and config["source"]["data"]["preprocessing"]["resize"] == 32

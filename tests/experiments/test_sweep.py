"""The latent-size sweep (blindspot.experiments.sweep): the same numbers as ``blindspot evaluate`` on every
kind of data, resumable runs, the summary and its sentence, and errors that leave nothing behind."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from scipy.ndimage import label as scipy_label
from sklearn.metrics import average_precision_score, roc_auc_score

import blindspot.experiments.sweep as sweep_module
from blindspot.anomalies import KINDS, disk_masks, synthetic_test_set
from blindspot.cli import main
from blindspot.data import DataConfig, load
from blindspot.errors import BlindspotError
from blindspot.evaluation import evaluate, make_options
from blindspot.evaluation.sources import image_cases, model_maps
from blindspot.experiments.sweep import (
    DETECTION,
    METRICS,
    SUMMARY_COLUMNS,
    best_d_sentence,
    run_metrics,
    summarize,
    sweep_intervals,
    sweep_latent,
)
from blindspot.models import create_model
from blindspot.results import MARKER
from blindspot.training import make_config

from eval_fixtures import make_benchmark, make_brats2021, make_mood
from conftest import run_cli as cli

PIXEL = ("pixel_ap", "best_dice")


def label_regions(mask: np.ndarray) -> np.ndarray:
    """The 4-connected regions of one 2-D mask, numbered 1..n (an independent count of a slice's lesions)."""
    return scipy_label(mask)[0]


def columns_of(metric):
    """summary.csv columns of a metric: mean and std; the detection metrics also their intervals and the comparison."""
    return SUMMARY_COLUMNS if metric in DETECTION else ("mean", "std")


@pytest.fixture(scope="module")
def normal32():
    """Six template test slices at 32 px."""
    return load(DataConfig().with_preparation(size=32), default_split="test").subset(range(6))


def test_test_set_is_seeded_and_anomalies_stay_in_their_disk(normal32):
    test = synthetic_test_set(normal32, seed=5)
    again = synthetic_test_set(normal32, seed=5)
    np.testing.assert_array_equal(test.images, again.images)
    record = test.source["test_set"]["anomalies"]
    assert record["kind"] == again.source["test_set"]["anomalies"]["kind"] and set(record["kind"]) <= set(KINDS)
    assert not np.array_equal(synthetic_test_set(normal32, seed=6).images, test.images)
    images, n = normal32.images, len(normal32)
    np.testing.assert_array_equal(test.images[:n], images)
    assert not test.labels[:n].any() and test.labels[n:].any(axis=(1, 2)).all()
    assert ((record["radius"] >= 10 * 0.125) & (record["radius"] <= 30 * 0.125)).all()  # 10–30 px at 256 px
    for k in range(n):
        disk = disk_masks(images.shape[1:], record["center"][k : k + 1], record["radius"][k])[0]
        np.testing.assert_array_equal(test.labels[n + k], disk & (images[k] > 0))
        np.testing.assert_array_equal(test.images[n + k][~test.labels[n + k]], images[k][~test.labels[n + k]])
        if record["kind"][k] == "disk":
            assert np.all(test.images[n + k][test.labels[n + k]] == np.float32(record["intensity"][k]))
    np.testing.assert_array_equal(test.anomalous, np.arange(2 * n) >= n)
    assert test.volumes == [*normal32.volumes, *normal32.volumes]


def test_run_metrics_equal_sklearn_on_the_loss_maps(normal32, torch_one_thread):
    torch.manual_seed(0)
    model = create_model("bench-ae", size=32, d=4, hidden=16).eval()
    model.input_range = (-1.0, 1.0)
    test = synthetic_test_set(normal32, seed=1)
    evaluation = evaluate(image_cases(test, model_maps(model, batch_size=len(test))), make_options("benchmark"), n_overlays=0)
    result = run_metrics(evaluation)  # one model call, like below
    with torch.no_grad():
        x = torch.from_numpy(test.images)[:, None] * 2 - 1
        out = model(x)
    scores = ((x - out) ** 2)[:, 0].numpy().mean(axis=(1, 2), dtype=np.float64)  # the loss, in the model's (-1, 1) units
    maps = (test.images - ((out + 1) / 2)[:, 0].numpy()) ** 2  # the loss map in [0, 1] units: reconstruction mapped back
    assert result["image_auroc"] == pytest.approx(roc_auc_score(test.anomalous, scores), abs=1e-12)
    assert result["image_ap"] == pytest.approx(average_precision_score(test.anomalous, scores), abs=1e-12)
    np.testing.assert_allclose([row["image_score"] for row in evaluation.per_case], scores / 4, rtol=1e-5)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(test.labels.ravel(), maps.ravel()), abs=1e-9)
    # the best Dice over every distinct threshold, the slow way
    flat, labels = maps.ravel(), test.labels.ravel()
    thresholds = np.unique(flat)[-400:]  # the top thresholds hold the maximum for this small map
    dices = [2 * (labels & (flat >= t)).sum() / (labels.sum() + (flat >= t).sum()) for t in thresholds]
    assert result["best_dice"] >= max(dices) - 1e-12
    # errors are in [0, 1] units: the (-1, 1) MSE map divided by 4
    assert result["error_normal"] == pytest.approx(scores[: len(normal32)].mean() / 4, rel=1e-9)
    assert result["error_abnormal"] == pytest.approx(scores[len(normal32):].mean() / 4, rel=1e-9)


# ---------------------------------------------------------------------------------------- same numbers as evaluate

TINY = ["--steps", "2", "--batch-size", "4", "--size", "32", "--device", "cpu"]




@pytest.mark.parametrize("kind", ["mni152", "benchmark", "brats2021"])
def test_sweep_numbers_equal_blindspot_evaluate_to_the_last_digit(tmp_path, capsys, torch_one_thread, kind):
    data = {"mni152": lambda: "mni152", "benchmark": lambda: make_benchmark(tmp_path / "bench"),
            "brats2021": lambda: make_brats2021(tmp_path / "b21")}[kind]()
    out = tmp_path / "sweep"
    dims, repeats = {"mni152": ([2], 1), "benchmark": ([1, 2], 1), "brats2021": ([1], 2)}[kind]
    code, io = cli(["sweep", "latent", "--dims", *dims, "--repeats", repeats, *TINY, "--data", data, "--out", out], capsys)
    assert code == 0, io.err
    pixel = kind != "benchmark"
    for d in dims:
        for k in range(repeats):
            run = out / "runs" / f"d{d}-r{k}"
            code, io = cli(["evaluate", "--checkpoint", run / "last.pt", "--data", data, "--preset", "benchmark", "--overlays", "0",
                            "--out", tmp_path / f"eval-{d}-{k}"], capsys)
            assert code == 0, io.err
            metrics = json.loads((tmp_path / f"eval-{d}-{k}" / "metrics.json").read_text())["metrics"]
            saved = json.loads((run / "evaluation.json").read_text())
            assert saved["image_auroc"] == metrics["image"]["auroc"] and saved["image_ap"] == metrics["image"]["ap"]
            if pixel:
                assert saved["pixel_ap"] == metrics["pixel"]["ap"] and saved["best_dice"] == metrics["pixel"]["best_dice"]
            else:
                assert "pixel" not in metrics and not set(PIXEL) & set(saved)
            with np.load(tmp_path / f"eval-{d}-{k}" / "curves.npz") as curves:
                assert saved["image_scores"] == curves["image_scores"].tolist()
                normal = ~curves["image_labels"]
                assert saved["error_normal"] == float(curves["image_scores"][normal].mean())
                assert saved["error_abnormal"] == float(curves["image_scores"][~normal].mean())
            assert saved["seed"] == k
    test_set = json.loads((out / "test_set.json").read_text())
    assert ("test_set" in test_set["source"]) == (kind == "mni152")  # only data without labels get the synthetic set
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [m for m in METRICS if pixel or m not in PIXEL]
    assert list(rows[0]) == ["d", "runs", *[f"{m}_{s}" for m in names for s in columns_of(m)]]
    assert [r["d"] for r in rows] == [str(d) for d in dims] and all(r["runs"] == str(repeats) for r in rows)
    for row, d in zip(rows, dims):
        values = [json.loads((out / "runs" / f"d{d}-r{k}" / "evaluation.json").read_text())["image_auroc"] for k in range(repeats)]
        assert float(row["image_auroc_mean"]) == float(np.mean(values))
    with open(out / "runs.csv", newline="") as handle:
        assert list(next(csv.DictReader(handle))) == ["d", "repeat", "seed", *names]
    summary = (out / "summary.md").read_text()
    assert ("pixel AP" in summary) == pixel and ("image labels only, so there are no pixel metrics" in summary) == (not pixel)
    assert f"n = {repeats} run(s) per d" in summary and (out / "latent_sweep.png").exists() and (out / MARKER).is_file()
    # the summary says what the runs did and which test set was used
    n_train = json.loads((out / "runs" / f"d{dims[0]}-r0" / "config.json").read_text())["training_data"]["train"]["images"]
    assert f"every run trained 2 steps (≈ {2 * 4 / n_train:,.1f} epochs of {n_train} images, batch 4, 8 images seen)" in summary
    test = load(DataConfig(data=str(data)).with_preparation(size=32), default_split="test") if kind != "mni152" else None
    if kind == "mni152":
        assert "as the synthetic test set (the source has no labels)" in summary
    elif kind == "brats2021":
        lesions = sum(int(disk.max()) for disk in (label_regions(mask) for mask in test.labels))
        assert "synthetic" not in summary and f"{len(test)} images of the test split of `{data}`" in summary
        assert f"{int(test.labels.any(axis=(1, 2)).sum())} abnormal and" in summary and f"{lesions} labelled lesion regions" in summary
    else:
        assert "synthetic" not in summary and f"{int(test.anomalous.sum())} abnormal and" in summary


# ---------------------------------------------------------------------------------------- resuming

SWEEP = dict(model="bench-ae", dims=[2, 4], repeats=1, preset="quick", overrides=dict(steps=4, batch_size=4, size=32),
             model_options=dict(hidden=16), device="cpu")


def test_sweep_resumes_without_recomputing_finished_runs(tmp_path, monkeypatch, torch_one_thread):
    calls, evaluations = [], []
    real_train, real_evaluate = sweep_module.train, sweep_module.evaluate
    monkeypatch.setattr(sweep_module, "train", lambda *a, **k: calls.append(a[1].name) or real_train(*a, **k))
    monkeypatch.setattr(sweep_module, "evaluate", lambda *a, **k: evaluations.append(1) or real_evaluate(*a, **k))
    out = tmp_path / "sweep"
    sweep_latent(out, **SWEEP)
    assert calls == ["d2-r0", "d4-r0"] and len(evaluations) == 2
    files = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*") if p.suffix in (".pt", ".json", ".npz")}
    assert (out / "runs/d2-r0/bootstrap.npz").is_file()
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["d"] for r in rows] == ["2", "4"] and all(r["runs"] == "1" for r in rows)
    assert list(rows[0]) == ["d", "runs", *[f"{m}_{s}" for m in METRICS for s in columns_of(m)]]
    assert "| 2 |" in (out / "summary.md").read_text() and (out / "latent_sweep.png").exists()
    summary = (out / "summary.csv").read_text()

    # Rerun: nothing trained, nothing evaluated, the same summary.
    calls.clear(), evaluations.clear()
    sweep_latent(out, **SWEEP)
    assert calls == [] and evaluations == [] and files == {p: p.stat().st_mtime_ns for p in files}
    assert (out / "summary.csv").read_text() == summary

    # Interrupted after training d4 but before evaluating it: only the evaluation is redone.
    (out / "runs/d4-r0/evaluation.json").unlink()
    sweep_latent(out, **SWEEP)
    assert calls == [] and len(evaluations) == 1 and (out / "runs/d4-r0/evaluation.json").exists()
    redone = ("d4-r0/evaluation.json", "d4-r0/bootstrap.npz")
    assert all(p.stat().st_mtime_ns == t for p, t in files.items() if not str(p).endswith(redone))
    assert (out / "summary.csv").read_text() == summary

    # A run evaluated before the bootstrap existed (no bootstrap.npz): only its evaluation is redone.
    (out / "runs/d2-r0/bootstrap.npz").unlink()
    evaluations.clear()
    sweep_latent(out, **SWEEP)
    assert calls == [] and len(evaluations) == 1 and (out / "runs/d2-r0/bootstrap.npz").is_file()
    assert (out / "summary.csv").read_text() == summary
    # --bootstrap and --confidence may change between invocations: only the summary changes.
    sweep_latent(out, **SWEEP, bootstrap=200, confidence=0.9)
    assert calls == [] and len(evaluations) == 1 and "90 % percentile bootstrap interval" in (out / "summary.md").read_text()

    # A run stopped part-way (here: at step 2 of 4) resumes from its last checkpoint.
    run = out / "runs/d2-r0"
    config = make_config("quick", steps=2, batch_size=4, size=32, seed=0)
    real_train(config, run, model_name="bench-ae", model_options=dict(hidden=16, d=2), overwrite=True, device="cpu")
    sweep_latent(out, **SWEEP)
    assert calls == ["d2-r0"]
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 4
    assert (out / "runs/d4-r0/last.pt").stat().st_mtime_ns == files[out / "runs/d4-r0/last.pt"]

    # Other settings in the same folder are refused rather than mixed in.
    with pytest.raises(BlindspotError, match=r"made with other settings \(overrides, train_config\)"):
        sweep_latent(out, **{**SWEEP, "overrides": dict(steps=5, batch_size=4, size=32)})
    with pytest.raises(BlindspotError, match=r"made with other settings \(test_seed\)"):
        sweep_latent(out, **SWEEP, seed=3)


def test_sweep_refuses_a_folder_that_is_not_a_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_module, "train", lambda *a, **k: pytest.fail("nothing may be trained"))
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BlindspotError, match="exists but was not written by blindspot"):
        sweep_latent(out, **SWEEP)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    (out / MARKER).write_text("{}")  # another blindspot result folder: not resumed as a sweep either
    with pytest.raises(BlindspotError, match="is not a sweep folder"):
        sweep_latent(out, **SWEEP)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "notes.txt"]


def test_the_sweep_trains_on_the_train_split_and_tests_on_the_test_split(tmp_path, torch_one_thread):
    mood = make_mood(tmp_path / "mood", n=5)
    out = sweep_latent(tmp_path / "sweep", **{**SWEEP, "dims": [2], "overrides": dict(steps=1, batch_size=2, size=32)},
                       data=DataConfig(str(mood), slices=(2,)))
    test = json.loads((out / "test_set.json").read_text())["source"]
    run = json.loads((out / "runs" / "d2-r0" / "config.json").read_text())
    trained = set(run["training_data"]["train"]["files"]) | set(run["training_data"]["validation"]["files"])
    assert test["split"] == "test" and run["resolved"]["split"] == "train"
    assert trained and test["files"] and trained.isdisjoint(test["files"])
    assert trained | set(test["files"]) == {str(p) for p in mood.iterdir()}


# ---------------------------------------------------------------------------------------- errors


def test_bad_data_leave_no_folder_and_the_corrected_command_runs(tmp_path, capsys, torch_one_thread):
    root = make_benchmark(tmp_path / "bench", n_train=1)  # one training image: no validation image can be held out
    out = tmp_path / "sweep"
    args = ["sweep", "latent", "--dims", "2", "--repeats", "1", *TINY, "--out", out]
    code, io = cli([*args, "--data", root], capsys)
    assert code == 2 and len(io.err.strip().splitlines()) == 1 and "holding out validation images needs at least 2" in io.err, io.err
    assert not out.exists() and not (tmp_path / "sweep.partial").exists()
    code, io = cli([*args, "--data", make_benchmark(tmp_path / "fixed")], capsys)
    assert code == 0, io.err
    assert (out / "runs" / "d2-r0" / "evaluation.json").is_file()


def test_a_first_run_that_fails_leaves_no_folder(tmp_path, torch_one_thread):
    out = tmp_path / "sweep"
    with pytest.raises(BlindspotError, match="has no option 'hiddn'"):
        sweep_latent(out, **{**SWEEP, "model_options": dict(hiddn=16)})
    assert not out.exists()
    sweep_latent(out, **{**SWEEP, "dims": [2]})
    assert (out / "summary.md").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dims", "0", "4"], "--dims must be positive integers; got '0'."),
        (["--dims", "-2"], "--dims must be positive integers; got '-2'."),
        (["--dims", "two"], "--dims must be positive integers; got 'two'."),
        (["--dims", "--repeats", "1"], "--dims needs at least one latent size"),
        (["--dims", "4", "--repeats", "0"], "Invalid value for '--repeats'"),
        (["--dims", "4", "--model", "vqvae2"], "model 'vqvae2' has no latent size d; use one of ae, bench-ae"),
        (["--dims", "4", "--model", "bench_ae"], "unknown model 'bench_ae'"),
        (["--dims", "4", "--preset", "fast"], "Invalid value for '--preset'"),
        (["--dims", "4", "--data", "{folder}", "--split", "test"], "do not give --split"),
        (["--dims", "4", "--steps", "2", "--epochs", "1"], "--steps or --epochs, not both"),
        (["--dims", "4", "--data", "{folder}", "--slice", "99"], "slice 99 is out of range"),
    ],
)
def test_bad_sweep_options_exit_2_before_anything_is_written(tmp_path, nifti_folder, capsys, args, message):
    out = tmp_path / "sweep"
    code = main(["sweep", "latent", *[a.format(folder=nifti_folder) for a in args], "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()


def test_repeats_below_one_are_refused_by_the_library(tmp_path):
    with pytest.raises(BlindspotError, match="`repeats` must be at least 1"):
        sweep_latent(tmp_path / "s", **{**SWEEP, "repeats": 0})
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------------- the summary sentence


def rows_of(means, verdicts=None, runs=3, low=None, high=None):
    rows = [{"d": d, "runs": runs, "image_auroc_mean": m, "image_auroc_std": 0.01} for d, m in zip((1, 2, 4), means)]
    for k, row in enumerate(rows):
        if verdicts is not None:
            row.update(image_auroc_vs_best=verdicts[k], image_auroc_low=row["image_auroc_mean"] - 0.05,
                       image_auroc_high=row["image_auroc_mean"] + 0.05)
    return rows


def test_best_d_sentence_states_n_and_which_d_are_indistinguishable_from_the_best():
    close = best_d_sentence(rows_of([0.70, 0.78, 0.75], ["lower", "best", "indistinguishable"]), n_cases=20)
    assert close.startswith("Best mean image AUROC at d = 2 (0.780 [0.730, 0.830], n = 3 run(s) per d on 20 test images)")
    assert ("d = 4 is indistinguishable from it (the 95 % interval of the paired difference on the same test images "
            "contains 0), so the data do not single out one d.") in close
    apart = best_d_sentence(rows_of([0.60, 0.90, 0.70], ["lower", "best", "lower"]), confidence=0.9)
    assert apart.endswith("; every other d is lower (the 90 % intervals of the paired differences on the same test images "
                          "lie below 0).") and "n = 3" in apart
    chance = best_d_sentence(rows_of([0.40, 0.50, 0.45], ["lower", "best", "lower"]))
    assert "n = 3 run(s) per d" in chance and chance.endswith("every d is at or below chance (0.5), so no d detects anything.")
    single = best_d_sentence(rows_of([0.6, 0.8, 0.7], ["indistinguishable", "best", "indistinguishable"], runs=1))
    assert "n = 1 run(s) per d" in single and "d = 1, 4 are indistinguishable" in single
    assert "with one run per d the intervals cover the test images, not the spread between trainings" in single
    assert "no d was tested" in best_d_sentence(rows_of([0.6, 0.8, 0.7]))  # bootstrap 0


def test_sweep_intervals_resample_the_same_images_for_every_d_and_the_repeats_of_each(tmp_path):
    """Against an independent two-level bootstrap: the drawn images (shared) and each d's drawn repeats."""
    from blindspot.evaluation import Case
    from blindspot.metrics import roc_auc
    from blindspot.metrics.bootstrap import percentile_interval, resample_indices

    rng = np.random.default_rng(0)
    n_images, dims, repeats, n = 16, [1, 2, 4], 3, 300
    anomalous = np.arange(n_images) % 2 == 1
    evaluations, scores = {}, {}
    for d in dims:
        for k in range(repeats):
            gain = {1: 0.2, 2: 0.9, 4: 0.8}[d] + 0.05 * k
            maps = [rng.random((6, 6)).astype(np.float32) + gain * a * rng.random() for a in anomalous]
            label = lambda a: np.pad(np.ones((2, 2), bool), 2) if a else np.zeros((6, 6), bool)  # noqa: E731
            evaluation = evaluate([Case(f"i{j}", m, label(a)) for j, (m, a) in enumerate(zip(maps, anomalous))],
                                  make_options("benchmark"), n_overlays=0)
            run = tmp_path / "runs" / f"d{d}-r{k}"
            run.mkdir(parents=True)
            evaluation.cases.save(run / "bootstrap.npz")
            evaluations[d, k] = {"seed": k, **run_metrics(evaluation)}
            scores[d, k] = np.array([r["image_score"] for r in evaluation.per_case])
    rows = summarize(dims, repeats, evaluations)
    sweep_intervals(tmp_path, dims, repeats, rows, n_resamples=n, confidence=0.95, seed=7)
    draws = resample_indices(n_images, n, 7)
    repeat_draws = np.random.default_rng([7, 1])
    means = {}
    for d in dims:
        chosen = repeat_draws.integers(0, repeats, (n, repeats))
        per_run = np.array([[roc_auc(anomalous[draw], scores[d, k][draw]) for draw in draws] for k in range(repeats)])
        means[d] = per_run[chosen, np.arange(n)[:, None]].mean(axis=1)
    best = max(rows, key=lambda row: row["image_auroc_mean"])
    assert best["d"] == 2 and best["image_auroc_vs_best"] == "best"
    for row in rows:
        assert [row["image_auroc_low"], row["image_auroc_high"]] == pytest.approx(percentile_interval(means[row["d"]]), abs=1e-12)
        paired = percentile_interval(means[row["d"]] - means[2])
        assert [row["image_auroc_diff_low"], row["image_auroc_diff_high"]] == pytest.approx(paired, abs=1e-12)
        assert row["image_auroc_diff"] == pytest.approx(row["image_auroc_mean"] - best["image_auroc_mean"])
    assert {row["d"]: row["image_auroc_vs_best"] for row in rows} == {1: "lower", 2: "best", 4: "indistinguishable"}
    assert rows[0]["pixel_ap_vs_best"] in ("lower", "indistinguishable") and "best_dice_low" in rows[0]


def test_summarize_means_and_sample_std_per_d():
    evaluations = {(d, k): {"image_auroc": 0.5 + 0.1 * k + d / 100, "error_normal": 0.01 * k} for d in (1, 2) for k in range(3)}
    rows = summarize([1, 2], 3, evaluations)
    assert [r["d"] for r in rows] == [1, 2] and rows[0]["runs"] == 3
    assert rows[1]["image_auroc_mean"] == pytest.approx(0.62) and rows[1]["image_auroc_std"] == pytest.approx(0.1)
    assert "pixel_ap_mean" not in rows[0]  # metrics the runs lack are absent, not nan
    single = summarize([1], 1, {(1, 0): {"image_auroc": 0.7}})
    assert np.isnan(single[0]["image_auroc_std"])

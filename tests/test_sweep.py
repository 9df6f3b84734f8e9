"""The latent-size sweep: test set, evaluation, resumable runs, summary and errors."""

import csv

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import blindspot.training
from blindspot.anomalies import disk_masks
from blindspot.cli import main
from blindspot.data import DataOptions
from blindspot.errors import BlindspotError
from blindspot.experiments.sweep import KINDS, METRICS, evaluate, split_data, sweep_latent, synthetic_test_set
from blindspot.models import create_model
from blindspot.training import make_config, resize_images, train


@pytest.fixture(scope="module")
def images(mni_images):
    return resize_images(mni_images[:6], 32)


def test_test_set_is_seeded_and_anomalies_stay_in_their_disk(images):
    test = synthetic_test_set(images, seed=5, scale=0.125)
    again = synthetic_test_set(images, seed=5, scale=0.125)
    np.testing.assert_array_equal(test.images, again.images)
    assert test.anomalies["kind"] == again.anomalies["kind"] and set(test.anomalies["kind"]) <= set(KINDS)
    assert not np.array_equal(synthetic_test_set(images, seed=6, scale=0.125).images, test.images)
    n = len(images)
    np.testing.assert_array_equal(test.images[:n], images)
    assert not test.labels[:n].any() and test.labels[n:].any(axis=(1, 2)).all()
    assert ((test.anomalies["radius"] >= 10 * 0.125) & (test.anomalies["radius"] <= 30 * 0.125)).all()
    for k in range(n):
        disk = disk_masks(images.shape[1:], test.anomalies["center"][k : k + 1], test.anomalies["radius"][k])[0]
        np.testing.assert_array_equal(test.labels[n + k], disk & (images[k] > 0))
        np.testing.assert_array_equal(test.images[n + k][~test.labels[n + k]], images[k][~test.labels[n + k]])
        if test.anomalies["kind"][k] == "disk":
            assert np.all(test.images[n + k][test.labels[n + k]] == np.float32(test.anomalies["intensity"][k]))
    np.testing.assert_array_equal(test.is_abnormal, np.arange(2 * n) >= n)


def test_evaluate_equals_sklearn_on_the_loss_maps(images):
    torch.manual_seed(0)
    model = create_model("bench-ae", size=32, d=4, hidden=16).eval()
    test = synthetic_test_set(images, seed=1, scale=0.125)
    result = evaluate(model, test, input_range=(-1.0, 1.0), batch_size=len(test.images))  # one call, like below
    with torch.no_grad():
        x = torch.from_numpy(test.images)[:, None] * 2 - 1
        maps = ((x - model(x)) ** 2)[:, 0].numpy()
    scores = maps.mean(axis=(1, 2), dtype=np.float64)
    assert result["image_auroc"] == pytest.approx(roc_auc_score(test.is_abnormal, scores), abs=1e-12)
    assert result["image_ap"] == pytest.approx(average_precision_score(test.is_abnormal, scores), abs=1e-12)
    assert result["pixel_ap"] == pytest.approx(average_precision_score(test.labels.ravel(), maps.ravel()), abs=1e-9)
    # the best Dice over every distinct threshold, the slow way
    flat, labels = maps.ravel(), test.labels.ravel()
    thresholds = np.unique(flat)[-400:]  # the top thresholds hold the maximum for this small map
    dices = [2 * (labels & (flat >= t)).sum() / (labels.sum() + (flat >= t).sum()) for t in thresholds]
    assert result["best_dice"] >= max(dices) - 1e-12
    # errors are in [0, 1] units: the (-1, 1) MSE map divided by 4
    assert result["error_normal"] == pytest.approx(scores[: len(images)].mean() / 4, rel=1e-9)


SWEEP = dict(model="bench-ae", dims=[2, 4], repeats=1, preset="quick", overrides=dict(steps=4, batch_size=4, size=64),
             model_options=dict(hidden=16), batch_size=32)


def test_sweep_resumes_without_recomputing_finished_runs(tmp_path, monkeypatch):
    calls = []
    real_train = blindspot.training.train
    monkeypatch.setattr(blindspot.training, "train", lambda *a, **k: calls.append(a[1].name) or real_train(*a, **k))
    out = tmp_path / "sweep"
    sweep_latent(out, **SWEEP)
    assert calls == ["d2-r0", "d4-r0"]
    files = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*") if p.suffix in (".pt", ".json")}
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["d"] for r in rows] == ["2", "4"] and all(r["runs"] == "1" for r in rows)
    assert list(rows[0]) == ["d", "runs", *[f"{m}_{s}" for m in METRICS for s in ("mean", "std")]]
    assert "| 2 |" in (out / "summary.md").read_text() and (out / "latent_sweep.png").exists()

    # Rerun: nothing trained, nothing evaluated.
    calls.clear()
    sweep_latent(out, **SWEEP)
    assert calls == [] and files == {p: p.stat().st_mtime_ns for p in files}

    # Interrupted after training d4 but before evaluating it: only the evaluation is redone.
    (out / "runs/d4-r0/evaluation.json").unlink()
    sweep_latent(out, **SWEEP)
    assert calls == [] and (out / "runs/d4-r0/evaluation.json").exists()
    assert all(p.stat().st_mtime_ns == t for p, t in files.items() if "d4-r0/evaluation" not in str(p))

    # A run stopped part-way (here: at step 2 of 4) resumes from its last checkpoint.
    run = out / "runs/d2-r0"
    config = make_config("quick", steps=2, batch_size=4, size=64, seed=0)
    train(config, run, model_name="bench-ae", model_options=dict(hidden=16, d=2), overwrite=True)
    sweep_latent(out, **SWEEP)
    assert calls == ["d2-r0"]
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 4
    assert (out / "runs/d4-r0/last.pt").stat().st_mtime_ns == files[out / "runs/d4-r0/last.pt"]

    # Other settings in the same folder are refused rather than mixed in.
    with pytest.raises(BlindspotError, match=r"made with other settings \(overrides, train_config\)"):
        sweep_latent(out, **{**SWEEP, "overrides": dict(steps=5, batch_size=4, size=64)})


def test_sweep_refuses_a_folder_that_is_not_a_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(blindspot.training, "train", lambda *a, **k: pytest.fail("nothing may be trained"))
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BlindspotError, match="is not a sweep folder"):
        sweep_latent(out, **SWEEP)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dims", "0", "4"], "--dims must be positive integers; got '0'."),
        (["--dims", "-2"], "--dims must be positive integers; got '-2'."),
        (["--dims", "two"], "--dims must be positive integers; got 'two'."),
        (["--dims", "--repeats", "1"], "--dims needs at least one latent size"),
        (["--dims", "4", "--repeats", "0"], "--repeats must be at least 1"),
        (["--dims", "4", "--model", "vqvae2"], "model 'vqvae2' has no latent size d; use one of ae, bench-ae"),
        (["--dims", "4", "--model", "bench_ae"], "unknown model 'bench_ae'"),
        (["--dims", "4", "--preset", "fast"], "unknown preset 'fast'"),
        (["--dims", "4", "--data", "{folder}", "--split", "test"], "--split test would train on the test volumes"),
    ],
)
def test_bad_sweep_options_exit_2_before_anything_is_written(tmp_path, nifti_folder, capsys, args, message):
    out = tmp_path / "sweep"
    code = main(["sweep", "latent", *[a.format(folder=nifti_folder) for a in args], "--out", str(out)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_split_data_holds_out_test_volumes(nifti_folder):
    train_data, test_data = split_data(DataOptions(data=str(nifti_folder), slices=(12,)))
    assert (train_data.split, test_data.split, test_data.slices) == ("train", "test", (12,))
    train_data, test_data = split_data(DataOptions())
    assert train_data == DataOptions() and test_data.slices is None

import csv
import json
import math
import shutil
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch
from eval_fixtures import make_benchmark, make_brats2021

import blindspot.training as training
from blindspot.anomalies import synthetic_anomalies
from blindspot.cli import main
from blindspot.data import DataConfig, Preparation
from blindspot.data.mni152 import TRAIN_SLICES, VALIDATION_SLICES
from blindspot.errors import BlindspotError
from blindspot.models.checkpoint import load_checkpoint, load_model
from blindspot.results import MARKER, PACKAGES, file_sha256
from blindspot.training import PRESETS, TrainConfig, make_config, resume_run, train

TINY = {"d": 4, "hidden": 16}
TIMING = ("images_per_s", "outside_model", "elapsed_s")
RUN_FILES = {"config.json", "metrics.csv", "best_ap.pt", "best_loss.pt", "last.pt", MARKER}


def tiny_config(**overrides):
    return make_config("quick", **{"size": 32, "batch_size": 8, "steps": 40, "val_every": 10, **overrides})


def run_tiny(out, *, overwrite=False, **overrides):
    return train(tiny_config(**overrides), out, model_name="bench-ae", model_options=TINY, device="cpu", overwrite=overwrite)


def read_metrics(folder):
    with (folder / "metrics.csv").open() as handle:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(handle)]


def read_config(folder):
    return json.loads((folder / "config.json").read_text())


def assert_same_run(a, b):
    for name in ("last.pt", "best_ap.pt", "best_loss.pt"):
        left, right = load_checkpoint(a / name), load_checkpoint(b / name)
        assert left["step"] == right["step"], name
        assert left["state_dict"].keys() == right["state_dict"].keys()
        for key, value in left["state_dict"].items():
            assert torch.equal(value, right["state_dict"][key]), (name, key)
    assert read_metrics(a) == read_metrics(b)


def user_folder(path):
    """A folder blindspot did not write (no marker), holding someone's file."""
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    return path


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, torch_one_thread):
    """A 40-step run without interruption (the reference of the resume tests)."""
    return run_tiny(tmp_path_factory.mktemp("reference") / "run")


# --- configuration ------------------------------------------------------------------------------


def test_presets_follow_the_papers():
    pitfalls, ae4ad = PRESETS["pitfalls"], PRESETS["ae4ad"]
    assert (pitfalls.size, pitfalls.loss, pitfalls.optimizer, pitfalls.lr, pitfalls.weight_decay) == (256, "l1", "adamw", 1e-3, 2e-2)
    assert (pitfalls.batch_size, pitfalls.steps, pitfalls.val_every, pitfalls.input_range) == (128, 10_000, 200, (0.0, 1.0))
    assert (ae4ad.size, ae4ad.loss, ae4ad.optimizer, ae4ad.lr, ae4ad.batch_size) == (64, "mse", "adam", 1e-3, 64)
    assert (ae4ad.steps, ae4ad.epochs, ae4ad.input_range, ae4ad.augment) == (None, 250, (-1.0, 1.0), False)
    assert PRESETS["quick"] == TrainConfig() and PRESETS["quick"].size == 64
    assert ae4ad.hold_out is False and pitfalls.hold_out is True and PRESETS["quick"].hold_out is True  # the benchmark trains on all


def test_make_config_overrides_and_rejects_unknown_keys():
    config = make_config("pitfalls", steps=50, batch_size=4, lr=0.01, size=64, seed=3)
    assert (config.preset, config.steps, config.batch_size, config.lr, config.size, config.seed) == ("pitfalls", 50, 4, 0.01, 64, 3)
    assert make_config("ae4ad", steps=7).epochs is None and make_config("quick", epochs=2).steps is None
    assert make_config("ae4ad", hold_out=True).hold_out is True
    with pytest.raises(BlindspotError, match="unknown training setting 'batchsize'; valid settings: size, steps"):
        make_config(batchsize=3)
    with pytest.raises(BlindspotError, match="`preset` must be one of quick, pitfalls, ae4ad; got 'fast'"):
        make_config("fast")


def test_make_config_refuses_steps_and_epochs_together():
    with pytest.raises(BlindspotError, match="give the run length once: `steps` or `epochs`, not both"):
        make_config("quick", steps=10, epochs=2)
    with pytest.raises(BlindspotError, match="give the run length once"):
        make_config("ae4ad", steps=10, epochs=250)
    assert make_config("quick", steps=10, epochs=None).steps == 10  # an explicit None is no second length


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": 0}, "`lr` must be a positive number; got 0"),
        ({"batch_size": 1}, "`batch_size` must be an integer >= 2"),
        ({"steps": None}, r"`steps` must be set \(or epochs\)"),
        ({"optimizer": "sgd"}, "`optimizer` must be 'adam' or 'adamw'"),
        ({"input_range": (1, -1)}, "`input_range` must be two numbers"),
        ({"loss": "ssim"}, "`loss` must be 'l1', 'mse' or None"),
        ({"seed": -1}, "`seed` must be an integer >= 0"),
        ({"size": 16}, "`size` must be an integer >= 32"),
        ({"hold_out": 1}, "`hold_out` must be True or False; got 1"),
        ({"augment": "yes"}, "`augment` must be True, False or None"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(BlindspotError, match=message):
        make_config(**overrides)


def test_cpu_threads_leave_a_core_free_unless_told(uninterrupted):
    assert training.cpu_threads(3) == 3 and 1 <= training.cpu_threads() <= torch.get_num_threads()
    with pytest.raises(BlindspotError, match="`threads` must be a positive integer; got 0"):
        training.cpu_threads(0)
    assert read_config(uninterrupted)["threads"] == training.cpu_threads()
    assert torch.get_num_threads() == 1  # restored to the module's setting after each run


# --- batches ------------------------------------------------------------------------------------


def test_batches_are_functions_of_seed_and_step():
    config = tiny_config(batch_size=6)
    images = np.random.default_rng(0).random((10, 32, 32), dtype=np.float32)
    batches = training._Batches(images, config, torch.device("cpu"), training.Augmentation())
    first = [batches.indices(step) for step in range(5)]
    epochs = np.concatenate(first)[:30].reshape(3, 10)
    assert all(sorted(e) == list(range(10)) for e in epochs)  # each epoch is a permutation
    again = training._Batches(images, config, torch.device("cpu"), training.Augmentation())
    assert torch.equal(batches(3), again(3)) and not torch.equal(batches(3), batches(4))


def test_batches_are_mapped_onto_the_input_range():
    images = np.random.default_rng(1).random((4, 32, 32), dtype=np.float32)
    batches = training._Batches(images, tiny_config(batch_size=4, input_range=(-1.0, 1.0)), torch.device("cpu"), None)
    x = batches(0)
    np.testing.assert_allclose(x[:, 0].numpy(), 2 * images[batches.indices(0)] - 1, atol=1e-6)


def test_validation_disks_have_radius_20_at_256_px():
    images = np.zeros((3, 64, 64), np.float32)
    images[:, 8:56, 8:56] = 0.5
    validation = training._validation_set(images)
    tiled = np.tile(images, (14, 1, 1))  # tiled to at least 40 images
    assert validation.radius == 5.0 and len(validation.anomalous) == 42
    expected, record = synthetic_anomalies(tiled, seed=0, kinds=("disk",), radius=(5.0, 5.0))
    np.testing.assert_array_equal(validation.anomalous, expected.images)
    np.testing.assert_array_equal(validation.labels, expected.labels)
    assert validation.labels.any(axis=(1, 2)).all() and not (validation.labels & (tiled == 0)).any()
    np.testing.assert_array_equal(validation.anomalous[~validation.labels], tiled[~validation.labels])
    np.testing.assert_array_equal(validation.normal, images)


# --- training runs ------------------------------------------------------------------------------


def test_run_folder_holds_checkpoints_metrics_and_config(uninterrupted):
    assert {p.name for p in uninterrupted.iterdir()} == RUN_FILES
    rows = read_metrics(uninterrupted)
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    assert list(rows[0]) == ["step", "epoch", "train_total", "train_recon", "val_loss", "val_ap"]
    assert all(0 <= float(r["val_ap"]) <= 1 for r in rows) and float(rows[-1]["train_total"]) < float(rows[0]["train_total"])
    config = read_config(uninterrupted)
    assert config["config"]["preset"] == "quick" and config["config"]["input_range"] == [0.0, 1.0]
    assert config["config"]["hold_out"] is True and config["config"]["data"]["layout"] == "mni152"
    assert config["model"] == {"name": "bench-ae", "size": 32, "d": 4, "hidden": 16, "loss": "mse"}
    assert config["training_data"]["train"]["slices"] == list(TRAIN_SLICES) and config["augmentation"]["rotation"] == 10
    assert config["training_data"]["validation"]["slices"] == list(VALIDATION_SLICES)
    assert config["training_data"]["train"]["images"] == 40 and config["training_data"]["validation"]["images"] == 10
    assert config["versions"]["torch"] and config["history"] == [{"from_step": 0, "to_step": 40, "device": "cpu"}]
    assert config["resolved"] == {"layout": "mni152", "split": "train", "loss": "mse", "augment": True, "steps": 40,
                                  "epochs": 40 * 8 / 40, "input_range": [0.0, 1.0], "hold_out": True}
    assert config["input_hashes"] == {}  # the embedded template is no file
    for package in ("scikit-image", "nibabel", "nilearn", "matplotlib", "torch", *PACKAGES):
        assert config["versions"][package] not in (None, "", "not installed"), package
    assert config["validation"]["radius"] == 20 * 32 / 256 and config["validation"]["anomalous_images"] == 40
    last, best = load_checkpoint(uninterrupted / "last.pt"), load_checkpoint(uninterrupted / "best_ap.pt")
    assert last["step"] == 40 and last["optimizer"] is not None and best["optimizer"] is None
    assert best["metrics"]["val_ap"] == max(float(r["val_ap"]) for r in rows)
    assert last["config"]["data"]["data"] == "mni152" and not load_model(uninterrupted / "last.pt").training


def test_checkpoints_restore_input_range_and_preparation(uninterrupted):
    prepared = {"size": 32, "geometry": "pad", "normalize": None, "equalize": False}
    for name in ("last.pt", "best_ap.pt", "best_loss.pt"):
        checkpoint = load_checkpoint(uninterrupted / name)
        assert checkpoint["input_range"] == [0.0, 1.0] and checkpoint["preparation"] == prepared
        model = load_model(uninterrupted / name)
        assert model.input_range == (0.0, 1.0) and model.preparation == prepared
    assert DataConfig().prepared_like(load_model(uninterrupted / "last.pt").preparation, what="the run").preparation == Preparation(size=32)


def test_stopped_at_20_and_resumed_to_40_equals_uninterrupted(uninterrupted, tmp_path):
    run = run_tiny(tmp_path / "run", steps=20)
    assert load_checkpoint(run / "last.pt")["step"] == 20
    resume_run(run, steps=40)
    assert_same_run(run, uninterrupted)
    history = read_config(run)["history"]
    assert [h["from_step"] for h in history] == [0, 20]
    assert not (tmp_path / "run.partial").exists() and (run / MARKER).is_file()


@pytest.mark.parametrize("model", ["vae", "ceae"])
def test_model_randomness_is_reproduced_on_resume(tmp_path, model):
    """VAE sampling and CeAE erasing draw from torch's RNG, which each step reseeds from (seed, step)."""
    config = tiny_config(steps=6, val_every=3)
    full = train(config, tmp_path / "full", model_name=model, model_options=TINY, device="cpu")
    half = train(replace(config, steps=3), tmp_path / "half", model_name=model, model_options=TINY, device="cpu")
    resume_run(half, steps=6)
    assert_same_run(half, full)


def test_ctrl_c_saves_last_and_the_same_call_continues_exactly(uninterrupted, tmp_path, monkeypatch):
    original = training._Batches.__call__

    def interrupt_at_step_25(self, step):
        if step == 24:
            signal.raise_signal(signal.SIGINT)
        return original(self, step)

    monkeypatch.setattr(training._Batches, "__call__", interrupt_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        run_tiny(tmp_path / "run")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    staging = tmp_path / "run.partial"
    assert load_checkpoint(staging / "last.pt")["step"] == 25 and not (tmp_path / "run").exists()
    assert (staging / MARKER).is_file()  # kept for resuming, and marked as blindspot's
    monkeypatch.undo()
    run_tiny(tmp_path / "run")  # the same command again continues from step 25
    assert_same_run(tmp_path / "run", uninterrupted)
    assert not staging.exists()


def test_epochs_become_steps_and_ae4ad_trains_in_minus_one_to_one(tmp_path):
    config = make_config("ae4ad", epochs=0.5, size=32, batch_size=8, val_every=100)
    run = train(config, tmp_path / "run", model_name="bench-ae", model_options=TINY, device="cpu")
    saved = read_config(run)
    assert saved["config"]["steps"] == math.ceil(0.5 * 40 / 8) and saved["augmentation"] is None
    assert saved["resolved"]["steps"] == 3 and saved["resolved"]["epochs"] == 3 * 8 / 40
    assert saved["resolved"]["hold_out"] is False and saved["resolved"]["augment"] is False
    assert load_checkpoint(run / "last.pt")["config"]["input_range"] == (-1.0, 1.0)
    assert load_model(run / "last.pt").input_range == (-1.0, 1.0) and load_checkpoint(run / "last.pt")["input_range"] == [-1.0, 1.0]


def test_hold_out_decides_whether_validation_volumes_train(nifti_folder, tmp_path):
    data = DataConfig(data=str(nifti_folder), slices=(10, 11, 12))
    config = tiny_config(steps=2, val_every=2, batch_size=4)
    held = train(config, tmp_path / "held", model_name="bench-ae", model_options=TINY, data=data, device="cpu")
    kept = train(replace(config, hold_out=False), tmp_path / "all", model_name="bench-ae", model_options=TINY, data=data,
                 device="cpu")
    held_data, all_data = read_config(held)["training_data"], read_config(kept)["training_data"]
    names = lambda files: [f.rsplit("/", 1)[1] for f in files]  # noqa: E731
    assert held_data["train"]["images"] == 6 and names(held_data["train"]["files"]) == ["case_000.nii.gz", "case_001.nii.gz"]
    assert all_data["train"]["images"] == 9 and len(all_data["train"]["files"]) == 3
    assert names(held_data["validation"]["files"]) == names(all_data["validation"]["files"]) == ["case_002.nii.gz"]
    assert read_config(held)["resolved"]["hold_out"] is True and read_config(kept)["resolved"]["hold_out"] is False
    assert read_config(held)["resolved"]["augment"] is False and read_config(held)["resolved"]["layout"] == "nifti"
    hashes = read_config(held)["input_hashes"]
    assert names(hashes) == ["case_000.nii.gz", "case_001.nii.gz", "case_002.nii.gz"]
    assert all(file_sha256(path) == digest for path, digest in hashes.items())


@pytest.mark.parametrize(("layout", "make"), [("benchmark", make_benchmark), ("brats2021", make_brats2021)])
def test_trains_on_the_benchmark_png_layouts(tmp_path, layout, make):
    root = make(tmp_path / "data")
    run = train(tiny_config(steps=2, val_every=2, batch_size=2), tmp_path / "run", model_name="bench-ae", model_options=TINY,
                data=DataConfig(data=str(root)), device="cpu")
    assert {p.name for p in run.iterdir()} == RUN_FILES
    saved = read_config(run)
    assert saved["resolved"]["layout"] == layout and saved["resolved"]["split"] == "train" and saved["resolved"]["augment"] is False
    assert saved["training_data"]["train"]["images"] == 3 and saved["training_data"]["validation"]["images"] == 1
    assert saved["training_data"]["train"]["scale"] == pytest.approx(32 / 24)
    hashes = saved["input_hashes"]
    files = sorted({*saved["training_data"]["train"]["files"], *saved["training_data"]["validation"]["files"]})
    assert sorted(hashes) == files and all(file_sha256(path) == digest for path, digest in hashes.items())
    assert len([f for f in files if f.endswith(".png")]) == 4 and (layout != "benchmark" or str(root / "data.json") in hashes)
    assert load_model(run / "best_ap.pt").preparation == {"size": 32, "geometry": "pad", "normalize": None, "equalize": False}
    assert saved["config"]["data"]["data"] == str(root) and saved["config"]["data"]["layout"] == layout


def test_the_data_preparation_is_recorded_in_the_checkpoints(nifti_folder, tmp_path):
    data = DataConfig(data=str(nifti_folder), slices=(11,), preparation=Preparation(geometry="crop", equalize=True))
    run = train(tiny_config(steps=2, val_every=2, batch_size=2), tmp_path / "run", model_name="bench-ae", model_options=TINY,
                data=data, device="cpu")
    assert load_model(run / "last.pt").preparation == {"size": 32, "geometry": "crop", "normalize": None, "equalize": True}
    assert read_config(run)["config"]["data"]["preparation"] == load_model(run / "last.pt").preparation


def test_a_nan_loss_stops_with_a_clear_error_and_keeps_the_folder(tmp_path, monkeypatch):
    from blindspot.models import BenchAE

    monkeypatch.setattr(BenchAE, "training_loss", lambda self, x: (x.sum() * math.nan, {"total": math.nan, "recon": math.nan}))
    with pytest.raises(BlindspotError, match="the training loss became nan at step 1; lower `lr` and run again "
                                             r"\(no checkpoint had been saved yet"):
        run_tiny(tmp_path / "run")
    assert not (tmp_path / "run.partial").exists()  # nothing to keep: the same command with a lower lr starts afresh


def test_user_errors_are_caught_before_any_folder_is_written(tmp_path, uninterrupted):
    with pytest.raises(BlindspotError, match="unknown model 'bench_ae'"):
        train(tiny_config(), tmp_path / "a", model_name="bench_ae")
    with pytest.raises(BlindspotError, match="latent size d must be a positive integer; got 0"):
        train(tiny_config(), tmp_path / "a", model_name="bench-ae", model_options={"d": 0})
    with pytest.raises(BlindspotError, match="model option size=64 conflicts with size=32"):
        train(tiny_config(), tmp_path / "a", model_name="bench-ae", model_options={"size": 64})
    with pytest.raises(BlindspotError, match="`size` 64 of the data preparation conflicts with the training size 32"):
        train(tiny_config(), tmp_path / "a", model_name="bench-ae", data=DataConfig(preparation=Preparation(size=64)))
    with pytest.raises(BlindspotError, match="resume and overwrite cannot be combined"):
        train(tiny_config(), tmp_path / "a", model_name="bench-ae", resume=True, overwrite=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BlindspotError, match="already exists; pass `resume` .* or `overwrite`"):
        run_tiny(uninterrupted)
    with pytest.raises(BlindspotError, match="holds no checkpoint to resume"):
        resume_run(tmp_path)
    with pytest.raises(BlindspotError, match="cannot resume '.*' as a 'ae' model: its checkpoint holds a 'bench-ae' model"):
        resume_run(uninterrupted, steps=50, model_name="ae")
    with pytest.raises(BlindspotError, match=r"was trained with lr=0.001, not 0.01 \(only `steps`, `device`"):
        train(tiny_config(lr=0.01, steps=50), uninterrupted, model_name="bench-ae", model_options=TINY, resume=True)
    with pytest.raises(BlindspotError, match="is already at step 40; give more than 40 `steps`"):
        resume_run(uninterrupted, steps=30)
    assert read_config(uninterrupted)["history"] == [{"from_step": 0, "to_step": 40, "device": "cpu"}]  # untouched


# --- folders blindspot did not write ------------------------------------------------------------


def test_the_run_folder_may_not_lie_inside_the_data(nifti_folder):
    with pytest.raises(BlindspotError, match=r"'.*run' overlaps the input '.*volumes'"):
        train(tiny_config(), nifti_folder / "run", model_name="bench-ae", data=DataConfig(data=str(nifti_folder)))
    assert sorted(p.name for p in nifti_folder.iterdir()) == [f"case_{k:03d}.nii.gz" for k in range(5)]


def test_overwrite_replaces_only_a_run_blindspot_wrote(tmp_path, uninterrupted):
    mine = user_folder(tmp_path / "mine")
    for flags in ({}, {"overwrite": True}):
        with pytest.raises(BlindspotError, match=r"'.*mine' exists but was not written by blindspot \(no .blindspot marker\)"):
            run_tiny(mine, steps=2, **flags)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and not (tmp_path / "mine.partial").exists()
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    run_tiny(run, steps=2, val_every=2, overwrite=True)
    assert {p.name for p in run.iterdir()} == RUN_FILES and load_checkpoint(run / "last.pt")["step"] == 2
    assert not list(tmp_path.glob(".run.replaced")) and not (tmp_path / "run.partial").exists()


def test_resume_never_touches_a_folder_blindspot_did_not_write(tmp_path, uninterrupted):
    mine = user_folder(tmp_path / "mine")
    shutil.copy(uninterrupted / "last.pt", mine / "last.pt")  # a checkpoint someone copied into their own folder
    with pytest.raises(BlindspotError, match="was not written by blindspot"):
        resume_run(mine, steps=50)
    with pytest.raises(BlindspotError, match="was not written by blindspot"):
        train(tiny_config(steps=50), mine, model_name="bench-ae", model_options=TINY, resume=True, device="cpu")
    assert sorted(p.name for p in mine.iterdir()) == ["last.pt", "notes.txt"] and not (tmp_path / "mine.partial").exists()


def test_a_staging_folder_blindspot_did_not_write_is_never_removed(tmp_path):
    staging = user_folder(tmp_path / "run.partial")
    for flags in ({}, {"overwrite": True}):
        with pytest.raises(BlindspotError, match=r"'.*run.partial' exists and is not this command's staging folder"):
            run_tiny(tmp_path / "run", steps=2, **flags)
    assert [p.name for p in staging.iterdir()] == ["notes.txt"] and not (tmp_path / "run").exists()


# --- command line -------------------------------------------------------------------------------


def test_cli_trains_resumes_and_lists_models(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--size", "32", "--batch-size", "4", "--val-every", "3", "--device", "cpu"]
    args = ["train", "--model", "bench-ae", "--option", "d=4", "--option", "hidden=16", "--steps", "3", *common, "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    assert load_checkpoint(out / "last.pt")["model"]["d"] == 4
    assert load_model(out / "last.pt").preparation["size"] == 32
    assert main(["train", "--resume", str(out), "--steps", "5"]) == 0
    assert [int(r["step"]) for r in read_metrics(out)] == [3, 5]
    capsys.readouterr()
    assert main(args) == 2
    assert "already exists; pass --resume to train it further or --overwrite to start again" in capsys.readouterr().err
    assert main(["list-models"]) == 0
    assert "bench-ae     size=64 d=16 hidden=1024 loss='mse'" in capsys.readouterr().out


def test_cli_overwrite_refuses_a_folder_blindspot_did_not_write(tmp_path, capsys):
    mine = user_folder(tmp_path / "mine")
    args = ["train", "--model", "bench-ae", "--size", "32", "--steps", "1", "--device", "cpu", "--out", str(mine), "--overwrite"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "was not written by blindspot" in err and err.count("\n") == 1
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope", "--out", "{tmp}/r"], "unknown model 'nope'"),
        (["--model", "bench-ae", "--option", "d=0", "--out", "{tmp}/r"], "latent size d must be a positive integer; got 0"),
        (["--model", "bench-ae", "--option", "d16", "--out", "{tmp}/r"], "--option must look like KEY=VALUE"),
        (["--model", "bench-ae", "--option", "d=4", "--option", "d=8", "--out", "{tmp}/r"], "--option d is given twice"),
        (["--model", "bench-ae", "--steps", "3", "--epochs", "2", "--out", "{tmp}/r"], "--steps or --epochs, not both"),
        (["--model", "bench-ae"], "pass --model NAME and --out RUN_DIR"),
        (["--resume", "{tmp}", "--lr", "0.1"], "--lr cannot be given with --resume"),
        (["--resume", "{tmp}"], "holds no checkpoint to resume"),
        (["--model", "bench-ae", "--device", "tpu", "--out", "{tmp}/r"], "--device must be cpu, cuda"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    assert main(["train", *[a.format(tmp=tmp_path) for a in args]]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_cli_resume_works_from_another_working_directory(nifti_folder, tmp_path, monkeypatch, capsys):
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    shutil.copytree(nifti_folder, first / "data")
    elsewhere.mkdir()
    monkeypatch.chdir(first)
    args = ["train", "--model", "bench-ae", "--option", "d=4", "--option", "hidden=16", "--size", "32", "--batch-size", "2",
            "--split", "all", "--slice", "12", "--steps", "2", "--val-every", "2", "--device", "cpu", "--data", "data"]
    assert main([*args, "--out", "run"]) == 0, capsys.readouterr().err
    monkeypatch.chdir(elsewhere)
    run = first / "run"
    code = main(["train", "--resume", str(run), "--steps", "4"])
    assert code == 0, capsys.readouterr().err
    assert [int(r["step"]) for r in read_metrics(run)] == [2, 4]
    stored = load_checkpoint(run / "last.pt")["config"]
    assert (stored["data"]["data"], stored["data_path"]) == ("data", str(first / "data"))  # as typed, and where it lies


@pytest.mark.parametrize("at", [0, 2])
def test_an_interrupted_cli_training_prints_one_line(tmp_path, capsys, monkeypatch, at):
    original = training._Batches.__call__

    def interrupted(self, step):
        if step == at:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(training._Batches, "__call__", interrupted)
    out = tmp_path / "run"
    code = main(["train", "--model", "bench-ae", "--option", "d=4", "--option", "hidden=16", "--size", "32", "--batch-size",
                 "4", "--steps", "4", "--val-every", "2", "--device", "cpu", "--out", str(out)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    said = {0: "interrupted before the first checkpoint; run the same command again to start over.",
            2: f"interrupted; the progress is in '{out}.partial/last.pt': run the same command again (or `blindspot train "
               f"--resume {out}`) to continue."}[at]
    assert code == 130 and lines == [said]
    assert (tmp_path / "run.partial" / "last.pt").is_file() == (at == 2)


def test_an_interrupted_cli_resume_prints_one_line(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", "--model", "bench-ae", "--option", "d=4", "--option", "hidden=16", "--size", "32", "--batch-size",
                 "4", "--steps", "2", "--val-every", "2", "--device", "cpu", "--out", str(out)]) == 0
    capsys.readouterr()

    def interrupted(self, step):
        raise KeyboardInterrupt

    monkeypatch.setattr(training._Batches, "__call__", interrupted)
    code = main(["train", "--resume", str(out), "--steps", "4"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 130 and lines == [f"interrupted; continue with: blindspot train --resume {out}"]


def test_the_run_folder_says_what_the_training_did(uninterrupted, tmp_path):
    config = read_config(uninterrupted)
    n, batch = config["training_data"]["train"]["images"], config["config"]["batch_size"]
    assert config["length"] == {"steps": 40, "batch_size": batch, "train_images": n, "images_seen": 40 * batch,
                                "epochs": 40 * batch / n,
                                "summary": f"40 steps (≈ {40 * batch / n:.1f} epochs of {n} images, batch {batch}, "
                                           f"{40 * batch} images seen)"}
    # a preset given in epochs: the steps it became, and the epochs those steps really are
    run = train(make_config("ae4ad", epochs=0.5, size=32, batch_size=8, val_every=100), tmp_path / "run",
                model_name="bench-ae", model_options=TINY, device="cpu")
    length = read_config(run)["length"]
    assert length["summary"] == "3 steps (≈ 0.6 epochs of 40 images, batch 8, 24 images seen)"

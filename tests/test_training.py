import csv
import json
import math
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch

from blindspot.checkpoint import load_checkpoint, load_model
from blindspot.cli import main
from blindspot.data import DataOptions
from blindspot.data.mni152 import DEFAULT_SLICES
from blindspot.errors import BlindspotError
from blindspot.models import create_model
import blindspot.training as training
from blindspot.training import (
    MNI152_TRAIN_SLICES,
    MNI152_VALIDATION_SLICES,
    PRESETS,
    TrainConfig,
    anomaly_maps,
    load_training_images,
    make_config,
    reconstruct,
    resume_run,
    select_device,
    train,
)

TINY = {"d": 4, "hidden": 16}
TIMING = ("images_per_s", "outside_model", "elapsed_s")


def tiny_config(**overrides):
    return make_config("quick", **{"size": 32, "batch_size": 8, "steps": 40, "val_every": 10, **overrides})


def run_tiny(out, **overrides):
    return train(tiny_config(**overrides), out, model_name="bench-ae", model_options=TINY, device="cpu")


def read_metrics(folder):
    with (folder / "metrics.csv").open() as handle:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(handle)]


def assert_same_run(a, b):
    for name in ("last.pt", "best_ap.pt", "best_loss.pt"):
        left, right = load_checkpoint(a / name), load_checkpoint(b / name)
        assert left["step"] == right["step"], name
        assert left["state_dict"].keys() == right["state_dict"].keys()
        for key, value in left["state_dict"].items():
            assert torch.equal(value, right["state_dict"][key]), (name, key)
    assert read_metrics(a) == read_metrics(b)


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


def test_make_config_overrides_and_rejects_unknown_keys():
    config = make_config("pitfalls", steps=50, batch_size=4, lr=0.01, size=64, seed=3)
    assert (config.preset, config.steps, config.batch_size, config.lr, config.size, config.seed) == ("pitfalls", 50, 4, 0.01, 64, 3)
    assert make_config("ae4ad", steps=7).epochs is None and make_config("quick", epochs=2).steps is None
    with pytest.raises(BlindspotError, match="unknown training setting 'batchsize'; valid settings: size, steps"):
        make_config(batchsize=3)
    with pytest.raises(BlindspotError, match="unknown preset 'fast'; expected one of quick, pitfalls, ae4ad"):
        make_config("fast")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": 0}, "TrainConfig: lr must be a positive number; got 0"),
        ({"batch_size": 1}, "batch_size must be an integer >= 2"),
        ({"steps": None}, "steps must be set"),
        ({"optimizer": "sgd"}, "optimizer must be 'adam' or 'adamw'"),
        ({"input_range": (1, -1)}, "input_range must be two numbers"),
        ({"loss": "ssim"}, "loss must be 'l1', 'mse' or None"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"size": 16}, "size must be an integer >= 32"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(BlindspotError, match=message):
        make_config(**overrides)


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device().type in ("cpu", "cuda", "mps")
    with pytest.raises(BlindspotError, match="--device must be cpu, cuda, cuda:N or mps; got 'tpu'"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(BlindspotError, match="--device cuda:1 is not available"):
            select_device("cuda:1")


def test_cpu_threads_leave_a_core_free_unless_told(uninterrupted):
    assert training.cpu_threads(3) == 3 and 1 <= training.cpu_threads() <= torch.get_num_threads()
    with pytest.raises(BlindspotError, match="--threads must be a positive integer; got 0"):
        training.cpu_threads(0)
    assert json.loads((uninterrupted / "config.json").read_text())["threads"] == training.cpu_threads()
    assert torch.get_num_threads() == 1  # restored to the module's setting after each run


# --- data ---------------------------------------------------------------------------------------


def test_template_slices_never_overlap_the_test_slices():
    train_slices, val_slices = set(MNI152_TRAIN_SLICES), set(MNI152_VALIDATION_SLICES)
    assert len(train_slices) == 40 and len(val_slices) == 10
    assert not (train_slices & set(DEFAULT_SLICES)) and not (val_slices & set(DEFAULT_SLICES)) and not (train_slices & val_slices)
    images = load_training_images(DataOptions(), size=32)
    assert images.train.images.shape == (40, 32, 32) and images.validation.images.shape == (10, 32, 32)
    assert images.train.images[:, 0, :].max() == 0  # background stays exactly 0 after resizing
    with pytest.raises(BlindspotError, match="--slices and --axis do not apply to training on the embedded template"):
        load_training_images(DataOptions(slices=(80,)), size=32)


def test_nifti_folder_holds_out_the_last_volumes_for_validation(nifti_folder):
    images = load_training_images(DataOptions(data=str(nifti_folder), slices=(10, 11, 12)), size=32)
    source = images.source
    assert [f.rsplit("/", 1)[1] for f in source["validation"]["files"]] == ["case_004.nii.gz"]
    assert len(source["train"]["files"]) == 4 and source["train"]["slices"] == [10, 11, 12]
    assert images.train.images.shape == (12, 32, 32) and images.validation.images.shape == (3, 32, 32)
    with pytest.raises(BlindspotError, match="needs at least 2 volumes in its 'all' split"):
        load_training_images(DataOptions(data=str(nifti_folder / "case_000.nii.gz"), slices=(10,)), size=32)


def test_batches_are_functions_of_seed_and_step():
    config = tiny_config(batch_size=6)
    images = np.random.default_rng(0).random((10, 32, 32), dtype=np.float32)
    batches = training._Batches(images, config, torch.device("cpu"), training.Augmentation())
    first = [batches.indices(step) for step in range(5)]
    epochs = np.concatenate(first)[:30].reshape(3, 10)
    assert all(sorted(e) == list(range(10)) for e in epochs)  # each epoch is a permutation
    again = training._Batches(images, config, torch.device("cpu"), training.Augmentation())
    assert torch.equal(batches(3), again(3)) and not torch.equal(batches(3), batches(4))


# --- inference helpers --------------------------------------------------------------------------


def test_reconstruct_and_anomaly_maps_map_the_input_range():
    torch.manual_seed(0)
    model = create_model("bench-ae", size=32, **TINY).train()
    images = np.random.default_rng(0).random((5, 32, 32), dtype=np.float32)
    x = torch.from_numpy(images).unsqueeze(1)
    model.eval()
    with torch.no_grad():
        expected = ((model(2 * x - 1) + 1) / 2)[:, 0].numpy()
        expected_map = model.anomaly_map(2 * x - 1)[:, 0].numpy()
    model.train()
    out = reconstruct(model, images, input_range=(-1, 1), batch_size=2)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(anomaly_maps(model, images, input_range=(-1, 1), batch_size=3), expected_map, atol=1e-6)
    assert out.dtype == np.float32 and model.training  # mode restored
    with pytest.raises(BlindspotError, match="images are 16×16 but the model takes 32×32 inputs; resize them first"):
        reconstruct(model, images[:, :16, :16])


# --- training runs ------------------------------------------------------------------------------


def test_run_folder_holds_checkpoints_metrics_and_config(uninterrupted):
    assert {p.name for p in uninterrupted.iterdir()} == {"config.json", "metrics.csv", "best_ap.pt", "best_loss.pt", "last.pt"}
    rows = read_metrics(uninterrupted)
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    assert list(rows[0]) == ["step", "epoch", "train_total", "train_recon", "val_loss", "val_ap"]
    assert all(0 <= float(r["val_ap"]) <= 1 for r in rows) and float(rows[-1]["train_total"]) < float(rows[0]["train_total"])
    config = json.loads((uninterrupted / "config.json").read_text())
    assert config["config"]["preset"] == "quick" and config["config"]["input_range"] == [0.0, 1.0]
    assert config["model"] == {"name": "bench-ae", "size": 32, "d": 4, "hidden": 16, "loss": "mse"}
    assert config["training_data"]["train"]["slices"] == list(MNI152_TRAIN_SLICES) and config["augmentation"]["rotation"] == 10
    assert config["versions"]["torch"] and config["history"] == [{"from_step": 0, "to_step": 40, "device": "cpu"}]
    last, best = load_checkpoint(uninterrupted / "last.pt"), load_checkpoint(uninterrupted / "best_ap.pt")
    assert last["step"] == 40 and last["optimizer"] is not None and best["optimizer"] is None
    assert best["metrics"]["val_ap"] == max(float(r["val_ap"]) for r in rows)
    assert last["config"]["data"]["data"] == "mni152" and not load_model(uninterrupted / "last.pt").training


def test_stopped_at_20_and_resumed_to_40_equals_uninterrupted(uninterrupted, tmp_path):
    run = run_tiny(tmp_path / "run", steps=20)
    assert load_checkpoint(run / "last.pt")["step"] == 20
    resume_run(run, steps=40)
    assert_same_run(run, uninterrupted)
    history = json.loads((run / "config.json").read_text())["history"]
    assert [h["from_step"] for h in history] == [0, 20]
    assert not (tmp_path / "run.partial").exists()


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
    monkeypatch.undo()
    run_tiny(tmp_path / "run")  # the same command again continues from step 25
    assert_same_run(tmp_path / "run", uninterrupted)


def test_epochs_become_steps_and_ae4ad_trains_in_minus_one_to_one(tmp_path):
    config = make_config("ae4ad", epochs=0.5, size=32, batch_size=8, val_every=100)
    run = train(config, tmp_path / "run", model_name="bench-ae", model_options=TINY, device="cpu")
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["steps"] == math.ceil(0.5 * 40 / 8) and saved["augmentation"] is None
    assert load_checkpoint(run / "last.pt")["config"]["input_range"] == (-1.0, 1.0)


def test_a_nan_loss_stops_with_a_clear_error_and_keeps_the_folder(tmp_path, monkeypatch):
    from blindspot.models import BenchAE

    monkeypatch.setattr(BenchAE, "training_loss", lambda self, x: (x.sum() * math.nan, {"total": math.nan, "recon": math.nan}))
    with pytest.raises(BlindspotError, match="the training loss became nan at step 1; lower --lr"):
        run_tiny(tmp_path / "run")
    assert (tmp_path / "run.partial").is_dir()


def test_user_errors_are_caught_before_any_folder_is_written(tmp_path, uninterrupted):
    with pytest.raises(BlindspotError, match="unknown model 'bench_ae'"):
        train(tiny_config(), tmp_path / "a", model_name="bench_ae")
    with pytest.raises(BlindspotError, match="latent size d must be a positive integer; got 0"):
        train(tiny_config(), tmp_path / "a", model_name="bench-ae", model_options={"d": 0})
    with pytest.raises(BlindspotError, match="model option size=64 conflicts with size=32"):
        train(tiny_config(), tmp_path / "a", model_name="bench-ae", model_options={"size": 64})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BlindspotError, match="already exists; pass --resume .* or --overwrite"):
        run_tiny(uninterrupted)
    with pytest.raises(BlindspotError, match="holds no checkpoint to resume"):
        resume_run(tmp_path)
    with pytest.raises(BlindspotError, match="cannot resume '.*' as a 'ae' model: its checkpoint holds a 'bench-ae' model"):
        resume_run(uninterrupted, steps=50, model_name="ae")
    with pytest.raises(BlindspotError, match=r"was trained with lr=0.001, not 0.01 \(only --steps, --device"):
        train(tiny_config(lr=0.01, steps=50), uninterrupted, model_name="bench-ae", model_options=TINY, resume=True)
    with pytest.raises(BlindspotError, match="is already at step 40; pass --steps greater than 40"):
        resume_run(uninterrupted, steps=30)


# --- command line -------------------------------------------------------------------------------


def test_cli_trains_resumes_and_lists_models(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--size", "32", "--batch-size", "4", "--val-every", "3", "--device", "cpu"]
    args = ["train", "--model", "bench-ae", "--option", "d=4", "--option", "hidden=16", "--steps", "3", *common, "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    assert load_checkpoint(out / "last.pt")["model"]["d"] == 4
    assert main(["train", "--resume", str(out), "--steps", "5"]) == 0
    assert [int(r["step"]) for r in read_metrics(out)] == [3, 5]
    assert main(["list-models"]) == 0
    assert "bench-ae     size=64 d=16 hidden=1024 loss='mse'" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope", "--out", "{tmp}/r"], "unknown model 'nope'"),
        (["--model", "bench-ae", "--option", "d=0", "--out", "{tmp}/r"], "latent size d must be a positive integer; got 0"),
        (["--model", "bench-ae", "--option", "d16", "--out", "{tmp}/r"], "--option must look like KEY=VALUE"),
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

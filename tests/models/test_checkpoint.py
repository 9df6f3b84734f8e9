"""Checkpoints: one file rebuilds a model, its weights and its data convention; loading runs no code."""

import warnings
from pathlib import Path

import pytest
import torch

import blindspot.models
from blindspot import __version__
from blindspot.errors import BlindspotError
from blindspot.models import create_model
from blindspot.models.checkpoint import FORMAT, load_checkpoint, load_model, save_checkpoint


@pytest.fixture
def model():
    torch.manual_seed(0)
    net = create_model("bench-ae", size=32, d=4, hidden=16)
    optimizer = torch.optim.Adam(net.parameters())
    loss, _ = net.training_loss(torch.rand(4, 1, 32, 32))
    loss.backward()
    optimizer.step()  # non-trivial weights, batch-norm statistics and optimizer state
    return net, optimizer


def test_round_trip_rebuilds_the_model_from_the_file_alone(model, tmp_path):
    net, optimizer = model
    net.input_range = (-1, 1)
    net.preparation = {"size": 32, "equalize": False, "slices": [120, 139]}
    path = save_checkpoint(tmp_path / "m.pt", net, step=7, config={"input_range": (-1.0, 1.0), "preset": "ae4ad"},
                           metrics={"val_ap": 0.5}, optimizer=optimizer, extra={"best": {"val_ap": 0.5}})
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left
    saved = load_checkpoint(path)
    assert saved["format"] == FORMAT == "blindspot-checkpoint/2" and saved["version"] == __version__
    assert saved["model"] == {"name": "bench-ae", "size": 32, "d": 4, "hidden": 16, "loss": "mse"}
    assert saved["input_range"] == [-1.0, 1.0] and saved["preparation"] == net.preparation
    assert saved["step"] == 7 and saved["metrics"] == {"val_ap": 0.5} and saved["extra"] == {"best": {"val_ap": 0.5}}
    assert saved["config"]["input_range"] == (-1.0, 1.0) and saved["optimizer"]["state"]
    loaded = load_model(path)
    assert not loaded.training and type(loaded) is type(net)
    assert loaded.input_range == (-1.0, 1.0) and loaded.preparation == net.preparation
    x = torch.rand(3, 1, 32, 32)
    net.eval()
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    assert blindspot.models.load is load_model


def test_defaults_without_optimizer_or_preparation(model, tmp_path):
    save_checkpoint(tmp_path / "m.pt", model[0], step=0, config={}, metrics={})
    saved = load_checkpoint(tmp_path / "m.pt")
    assert saved["optimizer"] is None and saved["preparation"] is None and saved["input_range"] == [0.0, 1.0]
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.input_range == (0.0, 1.0) and loaded.preparation is None


def test_loading_uses_weights_only_and_runs_no_code_from_the_file(model, tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", model[0], step=0, config={}, metrics={})
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: calls.append(kwargs) or real_load(*args, **kwargs))
    load_model(path)
    assert calls and all(kwargs.get("weights_only") is True for kwargs in calls)
    monkeypatch.undo()

    marker = tmp_path / "code-ran"
    torch.save({"format": FORMAT, "model": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(BlindspotError, match="not a readable blindspot checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


class _Payload:
    """Unpickling this object would create ``marker`` (what a malicious checkpoint could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_version_1_checkpoint_asks_for_retraining(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", model[0], step=0, config={}, metrics={})
    old = torch.load(path, weights_only=True)
    old["format"] = "blindspot-checkpoint/1"
    del old["input_range"], old["preparation"]
    torch.save(old, path)
    message = (f"'{path}' is a version-1 blindspot checkpoint; the model architectures have changed since "
               "(format 'blindspot-checkpoint/2'), so it cannot be loaded: retrain the model.")
    for load in (load_checkpoint, load_model):
        with pytest.raises(BlindspotError) as caught:
            load(path)
        assert str(caught.value) == message


@pytest.mark.parametrize(
    ("entry", "field", "value", "problem"),
    [
        ("input_range", "input_range", [1.0, -1.0], "is [1.0, -1.0]; expected [low, high] with low < high"),
        ("input_range", "input_range", "wide", "is 'wide'; expected [low, high] with low < high"),
        ("preparation", "preparation", [1, 2], "is [1, 2]; expected a dict or None"),
        ("preparation", "size", 0, "must be a positive integer or None; got 0"),
        ("preparation", "geometry", "round", "must be one of pad, crop, stretch; got 'round'"),
        ("model", "name", "nosuch", "is 'nosuch', none of the registered models ae, bench-ae, ceae, memae, spatial-ae, "
                                    "vae, vqvae2"),
        ("model", "foo", 1, "is not an option of model 'bench-ae', which takes size, d, hidden, loss"),
        ("model", "d", "sixteen", "is 'sixteen'; expected an integer like the default 16"),
        ("model", "loss", 2, "is 2; expected a string like the default 'mse'"),
        ("step", "step", -1, "is -1; expected a non-negative integer"),
    ],
)
def test_a_tampered_entry_names_the_file_and_the_field(model, tmp_path, entry, field, value, problem):
    path = save_checkpoint(tmp_path / "m.pt", model[0], step=0, config={}, metrics={})
    checkpoint = torch.load(path, weights_only=True)
    if entry == field:
        checkpoint[entry] = value
    else:
        checkpoint[entry] = {**(checkpoint[entry] or {}), field: value}
    torch.save(checkpoint, path)
    name = field if entry == field else f"{entry}.{field}"
    with pytest.raises(BlindspotError) as caught:
        load_model(path)
    assert str(caught.value) == f"'{path}': field '{name}' {problem} (the checkpoint may be damaged)."
    assert "`" not in str(caught.value)  # a field is quoted, never written as a parameter the CLI turns into a flag


def test_a_value_the_model_refuses_names_the_file_and_the_model_entry(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", model[0], step=0, config={}, metrics={})
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model"]["d"] = 0
    torch.save(checkpoint, path)
    with pytest.raises(BlindspotError) as caught:
        load_model(path)
    assert str(caught.value) == (f"'{path}': field 'model' does not build a 'bench-ae' model: bench-ae: latent size d "
                                 "must be a positive integer; got 0 (the checkpoint may be damaged).")


def test_exported_models_point_to_the_audit(tmp_path):
    script = tmp_path / "net.pt"
    with warnings.catch_warnings():  # torch.jit is deprecated in recent torch, and still what many exports are
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(torch.nn.Identity()).save(str(script))
    onnx = tmp_path / "net.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch")
    for path, kind in ((script, "a TorchScript"), (onnx, "an ONNX")):
        with pytest.raises(BlindspotError) as caught:
            load_checkpoint(path)
        assert str(caught.value) == (f"'{path}' is {kind} file, not a blindspot checkpoint; audit it with: blindspot "
                                     f"audit --model '{path}'.")


def test_a_failed_write_keeps_the_previous_file(model, tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", model[0], step=1, config={}, metrics={})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(BlindspotError, match="cannot write .*disk full"):  # blindspot.results.atomic_write
        save_checkpoint(path, model[0], step=2, config={}, metrics={})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and [p.name for p in tmp_path.iterdir()] == ["m.pt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"not a checkpoint at all", "not a readable blindspot checkpoint"),
        ({"weights": torch.zeros(2)}, "is not a blindspot checkpoint"),
        ({"format": "blindspot-checkpoint/9"}, "has checkpoint format 'blindspot-checkpoint/9'"),
        ({"format": FORMAT, "model": {"name": "ae"}}, "lacks the entries state_dict"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "x.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(BlindspotError, match=message):
        load_checkpoint(path)


def test_a_folder_is_not_a_checkpoint(tmp_path):
    with pytest.raises(BlindspotError, match="is a folder; expected a checkpoint file such as"):
        load_checkpoint(tmp_path)


def test_weights_of_another_architecture_are_refused(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", model[0], step=0, config={}, metrics={})
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model"]["d"] = 8
    torch.save(checkpoint, path)
    with pytest.raises(BlindspotError, match="do not fit a 'bench-ae' model"):
        load_model(path)

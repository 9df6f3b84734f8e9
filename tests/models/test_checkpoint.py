"""Checkpoints: one file rebuilds a model, its weights and its data convention; loading runs no code."""

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


@pytest.mark.parametrize(("key", "value"), [("input_range", [1.0, -1.0]), ("input_range", "wide"), ("preparation", [1, 2])])
def test_a_damaged_data_convention_is_refused(model, tmp_path, key, value):
    path = save_checkpoint(tmp_path / "m.pt", model[0], step=0, config={}, metrics={})
    checkpoint = torch.load(path, weights_only=True)
    checkpoint[key] = value
    torch.save(checkpoint, path)
    with pytest.raises(BlindspotError, match=f"has an invalid {key} .*; the file is damaged"):
        load_model(path)


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

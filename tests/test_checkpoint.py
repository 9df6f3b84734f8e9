import pytest
import torch

from blindspot import __version__
from blindspot.checkpoint import FORMAT, load_checkpoint, load_model, save_checkpoint
from blindspot.errors import BlindspotError
from blindspot.models import create_model


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
    path = save_checkpoint(tmp_path / "m.pt", net, step=7, config={"input_range": (0.0, 1.0), "preset": "quick"},
                           metrics={"val_ap": 0.5}, optimizer=optimizer, extra={"best": {"val_ap": 0.5}})
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left
    saved = load_checkpoint(path)
    assert saved["format"] == FORMAT and saved["version"] == __version__
    assert saved["model"] == {"name": "bench-ae", "size": 32, "d": 4, "hidden": 16, "loss": "mse"}
    assert saved["step"] == 7 and saved["metrics"] == {"val_ap": 0.5} and saved["extra"] == {"best": {"val_ap": 0.5}}
    assert saved["config"]["input_range"] == (0.0, 1.0) and saved["optimizer"]["state"]
    loaded = load_model(path)
    assert not loaded.training and type(loaded) is type(net)
    x = torch.rand(3, 1, 32, 32)
    net.eval()
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_without_optimizer_stores_none(model, tmp_path):
    save_checkpoint(tmp_path / "m.pt", model[0], step=0, config={}, metrics={})
    assert load_checkpoint(tmp_path / "m.pt")["optimizer"] is None


def test_a_failed_write_keeps_the_previous_file(model, tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "m.pt", model[0], step=1, config={}, metrics={})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
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

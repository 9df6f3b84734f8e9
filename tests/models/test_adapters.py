"""Model adapters: every kind of model behind one interface, and one inference path for all of them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from blindspot.errors import BlindspotError
from blindspot.models import create_model
from blindspot.models.adapters import (
    OnnxAdapter,
    ReconstructionFolder,
    TorchAdapter,
    load_adapter,
    parse_input_range,
    reconstruction_key,
)
from blindspot.models.checkpoint import save_checkpoint
from blindspot.models.inference import reconstruct

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def images():
    return np.random.default_rng(0).random((5, 32, 32), dtype=np.float32)


def onnx_identity(path, batch="N", size=("H", "W")) -> None:
    """An ONNX identity model with the given (symbolic or fixed) batch and spatial dimensions."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    shape = [batch, 1, *size]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_a_checkpoint_carries_its_range_preparation_and_size(tmp_path, images):
    torch.manual_seed(0)
    model = create_model("bench-ae", size=32, d=4, hidden=16)
    model.input_range = (-1.0, 1.0)
    model.preparation = {"size": 32, "geometry": "pad", "normalize": None, "equalize": False}
    path = save_checkpoint(tmp_path / "m.pt", model, step=1, config={}, metrics={})
    adapter = load_adapter(path)
    assert (adapter.kind, adapter.input_range, adapter.size) == ("checkpoint", (-1.0, 1.0), 32)
    assert adapter.preparation["size"] == 32 and adapter.record()["model"]["name"] == "bench-ae"
    np.testing.assert_allclose(reconstruct(adapter, images), reconstruct(model, images), atol=1e-6)
    assert load_adapter(path, input_range="-1,1").input_range == (-1.0, 1.0)
    with pytest.raises(BlindspotError, match=r"`input_range` 0,1 conflicts with the input range the checkpoint"):
        load_adapter(path, input_range=(0, 1))
    torch.save(model.state_dict(), tmp_path / "state.pt")
    with pytest.raises(BlindspotError, match="for a state dict name the network's factory"):
        load_adapter(tmp_path / "state.pt")


def test_torchscript_runs_like_the_module_and_keeps_its_mode(tmp_path, images):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.BatchNorm2d(2), torch.nn.Conv2d(2, 1, 1))
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(net).save(str(tmp_path / "net.pt"))
    adapter = load_adapter(tmp_path / "net.pt")
    assert adapter.kind == "torchscript" and adapter.size is None
    adapter.module.train()
    out = reconstruct(adapter, images, batch_size=2)
    assert adapter.module.training  # restored after the eval-mode run
    assert (adapter.calls, adapter.images) == (3, 5)
    np.testing.assert_allclose(out, reconstruct(net, images), atol=1e-6)


def test_onnx_fixed_sizes_become_the_model_size_and_a_fixed_batch_is_padded(tmp_path, images):
    pytest.importorskip("onnxruntime")
    onnx_identity(tmp_path / "fixed.onnx", batch=2, size=(32, 32))
    adapter = load_adapter(tmp_path / "fixed.onnx", device="cpu")
    assert isinstance(adapter, OnnxAdapter)
    assert (adapter.size, adapter.fixed_batch) == (32, 2) and adapter.record()["providers"] == ["CPUExecutionProvider"]
    out = reconstruct(adapter, images, batch_size=64)
    np.testing.assert_array_equal(out, images)
    assert adapter.calls == 3  # 2 + 2 + (1 padded to 2)
    with pytest.raises(BlindspotError, match="the model takes 32×32 inputs"):
        reconstruct(adapter, np.zeros((1, 16, 16), np.float32))
    onnx_identity(tmp_path / "any.onnx")
    assert load_adapter(tmp_path / "any.onnx", input_range="-1,1").fixed_batch is None
    np.testing.assert_allclose(reconstruct(load_adapter(tmp_path / "any.onnx", input_range="-1,1"), images), images, atol=1e-6)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(BlindspotError, match="is not a loadable ONNX model"):
        load_adapter(tmp_path / "junk.onnx")
    with pytest.raises(BlindspotError, match="does not apply to ONNX models"):
        load_adapter(tmp_path / "any.onnx", device="mps")


def test_the_one_loop_checks_every_output(images):
    with pytest.raises(BlindspotError, match=r"returned shape \(5, 1, 16, 16\) for a batch of shape \(5, 1, 32, 32\)"):
        reconstruct(TorchAdapter(lambda x: x[..., ::2, ::2], "half"), images)
    bad = TorchAdapter(lambda x: torch.where(x[:, :, :1, :1] >= 0, x, x) * torch.tensor([1, 1, 1, float("nan"), 1]).view(-1, 1, 1, 1),
                       "nan")
    with pytest.raises(BlindspotError, match="returned NaN or infinite values for image 3 of the 5"):
        reconstruct(bad, images)
    with pytest.raises(BlindspotError, match="returned a tuple; it must return the reconstruction"):
        reconstruct(TorchAdapter(lambda x: (x, x), "pair"), images)
    failing = TorchAdapter(torch.nn.Conv2d(3, 1, 1), "rgb", wrap_errors=True)
    with pytest.raises(BlindspotError, match=r"failed on a batch of shape \(5, 1, 32, 32\) \(RuntimeError: "):
        reconstruct(failing, images)


def test_factory_specs_and_weights(tmp_path, monkeypatch, images):
    (tmp_path / "adapterfactories.py").write_text(
        "import torch\n"
        "def net():\n    return torch.nn.Conv2d(1, 1, 1, bias=False)\n"
        "def scale():\n    return lambda x: x * 0.5\n"
        "NOT_CALLABLE = 3\n")
    monkeypatch.chdir(tmp_path)  # factories import from the working directory
    monkeypatch.delitem(__import__("sys").modules, "adapterfactories", raising=False)
    torch.save({"weight": torch.full((1, 1, 1, 1), 2.0)}, tmp_path / "w.pt")
    adapter = load_adapter("adapterfactories:net", weights="w.pt")
    assert adapter.kind == "factory" and adapter.record()["weights"] == "w.pt"
    np.testing.assert_allclose(reconstruct(adapter, images), 2 * images, atol=1e-6)
    np.testing.assert_allclose(reconstruct(load_adapter("adapterfactories:scale"), images), images / 2, atol=1e-7)
    with pytest.raises(BlindspotError, match="`weights` applies to a factory that returns a torch.nn.Module"):
        load_adapter("adapterfactories:scale", weights="w.pt")
    with pytest.raises(BlindspotError, match="is an int, not a function to call"):
        load_adapter("adapterfactories:NOT_CALLABLE")
    torch.save({"weight": torch.zeros(2, 1, 1, 1)}, tmp_path / "bad.pt")
    with pytest.raises(BlindspotError, match="`weights` 'bad.pt' do not fit the network of 'adapterfactories:net'"):
        load_adapter("adapterfactories:net", weights="bad.pt")
    (tmp_path / "notweights.pt").write_bytes(b"garbage")
    with pytest.raises(BlindspotError, match="is not a readable state dict"):
        load_adapter("adapterfactories:net", weights="notweights.pt")


def test_input_ranges_and_reconstruction_keys():
    assert parse_input_range(" -1 , 1 ") == (-1.0, 1.0) and parse_input_range(None) is None
    for bad in ("1", "a,b", "1,1", "0,inf"):
        with pytest.raises(BlindspotError, match="`input_range`"):
            parse_input_range(bad)
    assert reconstruction_key("sub-01_flair.nii.gz[axis=2, slice=128]") == "sub-01_flair_axis2_slice128"
    assert reconstruction_key("BraTS_001[slice=70]") == "BraTS_001_slice70"
    assert reconstruction_key("a b.png") == "a_b"


def test_a_reconstructions_folder_maps_its_range_back(tmp_path):
    folder = tmp_path / "recon"
    folder.mkdir()
    np.save(folder / "a.npy", np.full((4, 4), 0.0, np.float32))
    np.save(folder / "b_slice3.npy", np.full((1, 4, 4), 1.0, np.float32))
    recon = ReconstructionFolder(folder, input_range="-1,1").read(["a.png", "b[slice=3]"], (4, 4))
    np.testing.assert_array_equal(recon, np.stack([np.full((4, 4), 0.5), np.full((4, 4), 1.0)]).astype(np.float32))
    np.save(folder / "c.npy", np.full((4, 4), np.inf, np.float32))
    with pytest.raises(BlindspotError, match="c.npy' contains NaN or infinite values"):
        ReconstructionFolder(folder).read(["a.png", "b[slice=3]", "c"], (4, 4))


def test_reconstructions_are_read_in_their_range_or_refused(tmp_path):
    from PIL import Image

    folder = tmp_path / "recon"
    folder.mkdir()
    image = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    np.save(folder / "a.npy", image)  # an integer array: an image of its type, whatever the model's range
    Image.fromarray(image).save(folder / "b.png")
    np.save(folder / "c.npy", np.full((4, 4), 1.05, np.float32))  # a decoder's overshoot, within RANGE_SLACK
    for input_range in (None, "-1,1"):
        recon = ReconstructionFolder(folder, input_range=input_range).read(["a", "b", "c"], (4, 4))
        np.testing.assert_array_equal(recon[0], image.astype(np.float32) / 255)
        np.testing.assert_array_equal(recon[1], recon[0])
    np.testing.assert_allclose(ReconstructionFolder(folder).read(["a", "b", "c"], (4, 4))[2], 1.05)
    np.save(folder / "c.npy", np.full((4, 4), 255.0, np.float32))
    with pytest.raises(BlindspotError, match=r"c.npy' holds values from 255 to 255, outside the model's input range \[0, 1\]"):
        ReconstructionFolder(folder).read(["a", "b", "c"], (4, 4))
    np.testing.assert_allclose(ReconstructionFolder(folder, input_range="0,255").read(["a", "b", "c"], (4, 4))[2], 1.0)
    np.save(folder / "c.npy", np.full((4, 4), 70000, np.int64))
    with pytest.raises(BlindspotError, match="c.npy' holds int64 values from 70000 to 70000; image files and integer arrays"):
        ReconstructionFolder(folder).read(["a", "b", "c"], (4, 4))


def test_a_factory_without_weights_warns_only_when_its_network_has_parameters(tmp_path, monkeypatch):
    (tmp_path / "weightless.py").write_text("import torch\n\ndef conv():\n    return torch.nn.Conv2d(1, 1, 3, padding=1)\n\n"
                                            "def identity():\n    return torch.nn.Identity()\n")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="no `weights` were given: the network of 'weightless:conv' runs with the weights"):
        adapter = load_adapter("weightless:conv")
    assert adapter.record()["note"].startswith("no `weights` were given")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "note" not in load_adapter("weightless:identity").record()
        torch.save(torch.nn.Conv2d(1, 1, 3, padding=1).state_dict(), tmp_path / "w.pt")
        assert "note" not in load_adapter("weightless:conv", weights=tmp_path / "w.pt").record()

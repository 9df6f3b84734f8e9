"""``blindspot audit`` through the CLI: a run as a new user types it, and every bad input of the issue.

Each bad input ends with exit status 2, one line on stderr naming the file or flag, no traceback,
and no output folder (nor a staging folder).
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from blindspot.cli import main

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: 10 test slices of the template at 32 px on a small grid; the statistics come from its train split.
SMALL = ["--size", "32", "--n-intensities", "5", "--n-sigmas", "3", "--sigma-max", "2", "--threads", "1"]
ONE = ["--slice", "60", "--size", "32", "--n-intensities", "3", "--n-sigmas", "2", "--sigma-max", "2", "--threads", "1"]

FACTORIES = '''
import torch


class Blur(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class Half(torch.nn.Module):
    def forward(self, x):
        return x[..., ::2, ::2]


class NaNs(torch.nn.Module):
    def forward(self, x):
        return x * float("nan")


class Infinite(torch.nn.Module):
    def forward(self, x):
        return torch.full_like(x, float("inf"))


class Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def blur():
    return Blur()


def half():
    return Half()


def nans():
    return NaNs()


def infinite():
    return Infinite()


def conv():
    return Conv()


def text():
    return "not a model"


def numpy_blur():
    return lambda x: x.numpy() * 0.9


def broken():
    raise RuntimeError("cannot build\\nsecond line")
'''


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A working directory holding a module of factories (imported from the working directory, as a user would)."""
    (tmp_path / "auditfactories.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "auditfactories", raising=False)
    return tmp_path


def run(capsys, args) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, err: str, out_dir, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not out_dir.exists()
    assert not out_dir.with_name(out_dir.name + ".partial").exists()


def test_a_factory_model_is_audited_and_reported(world, capsys):
    code, out, err = run(capsys, ["audit", "--model", "auditfactories:blur", "--out", "out", *SMALL])
    assert code == 0, err
    assert "report: " in out and out.strip().endswith("report.html")
    folder = world / "out"
    assert {p.name for p in folder.iterdir()} >= {"report.html", "results.npz", "config.json", "summary.md", ".blindspot"}
    config = json.loads((folder / "config.json").read_text())
    assert config["model"]["kind"] == "factory" and config["model"]["source_sha256"]
    assert config["statistics"]["source"] == "the train split of `mni152`"
    assert config["preparation"]["size"] == 32 and len(config["images"]) == 10
    with np.load(folder / "results.npz") as saved:
        assert saved["ap_per_image_normal"].shape == (10, 7, 5) and saved["ap_anomalous"].shape == (7, 5)
        assert saved["centers"].shape == (10, 2) and "inputs" not in saved
    summary = (folder / "summary.md").read_text()
    assert "## Verdict" in summary and "Best scoring function" in summary


def test_save_inputs_stores_the_images_exactly_as_scored(world, capsys):
    code, _, err = run(capsys, ["audit", "--model", "auditfactories:numpy_blur", "--scores", "l1,image", "--save-inputs",
                                "--input-range", "-1,1", "--out", "out", *ONE])
    assert code == 0, err
    with np.load(world / "out" / "results.npz") as saved:
        assert saved["inputs"].shape == (1, 32, 32) and saved["reconstructions"].shape == (1, 32, 32)
        # the callable gets x in [-1, 1] and returns 0.9 x: 0.9 (2 v - 1) back in [0, 1] units
        np.testing.assert_allclose(saved["reconstructions"], (0.9 * (2 * saved["inputs"] - 1) + 1) / 2, atol=1e-6)
    assert json.loads((world / "out" / "config.json").read_text())["model"]["input_range"] == [-1.0, 1.0]


def test_a_state_dict_is_loaded_into_the_factory_network(world, capsys):
    torch.manual_seed(0)
    weights = {"conv.weight": torch.full((1, 1, 3, 3), 1 / 9), "conv.bias": torch.zeros(1)}
    torch.save(weights, world / "w.pt")
    code, _, err = run(capsys, ["audit", "--model", "auditfactories:conv", "--weights", "w.pt", "--scores", "l1",
                                "--out", "out", *ONE])
    assert code == 0, err
    config = json.loads((world / "out" / "config.json").read_text())
    assert config["model"]["weights_sha256"] and "w.pt" in config["input_hashes"]
    torch.save({"conv.weight": torch.zeros(1, 1, 3, 3)}, world / "bad.pt")
    code, _, err = run(capsys, ["audit", "--model", "auditfactories:conv", "--weights", "bad.pt", "--out", "out2", *ONE])
    assert_refused(code, err, world / "out2", "--weights 'bad.pt' do not fit", "1 missing (e.g. 'conv.bias')")


def write_reconstructions(folder, keys, size=32, skip=None, extra=None):
    folder.mkdir()
    for key in keys:
        if key != skip:
            np.save(folder / f"{key}.npy", np.zeros((size, size), np.float32))
    if extra:
        np.save(folder / f"{extra}.npy", np.zeros((size, size), np.float32))


def onnx_rejecting_batches(path) -> None:
    """An ONNX model that accepts any batch shape in its signature but reshapes to batch 2: other batches fail."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "H", "W"])
    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [2, 1, 32, 32])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "reject", [x], [y], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.parametrize("case, fragments", [
    ("shape", ["factory model 'auditfactories:half' returned shape (1, 1, 16, 16)", "its input's shape"]),
    ("nan", ["'auditfactories:nans' returned NaN or infinite values"]),
    ("inf", ["'auditfactories:infinite' returned NaN or infinite values"]),
    ("onnx", ["onnx model", "rejects a batch of shape (1, 1, 32, 32)", "dynamic batch axis"]),
    ("import", ["--model factory 'nosuchpackage_xyz.nets:build': cannot import 'nosuchpackage_xyz.nets'",
                "ModuleNotFoundError"]),
    ("attribute", ["'auditfactories' has no attribute 'nothere'"]),
    ("type", ["--model factory 'auditfactories:text' returned a str", "torch.nn.Module or a callable"]),
    ("raises", ["--model factory 'auditfactories:broken' raised RuntimeError: cannot build."]),
    ("missing", ["--reconstructions", "has no file for the image 'mni152[axis=2, slice=60]'", "mni152_axis2_slice60.npy"]),
    ("extra", ["--reconstructions file", "stray.npy' matches no audited image"]),
    ("recon-shape", ["--reconstructions file", "has shape (16, 16); the images are prepared at 32×32 (--size)"]),
    ("no-model", ["give the model to audit"]),
    ("both", ["give either --model", "or --reconstructions"]),
    ("weights-file", ["--weights applies to a factory"]),
    ("folder-model", ["is a folder; expected a checkpoint"]),
    ("unknown-spec", ["--model 'no_such_file.pt' is neither an existing file"]),
    ("input-range", ["--input-range must be finite numbers A,B with A < B; got '1,0'"]),
    ("scores", ["--scores must be a comma-separated list"]),
])
def test_bad_input_is_one_line_and_leaves_no_folder(world, capsys, case, fragments):
    out = world / "out"
    model = {"shape": "auditfactories:half", "nan": "auditfactories:nans", "inf": "auditfactories:infinite",
             "import": "nosuchpackage_xyz.nets:build", "attribute": "auditfactories:nothere", "type": "auditfactories:text",
             "raises": "auditfactories:broken", "weights-file": "w.onnx", "folder-model": "models",
             "unknown-spec": "no_such_file.pt", "input-range": "auditfactories:blur", "scores": "auditfactories:blur",
             "both": "auditfactories:blur"}.get(case)
    args = ["audit", "--out", str(out), *ONE]
    if case == "onnx":
        onnx_rejecting_batches(world / "reject.onnx")
        model = "reject.onnx"
    if case == "weights-file":
        onnx_rejecting_batches(world / "w.onnx")
        torch.save({}, world / "w.pt")
        args += ["--weights", "w.pt"]
    if case in ("missing", "extra", "recon-shape", "both"):
        keys = ["mni152_axis2_slice60"]
        if case == "recon-shape":
            write_reconstructions(world / "recon", keys, size=16)
        else:
            write_reconstructions(world / "recon", keys, skip=keys[0] if case == "missing" else None,
                                  extra="stray" if case in ("extra", "missing") else None)
        args += ["--reconstructions", "recon"]
    if case == "folder-model":
        (world / "models").mkdir()
    if case == "input-range":
        args += ["--input-range", "1,0"]
    if case == "scores":
        args += ["--scores", "l1,mse"]
    if model is not None:
        args += ["--model", model]
    code, _, err = run(capsys, args)
    assert_refused(code, err, out, *fragments)


def test_a_folder_of_reconstructions_is_audited_in_the_normal_mode_only(world, capsys):
    write_reconstructions(world / "recon", ["mni152_axis2_slice60"])
    code, _, err = run(capsys, ["audit", "--reconstructions", "recon", "--scores", "l1,ssim", "--out", "out", *ONE])
    assert code == 0, err
    with np.load(world / "out" / "results.npz") as saved:
        assert not saved["has_anomalous"] and np.isnan(saved["ap_anomalous"]).all()
    assert "reconstructing the normal image" in (world / "out" / "summary.md").read_text()

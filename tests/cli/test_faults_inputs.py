"""The fault matrix, inputs: values out of range, and masks, labels and regexes that change or measure nothing.

Each case goes through the CLI in-process: a refusal is exit status 2 with one ``error:`` line, a
run that cannot vouch for something is exit status 0 with one ``warning:`` line; never a traceback,
and no file outside the output folder changes (hashed before and after).
"""

from __future__ import annotations

import json
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_error, assert_one_warning, run_cli

#: One slice of the embedded template at 32 px, a small grid, the scores that need no healthy statistics.
AUDIT = ["--slice", "60", "--size", "32", "--n-intensities", "3", "--n-sigmas", "2", "--sigma-max", "2", "--threads", "1",
         "--scores", "l1,ssim"]
#: The name a reconstruction of that slice carries.
KEY = "mni152_axis2_slice60"

FACTORIES = '''
import torch


class Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class Blur(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def conv():
    return Conv()


def blur():
    return Blur()
'''


def reconstructions(root, name: str, array: np.ndarray, suffix: str = ".npy"):
    """A reconstructions folder ``root/name`` holding ``array`` for the audited slice."""
    folder = root / name
    folder.mkdir()
    if suffix == ".npy":
        np.save(folder / f"{KEY}.npy", array)
    else:
        Image.fromarray(array).save(folder / f"{KEY}{suffix}")
    return folder


def gray(seed: int = 0) -> np.ndarray:
    """A 32 × 32 uint8 image."""
    return np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# reconstructions in the model's input range


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reconstructions_holding_0_to_255_floats_are_refused(snapshot, world, capsys, dtype):
    folder = reconstructions(world["root"], "recon", gray().astype(dtype))
    out = world["root"] / "audit"
    before = snapshot(world["root"])
    code, io = run_cli(["audit", "--reconstructions", folder, *AUDIT, "--out", out], capsys)
    assert_one_error(code, io.err, f"--reconstructions file '{folder / (KEY + '.npy')}'", "holds values from",
                     "to 255, outside the model's input range [0, 1]", "--input-range")
    assert snapshot(world["root"]) == before and not out.exists()


def test_integer_reconstructions_are_scaled_like_the_image_file(world, capsys):
    image = gray(1)
    runs = {"npy": reconstructions(world["root"], "npy", image), "png": reconstructions(world["root"], "png", image, ".png"),
            "float": reconstructions(world["root"], "float", image.astype(np.float32))}
    arrays = {}
    for name, folder in runs.items():
        extra = ["--input-range", "0,255"] if name == "float" else []
        code, io = run_cli(["audit", "--reconstructions", folder, *AUDIT, *extra, "--save-inputs",
                            "--out", world["root"] / f"out-{name}"], capsys)
        assert code == 0 and not io.err.strip(), io.err
        with np.load(world["root"] / f"out-{name}" / "results.npz") as saved:
            arrays[name] = {k: saved[k] for k in ("reconstructions", "ap_normal", "recon_error")}
    np.testing.assert_array_equal(arrays["npy"]["reconstructions"][0], image.astype(np.float32) / 255)
    for key in arrays["npy"]:  # uint8 .npy and PNG: the one image scaling
        np.testing.assert_array_equal(arrays["npy"][key], arrays["png"][key])
    np.testing.assert_allclose(arrays["float"]["reconstructions"], arrays["npy"]["reconstructions"], atol=1e-6)


def test_integer_reconstructions_beyond_their_type_range_are_refused(snapshot, world, capsys):
    folder = reconstructions(world["root"], "recon", gray().astype(np.int32) - 300)
    before = snapshot(world["root"])
    code, io = run_cli(["audit", "--reconstructions", folder, *AUDIT, "--out", world["root"] / "audit"], capsys)
    assert_one_error(code, io.err, "holds int32 values from -300 to", "read as images (uint8 0–255")
    assert snapshot(world["root"]) == before


# --------------------------------------------------------------------------------------------
# a factory audited without weights


@pytest.fixture
def factories(world, monkeypatch):
    (world["root"] / "inputfactories.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.chdir(world["root"])
    monkeypatch.delitem(sys.modules, "inputfactories", raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # the import writes no __pycache__ beside the inputs
    return world


def test_a_factory_without_weights_says_so_in_the_terminal_and_the_report(snapshot, factories, capsys, torch_one_thread):
    out = factories["root"] / "audit"
    before = snapshot(factories["root"])
    code, io = run_cli(["audit", "--model", "inputfactories:conv", *AUDIT, "--out", out], capsys)
    assert_one_warning(code, io.err, "no --weights were given", "'inputfactories:conv'", "random")
    assert snapshot(factories["root"]) == {**before, **snapshot(out)}
    assert "**Note:** no `weights` were given" in (out / "summary.md").read_text()
    assert "<strong>Note:</strong> no <code>weights</code> were given" in (out / "report.html").read_text()
    assert json.loads((out / "config.json").read_text())["notes"][0].startswith("no `weights` were given")


def test_a_factory_with_weights_or_without_parameters_has_no_note(factories, capsys, torch_one_thread):
    torch.save({"conv.weight": torch.full((1, 1, 3, 3), 1 / 9), "conv.bias": torch.zeros(1)}, factories["root"] / "w.pt")
    for args in (["--model", "inputfactories:conv", "--weights", "w.pt"], ["--model", "inputfactories:blur"]):
        out = factories["root"] / f"audit-{len(args)}"
        code, io = run_cli(["audit", *args, *AUDIT, "--out", out], capsys)
        assert code == 0 and not io.err.strip(), io.err
        assert json.loads((out / "config.json").read_text())["notes"] == []
        assert "Note:" not in (out / "summary.md").read_text()


# --------------------------------------------------------------------------------------------
# masks, labels and regexes that change nothing or leave nothing to measure


def evaluate(world, out, *extra) -> list:
    return ["evaluate", "--maps", world["maps"], "--labels", world["labels"], "--bootstrap", "0", "--out", out, *extra]


def same_masks(world, name: str, fill: bool):
    """A masks folder ``name`` paired with the world's maps: all brain (``fill``) or all empty."""
    folder = world["root"] / name
    folder.mkdir()
    for path in world["maps"].iterdir():
        np.save(folder / path.name, np.full((8, 8), fill))
    return folder


@pytest.mark.parametrize("case, extra, fragments", [
    ("regex", ["--volume-regex", "c"], ["--volume-regex 'c' has no capture group", "in parentheses"]),
    ("masks", ["--masks", "{masks}"], ["--masks change nothing here", "--mask-erosion", "--image-score mask-mean"]),
    ("val-fraction", ["--threshold", "val-dice", "--val-fraction", "0.99"],
     ["--val-fraction 0.99 holds out 3 of the 3 test volumes and leaves 0", "at least 2 must remain"]),
    ("val-fraction-half", ["--threshold", "val-dice", "--val-fraction", "0.5"],
     ["--val-fraction 0.5 holds out 2 of the 3 test volumes and leaves 1"]),
])
def test_inputs_that_change_or_leave_nothing_are_refused(snapshot, world, capsys, case, extra, fragments):
    masks = same_masks(world, "masks", True)
    out = world["root"] / "eval"
    before = snapshot(world["root"])
    code, io = run_cli(evaluate(world, out, *[e.format(masks=masks) for e in extra]), capsys)
    assert_one_error(code, io.err, *fragments)
    assert snapshot(world["root"]) == before and not out.exists()


def test_masks_that_act_are_accepted(world, capsys):
    masks = same_masks(world, "masks", True)
    for k, extra in enumerate((["--mask-erosion", "0"], ["--image-score", "mask-mean"])):
        code, io = run_cli(evaluate(world, world["root"] / f"eval{k}", "--masks", masks, *extra), capsys)
        assert code == 0 and not io.err.strip(), io.err


def test_all_empty_masks_say_that_nothing_is_measured(snapshot, world, capsys):
    masks = same_masks(world, "empty", False)
    out = world["root"] / "eval"
    before = snapshot(world["root"])
    code, io = run_cli(evaluate(world, out, "--masks", masks, "--mask-erosion", "0"), capsys)
    assert_one_warning(code, io.err, "every post-processed test map is 0 everywhere (are the brain masks empty?)",
                       "AUROC 0.5 measures nothing")
    assert snapshot(world["root"]) == {**before, **snapshot(out)}
    assert "are the brain masks empty?" in (out / "summary.md").read_text()


def test_all_empty_labels_say_that_nothing_is_measured(snapshot, world, capsys):
    for path in world["labels"].iterdir():
        np.save(path, np.zeros((8, 8), bool))
    out = world["root"] / "eval"
    before = snapshot(world["root"])
    code, io = run_cli(evaluate(world, out), capsys)
    assert_one_warning(code, io.err, "the test labels mark no anomalous pixel in any case: no metric can be measured")
    assert snapshot(world["root"]) == {**before, **snapshot(out)}
    assert "no metric can be measured" in (out / "summary.md").read_text()


# --------------------------------------------------------------------------------------------
# a radius in mm needs a usable voxel spacing


@pytest.mark.parametrize("spacing", [(0.0, 1.0, 1.0), (1.0, float("nan"), 1.0), (1.0, 1.0, float("inf"))])
def test_a_radius_in_mm_with_an_unusable_header_spacing_is_refused(snapshot, world, capfd, spacing):
    folder = world["root"] / "scans"
    folder.mkdir()
    image = nib.Nifti1Image(np.asarray(nib.load(world["data"] / "case_000.nii.gz").dataobj), np.eye(4))
    image.header["pixdim"][1:4] = spacing  # as another tool may write it (nibabel would read 0 as 1 mm)
    path = folder / "scan.nii.gz"
    nib.save(image, str(path))
    out = world["root"] / "mm"
    before = snapshot(world["root"])
    code, io = run_cli(["pitfalls", "intensity", "--volumes", "--data", folder, "--radius", "3", "--radius-unit", "mm",
                        "--n-intensities", "3", "--n-sigmas", "2", "--sigma-max", "2", "--out", out], capfd)
    shown = str([float(s) for s in spacing])
    assert_one_error(code, io.err, f"'{path}' has the voxel spacing {shown} in its header",
                     "three finite sizes > 0", "--radius-unit voxel")
    assert snapshot(world["root"]) == before and not out.exists()

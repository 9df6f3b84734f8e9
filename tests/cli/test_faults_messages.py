"""The fault matrix, part "names and messages": what a newcomer stumbled on, through the CLI.

Tampered checkpoints name the file and the field (never a flag that was not given); exported
models point to ``blindspot audit``; ``compare`` of evaluations prepared at different sizes says
which flag and value fix it; reports render in Markdown, agree in number and draw one-point axes
without warnings; overlays show each case once under a clean name. Each refusal: exit status 2, one
line on stderr, no traceback, and every file outside the output folder unchanged.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from blindspot.cli import main
from blindspot.models import create_model
from blindspot.models.checkpoint import save_checkpoint

from conftest import assert_one_error
from eval_fixtures import make_brats2021

GRID = ["--n-intensities", "3", "--n-sigmas", "2", "--radius", "6"]


def run(capsys, args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def checkpoint(world):
    """A 32-px bench-ae checkpoint trained on nothing: ``tamper(field, value)`` writes a copy with one entry changed."""
    torch.manual_seed(0)
    model = create_model("bench-ae", size=32, d=4, hidden=16)
    model.preparation = {"size": 32, "geometry": "pad", "normalize": None, "equalize": False}
    (world["root"] / "runs" / "x").mkdir(parents=True)
    path = save_checkpoint(world["root"] / "runs" / "x" / "last.pt", model, step=1, config={}, metrics={})

    def tamper(entry: str, field: str, value) -> Path:
        payload = torch.load(path, weights_only=True)
        payload[entry][field] = value
        torch.save(payload, path)
        return path

    return tamper


@pytest.mark.parametrize("command", ["pitfalls", "evaluate"])
@pytest.mark.parametrize(("entry", "field", "value", "problem"), [
    ("model", "foo", 1, "is not an option of model 'bench-ae'"),
    ("model", "name", "nosuch", "is 'nosuch', none of the registered models"),
    ("model", "d", "sixteen", "is 'sixteen'; expected an integer like the default 16"),
    ("preparation", "size", 0, "must be a positive integer or None; got 0"),
])
def test_a_tampered_checkpoint_names_the_file_and_the_field(snapshot, world, capsys, checkpoint, command, entry, field,
                                                             value, problem):
    path = checkpoint(entry, field, value)
    out = world["root"] / "out"
    args = (["pitfalls", "model", "--checkpoint", path, "--data", world["data"], "--slice", "12", *GRID, "--out", out]
            if command == "pitfalls" else
            ["evaluate", "--checkpoint", path, "--data", world["data"], "--overlays", "0", "--out", out])
    before = snapshot(world["root"])
    code, _, err = run(capsys, args)
    assert_one_error(code, err, f"'{path}': field '{entry}.{field}' {problem}", "(the checkpoint may be damaged).")
    assert "--size" not in err and "--foo" not in err and "--d " not in err  # a field is never shown as a flag
    assert snapshot(world["root"]) == before and not out.exists()


@pytest.mark.parametrize("command", ["pitfalls", "evaluate"])
@pytest.mark.parametrize("kind", ["TorchScript", "ONNX"])
def test_an_exported_model_points_to_the_audit(snapshot, world, capsys, command, kind):
    if kind == "TorchScript":
        path = world["root"] / "net.pt"
        with warnings.catch_warnings():  # torch.jit is deprecated in recent torch, and still what many exports are
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.script(torch.nn.Identity()).save(str(path))
    else:
        path = world["root"] / "net.onnx"
        path.write_bytes(b"\x08\x07\x12\x07pytorch")  # the start of a protobuf: ONNX files are not pickles
    out = world["root"] / "out"
    args = (["pitfalls", "model", "--checkpoint", path, *GRID, "--out", out] if command == "pitfalls" else
            ["evaluate", "--checkpoint", path, "--out", out])
    before = snapshot(world["root"])
    code, _, err = run(capsys, args)
    article = "a" if kind == "TorchScript" else "an"
    assert_one_error(code, err, f"'{path}' is {article} {kind} file, not a blindspot checkpoint; audit it with: "
                                f"blindspot audit --model '{path}'.")
    assert "truncated" not in err
    assert snapshot(world["root"]) == before and not out.exists()


def test_compare_of_evaluations_at_different_sizes_says_which_flag_fixes_it(snapshot, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_brats2021(Path("data"))
    for out, size in (("eval-32", ["--size", "32"]), ("eval-native", [])):
        code, _, err = run(capsys, ["evaluate", "--baseline", "image", "--data", "data", *size, "--overlays", "0", "--out", out])
        assert code == 0, err
    before = snapshot(tmp_path)
    code, _, err = run(capsys, ["compare", "eval-32", "eval-native", "--out", "c"])
    assert_one_error(code, err, "'eval-32' and 'eval-native' are not evaluations of the same cases",
                     "'eval-32' prepared its images at --size 32, 'eval-native' at their native size; "
                     "rerun 'eval-native' with --size 32.")
    assert snapshot(tmp_path) == before and not Path("c").exists()
    code, _, err = run(capsys, ["evaluate", "--baseline", "image", "--data", "data", "--size", "32", "--overlays", "0",
                                "--out", "eval-fixed"])
    assert code == 0, err
    code, _, err = run(capsys, ["compare", "eval-32", "eval-fixed", "--out", "c"])
    assert code == 0 and err == ""  # the advice works


@pytest.mark.parametrize("experiment", ["intensity", "texture"])
def test_one_point_axes_give_a_renderable_summary_in_good_grammar_and_no_warning(world, capsys, experiment):
    out = world["root"] / "out"
    code, _, err = run(capsys, ["pitfalls", experiment, "--data", world["data"], "--slice", "12", "--radius", "6",
                                "--n-intensities", "1", "--n-sigmas", "1", "--bootstrap", "0", "--out", out])
    assert code == 0 and err == ""  # no matplotlib warning about singular limits
    summary = (out / "summary.md").read_text()
    assert "1 σ (0)" in summary and "intensities" not in summary.split("\n\n")[1]
    if experiment == "intensity":
        assert "1 intensity × 1 σ (0)" in summary
    else:
        header = next(line for line in summary.splitlines() if line.startswith("| texture"))
        assert header == "| texture | matched intensity | mean \\|ΔAP\\| to it | AP at σ=0.00 | mean AP |"
        rows = [line for line in summary.splitlines() if line.startswith("| ")]
        assert {line.replace("\\|", "").count("|") for line in rows} == {6}  # every row has the header's 5 cells


def test_overlays_show_each_case_once_under_its_name(world, capsys):
    out = world["root"] / "out"
    code, _, err = run(capsys, ["evaluate", "--maps", world["maps"], "--labels", world["labels"], "--overlays", "100",
                                "--out", out])
    assert code == 0, err
    names = sorted(p.name for p in (out / "overlays").iterdir())
    shown = [name.split("_", 2)[2] for name in names]
    assert sorted(shown) == ["c0.png", "c1.png", "c2.png"]  # each case once, without ".npy"
    assert names[0].startswith("best_1_") and len(names) == 3


def test_a_factory_that_is_not_a_function_is_named_in_good_grammar(snapshot, world, capsys, monkeypatch):
    monkeypatch.chdir(world["root"])
    monkeypatch.syspath_prepend(str(world["root"]))
    (world["root"] / "constants_e.py").write_text("VALUE = 3\n")
    before = snapshot(world["root"])
    code, _, err = run(capsys, ["audit", "--model", "constants_e:VALUE", "--out", "audit"])
    assert_one_error(code, err, "is an int, not a function to call.")
    assert not Path("audit").exists()
    assert {k: v for k, v in snapshot(world["root"]).items() if "__pycache__" not in k} == before

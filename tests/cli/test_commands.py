"""The command line (blindspot.cli), in-process through ``blindspot.cli.main``: every command's help, one
end-to-end run of each command, one name per flag everywhere, and errors as one line naming the flag."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest

import blindspot.demo as demo
from blindspot.cli import FLAGS, as_flags, cli, main
from blindspot.results import MARKER
from conftest import assert_one_error, run_cli as run

SMALL = ["--n-intensities", "6", "--n-sigmas", "4", "--sigma-max", "3"]


def commands(group=cli, path=()):
    """(path, command) of every leaf command, e.g. (("pitfalls", "intensity"), <Command>)."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command




# ---------------------------------------------------------------------------------------- help and flags


def test_every_command_and_group_has_help(capsys):
    paths = [path for path, _ in commands()]
    assert set(paths) >= {("demo",), ("evaluate",), ("list-models",), ("pitfalls", "compare"), ("pitfalls", "intensity"),
                          ("pitfalls", "model"), ("pitfalls", "texture"), ("sweep", "latent"), ("train",)}
    groups = [(name,) for name, command in cli.commands.items() if isinstance(command, click.Group)]
    for path in [(), *groups, *paths]:  # every command there is, also those added later
        code, io = run([*path, "--help"], capsys)
        assert code == 0, io.err
        assert io.out.startswith(f"Usage: {' '.join(('blindspot', *path))} ") and "Options:" in io.out
        assert "-h, --help" in io.out
    code, io = run(["pitfalls", "intensity", "-h"], capsys)
    assert code == 0 and "--equalize" in io.out and "--centers FILE" in io.out and "--threads" in io.out
    code, io = run(["--version"], capsys)
    assert code == 0 and io.out.startswith("blindspot, version ")


#: Flags that mean one thing: where a command has one, it has this name and type.
SHARED = {"threads": "--threads", "device": "--device", "batch_size": "--batch-size", "split": "--split", "slice_": "--slice",
          "slices": "--slices", "size": "--size", "seed": "--seed", "data": "--data", "layout": "--layout", "axis": "--axis",
          "modality": "--modality", "normalize": "--normalize", "geometry": "--geometry", "equalize": "--equalize",
          "volume_regex": "--volume-regex", "out": "--out", "overwrite": "--overwrite", "checkpoint": "--checkpoint",
          "centers": "--centers", "radius": "--radius", "n_sigmas": "--n-sigmas", "sigma_max": "--sigma-max",
          "scheduler": "--scheduler", "workers": "--workers"}
#: The long commands, which run in this process, on a local Dask cluster (--workers) or on a Dask scheduler (--scheduler).
LONG = {("sweep", "latent"), ("pitfalls", "intensity"), ("pitfalls", "texture"), ("pitfalls", "model"), ("audit",), ("evaluate",)}


def test_flags_are_named_the_same_everywhere():
    seen = {}
    for path, command in commands():
        for option in (p for p in command.params if isinstance(p, click.Option)):
            opts = set(option.opts) | set(option.secondary_opts)
            assert not opts & {"--jobs", "--n-threads", "--resize", "--crop", "--no-foreground", "--cpu",
                               "--gpu", "--batch", "--slice-index", "--out-dir", "--output"}, (path, opts)
            if option.name in SHARED:
                assert option.opts == [SHARED[option.name]], (path, option.opts)
                seen.setdefault(option.name, set()).add((type(option.type).__name__, getattr(option.type, "min", None) == 0))
    for name in ("threads", "device", "split", "slice_", "size", "seed", "data", "equalize", "geometry"):
        assert len(seen[name]) == 1, (name, seen[name])
    data_commands = [path for path, command in commands() if any(p.name == "data" for p in command.params)]
    assert set(data_commands) >= {("evaluate",), ("pitfalls", "intensity"), ("pitfalls", "model"), ("pitfalls", "texture"),
                                  ("sweep", "latent"), ("train",)}
    for path, command in commands():  # the data flags are one group: each command with --data has all of them, alike
        params = {p.name: p for p in command.params}
        if "data" in params:
            for name in ("layout", "split", "modality", "axis", "slice_", "slices", "normalize", "size", "geometry", "equalize",
                         "volume_regex"):
                reference = next(p for p in dict(commands())[("evaluate",)].params if p.name == name)
                assert params[name].help == reference.help and params[name].default == reference.default, (path, name)
    assert {p.name for p in dict(commands())[("pitfalls", "model")].params} >= {"threads", "device", "batch_size"}
    clustered = {path for path, command in commands() if {"scheduler", "workers"} <= {p.name for p in command.params}}
    assert clustered == LONG
    for name in ("scheduler", "workers"):  # one group: the same help and type everywhere
        assert len({(p.help, type(p.type).__name__) for path, command in commands() for p in command.params
                    if p.name == name}) == 1


def test_library_names_become_flags():
    assert as_flags("`batch_size` must be >= 1; `median_size` too") == "--batch-size must be >= 1; --median too"
    assert as_flags("`min_component_size` and `n_overlays`, `sigma_max`") == "--min-component and --overlays, --sigma-max"
    assert set(FLAGS) == {"median_size", "min_component_size", "data", "n_overlays"}


@pytest.mark.parametrize(("args", "message"), [
    (["pitfalls", "intensity", "--sigma-max", "0", "--out", "{o}"],
     "error: --sigma-max 0 makes all 100 σ of the grid 0; give a --sigma-max > 0, or --n-sigmas 1."),
    (["pitfalls", "texture", "--match", "{exp1}", "--centers", "{centers}", "--out", "{o}", *SMALL],
     "give either --match (whose centres are reused) or --centers, not both."),
    (["evaluate", "--maps", "{maps}", "--labels", "{maps}", "--top-percent", "5", "--out", "{o}"],
     "--top-percent has no effect here: it applies with --image-score top-k."),
    (["evaluate", "--maps", "{maps}", "--labels", "{maps}", "--median-dims", "3", "--out", "{o}"],
     "--median-dims has no effect here: it applies with a --median above 1."),
    (["evaluate", "--maps", "{maps}", "--labels", "{maps}", "--bits", "12", "--out", "{o}"],
     "--bits has no effect here: it applies with --accumulator binned."),
    (["train", "--model", "bench-ae", "--option", "d=1", "--option", "d=2", "--out", "{o}"], "--option d is given twice"),
    (["train", "--model", "bench-ae", "--size", "16", "--out", "{o}"], "--size must be an integer >= 32"),
    (["train", "--model", "bench-ae", "--steps", "2", "--epochs", "1", "--out", "{o}"], "--steps or --epochs, not both"),
    (["sweep", "latent", "--dims", "4", "--split", "test", "--out", "{o}"], "do not give --split"),
    (["sweep", "latent", "--dims", "4", "--model", "bench-ae", "--size", "16", "--out", "{o}"], "--size must be an integer >= 32"),
])
def test_a_library_error_is_one_line_naming_the_flag(tmp_path, capsys, args, message):
    exp1 = tmp_path / "exp1"
    maps = tmp_path / "maps"
    maps.mkdir()
    np.save(maps / "a.npy", np.zeros((4, 4), np.float32))
    if "{exp1}" in args:
        assert run(["pitfalls", "intensity", "--size", "32", *SMALL, "--out", exp1], capsys)[0] == 0
        with np.load(exp1 / "results.npz") as saved:
            np.save(tmp_path / "c.npy", saved["centers"])
    args = [a.format(o=tmp_path / "o", exp1=exp1, centers=tmp_path / "c.npy", maps=maps) for a in args]
    if args[:2] == ["pitfalls", "texture"]:
        args += ["--size", "32"]
    code, io = run(args, capsys)
    assert_one_error(code, io.err, message)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


# ---------------------------------------------------------------------------------------- pitfalls intensity / texture


def test_intensity_command_writes_complete_folder(nifti_folder, tmp_path, capsys):
    out = tmp_path / "exp1"
    code, io = run(["pitfalls", "intensity", "--data", nifti_folder, "--slices", "11:13", "--radius", "8",
                    "--seed", "3", "--save-inputs", "--threads", "1", "--out", out, *SMALL], capsys)
    assert code == 0, io.err
    assert io.out.strip() == f"wrote {out}/ (summary: {out / 'summary.md'})"
    assert {p.name for p in out.iterdir()} == {"results.npz", "config.json", "summary.md", "heatmap.png", "histogram.png", MARKER}
    with np.load(out / "results.npz") as saved:
        assert saved["ap"].shape == (6, 4) and saved["ap_per_image"].shape == (10, 6, 4)
        assert saved["residual_mean"].shape == (6, 4) and saved["centers"].shape == (10, 2)
        assert saved["inputs"].shape == (10, 48, 48) and saved["inputs"].dtype == np.float32
        np.testing.assert_array_equal(saved["intensities"], np.linspace(0, 1, 6))
        np.testing.assert_array_equal(saved["sigmas"], np.linspace(0, 3, 4))
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == 3 and config["parameters"]["radius"] == 8
    assert len(config["data"]["files"]) == 5 and config["versions"]["blindspot"]
    assert sorted(config["input_hashes"]) == sorted(config["data"]["files"])
    assert "AP < 0.5" in (out / "summary.md").read_text()
    assert not (tmp_path / "exp1.partial").exists()


def test_texture_command_matches_to_experiment_1(nifti_folder, tmp_path, capsys):
    exp1, exp2 = tmp_path / "exp1", tmp_path / "exp2"
    common = ["--data", nifti_folder, "--slice", "12", "--radius", "8", *SMALL]
    assert run(["pitfalls", "intensity", *common, "--out", exp1], capsys)[0] == 0
    code, io = run(["pitfalls", "texture", *common, "--match", exp1, "--out", exp2], capsys)
    assert code == 0, io.err
    with np.load(exp2 / "results.npz") as saved, np.load(exp1 / "results.npz") as reference:
        assert list(saved["textures"]) == ["shuffle", "sink", "source"]
        assert saved["ap"].shape == (3, 4) and saved["ap_per_image"].shape == (5, 3, 4)
        np.testing.assert_array_equal(saved["centers"], reference["centers"])
        np.testing.assert_array_equal(saved["matched_ap"], reference["ap"][saved["matched_intensity_index"]])
        assert saved["matched"].shape == (3,)
    assert (exp2 / "textures.png").exists() and (exp2 / MARKER).is_file()
    other = ["--data", nifti_folder, "--slice", "13", "--radius", "8", *SMALL]
    code, io = run(["pitfalls", "texture", *other, "--match", exp1, "--out", tmp_path / "x"], capsys)
    assert_one_error(code, io.err, "other images")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{tmp}/nothing.nii.gz"], "does not exist"),
        (["--data", "{folder}", "--slice", "99"], "slice 99 is out of range"),
        (["--data", "{folder}", "--slices", "3"], "--slices must look like A:B"),
        (["--data", "{folder}", "--slice", "3", "--slices", "1:4"], "either --slice or --slices"),
        (["--data", "{folder}", "--slice", "0"], "empty foreground"),
        (["--n-sigmas", "0"], "Invalid value for '--n-sigmas'"),
        (["--colour", "red"], "No such option '--colour'"),
        (["--split", "val"], "Invalid value for '--split'"),
        (["--workers", "0"], "Invalid value for '--workers'"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "give either --scheduler"),
        (["--resize", "64"], "No such option '--resize'"),
    ],
)
def test_user_errors_exit_2_with_one_line_and_no_folder(nifti_folder, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, folder=nifti_folder) for a in args]
    out = tmp_path / "never"
    assert main(["pitfalls", "intensity", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    if not message.startswith(("Invalid value", "No such option")):  # click's usage errors add a usage line
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert not out.exists() and not (tmp_path / "never.partial").exists()


def test_existing_output_needs_overwrite_which_replaces_only_blindspot_folders(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    for overwrite in ([], ["--overwrite"]):  # a folder blindspot did not write is never replaced
        code, io = run(["pitfalls", "intensity", "--out", tmp_path / "out", "--size", "32", *overwrite, *SMALL], capsys)
        assert_one_error(code, io.err, "was not written by blindspot")
    assert list((tmp_path / "out").iterdir()) == []
    assert run(["pitfalls", "intensity", "--out", tmp_path / "mine", "--size", "32", *SMALL], capsys)[0] == 0
    code, io = run(["pitfalls", "intensity", "--out", tmp_path / "mine", "--size", "32", *SMALL], capsys)
    assert_one_error(code, io.err, "pass --overwrite")
    code, io = run(["pitfalls", "intensity", "--out", tmp_path / "mine", "--size", "32", "--seed", "2", "--overwrite", *SMALL],
                   capsys)
    assert code == 0, io.err
    assert json.loads((tmp_path / "mine" / "config.json").read_text())["seed"] == 2


# ---------------------------------------------------------------------------------------- train → model → compare → evaluate


def test_train_then_every_command_on_its_checkpoint(tmp_path, capsys, torch_one_thread):
    run_dir = tmp_path / "run"
    code, io = run(["train", "--model", "bench-ae", "--option", "d=2", "--option", "hidden=8", "--steps", "2", "--batch-size", "4",
                    "--size", "32", "--val-every", "2", "--device", "cpu", "--threads", "1", "--out", run_dir], capsys)
    assert code == 0, io.err
    assert {"config.json", "metrics.csv", "best_ap.pt", "best_loss.pt", "last.pt", MARKER} <= {p.name for p in run_dir.iterdir()}
    checkpoint = run_dir / "last.pt"
    exp3 = tmp_path / "exp3"
    code, io = run(["pitfalls", "model", "--checkpoint", checkpoint, "--n-intensities", "3", "--n-sigmas", "2", "--device", "cpu",
                    "--batch-size", "8", "--threads", "1", "--out", exp3], capsys)
    assert code == 0, io.err
    config = json.loads((exp3 / "config.json").read_text())
    assert config["checkpoint"]["preparation"]["size"] == 32 and config["parameters"]["radius_used"] == 2.5  # 20 px at 256 → 32
    compare = tmp_path / "compare"
    code, io = run(["pitfalls", "compare", exp3, "--out", compare], capsys)
    assert code == 0, io.err
    assert "| bench-ae" in (compare / "summary.md").read_text()
    evaluation = tmp_path / "evaluation"
    code, io = run(["evaluate", "--checkpoint", checkpoint, "--preset", "benchmark", "--device", "cpu", "--batch-size", "7",
                    "--overlays", "1", "--out", evaluation], capsys)
    assert code == 0, io.err
    metrics = json.loads((evaluation / "metrics.json").read_text())["metrics"]
    assert metrics["n_cases"] == 20 and 0 <= metrics["pixel"]["ap"] <= 1 and (evaluation / "overlays").is_dir()
    code, io = run(["evaluate", "--checkpoint", checkpoint, "--size", "64", "--out", tmp_path / "bad"], capsys)
    assert_one_error(code, io.err, "--size 64 conflicts with the preparation")
    code, io = run(["list-models"], capsys)
    assert code == 0 and io.out.splitlines()[0].split()[0] and "bench-ae" in io.out and "d=" in io.out


def test_sweep_latent_end_to_end(tmp_path, capsys, torch_one_thread):
    out = tmp_path / "sweep"
    args = ["sweep", "latent", "--dims", "1,2", "--repeats", "1", "--steps", "1", "--batch-size", "4", "--size", "32",
            "--device", "cpu", "--out", out]
    code, io = run(args, capsys)
    assert code == 0, io.err
    assert io.out.strip() == f"wrote {out}/ (summary: {out / 'summary.md'})"
    assert {"sweep.json", "test_set.json", "runs", "summary.md", "summary.csv", "runs.csv", "latent_sweep.png", MARKER} <= \
        {p.name for p in out.iterdir()}
    assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()) == ["d1-r0", "d2-r0"]
    summary = (out / "summary.csv").read_text()
    code, io = run(args, capsys)  # resumed: nothing new
    assert code == 0 and (out / "summary.csv").read_text() == summary


def test_demo_end_to_end(tmp_path, capsys, monkeypatch, torch_one_thread):
    """The demo's report with a tiny grid and a 2-step model (the real one takes minutes)."""
    monkeypatch.setattr(demo, "GRID", dict(radius=20, n_intensities=4, n_sigmas=3, sigma_max=2.0, seed=0, save_inputs=False))
    monkeypatch.setattr(demo, "MODEL", dict(name="ae", options={"d": 4, "width": 4}, preset="quick",
                                            overrides={"size": 32, "steps": 2, "batch_size": 4}))
    out = tmp_path / "report"
    code, io = run(["demo", "--out", out, "--threads", "1"], capsys)
    assert code == 0, io.err
    assert io.out.strip().splitlines() == [f"report: {(out / 'report.md').resolve()}",
                                           f"audit report (HTML): {(out / 'audit' / 'report.html').resolve()}"]
    assert {p.name for p in out.iterdir()} == {"report.md", "intensity", "intensity-equalized", "texture", "model",
                                               "model-pitfalls", "audit", MARKER}
    report = (out / "report.md").read_text()
    for title in ("## Experiment 1: anomaly intensity", "## Experiment 1 after histogram equalisation",
                  "## Experiment 2: texture anomalies", "## Experiment 3: a trained autoencoder"):
        assert title in report
    assert "## Audit of the trained autoencoder" in report and "(audit/report.html)" in report
    with np.load(out / "audit/results.npz") as saved:  # the audit follows the demo's grid
        assert saved["ap_anomalous"].shape == (7, 4) and saved["blur_ap"].shape == (4, 3)
    section = report[report.index("## Experiment 3"):]
    assert "trained for 2 steps" in section and "| ae size=32 d=4 width=4 |" in section
    assert "![curve.png](model-pitfalls/curve.png)" in section and (out / "model-pitfalls/curve.png").exists()
    with np.load(out / "model-pitfalls/results.npz") as saved:
        assert saved["ap"].shape == (4,) and saved["blur_ap"].shape == (4, 3)
        np.testing.assert_array_equal(saved["matched_ap"], saved["blur_ap"][:, saved["matched_sigma_index"]])
    with np.load(out / "intensity-equalized/results.npz") as eq, np.load(out / "intensity/results.npz") as plain:
        assert eq["ap"].shape == plain["ap"].shape == (4, 3) and not np.array_equal(eq["ap"], plain["ap"])
    code, io = run(["demo", "--out", out], capsys)
    assert_one_error(code, io.err, "pass --overwrite")

"""The fault matrix of issue 16 (part A), through the CLI: staging folders known by their marker, one
command per ``--out``, a target that appears meanwhile, Latin-1 paths, training messages, damaged sweep runs.

Each case asserts the exit status, one line on stderr without a traceback, and that no file outside
the output folder changed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from blindspot.results import MARKER, STAGING, lock_path

from conftest import assert_one_error, run_cli

SMALL = ["--n-intensities", "4", "--n-sigmas", "3", "--sigma-max", "2", "--radius", "6"]
AUDIT = ["--slice", "60", "--size", "32", "--n-intensities", "3", "--n-sigmas", "2", "--sigma-max", "2", "--threads", "1"]
TRAIN = ["--model", "bench-ae", "--option", "d=4", "--option", "hidden=16", "--size", "32", "--batch-size", "2",
         "--split", "all", "--slice", "12", "--device", "cpu"]


def outside(hashes: dict, out: Path) -> dict:
    """The hashes of the files outside the output folder ``out``."""
    return {path: digest for path, digest in hashes.items() if not Path(path).is_relative_to(out)}


def pitfalls(data, out, *extra) -> list:
    return ["pitfalls", "intensity", "--data", data, "--slice", "12", *SMALL, "--out", out, *extra]


def evaluate(world, out, *extra) -> list:
    return ["evaluate", "--maps", world["maps"], "--labels", world["labels"], "--overlays", "0", "--bootstrap", "0",
            "--out", out, *extra]


def audit(world, out, *extra) -> list:
    """An audit of one template slice against the reconstructions folder ``world["root"]/recon`` (made by :func:`recon`)."""
    return ["audit", "--reconstructions", world["root"] / "recon", "--scores", "l1,ssim", *AUDIT, "--out", out, *extra]


def recon(world) -> Path:
    """A reconstructions folder for :func:`audit`: one 32 × 32 image in [0, 1]."""
    folder = world["root"] / "recon"
    folder.mkdir()
    np.save(folder / "mni152_axis2_slice60.npy", np.random.default_rng(0).random((32, 32), dtype=np.float32))
    return folder


def never_computed(monkeypatch):
    """Make the grid fail loudly if a command gets as far as computing."""
    import blindspot.experiments.grid as grid

    def computed(*args, **kwargs):
        raise AssertionError("computed before refusing")

    monkeypatch.setattr(grid, "image_grid", computed)


@pytest.fixture
def finished(world, capsys):
    """A finished evaluation (13-file folders in the issue; three cases here) written by blindspot."""
    folder = world["root"] / "done"
    code, io = run_cli(evaluate(world, folder), capsys)
    assert code == 0, io.err
    return folder


# ---------------------------------------------------------------------------------------- the three file losses


def test_a_complete_unrelated_partial_folder_is_not_taken_over(snapshot, world, capsys, finished, monkeypatch):
    shutil.copytree(finished, world["root"] / "out" / "q.partial")  # a result copied aside under the staging name
    monkeypatch.chdir(world["root"])
    never_computed(monkeypatch)
    before = snapshot(world["root"])
    code, io = run_cli(pitfalls(world["data"], "out/q"), capsys)
    assert_one_error(code, io.err, "'out/q.partial' exists and is not this command's staging folder; move it away or "
                                   "choose another --out.")
    assert snapshot(world["root"]) == before and not (world["root"] / "out" / "q").exists()


def test_evaluate_overwrite_never_deletes_a_finished_evaluation_named_like_its_staging(snapshot, world, capsys, finished):
    os.rename(finished, world["root"] / "q2.partial")
    before = snapshot(world["root"])
    code, io = run_cli(evaluate(world, world["root"] / "q2", "--overwrite"), capsys)
    assert_one_error(code, io.err, "q2.partial' exists and is not this command's staging folder")
    assert snapshot(world["root"]) == before


def test_a_run_never_merges_into_an_evaluation_folder_named_like_its_staging(snapshot, world, capsys, finished,
                                                                              monkeypatch):
    os.rename(finished, world["root"] / "r.partial")
    never_computed(monkeypatch)
    before = snapshot(world["root"])
    code, io = run_cli(pitfalls(world["data"], world["root"] / "r"), capsys)
    assert_one_error(code, io.err, "r.partial' exists and is not this command's staging folder")
    assert snapshot(world["root"]) == before and not (world["root"] / "r").exists()


def test_another_commands_staging_folder_needs_overwrite(snapshot, world, capsys, monkeypatch):
    import blindspot.evaluation.output as output

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(output, "write_evaluation", interrupted)
    out = world["root"] / "r"
    assert run_cli(evaluate(world, out), capsys)[0] == 130
    assert (world["root"] / "r.partial" / STAGING).is_file()
    monkeypatch.undo()
    before = snapshot(world["root"])
    code, io = run_cli(pitfalls(world["data"], out), capsys)
    assert_one_error(code, io.err, "another command's staging folder: --overwrite replaces it")
    assert snapshot(world["root"]) == before
    code, io = run_cli(pitfalls(world["data"], out, "--overwrite"), capsys)
    assert code == 0, io.err
    assert json.loads((out / "config.json").read_text())["command"] == "pitfalls intensity"
    assert not (out / STAGING).exists() and (out / MARKER).is_file() and not (world["root"] / "r.partial").exists()


@pytest.mark.parametrize("command", ["pitfalls", "train", "sweep"])
def test_an_out_named_like_a_staging_folder_is_refused(snapshot, world, capsys, command):
    out = world["root"] / "q.partial"
    args = {"pitfalls": pitfalls(world["data"], out),
            "train": ["train", *TRAIN, "--data", world["data"], "--steps", "1", "--out", out],
            "sweep": ["sweep", "latent", "--dims", "2", "--steps", "1", "--data", world["data"], "--out", out]}[command]
    before = snapshot(world["root"])
    code, io = run_cli(args, capsys)
    assert_one_error(code, io.err, "ends in '.partial', the name blindspot gives its staging folders; choose another --out.")
    assert snapshot(world["root"]) == before


# ---------------------------------------------------------------------------------------- would replace


def test_an_existing_out_is_refused_before_computing(snapshot, world, capsys, monkeypatch):
    out = world["root"] / "q"
    assert run_cli(pitfalls(world["data"], out), capsys)[0] == 0
    never_computed(monkeypatch)
    before = snapshot(world["root"])
    code, io = run_cli(pitfalls(world["data"], out), capsys)
    assert_one_error(code, io.err, f"--out '{out}' already exists; pass --overwrite")
    assert snapshot(world["root"]) == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_out_that_appears_meanwhile_is_never_replaced(snapshot, world, capsys, monkeypatch, overwrite):
    import blindspot.experiments.grid as grid

    out = world["root"] / "q"
    image_grid = grid.image_grid

    def someone_writes_out(*args, **kwargs):
        out.mkdir(exist_ok=True)
        (out / "notes.txt").write_text("theirs")
        return image_grid(*args, **kwargs)

    monkeypatch.setattr(grid, "image_grid", someone_writes_out)
    before = snapshot(world["sibling"], world["data"])
    code, io = run_cli(pitfalls(world["data"], out, *overwrite), capsys)
    assert_one_error(code, io.err, f"--out '{out}' appeared while this command ran and is not replaced",
                     f"the finished result is in '{out}.partial'.")
    assert snapshot(world["sibling"], world["data"]) == before
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "theirs"
    assert (world["root"] / "q.partial" / "summary.md").is_file()


# ---------------------------------------------------------------------------------------- one command per --out


def hold(out: Path, pid: int) -> Path:
    lock = lock_path(out.resolve())
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "command": "pitfalls intensity"}))
    return lock


@pytest.mark.parametrize("command", ["pitfalls", "evaluate", "audit", "train", "resume", "sweep"])
def test_a_second_command_on_one_out_is_refused_naming_the_running_one(snapshot, world, capsys, live_pid, command):
    out = world["root"] / "q"
    recon(world)
    args = {"pitfalls": pitfalls(world["data"], out), "evaluate": evaluate(world, out), "audit": audit(world, out),
            "train": ["train", *TRAIN, "--data", world["data"], "--steps", "1", "--out", out],
            "resume": ["train", "--resume", out],
            "sweep": ["sweep", "latent", "--dims", "2", "--steps", "1", "--data", world["data"], "--out", out]}[command]
    if command == "resume":
        assert run_cli(["train", *TRAIN, "--data", world["data"], "--steps", "1", "--out", out], capsys)[0] == 0
    hold(out, live_pid)
    before = snapshot(world["root"])
    code, io = run_cli(args, capsys)
    assert_one_error(code, io.err, f"--out '{out}' is in use by another blindspot command (pitfalls intensity, pid {live_pid} "
                                   f"on host {socket.gethostname()}); wait until it ends")
    assert snapshot(world["root"]) == before


@pytest.mark.parametrize("command", ["evaluate", "audit"])
def test_evaluate_and_audit_hold_the_lock_while_they_compute(snapshot, world, capsys, monkeypatch, command):
    """They compute before they write: the lock must be theirs from the first step, not only once they write."""
    import blindspot.evaluation.output as output
    import blindspot.experiments.audit_runs as audit_runs

    module, name = (output, "evaluate") if command == "evaluate" else (audit_runs, "audit")
    compute, holders = getattr(module, name), []
    out = world["root"] / "q"

    def computing(*args, **kwargs):
        holders.append(json.loads(lock_path(out).read_text()))
        return compute(*args, **kwargs)

    monkeypatch.setattr(module, name, computing)
    recon(world)
    before = snapshot(world["sibling"], world["data"], world["maps"], world["labels"], world["root"] / "recon")
    code, io = run_cli(evaluate(world, out) if command == "evaluate" else audit(world, out), capsys)
    assert code == 0 and io.err == "", io.err
    assert [(h["pid"], h["host"], h["command"]) for h in holders] == [(os.getpid(), socket.gethostname(), command)]
    assert not lock_path(out).exists() and (out / "summary.md").is_file()
    assert snapshot(world["sibling"], world["data"], world["maps"], world["labels"], world["root"] / "recon") == before


def test_a_stale_lock_is_taken_over(snapshot, world, capsys, dead_pid):
    out = world["root"] / "q"
    lock = hold(out, dead_pid)
    before = snapshot(world["sibling"], world["data"])
    code, io = run_cli(pitfalls(world["data"], out), capsys)
    assert code == 0, io.err
    assert not lock.exists() and (out / "summary.md").is_file()
    assert snapshot(world["sibling"], world["data"]) == before


def test_the_lock_is_released_after_ctrl_c(world, capsys, monkeypatch):
    import blindspot.experiments.grid as grid

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "image_grid", interrupted)
    out = world["root"] / "q"
    assert run_cli(pitfalls(world["data"], out), capsys)[0] == 130
    assert not lock_path(out.resolve()).exists()
    monkeypatch.undo()
    assert run_cli(pitfalls(world["data"], out), capsys)[0] == 0  # and the same command resumes


# ---------------------------------------------------------------------------------------- Latin-1 names


def test_a_latin1_data_folder_works_end_to_end(snapshot, world, capsys):
    data = Path(os.fsdecode(bytes(world["root"]) + b"/donn\xe9es"))
    shutil.copytree(world["data"], data)
    out = Path(os.fsdecode(bytes(world["root"]) + b"/r\xe9sultats"))
    before = snapshot(world["root"])
    code, io = run_cli(pitfalls(data, out), capsys)
    assert code == 0 and io.err == "", io.err
    assert io.out.strip().startswith("wrote ")
    assert b"donn\xe9es" in (out / "summary.md").read_bytes()
    assert json.loads((out / "config.json").read_text())["data"]["data"] == str(data)
    assert outside(snapshot(world["root"]), out) == before


# ---------------------------------------------------------------------------------------- training messages


def test_resume_at_the_step_reached_says_nothing_was_left_to_do(snapshot, world, capsys):
    out = world["root"] / "run"
    assert run_cli(["train", *TRAIN, "--data", world["data"], "--steps", "2", "--out", out], capsys)[0] == 0
    before = snapshot(world["root"])
    for extra in ([], ["--steps", "2"]):
        code, io = run_cli(["train", "--resume", out, *extra], capsys)
        assert code == 0 and io.err == "", io.err
        assert io.out == f"run '{out}' is already at step 2; nothing was left to do (give more --steps to train it further).\n"
    assert snapshot(world["root"]) == before


def test_divergence_before_any_checkpoint_keeps_nothing_and_says_so(snapshot, world, capsys):
    out = world["root"] / "run"
    before = snapshot(world["root"])
    code, io = run_cli(["train", *TRAIN, "--data", world["data"], "--steps", "20", "--lr", "1e9", "--out", out], capsys)
    assert_one_error(code, io.err, "at step", "; lower --lr and run again (no checkpoint had been saved yet, so nothing was kept).")
    assert snapshot(world["root"]) == before and not (world["root"] / "run.partial").exists()


def test_divergence_after_a_validation_points_to_checkpoints_that_exist(world, capsys, monkeypatch):
    import math

    from blindspot.models import BenchAE

    loss = BenchAE.training_loss
    calls = []

    def nan_at_step_3(self, x):
        calls.append(1)
        value, parts = loss(self, x)
        return (value, parts) if len(calls) < 3 else (value * math.nan, {**parts, "total": math.nan})

    monkeypatch.setattr(BenchAE, "training_loss", nan_at_step_3)
    out = world["root"] / "run"
    code, io = run_cli(["train", *TRAIN, "--data", world["data"], "--steps", "6", "--val-every", "2", "--out", out], capsys)
    assert_one_error(code, io.err, "the training loss became nan at step 3; lower --lr and start again with --overwrite (the "
                                   f"checkpoints of the last validation, step 2, are in '{out}.partial').")
    assert {"last.pt", "best_ap.pt", "best_loss.pt"} <= {p.name for p in (world["root"] / "run.partial").iterdir()}


def test_training_on_one_nifti_file_gives_a_suggestion_that_works(snapshot, world, capsys):
    single = world["data"] / "case_000.nii.gz"
    before = snapshot(world["root"])
    for extra in ([], ["--split", "all"]):
        code, io = run_cli(["train", "--model", "bench-ae", "--data", single, *extra, "--out", world["root"] / "run"], capsys)
        assert_one_error(code, io.err, f"--data '{single}' is a single volume; training validates on held-out volumes and "
                                       "needs at least 2, so give a folder of NIfTI volumes.")
    assert snapshot(world["root"]) == before
    code, io = run_cli(["train", *TRAIN, "--data", world["data"], "--steps", "1", "--out", world["root"] / "run"], capsys)
    assert code == 0, io.err


# ---------------------------------------------------------------------------------------- a damaged sweep run


@pytest.mark.parametrize("damage", ["last.pt", "evaluation.json"])
def test_a_damaged_sweep_run_names_the_run_folder_to_remove(snapshot, world, capsys, damage):
    out = world["root"] / "sweep"
    args = ["sweep", "latent", "--dims", "2", "--repeats", "1", "--steps", "1", "--batch-size", "2", "--size", "32",
            "--slice", "12", "--bootstrap", "0", "--device", "cpu", "--data", world["data"], "--out", out]
    code, io = run_cli(args, capsys)
    assert code == 0, io.err
    run = out / "runs" / "d2-r0"
    damaged = (run / damage).read_bytes()[:40]
    (run / damage).write_bytes(damaged)  # a write cut short
    before = snapshot(world["root"])
    code, io = run_cli(args, capsys)
    assert_one_error(code, io.err, f"'{run / damage}'", f"; remove the run folder '{run}' (and '{run}.partial' if there is "
                                   "one) and run the same command again to redo that run.")
    assert outside(snapshot(world["root"]), out) == outside(before, out)
    assert (run / damage).read_bytes() == damaged
    shutil.rmtree(run)
    code, io = run_cli(args, capsys)
    assert code == 0, io.err

"""The fault matrix: every bad output path, bad option and fault, through the CLI.

Each case asserts the exit status, one line on stderr without a traceback, and that no file outside
the output folder changed (the inputs and a sibling folder are hashed before and after).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from blindspot.cli import main

SMALL = ["--n-intensities", "4", "--n-sigmas", "3", "--sigma-max", "2", "--radius", "6"]


def run(capsys, args) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def assert_one_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def pitfalls(world, out, *extra) -> list[str]:
    return ["pitfalls", "intensity", "--data", str(world["data"]), "--slice", "12", *SMALL, "--out", str(out), *extra]


@pytest.mark.parametrize("out, fragment", [
    ("..", "working directory or one of its parents"),
    (".", "working directory or one of its parents"),
    ("{data}", "overlaps the input"),
    ("{data}/results", "overlaps the input"),
    ("{sibling}", "not written by blindspot"),
])
def test_an_output_folder_that_is_not_ours_is_never_touched(snapshot, world, capsys, monkeypatch, out, fragment):
    nested = world["root"] / "work" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    before = snapshot(world["root"])
    code, err = run(capsys, pitfalls(world, out.format(**world), "--overwrite"))
    assert code == 2
    assert_one_line(err, fragment)
    assert snapshot(world["root"]) == before


def test_maps_read_then_overwritten_in_place_is_refused(snapshot, world, capsys):
    before = snapshot(world["root"])
    code, err = run(capsys, ["evaluate", "--maps", str(world["maps"]), "--labels", str(world["labels"]),
                             "--out", str(world["maps"]), "--overwrite"])
    assert code == 2
    assert_one_line(err, "overlaps the input")
    assert snapshot(world["root"]) == before


def test_a_symlinked_out_is_judged_where_it_points(snapshot, world, capsys):
    link = world["root"] / "link"
    link.symlink_to(world["data"], target_is_directory=True)
    before = snapshot(world["root"])
    code, err = run(capsys, pitfalls(world, link, "--overwrite"))
    assert code == 2
    assert_one_line(err, "resolves to", "overlaps the input")
    assert snapshot(world["root"]) == before


def test_overwrite_replaces_our_own_folder_and_clears_its_stale_staging(snapshot, world, capsys, monkeypatch):
    out = world["root"] / "exp1"
    assert run(capsys, pitfalls(world, out))[0] == 0
    assert (out / ".blindspot").is_file()
    import blindspot.experiments.grid as grid

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "image_grid", interrupted)
    assert run(capsys, pitfalls(world, out, "--overwrite", "--seed", "1"))[0] == 130
    staging = world["root"] / "exp1.partial"
    assert staging.is_dir() and (staging / ".blindspot").is_file()
    monkeypatch.undo()
    before = snapshot(world["sibling"], world["data"])
    assert run(capsys, pitfalls(world, out, "--overwrite", "--seed", "1"))[0] == 0
    assert not staging.exists()
    assert snapshot(world["sibling"], world["data"]) == before


def test_a_stale_staging_folder_we_did_not_write_is_never_removed(world, capsys):
    foreign = world["root"] / "exp1.partial"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, err = run(capsys, pitfalls(world, world["root"] / "exp1", "--overwrite"))
    assert code == 2
    assert_one_line(err, "is not this command's staging folder")
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("command", [
    ["pitfalls", "intensity", "--seed", "-1"],
    ["evaluate", "--baseline", "image", "--seed", "-1"],
    ["pitfalls", "intensity", "--radius", "0"],
    ["pitfalls", "intensity", "--n-sigmas", "3", "--sigma-max", "0"],
    ["pitfalls", "intensity", "--radius", "200"],
    ["train", "--model", "bench-ae", "--steps", "5", "--epochs", "2"],
    ["train", "--model", "bench-ae", "--option", "d=4", "--option", "d=8"],
    ["evaluate", "--baseline", "image", "--val-fraction", "0.5"],
    ["evaluate", "--baseline", "image", "--fpr", "5"],
    ["evaluate", "--baseline", "image", "--threshold", "fpr", "--fpr", "150"],
])
def test_bad_numbers_are_one_sentence_before_any_output(world, capsys, command):
    out = world["root"] / "never"
    code, err = run(capsys, [*command, "--out", str(out)])
    assert code == 2
    assert "Traceback" not in err and err.strip()
    assert len([line for line in err.splitlines() if line.startswith(("error", "Error"))]) == 1
    assert not out.exists() and not (world["root"] / "never.partial").exists()


def test_an_unwritable_parent_is_refused_before_computing(world, capsys, monkeypatch):
    import blindspot.results as results

    parent = world["root"] / "locked"
    parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(results.os, "access", lambda path, mode: False if Path(path) == parent else real_access(path, mode))
    code, err = run(capsys, pitfalls(world, parent / "exp1"))
    assert code == 2
    assert_one_line(err, "is not writable", str(parent))
    assert list(parent.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the check is tested with os.access above")
def test_a_read_only_parent_for_real(world, capsys):
    parent = world["root"] / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        code, err = run(capsys, pitfalls(world, parent / "exp1"))
    finally:
        parent.chmod(0o755)
    assert code == 2
    assert_one_line(err, "is not writable")


def test_a_full_disk_keeps_a_resumable_staging_folder_and_says_where(snapshot, world, capsys, monkeypatch):
    import blindspot.results as results

    real = results.np.savez_compressed

    def full_disk(handle, **arrays):
        if "ap_per_image" in arrays:  # the final results, after the grid was computed and cached
            raise OSError(errno.ENOSPC, "No space left on device")
        real(handle, **arrays)

    monkeypatch.setattr(results.np, "savez_compressed", full_disk)
    out = world["root"] / "exp1"
    before = snapshot(world["sibling"], world["data"])
    code, err = run(capsys, pitfalls(world, out))
    assert code == 2
    assert_one_line(err, "No space left on device", "exp1.partial", "run the same command again")
    assert not out.exists()
    assert any((world["root"] / "exp1.partial" / ".cache").iterdir())
    monkeypatch.undo()
    assert run(capsys, pitfalls(world, out))[0] == 0
    assert snapshot(world["sibling"], world["data"]) == before


def test_a_corrupt_cache_chunk_is_recomputed_with_a_note(world, capsys):
    from blindspot.data import DataConfig
    from blindspot.experiments.grid import grid_fingerprint
    from blindspot.experiments.runs import experiment_images

    clean = world["root"] / "clean"
    assert run(capsys, pitfalls(world, clean))[0] == 0
    images = experiment_images(DataConfig(data=str(world["data"]), slices=(12,))).images
    with np.load(clean / "results.npz") as saved:
        centers = saved["centers"]
    key = grid_fingerprint(images, kind="intensity", intensities=np.linspace(0, 1, 4), sigmas=np.linspace(0, 2, 3),
                           centers=centers, radius=6.0)
    from blindspot.results import make_staging

    staging = make_staging((world["root"] / "exp1").resolve(), "pitfalls intensity")
    (staging / ".cache").mkdir()
    # the chunk a crash cut short, under the name the run reads
    (staging / ".cache" / f"chunk-{key}-{0:06d}-{len(images):06d}.npz").write_bytes(b"PK\x03\x04 truncated")
    code, err = run(capsys, pitfalls(world, world["root"] / "exp1"))
    assert code == 0
    assert_one_line(err, "warning:", "unreadable", "recomputed")
    with np.load(world["root"] / "exp1" / "results.npz") as got, np.load(clean / "results.npz") as expected:
        np.testing.assert_array_equal(got["ap"], expected["ap"])


def test_hidden_files_in_a_data_folder_are_skipped(world, capsys):
    (world["data"] / "._case_000.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (world["data"] / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    code, err = run(capsys, pitfalls(world, world["root"] / "exp1"))
    assert code == 0, err


def test_result_files_are_readable_by_collaborators(world, capsys):
    previous = os.umask(0o022)
    try:
        assert run(capsys, pitfalls(world, world["root"] / "exp1"))[0] == 0
    finally:
        os.umask(previous)
    for name in ("results.npz", "config.json", "summary.md", "heatmap.png", ".blindspot"):
        mode = stat.S_IMODE((world["root"] / "exp1" / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_logs_get_lines_not_carriage_returns(world, capsys, monkeypatch):
    import blindspot.progress as progress

    monkeypatch.setattr(progress, "QUIET_SECONDS", 0.0)
    code, err = run(capsys, pitfalls(world, world["root"] / "exp1"))
    assert code == 0
    assert "\r" not in err
    assert "intensity grid: 15/15 σ" in err  # 5 images × 3 σ


def test_records_say_what_happened(world, capsys):
    import json

    out = world["root"] / "exp1"
    assert run(capsys, pitfalls(world, out))[0] == 0
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["config"]["layout"] == "nifti" and config["data"]["config"]["split"] == "all"
    assert set(config["input_hashes"]) == set(config["data"]["files"]) and len(config["input_hashes"]) == 5
    for package in ("numpy", "scipy", "scikit-image", "nibabel", "nilearn", "matplotlib", "torch"):
        assert config["versions"][package] != "not installed"


@pytest.mark.parametrize("args, fragment", [
    (["evaluate", "--maps", "nowhere", "--labels", "x", "--out", "o"], "Directory 'nowhere' does not exist; see 'blindspot evaluate -h'."),
    (["pitfalls", "intensity", "--bogus"], "No such option '--bogus'"),
    (["pitfalls", "intensity", "--n-sigmas", "many", "--out", "o"], "'many' is not a valid integer"),
])
def test_click_errors_are_one_sentence_too(world, capsys, monkeypatch, snapshot, args, fragment):
    monkeypatch.chdir(world["root"])
    before = snapshot(world["root"])
    code, err = run(capsys, args)
    assert code == 2
    assert_one_line(err, "error: ", fragment)
    assert snapshot(world["root"]) == before

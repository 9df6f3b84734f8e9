"""The fault matrix of costs (issue 16): sizes that cannot fit in memory are refused in one sentence before any
output folder exists, bounds that make a result meaningless are refused, and an interruption stops the work at
once (queued σ blocks dropped, no worker process left alive).

Memory is made tight by replacing :func:`blindspot.resources.available_memory` (50 MB), so no test allocates much.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import blindspot.experiments.grid as grid
import blindspot.experiments.volume_engine as engine
import blindspot.resources as resources
from blindspot.cli import main

from conftest import assert_one_error

GRID = {"--n-intensities": "4", "--n-sigmas": "3", "--sigma-max": "2", "--radius": "6"}


def run(capsys, args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def pitfalls(world, out, *extra, command="intensity", **sizes) -> list:
    """``pitfalls COMMAND`` on the world's volumes with the small grid, some of its sizes replaced (each flag once)."""
    flags = {**GRID, **{f"--{k.replace('_', '-')}": v for k, v in sizes.items()}}
    return ["pitfalls", command, "--data", world["data"], "--slice", "12", *(x for kv in flags.items() for x in kv),
            "--out", out, *extra]


def evaluate(world, out, *extra) -> list:
    return ["evaluate", "--maps", world["maps"], "--labels", world["labels"], "--out", out, *extra]


def assert_nothing_written(world, out, before, snapshot) -> None:
    assert not out.exists() and not out.with_name(f"{out.name}.partial").exists()
    assert snapshot(world["root"]) == before


@pytest.fixture
def tight(monkeypatch):
    """50 MB of memory available."""
    monkeypatch.setattr(resources, "available_memory", lambda: 50_000_000)


@pytest.mark.parametrize(("case", "fragments"), [
    ("evaluate --bootstrap 100000000", ("--bootstrap 100,000,000 needs about", "resamples")),
    ("intensity --bootstrap 100000000", ("--bootstrap 100,000,000 needs about", "resamples")),
    ("intensity --n-sigmas 1000000000", ("--n-sigmas 1,000,000,000 needs about", "grid")),
    ("intensity --n-intensities 100000", ("--n-intensities 100,000 needs about", "grid")),
    ("texture --n-intensities 100000", ("--n-intensities 100,000 needs about", "grid")),
    ("volumes --n-intensities 100000", ("--n-intensities 100,000 needs about", "volume")),
    ("volumes --n-sigmas 1000000000", ("--n-sigmas 1,000,000,000 needs about", "volume")),
])
def test_a_size_that_cannot_fit_is_refused_before_any_folder(snapshot, world, capsys, tight, case, fragments):
    command, flag, value = case.split()
    out = world["root"] / "out"
    if command == "evaluate":
        args = evaluate(world, out, flag, value)
    else:
        extra = ("--volumes", "--threads", "1") if command == "volumes" else ()
        size = {flag[2:].replace("-", "_"): value}
        args = pitfalls(world, out, *extra, command="intensity" if command == "volumes" else command, **size)
    before = snapshot(world["root"])
    code, err = run(capsys, args)
    assert_one_error(code, err, *fragments, "only 50.0 MB is available: use at most")
    assert_nothing_written(world, out, before, snapshot)


def test_a_grid_that_fits_one_image_but_not_all_is_refused_before_it_is_computed(snapshot, world, capsys, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 5_000_000)  # the grid of 1 image fits, that of 5 does not
    computed = []
    monkeypatch.setattr(grid, "image_grid", lambda *args: computed.append(args))
    out = world["root"] / "out"
    before = snapshot(world["root"])
    code, err = run(capsys, pitfalls(world, out, n_sigmas=20000))
    assert_one_error(code, err, "--n-sigmas 20,000 needs about", "the grid of 5 images × 4 anomalies × 20,000 σ")
    assert computed == []
    assert_nothing_written(world, out, before, snapshot)


@pytest.mark.parametrize("case", ["evaluate 2", "intensity 1", "texture 99", "compare 50", "sweep 50"])
def test_too_few_resamples_are_refused_everywhere(snapshot, world, capsys, case):
    command, n = case.split()
    out = world["root"] / "out"
    args = {"evaluate": lambda: evaluate(world, out, "--bootstrap", n),
            "compare": lambda: ["compare", world["maps"], world["labels"], "--out", out, "--bootstrap", n],
            "sweep": lambda: ["sweep", "latent", "--data", world["data"], "--dims", "2", "--out", out, "--bootstrap", n],
            }.get(command, lambda: pitfalls(world, out, "--bootstrap", n, command=command))()
    before = snapshot(world["root"])
    code, err = run(capsys, args)
    assert_one_error(code, err, "--bootstrap must be 0 (no intervals) or at least 100 resamples", f"got {n}.")
    assert_nothing_written(world, out, before, snapshot)


class _Interrupting:
    """A progress bar whose first update is a Ctrl-C."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def update(self, k=1):
        raise KeyboardInterrupt


def test_ctrl_c_in_a_grid_drops_the_queued_sigma_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.random((3, 128, 128)).astype(np.float32)
    labels = np.zeros(images.shape, bool)
    labels[:, 60:70, 60:70] = True
    sigmas = np.linspace(0, 3, 400)
    done, lock = [], threading.Lock()
    real = grid.image_grid

    def counted(image, label, values, block):
        result = real(image, label, values, block)
        with lock:
            done.append(len(block))
        return result

    monkeypatch.setattr(grid, "image_grid", counted)
    monkeypatch.setattr(grid, "progress", _Interrupting)
    with pytest.raises(KeyboardInterrupt):
        grid.run_grid(images, labels, lambda n: np.linspace(0, 1, 5, dtype=np.float32)[:, None], sigmas, threads=2)
    assert 0 < sum(done) < len(images) * len(sigmas)  # the blocks still queued were never computed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_interrupted_volume_grid_leaves_no_worker_process(monkeypatch, tmp_path):
    monkeypatch.setattr(engine, "PROCESS_MIN_VOXELS", 0)  # worker processes even for a small volume
    volume = np.zeros((24, 24, 24), np.float32)
    volume[4:20, 4:20, 4:20] = np.random.default_rng(0).random((16, 16, 16)) + 0.1
    index = tuple(i.ravel() for i in np.mgrid[10:13, 10:13, 10:13])
    pids = []

    def interrupt():
        pids.extend(p.pid for p in workers._pool._processes.values())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), engine.GridWorkers(2, folder=tmp_path) as workers:
        workers.grid(volume, index, np.linspace(0, 1, 3)[:, None], np.linspace(0, 2, 12), on_sigma=interrupt)
    assert pids and not any(_alive(pid) for pid in pids)

"""Scale-out on Dask (blindspot.execution): every long command gives on a cluster of worker processes exactly
what it gives in one process, survives a killed worker, and fails in one sentence when no scheduler answers.

One real ``distributed.LocalCluster`` of two worker processes serves the module (closed at its end);
``--workers`` (a cluster blindspot starts and closes itself) is exercised once through the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from blindspot import execution as execution_module
from blindspot.cli import main
from blindspot.data import DataConfig
from blindspot.errors import BlindspotError
from blindspot.evaluation import MapsFolder, OnData, evaluate, make_options, run_evaluation
from blindspot.execution import Execution, execution_record, open_pool
from blindspot.experiments.pitfalls import intensity_experiment
from blindspot.experiments.sweep import sweep_latent
from blindspot.experiments.volume_runs import run_volume_intensity, run_volume_texture

try:
    from eval_fixtures import make_maps
except ImportError:  # pragma: no cover
    from tests.eval_fixtures import make_maps

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, one task at a time each; always closed."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local, \
            distributed.Client(local, set_as_default=False) as client:
        yield local, client


@pytest.fixture
def on_cluster(cluster):
    return Execution(scheduler=cluster[0].scheduler_address)


def same_results(a: Path, b: Path, skip=("config.json",)) -> list[str]:
    """Files of two result folders that differ (arrays compared exactly, NaN equal to NaN; figures skipped)."""
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    differ = []
    for name in files:
        if Path(name).name in skip or name.endswith(".png"):
            continue
        if name.endswith(".npz"):
            with np.load(a / name) as x, np.load(b / name) as y:
                if sorted(x.files) != sorted(y.files) or not all(
                        np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind in "fc") for k in x.files):
                    differ.append(name)
        elif (a / name).read_bytes() != (b / name).read_bytes():
            differ.append(name)
    return differ


# --------------------------------------------------------------------------------------------
# the execution option


def test_execution_modes_and_their_errors():
    assert Execution().mode == "in-process" and execution_record(None) == {"mode": "in-process", "workers": 0}
    assert Execution(workers=2).mode == "local cluster" and Execution(scheduler="tcp://h:8786").mode == "scheduler"
    with pytest.raises(BlindspotError, match="either `scheduler`.*or `workers`"):
        Execution(scheduler="tcp://h:8786", workers=2)
    with pytest.raises(BlindspotError, match="`workers` must be a positive integer; got 0"):
        Execution(workers=0)
    with open_pool(None) as pool, open_pool(Execution()) as other:
        assert pool is None and other is None
    with pytest.raises(BlindspotError, match="`scheduler` 'foo:bar' is not the address"):
        with open_pool(Execution(scheduler="foo:bar")):
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_is_one_sentence_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(execution_module, "CONNECT_TIMEOUT", 1)
    out = tmp_path / "grid"
    address = f"tcp://127.0.0.1:{free_port()}"
    code = main(["pitfalls", "intensity", "--n-intensities", "3", "--n-sigmas", "2", "--scheduler", address, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: cannot reach a Dask scheduler at --scheduler '{address}' within 1 s")
    assert list(tmp_path.iterdir()) == []
    code = main(["evaluate", "--maps", str(tmp_path), "--labels", str(tmp_path), "--workers", "2", "--scheduler", address,
                 "--out", str(out)])
    assert code == 2 and "either --scheduler" in capsys.readouterr().err


def test_a_worker_address_given_as_scheduler_is_one_sentence(tmp_path, cluster, capsys):
    worker = next(iter(cluster[1].scheduler_info(n_workers=-1)["workers"]))
    folders = make_maps(tmp_path / "m", n=3)
    code = main(["evaluate", "--maps", str(folders["maps"]), "--labels", str(folders["labels"]), "--scheduler", worker,
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: --scheduler '{worker}' answers, but not as a Dask scheduler (it is a Dask Worker)")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# pitfall grids


def test_experiment1_grid_on_a_local_cluster_equals_the_local_run(tmp_path, capsys):
    """Through the CLI: --workers 2 starts (and closes) a LocalCluster; the result folder is identical."""
    args = ["pitfalls", "intensity", "--size", "48", "--n-intensities", "6", "--n-sigmas", "4", "--radius", "12",
            "--bootstrap", "100"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "cluster")]) == 0
    assert same_results(tmp_path / "local", tmp_path / "cluster") == []
    config = json.loads((tmp_path / "cluster" / "config.json").read_text())
    assert config["execution"] == {"mode": "local cluster", "workers": 2, "threads_per_worker": [1]}
    assert json.loads((tmp_path / "local" / "config.json").read_text())["execution"]["mode"] == "in-process"


def test_grid_chunks_resume_from_the_cache_on_a_cluster(tmp_path, cluster, on_cluster):
    from blindspot.data import load

    test = load(DataConfig().with_preparation(size=40), default_split="test").images
    images = np.concatenate([test, test[::-1]])  # 20 images: two chunks
    grid = dict(intensities=np.linspace(0, 1, 5), sigmas=np.linspace(0, 2, 3), radius=8, seed=1)
    local = intensity_experiment(images, **grid, cache_dir=tmp_path / "cache")
    chunks = sorted((tmp_path / "cache").iterdir())
    assert len(chunks) == 2  # 16 + 4 images
    chunks[0].unlink()
    modified = chunks[1].stat().st_mtime_ns
    with open_pool(on_cluster) as pool:
        remote = intensity_experiment(images, **grid, cache_dir=tmp_path / "cache", pool=pool)
    assert chunks[0].is_file() and chunks[1].stat().st_mtime_ns == modified  # only the missing chunk was computed
    for key in local:
        np.testing.assert_array_equal(local[key], remote[key])


def test_whole_volume_grids_on_a_cluster_equal_the_local_run(tmp_path, nifti_folder, on_cluster):
    """Each volume is one task: the worker reads the volume itself and computes every σ (and the slice grid)."""
    grid = dict(radius=5, n_intensities=4, n_sigmas=3, sigma_max=2, bootstrap=100)
    on_slices = DataConfig(str(nifti_folder), slices=(10, 11, 12))
    run_volume_intensity(tmp_path / "local", on_slices, **grid, compare_slices=True)
    run_volume_intensity(tmp_path / "cluster", on_slices, **grid, compare_slices=True, execution=on_cluster)
    assert same_results(tmp_path / "local", tmp_path / "cluster") == []
    data = DataConfig(str(nifti_folder))
    run_volume_texture(tmp_path / "texture-local", data, **grid)
    run_volume_texture(tmp_path / "texture-cluster", data, **grid, execution=on_cluster)
    assert same_results(tmp_path / "texture-local", tmp_path / "texture-cluster") == []
    config = json.loads((tmp_path / "texture-cluster" / "config.json").read_text())
    assert config["execution"]["mode"] == "scheduler" and config["execution"]["workers"] == 2


# --------------------------------------------------------------------------------------------
# evaluation


def same_evaluation(a, b, tmp_path: Path) -> None:
    """Two Evaluations agree exactly: metrics, notes, per-case and per-unit rows, and what the bootstrap resamples."""
    assert json.dumps(a.metrics, sort_keys=True) == json.dumps(b.metrics, sort_keys=True)
    assert a.per_case == b.per_case or json.dumps(a.per_case) == json.dumps(b.per_case)
    assert json.dumps(a.per_unit) == json.dumps(b.per_unit) and a.notes == b.notes
    a.cases.save(tmp_path / "a.npz")
    b.cases.save(tmp_path / "b.npz")
    with np.load(tmp_path / "a.npz") as x, np.load(tmp_path / "b.npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_an_evaluation_of_maps_on_a_cluster_equals_the_local_run(tmp_path, on_cluster):
    """The workers read the maps (their paths travel); per-case values, units, thresholds, intervals and overlays agree."""
    folders = make_maps(tmp_path / "m", n=36)
    source = MapsFolder(str(folders["maps"]), str(folders["labels"]), masks=str(folders["masks"]),
                        images=str(folders["images"]), volume_regex=r"case_(\d)")
    benchmark = make_options("benchmark", image_score="mask-mean", bootstrap=200)  # the masks read on the workers
    run_evaluation(tmp_path / "local", source, benchmark)
    run_evaluation(tmp_path / "cluster", source, benchmark, execution=on_cluster)
    assert same_results(tmp_path / "local", tmp_path / "cluster") == []
    overlays = [sorted(p.name for p in (tmp_path / run / "overlays").iterdir()) for run in ("local", "cluster")]
    assert overlays[0] == overlays[1] and len(overlays[1]) == 3  # every lesion is found (Dice 1): 3 cases, each once
    assert json.loads((tmp_path / "cluster" / "config.json").read_text())["execution"]["workers"] == 2
    # other protocols: per-volume pooling with the threshold pass, and a binned, FPR-thresholded, held-out split
    with open_pool(on_cluster) as pool:
        for options in (make_options(None, pooling="volume", min_component_size=2, bootstrap=100),
                        make_options(None, threshold="fpr", fpr=5, val_fraction=0.3, accumulator="binned", bootstrap=100)):
            local = evaluate(source.cases(0)[0], options, n_overlays=2)
            remote = evaluate(source.cases(0, pool=pool)[0], options, n_overlays=2)
            same_evaluation(local, remote, tmp_path)
            assert [o["name"] for o in local.overlays] == [o["name"] for o in remote.overlays]


def test_a_model_evaluation_on_a_cluster_equals_the_local_run(tmp_path, on_cluster, torch_one_thread):
    """Maps of a checkpoint on a data set: the workers load the model and the images; the maps are bitwise the same."""
    import torch

    from blindspot.models import create_model
    from blindspot.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("bench-ae", size=32, d=4, hidden=8)
    model.input_range, model.preparation = (0.0, 1.0), DataConfig().with_preparation(size=32).preparation.record()
    save_checkpoint(tmp_path / "model.pt", model, step=0, config={}, metrics={})
    source = OnData(DataConfig(), checkpoint=str(tmp_path / "model.pt"), batch_size=6)
    options = make_options("benchmark", bootstrap=100)
    local = evaluate(source.cases(0, False)[0], options)
    with open_pool(on_cluster) as pool:
        cases = source.cases(0, False, pool=pool)[0]
        assert cases.align == 6 and cases.torch_threads == torch.get_num_threads()
        same_evaluation(local, evaluate(cases, options), tmp_path)


# --------------------------------------------------------------------------------------------
# the latent sweep

SWEEP = dict(model="bench-ae", dims=[2, 4], repeats=1, preset="quick", device="cpu", bootstrap=100,
             overrides=dict(steps=40, batch_size=4, size=32, val_every=10))
RESULTS = ("summary.csv", "runs.csv", "summary.md")


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The undisturbed in-process sweep every cluster sweep must equal."""
    return sweep_latent(tmp_path_factory.mktemp("sweep") / "local", **SWEEP)


def run_files(out: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/*") if p.suffix in (".pt", ".json", ".npz")}


def test_a_two_point_sweep_on_a_cluster_equals_the_local_run(tmp_path, local_sweep, on_cluster):
    out = sweep_latent(tmp_path / "cluster", **SWEEP, execution=on_cluster)
    for name in RESULTS:
        assert (out / name).read_text() == (local_sweep / name).read_text(), name
    assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()) == ["d2-r0", "d4-r0"]
    files = run_files(out)
    sweep_latent(out, **SWEEP, execution=on_cluster)  # a rerun recomputes nothing
    assert run_files(out) == files
    executions = json.loads((out / "sweep.json").read_text())["executions"]
    assert [e["mode"] for e in executions] == ["scheduler", "scheduler"] and executions[0]["workers"] == 2


def lock_holder(pids: dict, lock: Path) -> int | None:
    """The pid (of ``pids``) that has ``lock`` open, read from /proc."""
    for pid in pids.values():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(lock):
                    return pid
            except OSError:
                pass
    return None


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the worker through /proc")
def test_a_worker_killed_during_a_sweep_loses_no_run(tmp_path, local_sweep, cluster, on_cluster):
    """SIGKILL the worker process training a run once it has a checkpoint: Dask runs the task again, the run resumes from
    its checkpoint, and the sweep ends with the undisturbed summary and one folder per (d, repeat)."""
    _, client = cluster
    out = tmp_path / "killed"
    killed: dict = {}

    def kill_when_checkpointed():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for partial in (out / "runs").glob("*.partial"):
                if (partial / "last.pt").is_file():
                    run = partial.name[: -len(".partial")]
                    pid = lock_holder(client.run(os.getpid), out / "runs" / f".{run}.lock")
                    if pid is not None:
                        os.kill(pid, signal.SIGKILL)
                        killed.update(run=run, pid=pid)
                        return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_when_checkpointed, daemon=True)
    watcher.start()
    sweep_latent(out, **SWEEP, execution=on_cluster)
    watcher.join()
    assert killed, "no worker was killed"
    for name in RESULTS:
        assert (out / name).read_text() == (local_sweep / name).read_text(), name
    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["d2-r0", "d4-r0"]
    history = json.loads((runs / killed["run"] / "config.json").read_text())["history"]
    assert len(history) == 2 and history[0]["from_step"] == 0 and history[1]["from_step"] > 0  # resumed, not restarted
    assert len((out / "runs.csv").read_text().splitlines()) == 3  # a header and one row per run

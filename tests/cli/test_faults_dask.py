"""The fault matrix of Dask execution (issue 16): a `--scheduler` where no Dask scheduler answers, workers or threads
above the cores, Ctrl-C and SIGTERM during a local cluster's run, and a one-value flag given twice.

Servers run on 127.0.0.1 in threads that stop by themselves; the interrupt tests run the CLI in a subprocess
(a signal to the test process would stop pytest) and wait for it within bounds.
"""

from __future__ import annotations

import gc
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import blindspot.execution as execution
from blindspot.cli import main, repeated_option
from conftest import assert_one_error

SMALL = ["--n-intensities", "4", "--n-sigmas", "3", "--sigma-max", "2", "--radius", "6"]
INTERRUPTED = "interrupted; run the same command again to resume."
STARTING = "starting a local Dask cluster of 2 workers ..."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test's stderr is the command's
        pass


def http_server(stop: threading.Event) -> int:
    """An HTTP server (as at a dashboard's port): it answers Dask's handshake with an HTTP error."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    server.timeout = 0.2

    def serve() -> None:
        with server:
            while not stop.is_set():
                server.handle_request()

    threading.Thread(target=serve, daemon=True).start()
    return server.server_address[1]


def banner_server(stop: threading.Event) -> int:
    """A TCP server that greets with a banner (as SSH does): bytes Dask reads as an enormous frame length."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def serve() -> None:
        with listener:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except socket.timeout:
                    continue
                with conn:
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                    stop.wait(1)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


@pytest.fixture
def server():
    """``server(kind)``: the port of an HTTP server, a banner server or a closed port; stopped at the end."""
    stop = threading.Event()
    yield lambda kind: {"http": http_server, "banner": banner_server}[kind](stop) if kind != "closed" else free_port()
    stop.set()


@pytest.mark.parametrize("kind, command, fragment", [
    ("http", "evaluate", "cannot reach a Dask scheduler at --scheduler"),
    ("banner", "evaluate", "answers, but not as a Dask scheduler"),
    ("closed", "pitfalls", "cannot reach a Dask scheduler at --scheduler"),
])
def test_a_scheduler_address_where_no_dask_scheduler_answers_is_one_sentence(snapshot, world, capsys, monkeypatch, server,
                                                                             kind, command, fragment):
    monkeypatch.setattr(execution, "CONNECT_TIMEOUT", 2)
    address = f"tcp://127.0.0.1:{server(kind)}"
    out = world["root"] / "out"
    args = (["evaluate", "--maps", str(world["maps"]), "--labels", str(world["labels"])] if command == "evaluate" else
            ["pitfalls", "intensity", "--data", str(world["data"]), "--slice", "12", *SMALL])
    before = snapshot(world["root"])
    code = main([*args, "--scheduler", address, "--out", str(out)])
    gc.collect()  # a half-made Dask client would print its own shutdown traceback when collected
    assert_one_error(code, capsys.readouterr().err, fragment, f"'{address}'")
    assert not out.exists() and not Path(f"{out}.partial").exists()
    assert snapshot(world["root"]) == before


def test_a_scheduler_that_goes_away_during_the_run_is_one_sentence(snapshot, world, capsys):
    distributed = pytest.importorskip("distributed")
    out = world["root"] / "out"
    before = snapshot(world["root"])
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster:
        address = cluster.scheduler_address
        closing = threading.Timer(3, cluster.close)  # no worker: the tasks wait until the scheduler is gone
        closing.start()
        code = main(["evaluate", "--maps", str(world["maps"]), "--labels", str(world["labels"]), "--scheduler", address,
                     "--out", str(out)])
        closing.join()
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == [
        f"warning: the Dask scheduler at {address} has no worker yet; tasks wait until workers connect.",
        f"error: the Dask scheduler at {address} dropped the task (scheduler-connection-lost); check that it still runs, "
        "then run the same command again to resume."]
    assert not out.exists() and snapshot(world["root"]) == before


def test_workers_and_threads_above_the_cores_are_one_warning_each(world, capsys, monkeypatch):
    monkeypatch.setattr(execution, "cores", lambda: 1)
    maps = ["evaluate", "--maps", str(world["maps"]), "--labels", str(world["labels"]), "--bootstrap", "0"]
    assert main([*maps, "--workers", "2", "--out", str(world["root"] / "on-workers")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "warning: --workers 2 exceeds the 1 core of this machine; the work will run slower, not faster.", STARTING]
    assert main(["pitfalls", "intensity", "--data", str(world["data"]), "--slice", "12", *SMALL, "--bootstrap", "0",
                 "--threads", "2", "--out", str(world["root"] / "on-threads")]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "warning: --threads 2 exceeds the 1 core of this machine; the work will run slower, not faster."]


def live_children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` and that have not ended (zombies count as ended)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while reading
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("signum, wait_for", [
    (signal.SIGINT, "intensity grid:"),  # Ctrl-C in a terminal: the whole process group, while the tasks run
    (signal.SIGTERM, STARTING),  # kill PID, as a batch system ends a job: this process alone, while the cluster starts
])
def test_an_interrupted_local_cluster_stops_in_one_line_and_leaves_no_process(tmp_path, nifti_folder, signum, wait_for):
    out = tmp_path / "grid"
    code = ("import sys, blindspot.progress as p; p.QUIET_SECONDS = 0; from blindspot.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    args = ["pitfalls", "intensity", "--data", str(nifti_folder), "--slices", "2:22", "--workers", "2", "--out", str(out)]
    run = subprocess.Popen([sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines, children = [], set()
    try:
        for line in run.stderr:  # ends with the process at the latest
            lines.append(line.rstrip("\n"))
            children |= live_children(run.pid)
            if wait_for in line:
                break
        assert run.poll() is None, lines
        children |= live_children(run.pid)
        if signum == signal.SIGINT:
            os.killpg(run.pid, signum)
        else:
            run.send_signal(signum)
        rest = run.stderr.read()
        code = run.wait(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert code == 130
    said = [line for line in [*lines, *rest.splitlines()] if line.strip()]
    assert "Traceback" not in rest and said[0] == STARTING and said[-1] == INTERRUPTED, said
    assert all(line.startswith("intensity grid:") for line in said[1:-1]), said
    assert not out.exists()
    if wait_for != STARTING:  # the chunks done so far are kept for the next run
        assert Path(f"{out}.partial").is_dir()
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if alive(pid)]


@pytest.mark.parametrize("args, flag", [
    (["pitfalls", "intensity", "--n-sigmas", "3", "--n-sigmas", "5"], "--n-sigmas"),
    (["evaluate", "--maps", "{maps}", "--labels", "{labels}", "--bootstrap", "100", "--bootstrap=200"], "--bootstrap"),
    (["train", "--model", "ae", "--steps", "10", "--steps", "20"], "--steps"),
])
def test_a_one_value_flag_given_twice_is_refused(snapshot, world, capsys, args, flag):
    out = world["root"] / "out"
    before = snapshot(world["root"])
    code = main([arg.format(**world) for arg in args] + ["--out", str(out)])
    assert_one_error(code, capsys.readouterr().err, f"{flag} is given more than once")
    assert not out.exists() and snapshot(world["root"]) == before


def test_repeatable_flags_and_values_that_look_like_flags_are_not_repeats():
    assert repeated_option(["train", "--option", "d=16", "--option", "c=2", "--augment", "--augment"]) is None
    assert repeated_option(["pitfalls", "intensity", "--volume-regex", "--n-sigmas", "--n-sigmas", "4"]) is None
    assert repeated_option(["pitfalls", "intensity", "--seed", "1", "--seed", "1"]) == "--seed"

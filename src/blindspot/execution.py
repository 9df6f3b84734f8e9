"""Where the long commands run: in this process, or as tasks on a Dask ``distributed`` cluster.

Three execution modes, chosen by :class:`Execution` (``--scheduler`` / ``--workers`` on the command line):

* **in-process** (neither): today's path, unchanged;
* **local cluster** (``workers=N``): a :class:`distributed.LocalCluster` of N worker processes on
  this machine, one task at a time each, started and closed here;
* **scheduler** (``scheduler=ADDRESS``): a client of a running Dask scheduler (``dask scheduler``,
  dask-jobqueue on SLURM, a Kubernetes deployment), whose workers run the tasks.

The numbers never depend on the mode: every task computes exactly what the in-process loop computes
for its share (chunks of images or volumes, one training run, chunks of evaluation cases), and the
results are put back together in the in-process order. Blindspot does not schedule anything itself:
:class:`Pool` only submits tasks to Dask, at most a window of them at a time (so that the arguments of
tasks not yet running do not pile up in memory), and reports progress as they complete
(:func:`distributed.as_completed` and :func:`blindspot.progress.progress`).

Inside a task, blindspot's own progress bars are silent (the client reports the tasks), and a task
that runs a model can be given the client's torch thread count: CPU results of a convolution can
differ in the last bit between thread counts, so this is what makes them bitwise equal to the
in-process run. ``distributed`` is imported only when a cluster is used.

Faults are sentences: an address where no Dask scheduler answers, a scheduler that goes away, a worker
that dies. Ctrl-C and SIGTERM close the cluster within seconds (the workers of a local cluster never
receive a terminal's Ctrl-C themselves), and Dask's log lines stay out of the terminal.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import blindspot.progress as progress_bars
from blindspot.errors import BlindspotError
from blindspot.wording import count

__all__ = ["CONNECT_TIMEOUT", "Execution", "Pool", "cores", "execution_record", "gpu_resources", "open_pool",
           "warn_above_cores"]

#: Seconds to wait for a scheduler given by address before giving up.
CONNECT_TIMEOUT = 10
#: Seconds a closing client, and each closing worker, may take before they are dropped.
CLOSE_TIMEOUT = 5
#: Log level above every level Dask uses: its log lines are silenced while a pool is open (:func:`open_pool`).
QUIET = logging.CRITICAL + 1


@dataclass(frozen=True)
class Execution:
    """How a command runs: ``scheduler`` (a Dask scheduler's address), ``workers`` (a local cluster), or neither."""

    scheduler: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.scheduler is not None and self.workers is not None:
            raise BlindspotError("give either `scheduler` (an existing Dask scheduler) or `workers` (a local cluster), not both.")
        if self.workers is not None and not (isinstance(self.workers, int) and not isinstance(self.workers, bool)
                                             and self.workers >= 1):
            raise BlindspotError(f"`workers` must be a positive integer; got {self.workers!r}.")
        if self.scheduler is not None and not str(self.scheduler).strip():
            raise BlindspotError("`scheduler` must be the address of a Dask scheduler, e.g. tcp://host:8786.")

    @property
    def mode(self) -> str:
        return "scheduler" if self.scheduler is not None else "local cluster" if self.workers is not None else "in-process"


def execution_record(pool: "Pool | None") -> dict:
    """What ``config.json`` records of the execution (the numbers do not depend on it)."""
    return {"mode": "in-process", "workers": 0} if pool is None else pool.record()


def _silence_progress() -> None:
    progress_bars.SILENT = True


_MALLOC_TUNED: list = []


def _tune_malloc() -> None:
    """Let glibc keep freed memory for reuse in this worker, as it does in a plain Python process.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's
    mmap threshold at its default, so every array above 128 KiB is mapped and unmapped again: the
    page faults made the pitfall grids twice as slow in a worker as in this process
    (``benchmarks/cluster.md``). 32 MiB (the largest mmap threshold glibc picks by itself) and a
    64 MiB trim threshold restore the in-process behaviour. Elsewhere (no glibc) nothing is done.
    """
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED.append(True)
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def _task(fn: Callable, args: tuple, torch_threads: int | None) -> Any:
    """Run ``fn(*args)`` on a worker: progress silent, torch at ``torch_threads`` intra-op threads (None: as set)."""
    _silence_progress()
    _tune_malloc()
    if torch_threads is None:
        return fn(*args)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(before)


class Pool:
    """A Dask client (and the local cluster it started) that runs blindspot's tasks; made by :func:`open_pool`."""

    def __init__(self, client, cluster, execution: Execution):
        self.client, self.cluster, self.execution = client, cluster, execution

    # ---------------------------------------------------------------- workers
    def worker_threads(self) -> dict[str, int]:
        """Threads (tasks at a time) of every connected worker, by address."""
        return dict(self.client.nthreads())

    @property
    def workers(self) -> int:
        return len(self.worker_threads())

    def record(self) -> dict:
        out = {"mode": self.execution.mode, "workers": self.workers,
               "threads_per_worker": sorted(set(self.worker_threads().values()))}
        if self.execution.scheduler is not None:
            out["scheduler"] = self.execution.scheduler
        return out

    def check_resources(self, resources: dict | None) -> None:
        """Warn when no connected worker declares ``resources`` (its tasks would wait for one); on a local
        cluster, where none can join, refuse."""
        if not resources:
            return
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        if not any(all(info.get("resources", {}).get(k, 0) >= v for k, v in resources.items()) for info in workers.values()):
            wanted = " ".join(f"{k}={v}" for k, v in resources.items())
            if self.cluster is not None:  # a local cluster never gains one: its tasks would wait forever
                raise BlindspotError(f"the tasks need workers with {wanted} (a CUDA `device`), and this machine has no "
                                     "CUDA GPU for the local cluster; use another `device`, or a `scheduler` with GPU workers.")
            warnings.warn(f"no worker of the cluster declares the resource {wanted}; its tasks wait until such a worker "
                          f"connects (start it with: dask worker ADDRESS --resources {wanted}).", UserWarning, stacklevel=3)

    def _window(self) -> int:
        return max(2, 2 * sum(self.worker_threads().values()))

    # ---------------------------------------------------------------- tasks
    def submit(self, fn: Callable, *args, name: str = "blindspot", resources: dict | None = None, retries: int = 0,
               torch_threads: int | None = None, workers=None):
        """One task ``fn(*args)`` (arguments may be futures of earlier tasks); returns its future."""
        return self.client.submit(_task, fn, args, torch_threads, key=f"{name}-{uuid.uuid4().hex}", resources=resources,
                                  retries=retries or None, pure=False, workers=workers, allow_other_workers=workers is not None)

    def map(self, fn: Callable, tasks: Iterable[tuple], *, desc: str, unit: str = "task", total: int | None = None,
            weight: Callable[[int], int] | None = None, resources: dict | None = None, retries: int = 0,
            torch_threads: int | None = None, on_result: Callable[[int, Any], None] | None = None,
            every: int | None = None) -> list:
        """``[fn(*task) for task in tasks]``, run as tasks on the workers; results in the order of ``tasks``.

        ``tasks`` may be a generator: it is consumed as slots free up (a window of twice the workers'
        threads), so the client never holds the arguments of every task at once. ``on_result(i,
        result)`` runs in this process as each task completes (e.g. to write a resume file);
        ``weight(i)`` is task i's share of the progress ``total`` (default 1 each). The first failing
        task cancels the others and its error is raised here.
        """
        from distributed import as_completed

        self.check_resources(resources)
        stream = enumerate(iter(tasks))
        results: dict[int, Any] = {}
        pending: dict = {}
        completed = as_completed(loop=self.client.loop)
        window = self._window()
        name = desc.replace(" ", "-")

        def fill() -> None:
            for i, task in itertools.islice(stream, max(0, window - len(pending))):
                future = self.submit(fn, *task, name=name, resources=resources, retries=retries, torch_threads=torch_threads)
                pending[future] = i
                completed.add(future)

        with progress_bars.progress(total if total is not None else 0, desc, unit=unit, every=every) as bar:
            try:
                fill()
                for future in completed:
                    i = pending.pop(future)
                    results[i] = self._result(future)
                    if on_result is not None:
                        on_result(i, results[i])
                    bar.update(weight(i) if weight is not None else 1)
                    fill()
            finally:
                for future in pending:
                    future.cancel()
        return [results[i] for i in range(len(results))]

    def results(self, futures: Sequence, *, desc: str, unit: str = "task", weight: Callable[[int], int] | None = None,
                every: int | None = None) -> list:
        """The results of ``futures`` (in their order), with progress as they complete."""
        from distributed import as_completed

        index = {future: i for i, future in enumerate(futures)}
        out: list = [None] * len(futures)
        total = sum(weight(i) for i in range(len(futures))) if weight is not None else len(futures)
        with progress_bars.progress(total, desc, unit=unit, every=every) as bar:
            try:
                for future in as_completed(futures, loop=self.client.loop):
                    i = index[future]
                    out[i] = self._result(future)
                    bar.update(weight(i) if weight is not None else 1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return out

    def tree_reduce(self, futures: Sequence, combine: Callable, *, fan_in: int = 2, name: str = "merge"):
        """Combine the results of ``futures`` on the workers in a tree, ``fan_in`` at a time; returns one future.

        ``combine(*results)`` of up to ``fan_in`` results must be associative (e.g. the
        :func:`~blindspot.metrics.tables.merge_tables` of their tables). Groups keep their order, so
        an order-sensitive combination stays deterministic; ``log_fan_in(N)`` levels.
        """
        level = list(futures)
        if not level:
            raise BlindspotError("tree_reduce: nothing to combine.")
        if fan_in < 2:
            raise BlindspotError(f"tree_reduce: `fan_in` must be at least 2; got {fan_in}.")
        while len(level) > 1:
            level = [self.submit(combine, *group, name=name) if len(group) > 1 else group[0]
                     for group in (level[k : k + fan_in] for k in range(0, len(level), fan_in))]
        return level[0]

    def result(self, future):
        """The result of one future (errors as BlindspotErrors where they concern the cluster)."""
        return self._result(future)

    def _result(self, future):
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        try:
            return future.result()
        except FutureCancelledError as err:  # the scheduler went away (or closed the client) while the task waited
            where = f" at {self.execution.scheduler}" if self.execution.scheduler is not None else ""
            raise BlindspotError(f"the Dask scheduler{where} dropped the task ({err.reason}); check that it still runs, "
                                 "then run the same command again to resume.") from None
        except KilledWorker as err:
            raise BlindspotError(f"a task failed because the workers running it died ({err}); a worker that runs out of "
                                 "memory is killed: give workers more memory, or fewer threads each.") from None
        except OSError as err:
            if type(err).__module__.startswith("distributed"):
                raise BlindspotError(f"lost the connection to the Dask scheduler ({err}).") from None
            raise


@contextmanager
def open_pool(execution: "Execution | Pool | None") -> Iterator[Pool | None]:
    """A :class:`Pool` for ``execution`` (None or in-process: None), closed (with its local cluster) at the end.

    An already open :class:`Pool` is passed through and left open. A scheduler that does not answer
    as a Dask scheduler within :data:`CONNECT_TIMEOUT` seconds is a BlindspotError naming `scheduler`.
    Dask's own log lines stay out of the terminal while the pool is open and while it closes (its
    failures reach the caller as errors of the tasks); an interrupt closes the cluster and its workers.
    """
    if execution is None or isinstance(execution, Pool):
        yield execution
        return
    if not isinstance(execution, Execution):
        raise BlindspotError(f"`execution` must be an Execution; got {type(execution).__name__}.")
    if execution.mode == "in-process":
        yield None
        return
    from distributed import Client
    from distributed.utils import silence_logging_cmgr

    with silence_logging_cmgr(QUIET), silence_logging_cmgr(QUIET, root="tornado"):
        if execution.scheduler is not None:
            client, cluster = _connect(execution.scheduler), None
        else:
            warn_above_cores("workers", execution.workers)
            progress_bars.status(f"starting a local Dask cluster of {count(execution.workers, 'worker')} ...")
            cluster = _start_cluster(execution.workers)
            try:
                client = Client(cluster, set_as_default=False)
            except BaseException:
                _close(None, cluster)
                raise
        pool = Pool(client, cluster, execution)
        try:
            if execution.scheduler is not None and pool.workers == 0:
                warnings.warn(f"the Dask scheduler at {execution.scheduler} has no worker yet; tasks wait until workers "
                              "connect.", UserWarning, stacklevel=3)
            yield pool
        finally:
            _close(client, cluster)


def cores() -> int:
    """CPU cores this process may run on (its affinity where the platform tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def warn_above_cores(name: str, number: int | None) -> None:
    """Warn when ``number`` workers or threads (parameter ``name``) exceed this machine's cores: they compete for them."""
    available = cores()
    if number is not None and number > available:
        warnings.warn(f"`{name}` {number} exceeds the {count(available, 'core')} of this machine; "
                      "the work will run slower, not faster.", UserWarning, stacklevel=3)


def _connect(address: str):
    """A client of the Dask scheduler at ``address``, after :func:`_check_scheduler` (a BlindspotError if it fails)."""
    from distributed import Client

    _check_address(address)
    _check_scheduler(address)
    try:
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except Exception:  # noqa: BLE001 - the scheduler went away since the check: any failure is the same fault
        raise BlindspotError(_unreachable(address)) from None


def _unreachable(address: str) -> str:
    return (f"cannot reach a Dask scheduler at `scheduler` {address!r} within {CONNECT_TIMEOUT} s; start one with dask "
            "scheduler, or check the address (a scheduler listens at tcp://HOST:8786, its dashboard at 8787).")


def _check_scheduler(address: str) -> None:
    """Refuse ``address`` unless a Dask scheduler answers there within :data:`CONNECT_TIMEOUT` seconds.

    Dask's client waits without end for a server that accepts the connection and never answers (an
    HTTP server), and fails with a traceback on one that answers something else (it reads the bytes
    as frame lengths). This asks the peer who it is (Dask's handshake, then its ``identity``) in a
    thread of its own, all within the timeout.
    """
    import asyncio

    from distributed.comm import connect

    async def identity():
        comm = await connect(address, timeout=CONNECT_TIMEOUT)
        try:
            await comm.write({"op": "identity"})
            return await comm.read()
        finally:
            comm.abort()

    outcome: dict = {"done": threading.Event()}
    _in_thread(lambda: asyncio.run(asyncio.wait_for(identity(), CONNECT_TIMEOUT)), "blindspot-scheduler-check", outcome)
    outcome["done"].wait()
    error, reply = outcome.get("error"), outcome.get("result")
    if isinstance(error, OSError):  # refused, unknown host, timed out (TimeoutError is an OSError)
        raise BlindspotError(_unreachable(address))
    kind = reply.get("type") if isinstance(reply, dict) else None
    if error is not None or kind != "Scheduler":
        seen = f" (it is a Dask {kind})" if isinstance(kind, str) else ""
        raise BlindspotError(f"`scheduler` {address!r} answers, but not as a Dask scheduler{seen}; give the address "
                             "that dask scheduler prints, e.g. tcp://HOST:8786.")


def _start_cluster(workers: int):
    """A local cluster of ``workers`` processes that a Ctrl-C in the terminal does not reach.

    Ctrl-C sends SIGINT to every process of the terminal's foreground group: each worker would die
    with a traceback. The cluster is started from a thread that blocks SIGINT; the threads Dask starts
    from it, and the worker processes they spawn, inherit that mask, while this process still gets the
    signal and closes the workers itself. A Ctrl-C while the workers start stops them at once.
    """
    import multiprocessing
    from multiprocessing import resource_tracker

    from distributed import LocalCluster

    # multiprocessing's resource tracker unblocks SIGINT in the thread that first needs it: start it here instead
    resource_tracker.ensure_running()
    before = set(multiprocessing.active_children())
    resources = {"GPU": 1} if _cuda_devices() else None
    outcome: dict = {"done": threading.Event()}
    try:
        _in_thread(lambda: LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                                        resources=resources, silence_logs=QUIET),
                   "blindspot-cluster-start", outcome, mask=(signal.SIGINT,))
        outcome["done"].wait()
    except BaseException:  # interrupted while the workers start: stop them as they come, then the half-started cluster
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while "thread" in outcome and not outcome["done"].wait(0.1) and time.monotonic() < deadline:
            for process in set(multiprocessing.active_children()) - before:
                process.kill()
        _close(None, outcome.get("result"))
        raise
    if "error" in outcome:
        raise BlindspotError(f"cannot start a local Dask cluster of `workers` {workers} ({outcome['error']}).")
    return outcome["result"]


def _in_thread(target: Callable[[], Any], name: str, outcome: dict, mask: tuple = ()) -> None:
    """Run ``target()`` in a daemon thread that blocks the signals ``mask``: ``outcome`` gets its ``result`` or ``error``.

    ``outcome["done"]`` (an event) is set at its end; ``outcome["thread"]`` once it starts. Wait on the
    event rather than joining the thread: in Python 3.11 a join interrupted by Ctrl-C can mark a thread
    that still runs as ended. The threads (and processes) that the target starts inherit the mask.
    """
    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = err
        finally:
            outcome["done"].set()

    thread = threading.Thread(target=run, name=name, daemon=True)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, mask) if mask and hasattr(signal, "pthread_sigmask") else None
    try:
        outcome["thread"] = thread
        thread.start()
    finally:
        if blocked is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _close(client, cluster) -> None:
    """Close ``client`` and ``cluster`` (either may be None) within bounded time, saying nothing.

    After a failure or an interrupt the scheduler or the workers may already be gone: closing must
    then neither wait for them for long nor add a traceback after the one-line message. A Ctrl-C
    while closing still closes both, then stops the command.
    """
    interrupted = None
    for part in (client, cluster):
        try:
            if part is not None:
                part.close(timeout=CLOSE_TIMEOUT)
        except KeyboardInterrupt as err:
            interrupted = err
        except Exception:  # noqa: BLE001 - a close that fails leaves nothing to report; the process ends anyway
            pass
    if interrupted is not None:
        raise interrupted


def _check_address(address: str) -> None:
    """Refuse an address Dask cannot parse, before a client is made (a half-made client hangs on exit)."""
    from distributed.comm import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls"):
            parse_host_port(location, 8786)
    except (ValueError, TypeError):
        raise BlindspotError(f"`scheduler` {address!r} is not the address of a Dask scheduler; give one like "
                             "tcp://host:8786 (dask scheduler prints it).") from None


def _cuda_devices() -> int:
    """CUDA devices this machine has (without initialising CUDA when torch cannot see any)."""
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch or a broken driver: no GPU
        return 0


def gpu_resources(device: str | None) -> dict | None:
    """``{"GPU": 1}`` when ``device`` asks for CUDA (a GPU worker then runs one such task at a time), else None."""
    return {"GPU": 1} if device is not None and str(device).startswith("cuda") else None

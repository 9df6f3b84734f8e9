"""Progress that reads well on a terminal and in a log file.

On a terminal (stderr is a TTY) a tqdm bar; otherwise (``nohup``, SLURM, CI) plain lines, one per
``every`` updates and one at the end, never carriage returns, and only for loops that run longer
than :data:`QUIET_SECONDS` (short runs stay silent). Every long loop of blindspot reports through
:func:`progress`.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

#: Log lines start once a loop has run this long.
QUIET_SECONDS = 5.0
#: Set in Dask worker processes (:mod:`blindspot.execution`): the client reports the tasks, so a task's own
#: loops stay silent instead of drawing bars over the client's.
SILENT = False


class _LogLines:
    """The tqdm calls blindspot uses (``update``, ``set_postfix_str``, ``close``), as log lines."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, every: int):
        self.total, self.desc, self.unit, self.n, self.every = total, desc, unit, initial, max(1, every)
        self.postfix, self.began, self._last, self._printed = "", time.perf_counter(), initial, False

    def update(self, k: int = 1) -> None:
        self.n += k
        elapsed = time.perf_counter() - self.began
        due = self.n - self._last >= self.every or self.n >= self.total
        if due and (self._printed or elapsed >= QUIET_SECONDS):
            self._last, self._printed = self.n, True
            extra = f", {self.postfix}" if self.postfix else ""
            print(f"{self.desc}: {self.n}/{self.total} {self.unit} ({elapsed:.0f} s{extra})", file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.postfix = text

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent(_LogLines):
    """Counts and says nothing (inside a Dask task)."""

    def __init__(self) -> None:
        super().__init__(0, "", "", 0, 1)

    def update(self, k: int = 1) -> None:
        self.n += k


def progress(total: int, desc: str, *, unit: str = "it", initial: int = 0, every: int | None = None):
    """A progress counter of ``total`` steps (use as a context manager or call ``close``).

    ``every``: how many steps per log line when stderr is not a terminal (default: about 20 lines).
    """
    if SILENT:
        return _Silent()
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
    return _LogLines(total, desc, unit, initial, every or max(1, total // 20))


def status(message: str) -> None:
    """One line on stderr about a phase that reports no progress of its own (e.g. a cluster starting); silent in a task."""
    if not SILENT:
        print(message, file=sys.stderr, flush=True)


def progress_over(items, desc: str, *, unit: str = "file"):
    """Iterate over a sized collection while reporting progress (see :func:`progress`)."""
    with progress(len(items), desc, unit=unit) as bar:
        for item in items:
            yield item
            bar.update(1)

"""Memory a run may use, checked before it is allocated.

Options such as ``bootstrap``, ``n_sigmas`` or ``n_intensities`` size arrays; a value that cannot
fit would otherwise grow until the kernel kills the process (no message) or end in a
``MemoryError`` traceback. The library estimates the bytes first and :func:`check_memory` refuses
in one sentence with the estimate, the limit and the largest value that fits.

:func:`available_memory` is the smallest of what the machine has available (``MemAvailable`` in
``/proc/meminfo``), what the process's control group still allows (cgroup v2 ``memory.max`` −
``memory.current``, or v1 ``memory.limit_in_bytes`` − ``memory.usage_in_bytes``) and the address
space and data limits (``ulimit -v``, ``-d``) less what the process already uses. Where none of
these can be read (another OS), :data:`FALLBACK` is assumed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from blindspot.errors import BlindspotError

__all__ = ["FALLBACK", "available_memory", "check_memory", "format_bytes"]

#: Bytes assumed available where the system says nothing (a generous guess: only absurd sizes are refused).
FALLBACK = 64 << 30


def _read_int(path: str | Path) -> int | None:
    """The integer in a one-line system file, or None (missing, unreadable, or ``max``)."""
    try:
        text = Path(path).read_text().split()[0]
        return int(text)
    except (OSError, ValueError, IndexError):
        return None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_paths() -> list[Path]:
    """This process's cgroup folders (v2 unified and v1 memory controller), deepest first."""
    root = Path("/sys/fs/cgroup")
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return [root, root / "memory"]
    paths = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and (parts[1] == "" or "memory" in parts[1].split(",")):
            base = root if parts[1] == "" else root / "memory"
            paths.append(base / parts[2].lstrip("/"))
            paths.append(base)
    return paths


def _cgroup_available() -> int | None:
    """Limit minus usage of the tightest memory cgroup this process is in, or None."""
    best = None
    for folder in _cgroup_paths():
        for limit_name, usage_name in (("memory.max", "memory.current"), ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            limit, usage = _read_int(folder / limit_name), _read_int(folder / usage_name)
            if limit is not None and limit < 1 << 60:  # v1 writes "no limit" as a huge number, v2 as "max"
                left = max(0, limit - (usage or 0))
                best = left if best is None else min(best, left)
    return best


def _rlimit_available() -> int | None:
    """``RLIMIT_AS`` / ``RLIMIT_DATA`` less the process's current size, when a limit is set."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    used = _read_int("/proc/self/statm")
    used = used * os.sysconf("SC_PAGE_SIZE") if used is not None else 0
    best = None
    for name in ("RLIMIT_AS", "RLIMIT_DATA"):
        soft = resource.getrlimit(getattr(resource, name))[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            left = max(0, soft - used)
            best = left if best is None else min(best, left)
    return best


def available_memory() -> int:
    """Bytes this process can still allocate: the smallest limit the system reports (see the module docstring)."""
    known = [v for v in (_meminfo_available(), _cgroup_available(), _rlimit_available()) if v is not None]
    return min(known) if known else FALLBACK


def format_bytes(n: float) -> str:
    """``16.0 GB``, ``512.0 MB``, ``3.0 kB`` (powers of 1000)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def check_memory(n_bytes: float, what: str, *, parameter: str, value: int, per_unit: float | None = None) -> None:
    """Refuse a run whose estimate ``n_bytes`` exceeds :func:`available_memory`, in one sentence.

    ``what`` says what the memory holds ("the resample weights"); ``parameter`` and ``value`` name
    the option that sized it. ``per_unit``: the bytes each unit of ``value`` adds (the estimate is
    linear in it), to name the largest value that fits.
    """
    limit = available_memory()
    if n_bytes <= limit:
        return
    hint = ""
    if per_unit:
        fits = math.floor((limit - (n_bytes - value * per_unit)) / per_unit)
        hint = f": use at most {fits:,}" if fits >= 1 else ": even 1 does not fit, free memory first"
    raise BlindspotError(f"`{parameter}` {value:,} needs about {format_bytes(n_bytes)} for {what}; only "
                         f"{format_bytes(limit)} is available{hint}.")

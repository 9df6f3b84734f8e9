"""Self-describing result folders, written atomically.

A run writes into ``OUT.partial/`` and renames it to ``OUT`` only when everything is there, so an
interrupted or failed run never leaves a half-written result folder behind. ``config.json`` always
records the parameters, the seed and the package version.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from blindspot.errors import BlindspotError

#: Subfolder of a staging folder that holds resumable partial work.
CACHE = ".cache"


def provenance() -> dict[str, str]:
    """Package and library versions recorded in every result file."""
    import scipy

    from blindspot import __version__

    return {
        "blindspot": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_options) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file, and a failed write leaves no temporary file behind.
    ``mode`` and ``open_options`` (e.g. ``newline=""``) are passed to :func:`open`.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_options) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_write(path) as handle:
        json.dump(_jsonable(data), handle, indent=2)
        handle.write("\n")


def write_text(path: str | Path, text: str) -> None:
    """Write ``text``, atomically."""
    with atomic_write(path) as handle:
        handle.write(text)


def save_npz(path: str | Path, **arrays: Any) -> None:
    """``np.savez_compressed``, atomically."""
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def csv_text(rows: list[dict]) -> str:
    """Rows of dicts as CSV text: the union of their keys as columns, floats at full precision."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(float(v)) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()})
    return buffer.getvalue()


def check_out_dir(out: str | Path, *, overwrite: bool) -> Path:
    """Refuse to replace an existing result folder unless ``overwrite`` is set."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise BlindspotError(f"output folder '{out}' already exists; pass --overwrite to replace it or choose another --out.")
    if out.exists() and not out.is_dir():
        raise BlindspotError(f"output path '{out}' exists and is not a folder.")
    return out


@contextmanager
def result_folder(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder that becomes ``out`` only if the block finishes without error.

    The staging folder ``OUT.partial`` is kept after an interruption so a long run can resume from
    what it holds (resumable work goes into its ``.cache`` subfolder, dropped on success); it is
    removed after a user error.
    """
    out = check_out_dir(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(out.name + ".partial")
    staging.mkdir(exist_ok=True)
    try:
        yield staging
    except BlindspotError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging / CACHE, ignore_errors=True)
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)


def load_json(path: str | Path) -> dict:
    """Read a JSON file written by blindspot, with a clear error when it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BlindspotError(f"'{path}' does not exist; expected a blindspot result file.") from None
    except json.JSONDecodeError as err:
        raise BlindspotError(f"'{path}' is not valid JSON ({err.msg} at line {err.lineno}).") from None

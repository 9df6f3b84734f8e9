"""Self-describing result folders: the one output rule, atomic writes, provenance.

Every command writes into ``OUT.partial/`` and renames it to ``OUT`` only when everything is there,
so an interrupted or failed run never leaves a half-written result folder behind. Before any
computation :func:`check_output` applies one rule to ``--out``:

* it may not be ``/``, the home folder, the working directory or one of its ancestors (``.``,
  ``..``), nor equal, contain or lie inside any input path; a symlink is resolved first and judged
  by the same rule;
* an existing folder is replaced (``--overwrite``) only if blindspot wrote it: every folder it
  writes holds the marker file :data:`MARKER`. The same goes for a stale ``OUT.partial``;
* the nearest existing parent must be a writable folder.

Files are written to a temporary name and renamed (:func:`atomic_write`), with the permissions the
umask allows (0644 by default) so that collaborators can read results on a shared server.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import shutil
import tempfile
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import numpy as np

from blindspot.errors import BlindspotError, WriteError

#: Subfolder of a staging folder that holds resumable partial work.
CACHE = ".cache"
#: The file that marks a folder as written by blindspot (the only folders ``--overwrite`` replaces).
MARKER = ".blindspot"
#: Packages whose versions shape the numbers; recorded in every result.
PACKAGES = ("blindspot", "numpy", "scipy", "scikit-image", "nibabel", "nilearn", "matplotlib", "torch", "pillow")

_UMASK = os.umask(0)
os.umask(_UMASK)


def provenance() -> dict[str, str]:
    """Versions of Python and of every package that shapes the numbers (read without importing them)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_hashes(paths: Iterable[str | Path]) -> dict[str, str]:
    """``{path: sha256}`` of every input file (recorded in ``config.json``)."""
    try:
        return {str(p): file_sha256(p) for p in paths}
    except OSError as err:
        raise BlindspotError(f"cannot read input '{err.filename}' to record its hash ({err.strerror}).") from None


def jsonable(value: Any) -> Any:
    """JSON-ready values: numpy scalars and arrays become numbers and lists, tuples lists, paths
    strings, NaN and infinities null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_options) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it onto ``path`` only if the block succeeds.

    Readers never see a half-written file, and a failed write leaves no temporary file behind. The
    file gets the permissions the umask allows. ``mode`` and ``open_options`` (e.g. ``newline=""``)
    are passed to :func:`open`. An OS error (full disk, permissions) becomes a BlindspotError
    naming the file.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, **open_options) as handle:
            yield handle
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"cannot write '{path}' ({err.strerror or err}).") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as indented JSON (NaN as null), atomically."""
    with atomic_write(path) as handle:
        json.dump(jsonable(data), handle, indent=2)
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


def load_json(path: str | Path) -> dict:
    """Read a JSON file written by blindspot, with a clear error when it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BlindspotError(f"'{path}' does not exist; expected a blindspot result file.") from None
    except json.JSONDecodeError as err:
        raise BlindspotError(f"'{path}' is not valid JSON ({err.msg} at line {err.lineno}).") from None
    except OSError as err:
        raise BlindspotError(f"cannot read '{path}' ({err.strerror}).") from None


# --------------------------------------------------------------------------------------------
# the output rule


def staging_path(out: Path) -> Path:
    """The staging folder ``OUT.partial`` of a result folder."""
    return out.with_name(out.name + ".partial")


def written_by_blindspot(folder: Path) -> bool:
    """Whether ``folder`` holds the blindspot marker."""
    return (folder / MARKER).is_file()


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(out: str | Path, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                 flag: str = "--out") -> Path:
    """Apply the output rule (module docstring) to ``out`` before any computation; returns it resolved.

    Parameters
    ----------
    out : path
        The result folder to create (or to replace with ``overwrite``).
    inputs : paths
        Every input the command reads (data, maps, labels, checkpoints, ...); None entries and
        ``"mni152"`` are skipped.
    overwrite : bool
        Replace an existing folder that blindspot wrote.
    flag : str
        How errors name the output (the CLI flag, or a parameter name).
    """
    given = Path(out).expanduser()
    target = given.resolve()
    shown = f"{flag} '{given}'" + (f" (resolves to '{target}')" if given.is_symlink() else "")
    cwd = Path.cwd().resolve()
    if target == Path(target.anchor) or target == Path.home().resolve():
        raise BlindspotError(f"{shown} is the root or home folder; choose a new folder for the results.")
    if cwd == target or cwd.is_relative_to(target):
        raise BlindspotError(f"{shown} is the working directory or one of its parents; choose a new folder for the results.")
    for item in inputs:
        if item is None or str(item) == "mni152":
            continue
        source = Path(item).expanduser().resolve()
        if target == source or target.is_relative_to(source) or source.is_relative_to(target):
            raise BlindspotError(f"{shown} overlaps the input '{item}'; results must go to a folder apart from every input.")
    for folder, what in ((target, "folder"), (staging_path(target), "staging folder")):
        if not folder.exists() and not folder.is_symlink():
            continue
        if not folder.is_dir():
            raise BlindspotError(f"{shown}: '{folder}' exists and is not a folder.")
        if not written_by_blindspot(folder):
            raise BlindspotError(f"'{folder}' exists but was not written by blindspot (no {MARKER} marker); "
                                 f"it is never replaced: move it away or choose another {flag}.")
        if what == "folder" and not overwrite:
            raise BlindspotError(f"output folder '{given}' already exists; pass --overwrite to replace it or choose another {flag}.")
    parent = _nearest_existing(target.parent)
    if not parent.is_dir():
        raise BlindspotError(f"{shown}: '{parent}' is not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BlindspotError(f"{shown}: the folder '{parent}' is not writable.")
    return target


def make_marked_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) and mark it as written by blindspot."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not written_by_blindspot(folder):
            write_json(folder / MARKER, {"written_by": "blindspot", "version": provenance()["blindspot"]})
    except OSError as err:
        raise WriteError(f"cannot create '{folder}' ({err.strerror}).") from None


def remove_marked_folder(folder: Path) -> None:
    """Delete a folder that blindspot wrote (refuses any other, names it)."""
    if not folder.exists():
        return
    if not written_by_blindspot(folder):
        raise BlindspotError(f"'{folder}' was not written by blindspot (no {MARKER} marker); it is never deleted.")
    try:
        shutil.rmtree(folder)
    except OSError as err:
        raise BlindspotError(f"cannot remove '{folder}' ({err.strerror}).") from None


@contextmanager
def result_folder(out: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path | None] = (),
                  keep_staging: bool = False) -> Iterator[Path]:
    """Yield the staging folder ``OUT.partial``; it becomes ``OUT`` only if the block finishes.

    The output rule is checked first (:func:`check_output`). With ``overwrite`` a stale staging
    folder is cleared (unless ``keep_staging``: a caller that resumes from it). After an
    interruption or a write fault (full disk, permissions) the staging folder is kept, and the
    message names it, so a long run can resume from what it holds (its ``.cache`` subfolder is
    dropped on success); after a user error it is removed.
    """
    target = check_output(out, inputs=inputs, overwrite=overwrite)
    staging = staging_path(target)
    if overwrite and not keep_staging:
        remove_marked_folder(staging)
    make_marked_folder(staging)
    try:
        yield staging
    except WriteError as err:
        raise WriteError(f"{err} The work done so far is in '{staging}': free the space or fix the permission and "
                         "run the same command again to resume.") from None
    except OSError as err:
        raise WriteError(f"cannot write '{err.filename or staging}' ({err.strerror}). The work done so far is in "
                         f"'{staging}': free the space or fix the permission and run the same command again to resume.") from None
    except BlindspotError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        shutil.rmtree(staging / CACHE, ignore_errors=True)
        if target.exists():
            old = target.with_name(f".{target.name}.replaced")
            remove_marked_folder(old)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    except OSError as err:
        raise WriteError(f"cannot move '{staging}' to '{target}' ({err.strerror}).") from None


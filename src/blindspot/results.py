"""Self-describing result folders: the one output rule, atomic writes, provenance.

Every command writes into a staging folder ``OUT.partial/`` and renames it to ``OUT`` only when
everything is there, so an interrupted or failed run never leaves a half-written result folder
behind. A staging folder is known by the marker file :data:`STAGING` that blindspot writes into it,
holding the fingerprint of the command (its name and target), never by its name: a folder called
``OUT.partial`` without it (a result copied aside, another tool's output) is never read, renamed,
merged or deleted. Before any computation :func:`check_output` applies one rule to ``--out``:

* it may not be ``/``, the home folder, the working directory or one of its ancestors (``.``,
  ``..``), nor equal, contain or lie inside any input path, nor end in ``.partial``; a symlink is
  resolved first and judged by the same rule;
* an existing folder is replaced (``--overwrite``) only if blindspot wrote it: every folder it
  writes holds the marker file :data:`MARKER`. An existing ``OUT.partial`` is resumed only if it
  is this command's staging folder, replaced (``--overwrite``) only if it is another command's;
* no other blindspot command may be writing ``OUT`` (:func:`output_lock`: one lock file per
  ``--out``, holding the pid and host of its command);
* the nearest existing parent must be a writable folder.

Files are written to a temporary name and renamed (:func:`atomic_write`), with the permissions the
umask allows (0644 by default) so that collaborators can read results on a shared server. Text is
written with ``surrogateescape``, so paths that are not valid UTF-8 (e.g. Latin-1 folder names)
are recorded as the bytes they are.
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
import socket
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
#: The file that marks a staging folder, with the fingerprint of the command that writes it.
STAGING = ".blindspot-staging"
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
    if "b" not in mode:
        open_options.setdefault("errors", "surrogateescape")  # undecodable file names round-trip as their bytes
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


def lock_path(out: Path) -> Path:
    """The lock file ``.OUT.out.lock`` beside a result folder (see :func:`output_lock`)."""
    return out.with_name(f".{out.name}.out.lock")


def written_by_blindspot(folder: Path) -> bool:
    """Whether ``folder`` holds the blindspot marker."""
    return (folder / MARKER).is_file()


def _fingerprint(fingerprint: dict | str | None, target: Path) -> str:
    """The hash that ties a staging folder to one command (``fingerprint``: its name, or a dict) and one target."""
    text = json.dumps(jsonable({"command": fingerprint, "target": str(target)}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def staging_state(target: Path, fingerprint: dict | str | None = None) -> str:
    """What ``OUT.partial`` of the resolved result folder ``target`` is to the command ``fingerprint``.

    ``"none"`` (absent), ``"ours"`` (this command's staging folder: it holds the :data:`STAGING`
    marker with this fingerprint), ``"other"`` (another command's staging folder for the same
    target) or ``"foreign"`` (anything else, e.g. a finished result renamed ``OUT.partial``: never
    read, renamed, merged or deleted).
    """
    staging = staging_path(target)
    if not staging.exists() and not staging.is_symlink():
        return "none"
    if staging.is_symlink() or not staging.is_dir():
        return "foreign"
    try:
        saved = json.loads((staging / STAGING).read_text())
    except (OSError, ValueError):
        return "foreign"
    if not isinstance(saved, dict) or saved.get("target") != str(target):
        return "foreign"
    return "ours" if saved.get("fingerprint") == _fingerprint(fingerprint, target) else "other"


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _shown(out: str | Path, flag: str) -> tuple[Path, Path, str, Path]:
    """``(given, target, shown, beside)``: the path as typed, resolved, as messages name it, and the path that
    messages name its staging folder and lock file beside (as typed; the target for a symlinked ``out``)."""
    given = Path(out).expanduser()
    target = given.resolve()
    link = given.is_symlink()
    shown = f"{flag} '{given}'" + (f" (resolves to '{target}')" if link else "")
    return given, target, shown, (given if given.name not in ("", "..") and not link else target)


def check_output(out: str | Path, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                 flag: str = "--out", fingerprint: dict | str | None = None) -> Path:
    """Apply the output rule (module docstring) to ``out`` before any computation; returns it resolved.

    Parameters
    ----------
    out : path
        The result folder to create (or to replace with ``overwrite``).
    inputs : paths
        Every input the command reads (data, maps, labels, checkpoints, ...); None entries and
        ``"mni152"`` are skipped.
    overwrite : bool
        Replace an existing folder that blindspot wrote (and another command's staging folder).
    flag : str
        How errors name the output (the CLI flag, or a parameter name).
    fingerprint : dict, str or None
        The command (e.g. ``"pitfalls intensity"``): only its own staging folder is resumed, another
        command's is replaced only with ``overwrite``. None checks only that an ``OUT.partial`` is a
        staging folder (:func:`result_folder` then checks whose).
    """
    given, target, shown, beside = _shown(out, flag)
    cwd = Path.cwd().resolve()
    if given.name.endswith(".partial") or target.name.endswith(".partial"):
        raise BlindspotError(f"{shown} ends in '.partial', the name blindspot gives its staging folders; choose another {flag}.")
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
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise BlindspotError(f"{shown} exists and is not a folder.")
        if not written_by_blindspot(target):
            raise BlindspotError(f"{shown} exists but was not written by blindspot (no {MARKER} marker); "
                                 f"it is never replaced: move it away or choose another {flag}.")
        if not overwrite:
            raise BlindspotError(f"{shown} already exists; pass --overwrite to replace it or choose another {flag}.")
    state = staging_state(target, fingerprint)
    if state == "foreign" or (state == "other" and not overwrite and fingerprint is not None):
        other = " (another command's staging folder: --overwrite replaces it)" if state == "other" else ""
        raise BlindspotError(f"'{staging_path(beside)}' exists and is not this command's staging folder{other}; "
                             f"move it away or choose another {flag}.")
    _check_lock(target, shown, lock_path(beside))
    parent, named = _nearest_existing(target.parent), _nearest_existing(beside.parent)
    if not parent.is_dir():
        raise BlindspotError(f"{shown}: '{named}' is not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BlindspotError(f"{shown}: the folder '{named}' is not writable.")
    return target


def make_marked_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) and mark it as written by blindspot."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not written_by_blindspot(folder):
            write_json(folder / MARKER, {"written_by": "blindspot", "version": provenance()["blindspot"]})
    except OSError as err:
        raise WriteError(f"cannot create '{folder}' ({err.strerror}).") from None


def make_staging(target: Path, fingerprint: dict | str | None = None) -> Path:
    """Create (or keep) the staging folder of the resolved ``target`` and mark it as this command's; returns it."""
    staging = staging_path(target)
    make_marked_folder(staging)
    write_json(staging / STAGING, {"staging_for": fingerprint, "target": str(target),
                                   "fingerprint": _fingerprint(fingerprint, target)})
    return staging


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


def remove_staging(target: Path, fingerprint: dict | str | None = None, *, any_command: bool = False) -> None:
    """Delete the staging folder of ``target`` if it is this command's (or, ``any_command``, any command's).

    A folder named ``OUT.partial`` that is no staging folder (:func:`staging_state`) is refused, named.
    """
    state = staging_state(target, fingerprint)
    if state == "none":
        return
    if state == "foreign" or (state == "other" and not any_command):
        raise BlindspotError(f"'{staging_path(target)}' is not this command's staging folder; it is never deleted.")
    remove_marked_folder(staging_path(target))


@contextmanager
def result_folder(out: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path | None] = (),
                  keep_staging: bool = False, fingerprint: dict | str | None = None) -> Iterator[Path]:
    """Yield the staging folder ``OUT.partial``; it becomes ``OUT`` only if the block finishes.

    The output rule is checked first (:func:`check_output`), and ``out`` is locked for this command
    (:func:`output_lock`) until the end. The staging folder carries a :data:`STAGING` marker with the
    command's ``fingerprint``: the same command again resumes from it; with ``overwrite`` it is
    cleared first (unless ``keep_staging``: a caller that resumes from it), as is another command's.
    After an interruption or a write fault (full disk, permissions) the staging folder is kept, and
    the message names it, so a long run can resume from what it holds (its ``.cache`` subfolder is
    dropped on success); after a user error it is removed. If ``OUT`` appeared meanwhile, it is
    replaced only with ``overwrite`` and if blindspot wrote it; otherwise the result stays in staging.
    """
    _, target, shown, beside = _shown(out, "--out")
    check_output(out, inputs=inputs, overwrite=overwrite, fingerprint=fingerprint)  # before any lock file is made
    with output_lock(out, fingerprint):
        check_output(out, inputs=inputs, overwrite=overwrite, fingerprint=fingerprint)  # again, now that it is ours
        state = staging_state(target, fingerprint)  # "other" only with overwrite (check_output)
        if state == "other" or (state == "ours" and overwrite and not keep_staging):
            remove_marked_folder(staging_path(target))
        staging, shown_staging = make_staging(target, fingerprint), staging_path(beside)
        resume = (f"The work done so far is in '{shown_staging}': free the space or fix the permission and run the same "
                  "command again to resume.")
        try:
            yield staging
        except WriteError as err:
            raise WriteError(f"{err} {resume}") from None
        except OSError as err:
            raise WriteError(f"cannot write '{err.filename or shown_staging}' ({err.strerror}). {resume}") from None
        except BlindspotError:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _publish(staging, target, overwrite=overwrite, shown=shown, shown_staging=shown_staging)


def _publish(staging: Path, target: Path, *, overwrite: bool, shown: str, shown_staging: Path) -> None:
    """Rename the finished ``staging`` to ``target`` (dropping its cache and staging marker)."""
    if target.exists() or target.is_symlink():
        if not (overwrite and target.is_dir() and written_by_blindspot(target)):
            raise BlindspotError(f"{shown} appeared while this command ran and is not replaced (it needs --overwrite and a "
                                 f"folder blindspot wrote); the finished result is in '{shown_staging}'.")
    try:
        shutil.rmtree(staging / CACHE, ignore_errors=True)
        (staging / STAGING).unlink(missing_ok=True)  # first: a finished result is never taken for a staging folder
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.replaced."))
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    except OSError as err:
        raise WriteError(f"cannot move '{shown_staging}' to {shown} ({err.strerror}).") from None


# --------------------------------------------------------------------------------------------
# one command per output folder

_HELD: dict[Path, int] = {}  # lock files this process holds, with their nesting depth


def _read_lock(path: Path) -> dict | None:
    """The holder recorded in a lock file; ``{}`` if it vanished, None if it cannot be read."""
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _stale(holder: dict | None) -> bool:
    """Whether the holder is gone: the file vanished, or it ran on this host and its process has ended."""
    if holder == {}:
        return True
    if holder is None or holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    if holder["pid"] == os.getpid():
        return True  # this process holds no such lock (:data:`_HELD` is checked first)
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _busy(path: Path, holder: dict | None, shown: str) -> BlindspotError:
    """The refusal naming the holder of the lock file ``path`` (as messages name it) of the output ``shown``."""
    if holder is None:
        return BlindspotError(f"{shown} is locked by '{path}', which cannot be read; if no blindspot command writes there, "
                              "delete that file.")
    return BlindspotError(f"{shown} is in use by another blindspot command ({holder.get('command') or 'blindspot'}, "
                          f"pid {holder.get('pid')} on host {holder.get('host')}); wait until it ends, or delete '{path}' "
                          "if it no longer runs.")


def _check_lock(target: Path, shown: str, named: Path) -> None:
    """Refuse early when another live command holds the lock of ``target`` (``named`` as messages name it)."""
    path = lock_path(target)
    if path in _HELD or not path.exists():
        return
    holder = _read_lock(path)
    if not _stale(holder):
        raise _busy(named, holder, shown)


@contextmanager
def output_lock(out: str | Path, command: dict | str | None = None, *, flag: str = "--out",
                takeover: bool = False) -> Iterator[Path]:
    """Hold the lock file of ``out`` (:func:`lock_path`) while the block runs; yields ``out`` resolved.

    The file is created exclusively (``O_CREAT | O_EXCL``) and records the pid, host and command; a
    second command on the same ``out`` is refused in one sentence naming them. A lock whose process
    has ended on this host is stale and taken over (as is any, with ``takeover``: for a caller that
    already excludes others). The lock is released on every exit, Ctrl-C included; a process may
    take a lock it holds again (nested calls).
    """
    _, target, shown, beside = _shown(out, flag)
    path, named = lock_path(target), lock_path(beside)
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield target
        finally:
            _HELD[path] -= 1
        return
    command = command.get("command") if isinstance(command, dict) else command
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "out": str(target)}
    for _ in range(3):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_UMASK)
        except FileExistsError:
            holder = _read_lock(path)
            if not (takeover or _stale(holder)):
                raise _busy(named, holder, shown) from None
            path.unlink(missing_ok=True)
            continue
        except OSError as err:
            raise WriteError(f"cannot create the lock file '{path}' ({err.strerror}).") from None
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
        break
    else:
        raise _busy(named, _read_lock(path), shown)
    _HELD[path] = 1
    try:
        yield target
    finally:
        del _HELD[path]
        path.unlink(missing_ok=True)

"""Shared fixtures: small NIfTI volumes and image stacks made on the fly."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def brain_volume(shape=(48, 48, 24), seed=0) -> np.ndarray:
    """A float32 'brain': an ellipsoid of textured intensities in (0, 1], background exactly 0."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid**2).sum(axis=0) < 0.8
    values = np.clip(0.3 + 0.4 * rng.random(shape) + 0.2 * grid[0], 0.05, 1.0)
    return np.where(inside, values, 0).astype(np.float32)


def save_nifti(path, volume) -> None:
    nib.save(nib.Nifti1Image(np.asarray(volume), np.eye(4)), str(path))


def brain_volume_folder(folder, n: int, shape=(48, 48, 24), name: str = "case_{k}"):
    """``folder`` (created) holding ``n`` :func:`brain_volume` files ``name.nii.gz`` (volume k has seed k)."""
    folder.mkdir()
    for k in range(n):
        save_nifti(folder / f"{name.format(k=k)}.nii.gz", brain_volume(shape, seed=k))
    return folder


@pytest.fixture
def nifti_folder(tmp_path):
    """Five small volumes in the MOOD layout (sorted names)."""
    return brain_volume_folder(tmp_path / "volumes", 5, name="case_{k:03d}")


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models gain nothing from intra-op threads, and under ``pytest -n 2`` they oversubscribe the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(args, capsys):
    """Run the CLI in-process on ``args`` (any values, turned into strings): ``(exit status, captured out/err)``."""
    from blindspot.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr()


def assert_one_line(code: int, err: str, kind: str, *fragments: str, status: int = 2, pattern: str | None = None) -> None:
    """Exit ``status`` and one ``KIND: ...`` line on stderr holding ``fragments`` (and ``pattern``), no traceback."""
    import re

    lines = [line for line in err.splitlines() if line.strip()]
    assert code == status, err
    assert len(lines) == 1 and lines[0].startswith(f"{kind}: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    if pattern is not None:
        assert re.search(pattern, lines[0]), lines[0]


def assert_one_error(code: int, err: str, *fragments: str, pattern: str | None = None) -> None:
    """A refused command: exit status 2 and one ``error: ...`` line holding ``fragments`` (and ``pattern``), no traceback."""
    assert_one_line(code, err, "error", *fragments, pattern=pattern)


def assert_one_warning(code: int, err: str, *fragments: str) -> None:
    """A completed run that says what it cannot vouch for: exit status 0 and one ``warning: ...`` line, no traceback."""
    assert_one_line(code, err, "warning", *fragments, status=0)


# the fault matrix (tests/cli/test_faults*.py): a working tree to protect, and its hashes

def _hashes(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` (hidden ones included) with its content hash."""
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def snapshot():
    """``snapshot(*roots)``: every file under ``roots`` with its hash, to compare before and after a command."""
    return _hashes


@pytest.fixture
def world(tmp_path, nifti_folder):
    """A working tree: data (NIfTI volumes), a sibling folder with a file that must survive, maps and labels."""
    sibling = tmp_path / "thesis"
    sibling.mkdir()
    (sibling / "chapter1.tex").write_text("years of work")
    maps, labels = tmp_path / "maps", tmp_path / "labels"
    maps.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        label = np.zeros((8, 8), bool)
        label[2:4, 2:4] = True
        np.save(maps / f"c{k}.npy", rng.random((8, 8)) + label)
        np.save(labels / f"c{k}.npy", label)
    return {"root": tmp_path, "data": nifti_folder, "sibling": sibling, "maps": maps, "labels": labels}


# lock files held by a live process, or left by one that has ended


@pytest.fixture
def dead_pid():
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid():
    """The pid of a process that runs while the test does."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()

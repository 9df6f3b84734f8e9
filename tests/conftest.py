"""Shared fixtures: small NIfTI volumes and image stacks made on the fly."""

from __future__ import annotations

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


def assert_one_error(code: int, err: str, *fragments: str, pattern: str | None = None) -> None:
    """A refused command: exit status 2 and one ``error: ...`` line holding ``fragments`` (and ``pattern``), no traceback."""
    import re

    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    if pattern is not None:
        assert re.search(pattern, lines[0]), lines[0]

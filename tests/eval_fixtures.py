"""Tiny data sets in every layout, written on the fly (used by the data, training and evaluation tests)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

SIZE = 24


def brain_slice(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A float 'brain' in [0, 1]: a textured disk, background exactly 0."""
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 < (0.4 * size) ** 2
    return np.where(inside, 0.3 + 0.4 * rng.random((size, size)), 0.0)


def lesion(size: int = SIZE, center=(10, 12), radius: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 < radius**2


def save_png(path: Path, image: np.ndarray) -> None:
    """Save a [0, 1] float image (or a bool mask) as 8-bit grayscale PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.asarray(image, np.float64) * 255).astype(np.uint8)).save(path)


def save_nifti(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4)), str(path))


def make_benchmark(root: Path, *, n_train=4, n_normal=3, n_abnormal=3, seed=0) -> Path:
    """MedIAnomaly layout: images/*.png + data.json (abnormal images have a bright blob)."""
    rng = np.random.default_rng(seed)
    lists = {"train": {"0": []}, "test": {"0": [], "1": []}}
    for group, key, n in (("train", "0", n_train), ("test", "0", n_normal), ("test", "1", n_abnormal)):
        for k in range(n):
            name = f"{group}{key}_{k}.png"
            image = brain_slice(rng)
            if key == "1":
                image[lesion()] = 1.0
            save_png(root / "images" / name, image)
            lists[group][key].append(name)
    (root / "data.json").write_text(json.dumps(lists))
    return root


def make_brats2021(root: Path, *, n_train=4, n_normal=2, n_tumor=3, seed=0) -> Path:
    """BraTS2021 slice layout with flair → seg annotation names."""
    rng = np.random.default_rng(seed)
    for k in range(n_train):
        save_png(root / "train" / f"BraTS2021_{k:05d}_flair_60.png", brain_slice(rng))
    for k in range(n_normal):
        save_png(root / "test" / "normal" / f"BraTS2021_1{k:04d}_flair_30.png", brain_slice(rng))
    for k in range(n_tumor):
        image, mask = brain_slice(rng), lesion(center=(8 + k, 11))
        image[mask] = 1.0
        save_png(root / "test" / "tumor" / f"BraTS2021_2{k:04d}_flair_70.png", image)
        save_png(root / "test" / "annotation" / f"BraTS2021_2{k:04d}_seg_70.png", mask * 0.5)  # label 2 → > 0
    return root


def make_brats_nifti(root: Path, *, n_subjects=3, depth=6, seed=0) -> Path:
    """BraTS NIfTI layout: ROOT/<subject>/<subject>_{flair,t1,seg}.nii.gz, raw (unnormalised) intensities."""
    rng = np.random.default_rng(seed)
    for k in range(n_subjects):
        name = f"BraTS2021_{k:05d}"
        flair = np.stack([brain_slice(rng) for _ in range(depth)], axis=-1) * 800  # (H, W, D)
        seg = np.zeros(flair.shape, np.uint8)
        seg[..., 2:4][lesion()] = (1, 4)[k % 2]
        flair[seg > 0] = 1000
        save_nifti(root / name / f"{name}_flair.nii.gz", flair.astype(np.float32))
        save_nifti(root / name / f"{name}_t1.nii.gz", (flair * 0.5).astype(np.float32))
        save_nifti(root / name / f"{name}_seg.nii.gz", seg)
    return root


def make_folder(root: Path, *, seed=0) -> Path:
    """Generic layout: normal/, abnormal/, masks/ (PNG) and train/."""
    rng = np.random.default_rng(seed)
    for k in range(3):
        save_png(root / "normal" / f"n{k}.png", brain_slice(rng))
        save_png(root / "train" / f"t{k}.png", brain_slice(rng))
    for k in range(2):
        image, mask = brain_slice(rng), lesion(center=(9 + k, 12))
        image[mask] = 1.0
        save_png(root / "abnormal" / f"a{k}.png", image)
        save_png(root / "masks" / f"a{k}.png", mask)
    return root


def make_mood(root: Path, *, n=3, depth=5, seed=0) -> Path:
    """Healthy NIfTI volumes in [0, 1] (MOOD layout), (H, W, D)."""
    rng = np.random.default_rng(seed)
    for k in range(n):
        save_nifti(root / f"case_{k}.nii.gz", np.stack([brain_slice(rng) for _ in range(depth)], -1).astype(np.float32))
    return root


def make_maps(root: Path, *, n=6, kind="npy", seed=0, signed=False, volumes=False) -> dict[str, Path]:
    """maps/, labels/, masks/, images/ folders paired by name; half the cases have a lesion.

    Maps are noisy scores, higher inside the lesion; ``signed`` gives residual-like maps with
    negative values; ``volumes`` writes (H, W, D) arrays (NIfTI axis convention).
    """
    rng = np.random.default_rng(seed)
    folders = {k: root / k for k in ("maps", "labels", "masks", "images")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        shape = (SIZE, SIZE, 4) if volumes else (SIZE, SIZE)
        image = np.stack([brain_slice(rng) for _ in range(4)], -1) if volumes else brain_slice(rng)
        label = np.zeros(shape, bool)
        if k % 2 and volumes:
            label[..., 1:3] = lesion()[..., None]
        elif k % 2:
            label = lesion(center=(8 + k, 12))
        brain = image > 0
        scores = rng.normal(0, 0.3, shape) if signed else np.abs(rng.normal(0, 0.1, shape))
        scores = scores + 0.6 * label
        if signed:
            scores[label] = np.where(rng.random(label.sum()) < 0.5, 0.8, -0.8)
        name = f"case_{k:02d}"
        for folder, array in ((folders["maps"], scores.astype(np.float32)), (folders["labels"], label.astype(np.uint8)),
                              (folders["masks"], brain.astype(np.uint8)), (folders["images"], image.astype(np.float32))):
            if kind == "npy":
                np.save(folder / f"{name}.npy", array)
            else:
                save_nifti(folder / f"{name}.nii.gz", array)
    return folders

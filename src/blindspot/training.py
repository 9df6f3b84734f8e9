"""Training of reconstruction models: presets, training data, the loop, checkpoints and resume.

One call, :func:`train`, trains a model of :mod:`blindspot.models` into a run folder::

    RUN/config.json    model, full training config, data, device, versions, resume history
    RUN/metrics.csv    one row per validation: step, epoch, train loss parts, val_loss, val_ap, speed
    RUN/best_ap.pt     checkpoint with the best validation AP
    RUN/best_loss.pt   checkpoint with the lowest validation loss
    RUN/last.pt        latest checkpoint, with the optimizer state (what resuming needs)
    RUN/tensorboard/   only when ``torch.utils.tensorboard`` can be imported

While training, the folder is ``RUN.partial`` (renamed to ``RUN`` at the end, see
:func:`blindspot.results.result_folder`); ``last.pt`` is saved there at every validation and on
Ctrl-C, and ``train(..., resume=True)`` (or running the same command again) continues from it.

Determinism: every random draw of step ``k`` derives from ``(seed, k)`` alone (the epoch
permutations from ``(seed, epoch)``), so training is a function of the seed, the weights and the
optimizer state; a run stopped at any step and resumed ends with exactly the same weights and
metrics on the CPU (with the same number of threads) as an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from blindspot.anomalies import disk_anomaly
from blindspot.augment import Augmentation
from blindspot.checkpoint import load_checkpoint, save_checkpoint
from blindspot.data import DataOptions, ImageSet, equalize_histogram, list_volumes, mni152_slices, nifti_slices, split_files
from blindspot.data.preprocess import resize
from blindspot.data.mni152 import CANVAS, DEFAULT_SLICES
from blindspot.errors import BlindspotError
from blindspot.metrics import average_precision_batch
from blindspot.results import atomic_write, provenance, result_folder, write_json

__all__ = [
    "MNI152_TRAIN_SLICES",
    "MNI152_VALIDATION_SLICES",
    "NIFTI_TRAIN_SLICES",
    "PRESETS",
    "TrainConfig",
    "TrainingImages",
    "anomaly_maps",
    "cpu_threads",
    "load_training_images",
    "make_config",
    "reconstruct",
    "resize_images",
    "resume_run",
    "select_device",
    "step_seed",
    "train",
]

# ---------------------------------------------------------------------------------------------
# training data

#: Validation slices of the embedded template: axial 62, 66, ..., 98, midway between the test slices
#: (:data:`blindspot.data.mni152.DEFAULT_SLICES` = 60, 64, ..., 96).
MNI152_VALIDATION_SLICES = tuple(range(62, 100, 4))
#: Training slices of the embedded template: the other axial slices of 50..109 (40 slices), i.e.
#: 50..59, the odd slices 61..99 and 100..109; never a test or validation slice.
MNI152_TRAIN_SLICES = tuple(s for s in range(50, 110) if s not in DEFAULT_SLICES and s not in MNI152_VALIDATION_SLICES)
#: Training slices of NIfTI volumes by default (MIDL 2022 protocol: 120-139 along axis 2).
NIFTI_TRAIN_SLICES = tuple(range(120, 140))
#: Share of the training volumes held out for validation (the last ones of the sorted list, at least one).
VALIDATION_FRACTION = 0.05
#: Validation: each validation image gets disk anomalies until there are at least this many.
VALIDATION_MIN_IMAGES = 40
#: Seed of the validation anomalies (fixed, so every run on the same data validates on the same set).
VALIDATION_SEED = 0
#: Disk radius of the validation anomalies at 256 px (scaled by size / 256).
VALIDATION_RADIUS = 20


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Pad images to a square (centred, zeros) and resize them to ``size`` × ``size``.

    The resizing is :func:`blindspot.data.preprocess.resize` (antialiased bilinear; values stay in
    [0, 1] and the brain outline follows the anatomy), shared with evaluation.

    Parameters
    ----------
    images : ndarray, shape (N, H, W)
    size : int

    Returns
    -------
    ndarray of float32, shape (N, size, size)

    Examples
    --------
    >>> resize_images(np.ones((1, 2, 4), np.float32), 4)[0]  # centred on a square; already 4 px
    array([[0., 0., 0., 0.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [0., 0., 0., 0.]], dtype=float32)
    >>> resize_images(np.ones((3, 256, 256), np.float32), 64).shape
    (3, 64, 64)
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise BlindspotError(f"resize_images: images must have shape (N, H, W); got {images.shape}.")
    n, h, w = images.shape
    side = max(h, w)
    if h != w:
        square = np.zeros((n, side, side), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        square[:, top : top + h, left : left + w] = images
        images = square
    if side == size:
        return images.copy()
    return resize(images, size)


@dataclass(frozen=True)
class TrainingImages:
    """Normal training and validation images at the training size, float32 in [0, 1]."""

    train: ImageSet
    validation: ImageSet

    @property
    def source(self) -> dict:
        """What was loaded (recorded in the run's ``config.json``)."""
        return {"train": {**self.train.source, "images": len(self.train)},
                "validation": {**self.validation.source, "images": len(self.validation)}}


def _stack(parts: list[ImageSet], source: dict) -> ImageSet:
    return ImageSet(np.concatenate([p.images for p in parts]), [n for p in parts for n in p.names], source)


def load_training_images(data: DataOptions, *, size: int) -> TrainingImages:
    """The normal images a model is trained and validated on, resized to ``size``.

    * ``data.data == "mni152"``: axial slices :data:`MNI152_TRAIN_SLICES` for training and
      :data:`MNI152_VALIDATION_SLICES` for validation, on the 256 × 256 canvas of
      :func:`blindspot.data.mni152_slices` (``--slices`` does not apply).
    * a folder (or file) of NIfTI volumes: the volumes of ``data.split``; the last
      ``max(1, round(0.05 n))`` of them (sorted) are held out for validation; slices ``data.slices``
      (default :data:`NIFTI_TRAIN_SLICES`, 120-139) along ``data.axis``.

    Optional percentile normalisation and histogram equalisation (``data.normalize``,
    ``data.equalize``) are applied before resizing (:func:`resize_images`).
    """
    if data.data == "mni152":
        if data.slices is not None or data.axis != 2:
            raise BlindspotError(
                "--slices and --axis do not apply to training on the embedded template (it uses fixed axial slices, "
                "see docs/training.md); pass a folder of volumes with --data to choose slices."
            )
        train = mni152_slices(slices=MNI152_TRAIN_SLICES, normalize=data.normalize)
        validation = mni152_slices(slices=MNI152_VALIDATION_SLICES, normalize=data.normalize)
        parts = {"train": [train], "validation": [validation]}
        sources = {"train": train.source, "validation": validation.source}
    else:
        files = split_files(list_volumes(data.data), data.split)
        if len(files) < 2:
            raise BlindspotError(
                f"training on '{data.data}' needs at least 2 volumes in its '{data.split}' split "
                f"(5 % of them, at least one, are held out for validation); found {len(files)}."
            )
        n_val = max(1, round(VALIDATION_FRACTION * len(files)))
        slices = tuple(data.slices) if data.slices is not None else NIFTI_TRAIN_SLICES
        split = {"train": files[:-n_val], "validation": files[-n_val:]}
        # One file at a time, each resized at once, so volumes of different shapes can be mixed.
        parts = {key: [nifti_slices(f, axis=data.axis, slices=slices, normalize=data.normalize) for f in chosen]
                 for key, chosen in split.items()}
        sources = {key: {"data": str(data.data), "split": data.split, "files": [str(f) for f in chosen],
                         "axis": data.axis, "slices": list(slices), "normalize": data.normalize}
                   for key, chosen in split.items()}
    sets = {}
    for key in ("train", "validation"):
        stacked = _stack(parts[key], sources[key])
        images = equalize_histogram(stacked.images) if data.equalize else stacked.images
        sets[key] = ImageSet(resize_images(images, size), stacked.names,
                             {**stacked.source, "equalize": data.equalize, "size": size})
    return TrainingImages(**sets)


# ---------------------------------------------------------------------------------------------
# configuration


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run besides the model and the data (defaults: ``quick``).

    Attributes
    ----------
    preset : str
        Name of the preset the config was made from (a label, recorded in the run).
    size : int
        Images are resized to ``size`` × ``size`` (the model's ``size`` option is set to it).
    steps : int or None
        Optimizer steps in total; ``None`` derives them from ``epochs``.
    epochs : float or None
        Used only when ``steps`` is None: ``steps = ceil(epochs · n_train / batch_size)``.
    batch_size : int
        Images per step (>= 2: batch norm needs two).
    lr, optimizer, weight_decay : float, {"adam", "adamw"}, float
        Constant learning rate, optimizer and its weight decay.
    loss : {"l1", "mse"} or None
        Reconstruction loss (the model's ``loss`` option); None keeps the model's default.
    input_range : (float, float)
        Images in [0, 1] are mapped linearly onto this range before entering the model.
    augment : bool or None
        Random augmentation of training batches (:mod:`blindspot.augment`); None (auto) means on
        for the embedded template and off for NIfTI folders.
    val_every : int
        Validate (and save checkpoints) every ``val_every`` steps and at the last step.
    seed : int
        Seeds the initial weights and every random draw of training.
    """

    preset: str = "quick"
    size: int = 64
    steps: int | None = 300
    epochs: float | None = None
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    loss: str | None = None
    input_range: tuple[float, float] = (0.0, 1.0)
    augment: bool | None = None
    val_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        def fail(field: str, expected: str) -> None:
            raise BlindspotError(f"TrainConfig: {field} must be {expected}; got {getattr(self, field)!r}.")

        if not (isinstance(self.preset, str) and self.preset):
            fail("preset", "a non-empty name")
        if not (_is_int(self.size) and self.size >= 32):
            fail("size", "an integer >= 32 (a power of two for the models)")
        if self.steps is not None and not (_is_int(self.steps) and self.steps >= 1):
            fail("steps", "a positive integer")
        if self.epochs is not None and not (_is_number(self.epochs) and self.epochs > 0):
            fail("epochs", "a positive number")
        if self.steps is None and self.epochs is None:
            fail("steps", "set (or epochs)")
        if not (_is_int(self.batch_size) and self.batch_size >= 2):
            fail("batch_size", "an integer >= 2 (batch norm needs two images)")
        if not (_is_number(self.lr) and self.lr > 0):
            fail("lr", "a positive number")
        if self.optimizer not in ("adam", "adamw"):
            fail("optimizer", "'adam' or 'adamw'")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            fail("weight_decay", "a number >= 0")
        if self.loss not in (None, "l1", "mse"):
            fail("loss", "'l1', 'mse' or None (the model's default)")
        bounds = tuple(self.input_range) if isinstance(self.input_range, (tuple, list)) else ()
        if not (len(bounds) == 2 and all(_is_number(v) for v in bounds) and bounds[0] < bounds[1]):
            fail("input_range", "two numbers (low, high) with low < high")
        object.__setattr__(self, "input_range", (float(bounds[0]), float(bounds[1])))
        if self.augment not in (None, True, False):
            fail("augment", "True, False or None (auto)")
        if not (_is_int(self.val_every) and self.val_every >= 1):
            fail("val_every", "a positive integer")
        if not (_is_int(self.seed) and self.seed >= 0):
            fail("seed", "an integer >= 0")


#: The three presets. ``quick`` trains ``bench-ae`` on the CPU in about a minute; ``pitfalls`` and
#: ``ae4ad`` are the papers' protocols (GPU-sized).
PRESETS: dict[str, TrainConfig] = {
    "quick": TrainConfig(),
    "pitfalls": TrainConfig(preset="pitfalls", size=256, steps=10_000, batch_size=128, lr=1e-3, optimizer="adamw",
                            weight_decay=2e-2, loss="l1", val_every=200),
    "ae4ad": TrainConfig(preset="ae4ad", size=64, steps=None, epochs=250, batch_size=64, lr=1e-3, optimizer="adam",
                         loss="mse", input_range=(-1.0, 1.0), augment=False, val_every=200),
}


def make_config(preset: str = "quick", **overrides: Any) -> TrainConfig:
    """A preset with some values replaced, e.g. ``make_config("pitfalls", steps=500, lr=3e-4)``.

    Overriding ``steps`` alone clears the preset's ``epochs`` and vice versa, so the explicit
    value decides the run length.

    >>> make_config("ae4ad", steps=100).steps, make_config("ae4ad", steps=100).epochs
    (100, None)
    >>> make_config(step=3)
    Traceback (most recent call last):
        ...
    blindspot.errors.BlindspotError: unknown training setting 'step'; valid settings: size, steps, epochs, batch_size, lr, optimizer, weight_decay, loss, input_range, augment, val_every, seed.
    """
    if preset not in PRESETS:
        raise BlindspotError(f"unknown preset '{preset}'; expected one of {', '.join(PRESETS)}.")
    valid = [f.name for f in fields(TrainConfig) if f.name != "preset"]
    unknown = [key for key in overrides if key not in valid]
    if unknown:
        raise BlindspotError(f"unknown training setting '{unknown[0]}'; valid settings: {', '.join(valid)}.")
    if "steps" in overrides and "epochs" not in overrides:
        overrides["epochs"] = None
    if "epochs" in overrides and "steps" not in overrides:
        overrides["steps"] = None
    return replace(PRESETS[preset], **overrides)


def select_device(name: str | torch.device | None = None) -> torch.device:
    """The device to train on: ``name`` if given, else CUDA, then Apple MPS, then the CPU.

    >>> select_device("cpu")
    device(type='cpu')
    """
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise BlindspotError(f"--device must be cpu, cuda, cuda:N or mps; got '{name}'.")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise BlindspotError(f"--device {name} is not available on this machine (CUDA devices: {torch.cuda.device_count()}).")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BlindspotError("--device mps is not available on this machine.")
    return device


# ---------------------------------------------------------------------------------------------
# inference helpers


def _inference(model: torch.nn.Module, images: np.ndarray, fn: Callable, batch_size: int, device) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise BlindspotError(f"images must have shape (N, H, W); got {images.shape}.")
    size = getattr(model, "size", None)
    if size is not None and images.shape[1:] != (size, size):
        raise BlindspotError(
            f"images are {images.shape[1]}×{images.shape[2]} but the model takes {size}×{size} inputs; "
            f"resize them first with blindspot.training.resize_images(images, {size})."
        )
    if not (_is_int(batch_size) and batch_size >= 1):
        raise BlindspotError(f"batch_size must be a positive integer; got {batch_size!r}.")
    device = select_device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    was_training = model.training
    model.eval()
    out = np.empty(images.shape, np.float32)
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunk = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
                x = torch.from_numpy(chunk).unsqueeze(1).to(device)
                out[start : start + len(chunk)] = fn(x)[:, 0].float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def _to_range(x: torch.Tensor, input_range: Sequence[float]) -> torch.Tensor:
    low, high = input_range
    return x if (low, high) == (0.0, 1.0) else x * (high - low) + low


def reconstruct(
    model: torch.nn.Module,
    images: np.ndarray,
    *,
    input_range: Sequence[float] = (0.0, 1.0),
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """The model's reconstructions of ``images``, batched, in eval mode and without gradients.

    Parameters
    ----------
    model : torch.nn.Module
        A reconstruction model taking (B, 1, S, S).
    images : ndarray, shape (N, S, S)
        Values in [0, 1].
    input_range : (float, float)
        The range the model was trained on (``checkpoint["config"]["input_range"]``): images are
        mapped onto it before the model and the reconstruction is mapped back.
    batch_size : int
    device : str, torch.device or None
        None keeps the model where it is; otherwise the model is moved there.

    Returns
    -------
    ndarray of float32, shape (N, S, S)
        Reconstructions in the units of ``images`` ([0, 1] scale; not clipped). The model's
        train/eval mode is restored afterwards.
    """
    low, high = (float(v) for v in input_range)
    return _inference(model, images, lambda x: (model(_to_range(x, (low, high))) - low) / (high - low), batch_size, device)


def anomaly_maps(
    model: torch.nn.Module,
    images: np.ndarray,
    *,
    input_range: Sequence[float] = (0.0, 1.0),
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """``model.anomaly_map`` of each image (its loss residual), batched, in eval mode.

    Same parameters as :func:`reconstruct`. The maps are in the model's input units: with
    ``input_range=(-1, 1)`` an "l1" map is 2× and an "mse" map 4× the residual in [0, 1] units.
    Rankings (and so AP, AUROC and best Dice) do not depend on that scale.

    Returns
    -------
    ndarray of float32, shape (N, S, S); higher = more anomalous.
    """
    low, high = (float(v) for v in input_range)
    return _inference(model, images, lambda x: model.anomaly_map(_to_range(x, (low, high))), batch_size, device)


# ---------------------------------------------------------------------------------------------
# batches and validation

_EPOCH_STREAM, _AUGMENT_STREAM, _MODEL_STREAM = 0, 1, 2


def step_seed(seed: int, step: int, stream: int) -> int:
    """A 64-bit seed for the random draws of one step (or epoch) and one stream, from ``(seed, step)``.

    Deriving every draw from ``(seed, step)`` instead of carrying RNG states makes a resumed run
    draw exactly what the uninterrupted run drew.

    >>> step_seed(0, 5, 1) == step_seed(0, 5, 1) != step_seed(0, 6, 1)
    True
    """
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1, np.uint64)[0])


class _Batches:
    """Training batches: epochs of seeded permutations of the image pool, augmented, in the input range.

    Batch ``k`` holds images ``k·B .. (k+1)·B - 1`` of the concatenated epoch permutations, so it
    depends only on ``(seed, k)``.
    """

    def __init__(self, images: np.ndarray, config: TrainConfig, device: torch.device, augmentation: Augmentation | None):
        self.pool = torch.from_numpy(images).unsqueeze(1).to(device)  # (N, 1, S, S)
        self.n, self.config, self.augmentation = len(images), config, augmentation
        self._permutations: dict[int, np.ndarray] = {}

    def indices(self, step: int) -> np.ndarray:
        b = self.config.batch_size
        positions = np.arange(step * b, (step + 1) * b)
        epochs = positions // self.n
        for old in [e for e in self._permutations if e < epochs[0]]:
            del self._permutations[old]
        out = np.empty(b, np.int64)
        for epoch in np.unique(epochs):
            if epoch not in self._permutations:
                rng = np.random.default_rng([self.config.seed, int(epoch), _EPOCH_STREAM])
                self._permutations[epoch] = rng.permutation(self.n)
            chosen = epochs == epoch
            out[chosen] = self._permutations[epoch][positions[chosen] % self.n]
        return out

    def __call__(self, step: int) -> torch.Tensor:
        x = self.pool[torch.from_numpy(self.indices(step)).to(self.pool.device)]
        if self.augmentation is not None:
            generator = torch.Generator(device=self.pool.device)
            generator.manual_seed(step_seed(self.config.seed, step, _AUGMENT_STREAM))
            x = self.augmentation(x, generator)
        return _to_range(x, self.config.input_range)


@dataclass(frozen=True)
class _Validation:
    normal: np.ndarray  # (V, S, S) normal validation images
    anomalous: np.ndarray  # (M, S, S) with one disk anomaly each (M >= VALIDATION_MIN_IMAGES)
    labels: np.ndarray  # (M, S, S) bool
    radius: float


def _validation_set(images: np.ndarray) -> _Validation:
    """Disk anomalies (radius 20 at 256 px, intensity uniform in [0, 1]) on tiled validation images."""
    repeats = math.ceil(VALIDATION_MIN_IMAGES / len(images))
    tiled = np.tile(images, (repeats, 1, 1))
    rng = np.random.default_rng(VALIDATION_SEED)
    radius = VALIDATION_RADIUS * images.shape[-1] / CANVAS
    anomalies = disk_anomaly(tiled, rng.uniform(0, 1, len(tiled)).astype(np.float32), radius=radius, rng=rng)
    return _Validation(images, anomalies.images, anomalies.labels, radius)


def _evaluate(model, validation: _Validation, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """Validation loss (reconstruction loss of the normal images) and mean AP of the disk anomalies."""
    maps = anomaly_maps(model, validation.anomalous, input_range=config.input_range, batch_size=config.batch_size, device=device)
    ap = float(average_precision_batch(validation.labels, maps).mean())
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(validation.normal), config.batch_size):
            x = _to_range(torch.from_numpy(validation.normal[start : start + config.batch_size]).unsqueeze(1).to(device),
                          config.input_range)
            total += float(model.reconstruction_loss(model(x), x)) * len(x)
    model.train()
    return {"val_loss": total / len(validation.normal), "val_ap": ap}


# ---------------------------------------------------------------------------------------------
# run folder: logging, interruption, resume


class _Log:
    """Running sums of the loss parts and timings since the last row; rows go to metrics.csv (+ TensorBoard)."""

    def __init__(self, folder: Path, state: dict | None = None):
        self.path = folder / "metrics.csv"
        state = state or {}
        self.columns: list[str] = state.get("columns", [])
        self.sums: dict[str, float] = state.get("sums", {})
        self.count: int = state.get("count", 0)
        self.seconds: float = state.get("seconds", 0.0)  # wall time of whole steps
        self.model_seconds: float = state.get("model_seconds", 0.0)  # forward + backward + optimizer
        self._elapsed_before = state.get("elapsed", 0.0)  # wall time of earlier sessions of this run
        self._began = time.perf_counter()
        self.tensorboard = _tensorboard(folder)

    def state(self) -> dict:
        return {"columns": self.columns, "sums": dict(self.sums), "count": self.count, "seconds": self.seconds,
                "model_seconds": self.model_seconds, "elapsed": self.elapsed}

    @property
    def elapsed(self) -> float:
        """Wall time of the whole run so far (validation and checkpoints included, over resumes)."""
        return self._elapsed_before + time.perf_counter() - self._began

    def add(self, parts: dict[str, float], seconds: float, model_seconds: float) -> None:
        if not self.columns:
            self.columns = ["step", "epoch", *[f"train_{k}" for k in parts], "val_loss", "val_ap",
                            "images_per_s", "outside_model", "elapsed_s"]
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1
        self.seconds += seconds
        self.model_seconds += model_seconds

    def truncate(self, step: int) -> None:
        """Drop rows after ``step`` (written after the checkpoint being resumed from)."""
        if not self.path.exists():
            return
        with self.path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        kept = rows[:1] + [row for row in rows[1:] if int(row[0]) <= step]
        if len(kept) < len(rows):
            with atomic_write(self.path, newline="") as handle:
                csv.writer(handle).writerows(kept)

    def row(self, step: int, epoch: float, batch_size: int, metrics: dict[str, float]) -> dict[str, float]:
        """Write one row (means since the last row) and reset the sums; returns the row's numbers."""
        train = {f"train_{k}": v / max(self.count, 1) for k, v in self.sums.items()}
        values = {**train, "val_loss": metrics["val_loss"], "val_ap": metrics["val_ap"]}
        speed = self.count * batch_size / self.seconds if self.seconds > 0 else float("nan")
        outside = 1 - self.model_seconds / self.seconds if self.seconds > 0 else float("nan")
        cells = [str(step), f"{epoch:.4f}", *[repr(values[c]) for c in self.columns[2:-3]],
                 f"{speed:.2f}", f"{outside:.4f}", f"{self.elapsed:.1f}"]
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(self.columns)
            writer.writerow(cells)
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key.replace("_", "/", 1), value, step)
            self.tensorboard.add_scalar("speed/images_per_s", speed, step)
        self.sums, self.count, self.seconds, self.model_seconds = {}, 0, 0.0, 0.0
        return values

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(folder / "tensorboard"))


@contextmanager
def _deferred_interrupt() -> Iterator[dict]:
    """Turn the first Ctrl-C into a flag checked between steps (a second one interrupts at once).

    Stopping only between steps means ``last.pt`` is never written from half-updated weights.
    Signal handlers can only be set from the main thread; elsewhere Ctrl-C is not intercepted.
    """
    flag = {"interrupted": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        flag["interrupted"] = True
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _plain(value: Any) -> Any:
    """JSON-normal form (tuples become lists) for comparing configs with stored ones."""
    return json.loads(json.dumps(value))


def _model_kwargs(config: TrainConfig, options: dict) -> dict:
    """Model options with ``size`` (and ``loss`` when the config sets it) taken from the config."""
    kwargs = dict(options)
    for key, value, flag in (("size", config.size, "--size"), ("loss", config.loss, "--loss")):
        if value is None:
            continue
        if key in kwargs and kwargs[key] != value:
            raise BlindspotError(f"model option {key}={kwargs[key]!r} conflicts with {key}={value!r} of the training config; set it with {flag}.")
        kwargs[key] = value
    return kwargs


def _checkpoint_to_resume(out: Path, staging: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """The ``last.pt`` a run continues from, or None for a fresh run (see :func:`train`)."""
    if resume:
        for folder in (staging, out):
            if (folder / "last.pt").is_file():
                return folder / "last.pt"
        raise BlindspotError(f"'{out}' holds no checkpoint to resume (no last.pt in it or in '{staging}'); "
                             "expected a run folder written by blindspot train.")
    if overwrite:
        shutil.rmtree(staging, ignore_errors=True)
        return None
    if out.exists():
        raise BlindspotError(f"run folder '{out}' already exists; pass --resume {out} to train it further or --overwrite to start again.")
    if (staging / "last.pt").is_file():
        return staging / "last.pt"  # the same command again continues an interrupted run
    shutil.rmtree(staging, ignore_errors=True)  # an attempt that stopped before its first checkpoint
    return None


def _check_same_run(checkpoint: dict, source: Path, model_config: dict, run_config: dict, *, resume: bool) -> None:
    """Resuming may change ``steps`` (and the device) only; anything else is a different run."""
    hint = "only --steps, --device and --threads can change when resuming" if resume else "pass --overwrite to start again"
    stored_name, name = checkpoint["model"].get("name"), model_config["name"]
    if stored_name != name:
        raise BlindspotError(f"cannot resume '{source.parent}' as a '{name}' model: its checkpoint holds a '{stored_name}' model.")
    if _plain(checkpoint["model"]) != _plain(model_config):
        raise BlindspotError(f"'{source}' was trained with model options {checkpoint['model']}, not {model_config} ({hint}).")
    stored, wanted = _plain(checkpoint["config"]), _plain(run_config)
    for key in wanted:
        if key not in ("steps", "epochs") and stored.get(key) != wanted[key]:
            raise BlindspotError(f"'{source}' was trained with {key}={stored.get(key)!r}, not {wanted[key]!r} ({hint}).")


def cpu_threads(threads: int | None = None) -> int:
    """Intra-op threads for training on the CPU: ``threads``, or one core fewer than available.

    Leaving a core free matters on small shared machines: with as many threads as cores, every
    parallel region waits for the slowest core, so one core kept busy by another process made
    ``bench-ae`` training on 2 cores 2-40× slower with two threads, while one thread kept its speed
    (``benchmarks/training.md``). Never more than torch's current setting.
    """
    if threads is not None:
        if not (_is_int(threads) and threads >= 1):
            raise BlindspotError(f"--threads must be a positive integer; got {threads!r}.")
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cores - 1))


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads (None: leave them) and restore them afterwards."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


# ---------------------------------------------------------------------------------------------
# the training loop


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    model_name: str,
    model_options: dict | None = None,
    data: DataOptions = DataOptions(),
    resume: bool = False,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    threads: int | None = None,
) -> Path:
    """Train ``model_name`` on normal images into the run folder ``out``; returns ``out``.

    Parameters
    ----------
    config : TrainConfig
        From :func:`make_config`. ``config.size`` (and ``config.loss`` unless None) become the
        model's ``size`` and ``loss`` options.
    out : str or Path
        Run folder (see the module docstring for its files).
    model_name, model_options : str, dict
        ``blindspot.models.create_model(model_name, **model_options)``, e.g. ``"bench-ae", {"d": 16}``.
    data : DataOptions
        Training data (see :func:`load_training_images`).
    resume : bool
        Continue the run in ``out`` (or ``out.partial``) from its ``last.pt`` up to
        ``config.steps`` steps in total. Everything else must be as the run was started; an
        unfinished ``out.partial`` is also continued without ``resume`` when all settings match
        (running the same command again after Ctrl-C).
    device : str, torch.device or None
        None picks CUDA, then MPS, then the CPU (:func:`select_device`).
    overwrite : bool
        Replace an existing ``out`` (and discard an unfinished ``out.partial``).
    threads : int or None
        Intra-op threads on the CPU during training (restored afterwards); None: :func:`cpu_threads`.
        Bitwise reproducibility needs the same number of threads.

    Returns
    -------
    Path
        ``out``, complete: ``config.json``, ``metrics.csv``, ``best_ap.pt``, ``best_loss.pt``, ``last.pt``.

    Raises
    ------
    BlindspotError
        Unknown model or bad model option, ``out`` exists (without ``resume``/``overwrite``), no
        checkpoint to resume, a checkpoint of another model or settings, bad data options, or a
        loss that became NaN/infinite (lower the learning rate).
    KeyboardInterrupt
        After Ctrl-C, once the current step is done and ``out.partial/last.pt`` is saved.
    """
    from blindspot.models import create_model

    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    if resume and overwrite:
        raise BlindspotError("--resume and --overwrite cannot be combined.")
    device = select_device(device)
    threads = cpu_threads(threads) if device.type == "cpu" else None
    torch.manual_seed(config.seed)  # the initial weights
    model = create_model(model_name, **_model_kwargs(config, model_options or {}))  # fails before any file is touched
    source = _checkpoint_to_resume(out, staging, resume=resume, overwrite=overwrite)
    checkpoint = load_checkpoint(source) if source is not None else None
    images = load_training_images(data, size=config.size)
    if config.steps is None:
        config = replace(config, steps=math.ceil(config.epochs * len(images.train) / config.batch_size))
    run_config = {**asdict(config), "data": asdict(data)}
    start = 0
    if checkpoint is not None:
        _check_same_run(checkpoint, source, model.config, run_config, resume=resume)
        start = checkpoint["step"]
        if start > config.steps:
            raise BlindspotError(f"run '{out}' is already at step {start}; pass --steps greater than {start} to train it further.")
        if source.parent == out:
            if start == config.steps:
                return out  # finished at this length already
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(out, staging)  # continue in a copy; `out` stays intact until the end

    augmentation = Augmentation() if (config.augment if config.augment is not None else data.data == "mni152") else None
    validation = _validation_set(images.validation.images)
    batches = _Batches(images.train.images, config, device, augmentation)
    model.to(device).train()
    optimizer = _make_optimizer(config, model)
    try:
        with result_folder(out, overwrite=True) as folder, _torch_threads(threads):
            if checkpoint is not None:
                model.load_state_dict(checkpoint["state_dict"])
                optimizer.load_state_dict(checkpoint["optimizer"])
            previous = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
            write_json(folder / "config.json", {
                "command": "train",
                "model": model.config,
                "config": run_config,
                "seed": config.seed,
                "device": str(device),
                "threads": threads,
                "training_data": images.source,
                "augmentation": asdict(augmentation) if augmentation is not None else None,
                "validation": {"anomalous_images": len(validation.anomalous), "radius": validation.radius,
                               "intensity": "uniform in [0, 1]", "seed": VALIDATION_SEED},
                "history": [*previous.get("history", []), {"from_step": start, "to_step": config.steps, "device": str(device)}],
                "versions": {**provenance(), "torch": torch.__version__},
            })
            _loop(folder, model, optimizer, batches, validation, config, run_config, checkpoint, device)
    except _Diverged as err:  # converted here: a BlindspotError inside result_folder would delete the checkpoints
        raise BlindspotError(str(err)) from None
    return out


class _Diverged(Exception):
    """The loss became NaN or infinite (reported as a BlindspotError once the staging folder is safe)."""


def _loop(folder: Path, model, optimizer, batches: _Batches, validation: _Validation, config: TrainConfig,
          run_config: dict, checkpoint: dict | None, device: torch.device) -> None:
    """Steps ``checkpoint["step"] .. config.steps``: train, validate every ``val_every`` steps, save checkpoints."""
    start = checkpoint["step"] if checkpoint is not None else 0
    log = _Log(folder, checkpoint["extra"]["log"] if checkpoint is not None else None)
    log.truncate(start)
    best = dict(checkpoint["extra"]["best"]) if checkpoint is not None else {"val_ap": -math.inf, "val_loss": math.inf}
    metrics = dict(checkpoint["metrics"]) if checkpoint is not None else {}

    def save(name: str, step: int, with_optimizer: bool) -> None:
        save_checkpoint(folder / name, model, step=step, config=run_config, metrics=metrics,
                        optimizer=optimizer if with_optimizer else None, extra={"best": best, "log": log.state()})

    progress = _progress(config.steps, start, model.config["name"])
    running = None
    try:
        with _deferred_interrupt() as flag:
            for step in range(start, config.steps):
                done = step + 1
                began = time.perf_counter()
                x = batches(step)
                model_began = time.perf_counter()
                torch.manual_seed(step_seed(config.seed, step, _MODEL_STREAM))  # model randomness (VAE, CeAE, ...)
                loss, parts = model.training_loss(x)
                if not math.isfinite(parts["total"]):
                    raise _Diverged(f"the training loss became {parts['total']} at step {done}; lower --lr and start again "
                                    f"with --overwrite (the checkpoints of the last validation are in '{folder}').")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                model_seconds = time.perf_counter() - model_began
                running = parts["total"] if running is None else 0.95 * running + 0.05 * parts["total"]
                progress.update(1)
                if done % 10 == 0:
                    progress.set_postfix_str(f"loss {running:.4g}", refresh=False)
                log.add(parts, time.perf_counter() - began, model_seconds)
                if done % config.val_every == 0 or done == config.steps:
                    metrics = {"step": done, **_evaluate(model, validation, config, device)}
                    metrics.update(log.row(done, done * config.batch_size / batches.n, config.batch_size, metrics))
                    if metrics["val_ap"] > best["val_ap"]:
                        best.update(val_ap=metrics["val_ap"], val_ap_step=done)
                        save("best_ap.pt", done, with_optimizer=False)
                    if metrics["val_loss"] < best["val_loss"]:
                        best.update(val_loss=metrics["val_loss"], val_loss_step=done)
                        save("best_loss.pt", done, with_optimizer=False)
                    save("last.pt", done, with_optimizer=True)
                    progress.set_postfix_str(f"loss {running:.4g}, val AP {metrics['val_ap']:.3f}", refresh=False)
                if flag["interrupted"] and done < config.steps:
                    save("last.pt", done, with_optimizer=True)
                    raise KeyboardInterrupt
    finally:
        progress.close()
        log.close()


def _progress(total: int, initial: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"train {name}", unit="step", dynamic_ncols=True, disable=None)


def resume_run(
    out: str | Path,
    *,
    steps: int | None = None,
    device: str | torch.device | None = None,
    model_name: str | None = None,
    threads: int | None = None,
) -> Path:
    """Continue the run in ``out`` with the settings stored in its ``last.pt`` (``--resume RUN``).

    Parameters
    ----------
    out : str or Path
        The run folder (``RUN`` or ``RUN.partial``).
    steps : int or None
        Total steps to reach (default: the run's own ``steps``, i.e. finish an interrupted run).
    device : str, torch.device or None
    model_name : str or None
        When given, it must be the model of the run (a guard against resuming the wrong folder).
    threads : int or None
        As in :func:`train`.
    """
    out = Path(out)
    if out.name.endswith(".partial"):
        out = out.with_name(out.name[: -len(".partial")])
    staging = out.with_name(out.name + ".partial")
    source = _checkpoint_to_resume(out, staging, resume=True, overwrite=False)
    checkpoint = load_checkpoint(source)
    options = dict(checkpoint["model"])
    name = options.pop("name", None)
    if model_name is not None and model_name != name:
        raise BlindspotError(f"cannot resume '{out}' as a '{model_name}' model: its checkpoint holds a '{name}' model.")
    stored = dict(checkpoint["config"])
    try:
        data = dict(stored.pop("data"))
        if data.get("slices") is not None:
            data["slices"] = tuple(data["slices"])
        data, config = DataOptions(**data), TrainConfig(**stored)
    except (KeyError, TypeError):
        raise BlindspotError(f"'{source}' does not hold a complete training config; it was not written by blindspot train.") from None
    if steps is not None:
        config = replace(config, steps=steps)
    return train(config, out, model_name=name, model_options=options, data=data, resume=True, device=device,
                 threads=threads)

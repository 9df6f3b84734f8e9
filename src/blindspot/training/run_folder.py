"""The run folder's bookkeeping: the metrics log, Ctrl-C between steps, what a run resumes from, threads."""

from __future__ import annotations

import csv
import json
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import torch

from blindspot.data import DataConfig
from blindspot.errors import BlindspotError
from blindspot.execution import cores
from blindspot.results import atomic_write, remove_staging, staging_state
from blindspot.training.config import TrainConfig, is_int

#: The fingerprint of a training's staging folder (:func:`blindspot.results.result_folder`).
TRAIN = "train"


class MetricsLog:
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
def deferred_interrupt() -> Iterator[dict]:
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


def training_length(steps: int, batch_size: int, n_images: int) -> dict:
    """What a training of ``steps`` optimizer steps of ``batch_size`` on ``n_images`` images did, with one sentence.

    A preset's epochs become steps (rounded up), so the epochs really trained may differ from the
    preset's; this states them from the steps, e.g. ``258 steps (≈ 250.2 epochs of 66 images, batch
    64, 16,512 images seen)``.
    """
    seen = steps * batch_size
    epochs = seen / n_images
    sentence = (f"{steps:,} step{'s' * (steps != 1)} (≈ {epochs:,.1f} epochs of {n_images:,} images, batch {batch_size}, "
                f"{seen:,} images seen)")
    return {"steps": steps, "batch_size": batch_size, "train_images": n_images, "images_seen": seen, "epochs": epochs,
            "summary": sentence}


def plain_json(value: Any) -> Any:
    """JSON-normal form (tuples become lists) for comparing configs with stored ones."""
    return json.loads(json.dumps(value))


def model_kwargs(config: TrainConfig, options: dict) -> dict:
    """Model options with ``size`` (and ``loss`` when the config sets it) taken from the config."""
    kwargs = dict(options)
    for key, value, flag in (("size", config.size, "size"), ("loss", config.loss, "loss")):
        if value is None:
            continue
        if key in kwargs and kwargs[key] != value:
            raise BlindspotError(f"model option {key}={kwargs[key]!r} conflicts with {key}={value!r} of the training config; set it as `{flag}`.")
        kwargs[key] = value
    return kwargs


def absolute_data_path(data: str) -> str | None:
    """The absolute path of ``data`` as typed (None for the embedded template), recorded in every checkpoint so
    that a run resumes from any working directory."""
    return None if data == "mni152" else str(Path(data).expanduser().absolute())


def located(data: DataConfig, recorded: str | None) -> DataConfig:
    """``data`` where it lies: as typed, unless it is relative to another working directory than the one the run
    began in (``recorded``: :func:`absolute_data_path` then), where it is read from ``recorded``."""
    if recorded is None or absolute_data_path(data.data) == recorded:
        return data
    return replace(data, data=recorded)


def run_exists_message(out: Path) -> str:
    return f"run folder '{out}' already exists; pass `resume` to train it further or `overwrite` to start again."


def checkpoint_to_resume(out: Path, staging: Path, *, resume: bool, overwrite: bool) -> Path | None:
    """The ``last.pt`` a run continues from, or None for a fresh run (see :func:`train`).

    ``staging`` is read only when it is this training's staging folder (its marker, see
    :func:`blindspot.results.staging_state`); only such folders are ever removed.
    """
    target = out.resolve()
    state = staging_state(target, TRAIN)
    if state == "foreign" or (state == "other" and not overwrite):
        raise BlindspotError(f"'{staging}' exists and is not this training's staging folder; move it away or choose "
                             "another `out`.")
    if resume:
        for folder in ((staging,) if state == "ours" else ()) + (out,):
            if (folder / "last.pt").is_file():
                return folder / "last.pt"
        raise BlindspotError(f"'{out}' holds no checkpoint to resume (no last.pt in it or in '{staging}'); "
                             "expected a run folder written by blindspot train.")
    if overwrite:
        remove_staging(target, TRAIN, any_command=True)
        return None
    if out.exists():
        raise BlindspotError(run_exists_message(out))
    if state == "ours" and (staging / "last.pt").is_file():
        return staging / "last.pt"  # the same command again continues an interrupted run
    remove_staging(target, TRAIN)  # an attempt that stopped before its first checkpoint
    return None


def check_same_run(checkpoint: dict, source: Path, model_config: dict, run_config: dict, *, resume: bool) -> None:
    """Resuming may change ``steps`` (and the device) only; anything else is a different run."""
    hint = "only `steps`, `device` and `threads` can change when resuming" if resume else "overwrite to start again"
    stored_name, name = checkpoint["model"].get("name"), model_config["name"]
    if stored_name != name:
        raise BlindspotError(f"cannot resume '{source.parent}' as a '{name}' model: its checkpoint holds a '{stored_name}' model.")
    if plain_json(checkpoint["model"]) != plain_json(model_config):
        raise BlindspotError(f"'{source}' was trained with model options {checkpoint['model']}, not {model_config} ({hint}).")
    stored, wanted = plain_json(checkpoint["config"]), plain_json(run_config)
    for key in wanted:
        if key in ("steps", "epochs") or (key == "data_path" and key not in stored):  # runs of earlier versions lack it
            continue
        if stored.get(key) != wanted[key]:
            raise BlindspotError(f"'{source}' was trained with {key}={stored.get(key)!r}, not {wanted[key]!r} ({hint}).")


def cpu_threads(threads: int | None = None) -> int:
    """Intra-op threads for training on the CPU: ``threads``, or one core fewer than available.

    Leaving a core free matters on small shared machines: with as many threads as cores, every
    parallel region waits for the slowest core, so one core kept busy by another process made
    ``bench-ae`` training on 2 cores 2-40× slower with two threads, while one thread kept its speed
    (``benchmarks/training.md``). Never more than torch's current setting.
    """
    if threads is not None:
        if not (is_int(threads) and threads >= 1):
            raise BlindspotError(f"`threads` must be a positive integer; got {threads!r}.")
        return threads
    return max(1, min(torch.get_num_threads(), cores() - 1))


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

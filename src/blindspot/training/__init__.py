"""Training of reconstruction models: the loop, its batches and validation, checkpoints and resume.

Configurations and presets are in :mod:`blindspot.training.config`; the run folder's bookkeeping
(metrics log, Ctrl-C, resuming, threads) in :mod:`blindspot.training.run_folder`.

One call, :func:`train`, trains a model of :mod:`blindspot.models` into a run folder::

    RUN/config.json    model, full training config, data, device, versions, resume history, and what the
                       training did: steps, epochs, images seen, batch size (``length``)
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

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from blindspot.anomalies import synthetic_anomalies
from blindspot.data import DataConfig, load_training, resolve
from blindspot.data.augment import Augmentation
from blindspot.errors import BlindspotError
from blindspot.metrics import average_precision_batch
from blindspot.models import create_model
from blindspot.models.checkpoint import load_checkpoint, save_checkpoint
from blindspot.models.device import select_device, torch_threads
from blindspot.models.inference import anomaly_maps, to_input_range
from blindspot.progress import progress
from blindspot.results import (
    check_output,
    input_hashes,
    make_staging,
    output_lock,
    provenance,
    remove_staging,
    result_folder,
    staging_path,
    write_json,
    written_by_blindspot,
)
from blindspot.training.config import PRESETS, TrainConfig, make_config
from blindspot.training.run_folder import (
    TRAIN,
    MetricsLog,
    check_same_run,
    checkpoint_to_resume,
    absolute_data_path,
    cpu_threads,
    deferred_interrupt,
    located,
    make_optimizer,
    model_kwargs,
    run_exists_message,
    training_length,
)

__all__ = ["PRESETS", "NothingToDo", "TrainConfig", "cpu_threads", "make_config", "resume_run", "step_seed", "train"]

#: Validation: the validation images are tiled until there are at least this many anomalous ones.
VALIDATION_MIN_IMAGES = 40
#: Seed of the validation anomalies (fixed, so every run on the same data validates on the same set).
VALIDATION_SEED = 0
#: Disk radius of the validation anomalies at 256 px (scaled with the image size).
VALIDATION_RADIUS = 20


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
        return to_input_range(x, self.config.input_range)


@dataclass(frozen=True)
class _Validation:
    normal: np.ndarray  # (V, S, S) normal validation images
    anomalous: np.ndarray  # (M, S, S) with one disk anomaly each (M >= VALIDATION_MIN_IMAGES)
    labels: np.ndarray  # (M, S, S) bool
    radius: float


def _validation_set(images: np.ndarray) -> _Validation:
    """Disk anomalies (radius 20 at 256 px, intensity uniform in [0, 1]) on tiled validation images.

    Drawn by the synthetic test set's generator (:func:`blindspot.anomalies.synthetic_anomalies`).
    """
    tiled = np.tile(images, (math.ceil(VALIDATION_MIN_IMAGES / len(images)), 1, 1))
    radius = VALIDATION_RADIUS * images.shape[-1] / 256
    anomalies, _ = synthetic_anomalies(tiled, seed=VALIDATION_SEED, kinds=("disk",), radius=(radius, radius))
    return _Validation(images, anomalies.images, anomalies.labels, radius)


def _evaluate(model, validation: _Validation, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """Validation loss (reconstruction loss of the normal images) and mean AP of the disk anomalies."""
    maps = anomaly_maps(model, validation.anomalous, batch_size=config.batch_size, device=device)
    ap = float(average_precision_batch(validation.labels, maps).mean())
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(validation.normal), config.batch_size):
            x = to_input_range(torch.from_numpy(validation.normal[start : start + config.batch_size]).unsqueeze(1).to(device),
                               config.input_range)
            total += float(model.reconstruction_loss(model(x), x)) * len(x)
    model.train()
    return {"val_loss": total / len(validation.normal), "val_ap": ap}


# ---------------------------------------------------------------------------------------------
# the training loop


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    model_name: str,
    model_options: dict | None = None,
    data: DataConfig = DataConfig(),
    resume: bool = False,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    threads: int | None = None,
    data_path: str | None = None,
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
    data : DataConfig
        Training data: the healthy images of its ``train`` split, prepared at ``config.size``
        (:func:`blindspot.data.load_training`; the last 5 % of the volumes validate). The model
        records this preparation, so evaluating it prepares images the same way.
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
    data_path : str or None
        The absolute path of ``data`` when the run began (recorded in its checkpoints): a relative
        ``data`` is read from there when run from another working directory (:func:`resume_run`).

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
    NothingToDo
        ``resume`` of a finished run that is already at ``config.steps`` (nothing is written).
    KeyboardInterrupt
        After Ctrl-C, once the current step is done and ``out.partial/last.pt`` is saved.
    """
    out = Path(out).expanduser()
    if resume and overwrite:
        raise BlindspotError("resume and overwrite cannot be combined.")
    # An existing run is refused unless resumed or overwritten, naming both (check_output's message
    # names only overwrite); then the output rule, and the run folder is locked while it trains.
    if out.is_dir() and written_by_blindspot(out) and not (resume or overwrite):
        raise BlindspotError(run_exists_message(out))
    typed, data = data.data, located(data, data_path)
    check_output(out, inputs=[data.data], overwrite=resume or overwrite, fingerprint=TRAIN, flag="`out`")
    with output_lock(out, TRAIN, flag="`out`"):
        return _train(config, out, model_name, model_options, data, typed, resume, device, overwrite, threads)


def _train(config: TrainConfig, out: Path, model_name: str, model_options: dict | None, data: DataConfig, typed: str,
           resume: bool, device, overwrite: bool, threads: int | None) -> Path:
    """:func:`train`, holding the lock of ``out``; ``data`` where it lies, ``typed`` its path as given."""
    staging = staging_path(out)
    if data.preparation.size not in (None, config.size):
        raise BlindspotError(f"`size` {data.preparation.size} of the data preparation conflicts with the training size {config.size}.")
    data = resolve(data.with_preparation(size=config.size), default_split="train")
    if data.layout == "nifti" and Path(data.data).is_file():  # no split of it has the 2 volumes validation needs
        raise BlindspotError(f"`data` '{data.data}' is a single volume; training validates on held-out volumes and needs "
                             "at least 2, so give a folder of NIfTI volumes.")
    device = select_device(device)
    threads = cpu_threads(threads) if device.type == "cpu" else None
    torch.manual_seed(config.seed)  # the initial weights
    model = create_model(model_name, **model_kwargs(config, model_options or {}))  # fails before any file is touched
    model.input_range = config.input_range  # the data convention it is trained in; stored in every checkpoint
    model.preparation = data.preparation.record()  # so evaluation prepares images the same way
    source = checkpoint_to_resume(out, staging, resume=resume, overwrite=overwrite)
    checkpoint = load_checkpoint(source) if source is not None else None
    train_set, val_set = load_training(data, hold_out=config.hold_out)
    if config.steps is None:
        config = replace(config, steps=math.ceil(config.epochs * len(train_set) / config.batch_size))
    run_config = {**asdict(config), "data": replace(data, data=typed).record(), "data_path": absolute_data_path(data.data)}
    start = 0
    if checkpoint is not None:
        check_same_run(checkpoint, source, model.config, run_config, resume=resume)
        start = checkpoint["step"]
        if start > config.steps:
            raise BlindspotError(f"run '{out}' is already at step {start}; give more than {start} `steps` to train it further.")
        if source.parent == out:
            if start == config.steps:
                raise NothingToDo(f"run '{out}' is already at step {start}; nothing was left to do (give more `steps` to "
                                  "train it further).")
            remove_staging(out.resolve(), TRAIN)
            shutil.copytree(out, staging)  # continue in a copy; `out` stays intact until the end
            make_staging(out.resolve(), TRAIN)

    augment = config.augment if config.augment is not None else data.layout == "mni152"
    augmentation = Augmentation() if augment else None
    validation = _validation_set(val_set.images)
    batches = _Batches(train_set.images, config, device, augmentation)
    model.to(device).train()
    optimizer = make_optimizer(config, model)
    try:
        with result_folder(out, overwrite=resume or overwrite, inputs=[data.data], keep_staging=True, fingerprint=TRAIN
                           ) as folder, torch_threads(threads):
            if checkpoint is not None:
                model.load_state_dict(checkpoint["state_dict"])
                optimizer.load_state_dict(checkpoint["optimizer"])
            previous = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
            write_json(folder / "config.json", {
                "command": "train",
                "model": model.config,
                "config": run_config,
                "resolved": {"layout": data.layout, "split": data.split, "loss": model.loss, "augment": augment,
                             "steps": config.steps, "epochs": config.steps * config.batch_size / len(train_set),
                             "input_range": list(config.input_range), "hold_out": config.hold_out},
                "length": training_length(config.steps, config.batch_size, len(train_set)),
                "seed": config.seed,
                "device": str(device),
                "threads": threads,
                "training_data": {"train": {**train_set.source, "images": len(train_set)},
                                  "validation": {**val_set.source, "images": len(val_set)}},
                "augmentation": asdict(augmentation) if augmentation is not None else None,
                "validation": {"anomalous_images": len(validation.anomalous), "radius": validation.radius,
                               "intensity": "uniform in [0, 1]", "seed": VALIDATION_SEED},
                "history": [*previous.get("history", []), {"from_step": start, "to_step": config.steps, "device": str(device)}],
                "input_hashes": input_hashes(sorted({*train_set.source["files"], *val_set.source["files"]})),
                "versions": provenance(),
            })
            _loop(folder, model, optimizer, batches, validation, config, run_config, checkpoint, device)
    except _Diverged as err:  # converted here: a BlindspotError inside result_folder would delete the checkpoints
        kept = (staging / "last.pt").is_file()
        if not kept:
            remove_staging(out.resolve(), TRAIN)  # nothing worth keeping: the same command with a lower `lr` starts afresh
        where = (f"start again with `overwrite` (the checkpoints of the last validation, step {err.args[1]}, are in "
                 f"'{staging}')" if kept else "run again (no checkpoint had been saved yet, so nothing was kept)")
        raise BlindspotError(f"{err.args[0]} at step {err.args[2]}; lower `lr` and {where}.") from None
    return out


class _Diverged(Exception):
    """The loss or the weights became NaN or infinite: ``(what, step of last.pt or 0, step)``; reported once the
    staging folder is safe."""


class NothingToDo(Exception):
    """The run is already at the step asked for (``resume``): nothing was trained or written."""


def _loop(folder: Path, model, optimizer, batches: _Batches, validation: _Validation, config: TrainConfig,
          run_config: dict, checkpoint: dict | None, device: torch.device) -> None:
    """Steps ``checkpoint["step"] .. config.steps``: train, validate every ``val_every`` steps, save checkpoints."""
    start = checkpoint["step"] if checkpoint is not None else 0
    log = MetricsLog(folder, checkpoint["extra"]["log"] if checkpoint is not None else None)
    log.truncate(start)
    best = dict(checkpoint["extra"]["best"]) if checkpoint is not None else {"val_ap": -math.inf, "val_loss": math.inf}
    metrics = dict(checkpoint["metrics"]) if checkpoint is not None else {}

    def save(name: str, step: int, with_optimizer: bool) -> None:
        save_checkpoint(folder / name, model, step=step, config=run_config, metrics=metrics,
                        optimizer=optimizer if with_optimizer else None, extra={"best": best, "log": log.state()})

    bar = progress(config.steps, f"train {model.config['name']}", unit="step", initial=start, every=config.val_every)
    running = None
    try:
        with deferred_interrupt() as flag:
            for step in range(start, config.steps):
                done = step + 1
                began = time.perf_counter()
                x = batches(step)
                model_began = time.perf_counter()
                torch.manual_seed(step_seed(config.seed, step, _MODEL_STREAM))  # model randomness (VAE, CeAE, ...)
                loss, parts = model.training_loss(x)
                if not math.isfinite(parts["total"]):
                    raise _Diverged(f"the training loss became {parts['total']}", metrics.get("step", 0), done)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                model_seconds = time.perf_counter() - model_began
                running = parts["total"] if running is None else 0.95 * running + 0.05 * parts["total"]
                if done % 10 == 0:
                    bar.set_postfix_str(f"loss {running:.4g}", refresh=False)
                log.add(parts, time.perf_counter() - began, model_seconds)
                if done % config.val_every == 0 or done == config.steps:
                    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                        raise _Diverged("the weights became NaN or infinite", metrics.get("step", 0), done)
                    metrics = {"step": done, **_evaluate(model, validation, config, device)}
                    metrics.update(log.row(done, done * config.batch_size / batches.n, config.batch_size, metrics))
                    if metrics["val_ap"] > best["val_ap"]:
                        best.update(val_ap=metrics["val_ap"], val_ap_step=done)
                        save("best_ap.pt", done, with_optimizer=False)
                    if metrics["val_loss"] < best["val_loss"]:
                        best.update(val_loss=metrics["val_loss"], val_loss_step=done)
                        save("best_loss.pt", done, with_optimizer=False)
                    save("last.pt", done, with_optimizer=True)
                    bar.set_postfix_str(f"loss {running:.4g}, val AP {metrics['val_ap']:.3f}", refresh=False)
                bar.update(1)
                if flag["interrupted"] and done < config.steps:
                    save("last.pt", done, with_optimizer=True)
                    raise KeyboardInterrupt
    finally:
        bar.close()
        log.close()


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

    Raises :class:`NothingToDo` when the run is at ``steps`` already.
    """
    out = Path(out).expanduser()
    if out.name.endswith(".partial"):
        out = out.with_name(out.name[: -len(".partial")])
    staging = out.with_name(out.name + ".partial")
    source = checkpoint_to_resume(out, staging, resume=True, overwrite=False)
    checkpoint = load_checkpoint(source)
    options = dict(checkpoint["model"])
    name = options.pop("name", None)
    if model_name is not None and model_name != name:
        raise BlindspotError(f"cannot resume '{out}' as a '{model_name}' model: its checkpoint holds a '{name}' model.")
    stored = dict(checkpoint["config"])
    recorded = stored.pop("data_path", None)  # absent in runs of earlier versions
    try:
        data, config = DataConfig.from_record(stored.pop("data")), TrainConfig(**stored)
    except (KeyError, TypeError):
        raise BlindspotError(f"'{source}' does not hold a complete training config; it was not written by blindspot train.") from None
    if steps is not None:
        config = replace(config, steps=steps)
    return train(config, out, model_name=name, model_options=options, data=data, resume=True, device=device,
                 threads=threads, data_path=recorded)

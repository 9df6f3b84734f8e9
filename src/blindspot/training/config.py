"""Training configurations: :class:`TrainConfig`, the papers' presets and :func:`make_config`."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from blindspot.errors import BlindspotError

__all__ = ["PRESETS", "TrainConfig", "make_config"]



def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
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
        Random augmentation of training batches (:mod:`blindspot.data.augment`); None (auto) means
        on for the embedded template (one brain) and off for every other source.
    hold_out : bool
        Hold the validation volumes (the last 5 % of the training split) out of training (default);
        False trains on every training image, as the MedIAnomaly benchmark does (``ae4ad``), and
        validates on those last 5 % anyway, for monitoring only. The embedded template always
        validates on its own slices.
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
    hold_out: bool = True
    val_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        def fail(field: str, expected: str) -> None:
            raise BlindspotError(f"`{field}` must be {expected}; got {getattr(self, field)!r}.")

        if not (isinstance(self.preset, str) and self.preset):
            fail("preset", "a non-empty name")
        if not (is_int(self.size) and self.size >= 32):
            fail("size", "an integer >= 32 (a power of two for the models)")
        if self.steps is not None and not (is_int(self.steps) and self.steps >= 1):
            fail("steps", "a positive integer")
        if self.epochs is not None and not (is_number(self.epochs) and self.epochs > 0):
            fail("epochs", "a positive number")
        if self.steps is None and self.epochs is None:
            fail("steps", "set (or epochs)")
        if not (is_int(self.batch_size) and self.batch_size >= 2):
            fail("batch_size", "an integer >= 2 (batch norm needs two images)")
        if not (is_number(self.lr) and self.lr > 0):
            fail("lr", "a positive number")
        if self.optimizer not in ("adam", "adamw"):
            fail("optimizer", "'adam' or 'adamw'")
        if not (is_number(self.weight_decay) and self.weight_decay >= 0):
            fail("weight_decay", "a number >= 0")
        if self.loss not in (None, "l1", "mse"):
            fail("loss", "'l1', 'mse' or None (the model's default)")
        bounds = tuple(self.input_range) if isinstance(self.input_range, (tuple, list)) else ()
        if not (len(bounds) == 2 and all(is_number(v) for v in bounds) and bounds[0] < bounds[1]):
            fail("input_range", "two numbers (low, high) with low < high")
        object.__setattr__(self, "input_range", (float(bounds[0]), float(bounds[1])))
        if self.augment not in (None, True, False):
            fail("augment", "True, False or None (auto)")
        if not isinstance(self.hold_out, bool):
            fail("hold_out", "True or False")
        if not (is_int(self.val_every) and self.val_every >= 1):
            fail("val_every", "a positive integer")
        if not (is_int(self.seed) and self.seed >= 0):
            fail("seed", "an integer >= 0")


#: The three presets. ``quick`` trains ``bench-ae`` on the CPU in about a minute; ``pitfalls`` and
#: ``ae4ad`` are the papers' protocols (GPU-sized).
PRESETS: dict[str, TrainConfig] = {
    "quick": TrainConfig(),
    "pitfalls": TrainConfig(preset="pitfalls", size=256, steps=10_000, batch_size=128, lr=1e-3, optimizer="adamw",
                            weight_decay=2e-2, loss="l1", val_every=200),
    "ae4ad": TrainConfig(preset="ae4ad", size=64, steps=None, epochs=250, batch_size=64, lr=1e-3, optimizer="adam",
                         loss="mse", input_range=(-1.0, 1.0), augment=False, hold_out=False, val_every=200),
}


def make_config(preset: str = "quick", **overrides: Any) -> TrainConfig:
    """A preset with some values replaced, e.g. ``make_config("pitfalls", steps=500, lr=3e-4)``.

    Overriding ``steps`` clears the preset's ``epochs`` and vice versa, so the explicit value decides
    the run length; overriding both is refused.

    >>> make_config("ae4ad", steps=100).steps, make_config("ae4ad", steps=100).epochs
    (100, None)
    >>> make_config(step=3)
    Traceback (most recent call last):
        ...
    blindspot.errors.BlindspotError: unknown training setting 'step'; valid settings: size, steps, epochs, batch_size, lr, optimizer, weight_decay, loss, input_range, augment, hold_out, val_every, seed.
    """
    if preset not in PRESETS:
        raise BlindspotError(f"`preset` must be one of {', '.join(PRESETS)}; got '{preset}'.")
    valid = [f.name for f in fields(TrainConfig) if f.name != "preset"]
    unknown = [key for key in overrides if key not in valid]
    if unknown:
        raise BlindspotError(f"unknown training setting '{unknown[0]}'; valid settings: {', '.join(valid)}.")
    if overrides.get("steps") is not None and overrides.get("epochs") is not None:
        raise BlindspotError("give the run length once: `steps` or `epochs`, not both.")
    if "steps" in overrides:
        overrides["epochs"] = None
    elif "epochs" in overrides:
        overrides["steps"] = None
    return replace(PRESETS[preset], **overrides)

"""The base class every model of the zoo derives from, and the shared validation helpers.

The base class owns what is common to all models: the loss kind and its per-pixel residual, the
``config`` dict, the input check, ``anomaly_map`` (no_grad, eval mode), the default
``training_loss`` (reconstruction loss only) and the data convention the model is trained in
(``input_range`` and ``preparation``, set by training and restored from checkpoints, not
constructor options). Subclasses build their layers, implement ``forward`` (and
``encode``/``decode``) and override ``training_loss`` when they add a term.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindspot.errors import BlindspotError

__all__ = ["LOSSES", "ReconstructionModel"]

#: The reconstruction losses a model can be trained with.
LOSSES = ("l1", "mse")


# --------------------------------------------------------------------------------------------
# validation helpers (each raises a one-sentence BlindspotError naming the parameter and value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_size(model: str, size: object) -> int:
    """``size`` must be a power of two >= 32 (the input is ``size`` x ``size``)."""
    if not (_is_int(size) and size >= 32 and size & (size - 1) == 0):
        raise BlindspotError(f"{model}: size must be a power of two >= 32; got {size!r}.")
    return size  # type: ignore[return-value]


def check_positive_int(model: str, what: str, value: object, minimum: int = 1) -> int:
    """``value`` must be an int >= ``minimum``; ``what`` names it, e.g. ``"latent size d"``."""
    if not (_is_int(value) and value >= minimum):
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise BlindspotError(f"{model}: {what} must be {need}; got {value!r}.")
    return value  # type: ignore[return-value]


def check_loss(model: str, loss: object) -> str:
    """``loss`` must be one of :data:`LOSSES`."""
    if loss not in LOSSES:
        raise BlindspotError(f"{model}: loss must be 'l1' or 'mse'; got {loss!r}.")
    return loss  # type: ignore[return-value]


def check_number(
    model: str,
    what: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = True,
) -> float:
    """``value`` must be a finite real number in the given interval."""
    ok = _is_number(value)
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lb = "(" if low_open else "["
        hb = ")" if high_open or high == math.inf else "]"
        hi = "inf" if high == math.inf else f"{high:g}"
        raise BlindspotError(
            f"{model}: {what} must be a number in {lb}{low:g}, {hi}{hb}; got {value!r}."
        )
    return float(value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# base class


class ReconstructionModel(nn.Module):
    """Base class of the zoo: an image-to-image reconstruction model for (B, 1, size, size) input.

    Subclasses set the class attribute ``name`` (their registry name), call
    ``self._set_config(...)`` with every constructor argument, and implement ``forward``.

    Besides its architecture (:attr:`config`) a model carries the data convention it is trained
    in, which is not part of the architecture and so not a constructor option:
    :attr:`input_range` (the value range of its inputs) and :attr:`preparation` (how its images
    were prepared). Training sets both and checkpoints store and restore them, so a loaded
    model is fed exactly as it was trained (:mod:`blindspot.models.inference`).
    """

    #: Registry name, the ``"name"`` entry of :attr:`config`.
    name: ClassVar[str] = "reconstruction-model"

    size: int
    loss: str
    #: The data preparation the model was trained with (a JSON-like dict), or None if unknown.
    preparation: dict[str, Any] | None = None
    _input_range: tuple[float, float] = (0.0, 1.0)

    @property
    def input_range(self) -> tuple[float, float]:
        """``(low, high)``: images in [0, 1] are mapped linearly onto this range for the model.

        (0, 1) by default, (-1, 1) under the ``ae4ad`` preset. Setting it checks the value and
        stores two floats.
        """
        return self._input_range

    @input_range.setter
    def input_range(self, value: object) -> None:
        bounds = tuple(value) if isinstance(value, (tuple, list)) else ()
        if not (len(bounds) == 2 and all(_is_number(v) for v in bounds) and bounds[0] < bounds[1]):
            raise BlindspotError(
                f"{self.name}: input_range must be two numbers (low, high) with low < high; "
                f"got {value!r}."
            )
        self._input_range = (float(bounds[0]), float(bounds[1]))

    def _set_config(self, **kwargs: Any) -> None:
        """Record the constructor arguments (in signature order) for :attr:`config`."""
        self._config = dict(kwargs)
        self.size = kwargs["size"]
        self.loss = kwargs["loss"]

    @property
    def config(self) -> dict[str, Any]:
        """``{"name": registry name, **constructor kwargs}``; ``create_model(**config)`` rebuilds
        the same architecture."""
        return {"name": self.name, **self._config}

    # ---------------------------------------------------------------------------- losses

    def reconstruction_loss(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """The reconstruction loss of kind ``self.loss``, averaged over all pixels of the batch."""
        if self.loss == "l1":
            return F.l1_loss(x_hat, x)
        return F.mse_loss(x_hat, x)

    def residual(self, x: Tensor, x_hat: Tensor) -> Tensor:
        """Per-pixel residual of the loss: ``|x - x_hat|`` ("l1") or ``(x - x_hat)**2`` ("mse")."""
        diff = x - x_hat
        return diff.abs() if self.loss == "l1" else diff.square()

    def check_input(self, x: Tensor) -> None:
        """Raise a BlindspotError unless ``x`` has shape (B, 1, size, size)."""
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.size or x.shape[3] != self.size:
            raise BlindspotError(
                f"{self.name}: input must have shape (B, 1, {self.size}, {self.size}); "
                f"got {tuple(x.shape)}."
            )

    # ---------------------------------------------------------------------------- interface

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_loss(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Full training objective on a batch and its named components (``total``, ``recon``)."""
        self.check_input(x)
        recon = self.reconstruction_loss(self(x), x)
        return recon, {"total": float(recon.detach()), "recon": float(recon.detach())}

    def anomaly_map(self, x: Tensor) -> Tensor:
        """Per-pixel residual (B, 1, H, W) of the loss between ``x`` and its reconstruction.

        Runs under ``torch.no_grad()`` and in eval mode: the model is switched to eval for the
        call and its previous mode is restored, so batch-norm statistics and EMA codebooks never
        depend on the batch or on the mode the caller left the model in (and ``vae`` samples only
        with ``eval_latent="sample"``).
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self.residual(x, self(x))
        finally:
            self.train(was_training)

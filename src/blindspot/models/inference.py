"""Running a model on numpy images: the one place where images in [0, 1] meet a model.

A model of the zoo carries the value range it was trained in (``model.input_range``: set by
training, stored in and restored from its checkpoint), so callers never pass it:
:func:`reconstruct` maps the images onto the model's range, runs the model in eval mode without
gradients, in batches, and maps the reconstruction back to [0, 1] units. A module without an
``input_range`` attribute (not a :class:`~blindspot.models.ReconstructionModel`) gets the images
as they are, in [0, 1]. Any other model (TorchScript, ONNX, a factory's network) runs through the
same loop behind an adapter (:mod:`blindspot.models.adapters`), which carries its input range.

>>> import numpy as np
>>> from blindspot.models import create_model
>>> model = create_model("bench-ae", size=32, d=4, hidden=16)
>>> model.input_range = (-1.0, 1.0)  # what training (and blindspot.models.load) sets
>>> reconstruct(model, np.zeros((2, 32, 32), np.float32)).shape
(2, 32, 32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from blindspot.errors import BlindspotError
from blindspot.models._base import _is_int
from blindspot.models.adapters import Adapter, as_adapter
from blindspot.models.device import select_device
from blindspot.progress import progress
from blindspot.scoring import residual_map

__all__ = ["anomaly_maps", "input_range_of", "reconstruct", "residual_kind", "select_device", "to_input_range"]


def input_range_of(model: torch.nn.Module) -> tuple[float, float]:
    """The value range ``model`` takes its inputs in: ``model.input_range``, (0, 1) if it has none."""
    low, high = getattr(model, "input_range", (0.0, 1.0))
    return float(low), float(high)


def to_input_range(x, input_range: Sequence[float]):
    """Map ``x`` (a tensor or an array) from [0, 1] linearly onto ``input_range`` (returned unchanged for (0, 1))."""
    low, high = input_range
    return x if (low, high) == (0.0, 1.0) else x * (high - low) + low


def _inference(adapter: Adapter, images: np.ndarray, fn: Callable, *, caller: str, batch_size: int,
               device: str | torch.device | None, desc: str | None = None) -> np.ndarray:
    """``fn`` (a batch (B, 1, S, S) in [0, 1] -> (B, 1, S, S)) over ``images``, batched, with ``adapter`` running.

    The one batching loop of every inference: the adapter is prepared for the run (device, eval
    mode, no gradients; :meth:`Adapter.running`) and restored afterwards; every output is checked
    (the input's shape, finite values). An adapter with a ``fixed_batch`` gets batches of exactly
    that size (the last one padded with copies of its last image). With ``desc`` long runs report
    their progress (:func:`blindspot.progress.progress`).
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise BlindspotError(f"{caller}: images must have shape (N, H, W); got {images.shape}.")
    size = adapter.size
    if size is not None and images.shape[1:] != (size, size):
        raise BlindspotError(
            f"{caller}: images are {images.shape[1]}×{images.shape[2]} but the model takes {size}×{size} inputs; "
            f"prepare them at that size (blindspot.data.fit_geometry, or a data config with `size` {size})."
        )
    if not (_is_int(batch_size) and batch_size >= 1):
        raise BlindspotError(f"{caller}: `batch_size` must be a positive integer; got {batch_size!r}.")
    step = adapter.fixed_batch or batch_size
    out = np.empty(images.shape, np.float32)
    bar = progress(len(images), desc, unit="img") if desc else None
    try:
        with adapter.running(device):
            for start in range(0, len(images), step):
                chunk = np.ascontiguousarray(images[start : start + step], dtype=np.float32)[:, None]
                n = len(chunk)
                if n < step and adapter.fixed_batch:
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, axis=0)])
                result = fn(chunk)
                if getattr(result, "shape", None) != chunk.shape:
                    raise BlindspotError(f"{adapter.describe()} returned shape {tuple(getattr(result, 'shape', ()))} for "
                                         f"a batch of shape {chunk.shape}; a reconstruction must have its input's shape.")
                finite = np.isfinite(result).reshape(len(result), -1).all(axis=1)
                if not finite.all():
                    k = start + int(np.argmin(finite))
                    raise BlindspotError(f"{adapter.describe()} returned NaN or infinite values for image {k} of the "
                                         f"{len(images)} it reconstructs.")
                out[start : start + n] = result[:n, 0]
                if bar is not None:
                    bar.update(n)
    finally:
        if bar is not None:
            bar.close()
    return out


def reconstruct(
    model: torch.nn.Module | Adapter,
    images: np.ndarray,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    desc: str | None = None,
) -> np.ndarray:
    """The model's reconstructions of ``images``, in [0, 1] units.

    The images are mapped onto the model's input range (``model.input_range``, or the adapter's)
    before the model and the reconstruction is mapped back, so a model trained in [-1, 1] is fed
    as it was trained.

    Parameters
    ----------
    model : torch.nn.Module or Adapter
        A reconstruction model taking (B, 1, S, S), e.g. from :func:`blindspot.models.load`, or any
        model behind :class:`blindspot.models.adapters.Adapter` (TorchScript, ONNX, a factory's
        network; :func:`blindspot.models.adapters.load_adapter`).
    images : ndarray, shape (N, S, S)
        Values in [0, 1].
    batch_size : int
        Images per model call.
    device : str, torch.device or None
        None keeps the model where it is; otherwise the model is moved there.
    desc : str or None
        Name of the progress shown for long runs (None: silent).

    Returns
    -------
    ndarray of float32, shape (N, S, S)
        Reconstructions in the units of ``images`` (not clipped). The model runs in eval mode
        without gradients; its train/eval mode is restored afterwards.

    Raises
    ------
    BlindspotError
        When the model returns another shape than its input's, or NaN or infinite values.
    """
    adapter = as_adapter(model)
    low, high = adapter.input_range
    scale = np.float32(high - low)

    def fn(x: np.ndarray) -> np.ndarray:
        result = adapter(to_input_range(x, (low, high)))
        if getattr(result, "shape", None) != x.shape:
            return result  # reported by the loop
        return (np.asarray(result, np.float32) - np.float32(low)) / scale

    return _inference(adapter, images, fn, caller="reconstruct", batch_size=batch_size, device=device, desc=desc)


def residual_kind(model: torch.nn.Module) -> str:
    """The residual of the model's loss: ``"l2"`` for MSE models, ``"l1"`` otherwise."""
    return "l2" if getattr(model, "loss", "l1") == "mse" else "l1"


def anomaly_maps(
    model: torch.nn.Module,
    images: np.ndarray,
    *,
    positive: bool = False,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    desc: str | None = None,
) -> np.ndarray:
    """The model's anomaly maps: the residual of its loss, in [0, 1] units.

    ``(x − x̂)²`` for MSE models, ``|x − x̂|`` otherwise, with x̂ from :func:`reconstruct`
    (``positive``: of the positive part ``max(x − x̂, 0)``, for hyperintense anomalies). The one
    definition used by training validation, evaluation and the sweep.

    Returns
    -------
    ndarray of float32, shape (N, S, S); higher = more anomalous.
    """
    recon = reconstruct(model, images, batch_size=batch_size, device=device, desc=desc)
    return residual_map(images, recon, kind=residual_kind(model), positive=positive)

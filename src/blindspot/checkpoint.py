"""Model checkpoints: one self-describing file that rebuilds a trained model with nothing else.

A checkpoint is a ``torch.save``-d dict::

    {
        "format": "blindspot-checkpoint/1",
        "model": model.config,          # {"name": registry name, **constructor options}
        "state_dict": ...,              # the model's weights and buffers (batch-norm statistics, codebooks)
        "optimizer": ... or None,       # optimizer state (``last.pt`` only: what resuming needs)
        "step": int,                    # optimizer steps done
        "config": dict,                 # the full training config: preset, data, input_range, seed, ...
        "metrics": dict,                # validation metrics at ``step``
        "version": str,                 # blindspot version that wrote it
        "extra": dict,                  # anything else resuming needs (logging state, best values)
    }

Only plain containers, numbers, strings and tensors are stored, so :func:`load_checkpoint` reads
files with ``torch.load(weights_only=True)``: loading a checkpoint never runs code from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from blindspot.errors import BlindspotError
from blindspot.results import atomic_write

__all__ = ["FORMAT", "load_checkpoint", "load_model", "save_checkpoint"]

#: Value of the ``"format"`` entry of every checkpoint this version writes and reads.
FORMAT = "blindspot-checkpoint/1"
_KEYS = ("model", "state_dict", "optimizer", "step", "config", "metrics", "version")


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    step: int,
    config: dict,
    metrics: dict,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (a blindspot model with a ``config``) atomically.

    The file is written to a temporary name in the same folder and renamed, so ``path`` always
    holds either the previous complete checkpoint or the new one, even after a crash or Ctrl-C.

    Parameters
    ----------
    path : str or Path
        Destination file, conventionally ``*.pt``.
    model : torch.nn.Module
        A model of :mod:`blindspot.models` (its ``config`` rebuilds it through ``create_model``).
    step : int
        Optimizer steps done.
    config : dict
        The full training config (JSON-like values: it is also what resuming compares against).
    metrics : dict
        Validation metrics at ``step``.
    optimizer : torch.optim.Optimizer, optional
        Its state is stored when given (needed to resume training exactly).
    extra : dict, optional
        Further resume state, stored under ``"extra"``.

    Returns
    -------
    Path
        ``path``.
    """
    from blindspot import __version__

    path = Path(path)
    payload = {
        "format": FORMAT,
        "model": dict(model.config),
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "config": config,
        "metrics": dict(metrics),
        "version": __version__,
        "extra": dict(extra or {}),
    }
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    Raises
    ------
    BlindspotError
        When the file is missing, unreadable (truncated, not a PyTorch file) or not a blindspot
        checkpoint of a supported format.
    """
    path = Path(path)
    if path.is_dir():
        raise BlindspotError(f"'{path}' is a folder; expected a checkpoint file such as '{path / 'best_ap.pt'}'.")
    if not path.exists():
        raise BlindspotError(f"checkpoint '{path}' does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged or foreign files
        raise BlindspotError(
            f"'{path}' is not a readable blindspot checkpoint ({type(err).__name__}); the file may be truncated or of another kind."
        ) from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != FORMAT:
        if isinstance(found, str) and found.startswith("blindspot-checkpoint/"):
            raise BlindspotError(f"'{path}' has checkpoint format '{found}'; this blindspot version reads '{FORMAT}'.")
        raise BlindspotError(f"'{path}' is not a blindspot checkpoint (it has no \"format\": \"{FORMAT}\" entry).")
    missing = [key for key in _KEYS if key not in payload]
    if missing:
        raise BlindspotError(f"checkpoint '{path}' lacks the entries {', '.join(missing)}; the file is damaged.")
    return payload


def load_model(path: str | Path, *, device: str | torch.device | None = "cpu") -> torch.nn.Module:
    """Rebuild the model stored in a checkpoint, with its weights, in eval mode.

    The architecture comes from the checkpoint alone (``create_model(**checkpoint["model"])``).
    The value range the model was trained on is ``load_checkpoint(path)["config"]["input_range"]``
    (pass it to :func:`blindspot.training.reconstruct`).

    Parameters
    ----------
    path : str or Path
        A checkpoint file (``best_ap.pt``, ``best_loss.pt`` or ``last.pt`` of a run folder).
    device : str, torch.device or None
        Where to put the model; ``None`` picks one like :func:`blindspot.training.select_device`.
    """
    from blindspot.models import create_model
    from blindspot.training import select_device

    checkpoint = load_checkpoint(path)
    options = dict(checkpoint["model"])
    name = options.pop("name", None)
    if not isinstance(name, str):
        raise BlindspotError(f"checkpoint '{path}' does not name its model (no \"name\" in its \"model\" entry).")
    model = create_model(name, **options)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError:
        raise BlindspotError(
            f"the weights in '{path}' do not fit a '{name}' model with options {options}; the file may come from another blindspot version."
        ) from None
    return model.to(select_device(device)).eval()

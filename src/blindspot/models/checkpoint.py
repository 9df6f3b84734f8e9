"""Model checkpoints: one self-describing file that rebuilds a trained model with nothing else.

A checkpoint is a ``torch.save``-d dict::

    {
        "format": "blindspot-checkpoint/2",
        "model": model.config,          # {"name": registry name, **constructor options}
        "state_dict": ...,              # the model's weights and buffers (batch-norm statistics, codebooks)
        "input_range": [low, high],     # model.input_range: the value range the model takes its inputs in
        "preparation": dict or None,    # model.preparation: how its training images were prepared
        "optimizer": ... or None,       # optimizer state (``last.pt`` only: what resuming needs)
        "step": int,                    # optimizer steps done
        "config": dict,                 # the full training config: preset, data, input_range, seed, ...
        "metrics": dict,                # validation metrics at ``step``
        "version": str,                 # blindspot version that wrote it
        "extra": dict,                  # anything else resuming needs (logging state, best values)
    }

Only plain containers, numbers, strings and tensors are stored, so :func:`load_checkpoint` reads
files with ``torch.load(weights_only=True)``: loading a checkpoint never runs code from it.
:func:`load_model` rebuilds the model with its ``input_range`` and ``preparation``, so
:func:`blindspot.models.inference.reconstruct` feeds it as it was trained.

Format 2 differs from format 1 in the two new entries and in the architectures (no bias in the
last layer, as in the papers' code); format-1 files cannot be loaded: retrain the model.
"""

from __future__ import annotations

import errno
import re
import shutil
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from blindspot import __version__
from blindspot.errors import BlindspotError
from blindspot.models._base import ReconstructionModel
from blindspot.data.imageset import Preparation
from blindspot.models._registry import create_model, list_models, model_options
from blindspot.models.device import select_device
from blindspot.results import atomic_write

__all__ = ["FORMAT", "load_checkpoint", "load_model", "save_checkpoint"]

#: Value of the ``"format"`` entry of every checkpoint this version writes and reads.
FORMAT = "blindspot-checkpoint/2"
_KEYS = ("model", "state_dict", "input_range", "preparation", "optimizer", "step", "config", "metrics", "version")


def save_checkpoint(
    path: str | Path,
    model: ReconstructionModel,
    *,
    step: int,
    config: dict,
    metrics: dict,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (a blindspot model: its ``config``, weights, ``input_range``
    and ``preparation``) atomically.

    The file is written to a temporary name in the same folder and renamed, so ``path`` always
    holds either the previous complete checkpoint or the new one, even after a crash or Ctrl-C.

    Parameters
    ----------
    path : str or Path
        Destination file, conventionally ``*.pt``.
    model : ReconstructionModel
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
    path = Path(path)
    preparation = model.preparation
    payload = {
        "format": FORMAT,
        "model": dict(model.config),
        "state_dict": model.state_dict(),
        "input_range": [float(v) for v in model.input_range],
        "preparation": dict(preparation) if preparation is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "config": config,
        "metrics": dict(metrics),
        "version": __version__,
        "extra": dict(extra or {}),
    }
    with atomic_write(path, "wb") as handle:
        try:
            torch.save(payload, handle)
        except RuntimeError:  # torch reports a failed write (a full disk) as "unexpected pos"
            free = shutil.disk_usage(path.parent).free / 2**20
            raise OSError(errno.ENOSPC, f"the write stopped short, {free:.1f} MiB free on the device") from None
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    Raises
    ------
    BlindspotError
        When the file is missing, unreadable (truncated, not a PyTorch file), an exported model
        (TorchScript, ONNX: the message points to ``blindspot audit``), not a blindspot checkpoint of
        a supported format, or has an entry that cannot be right (the message names the file and the
        field, quoted: a field is not a command-line flag).
    """
    path = Path(path)
    if path.is_dir():
        raise BlindspotError(f"'{path}' is a folder; expected a checkpoint file such as '{path / 'best_ap.pt'}'.")
    if not path.exists():
        raise BlindspotError(f"checkpoint '{path}' does not exist.")
    kind = exported_kind(path)
    if kind:
        raise BlindspotError(f"'{path}' is {kind} file, not a blindspot checkpoint; audit it with: blindspot audit "
                             f"--model '{path}'.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged or foreign files
        raise BlindspotError(
            f"'{path}' is not a readable blindspot checkpoint ({type(err).__name__}); the file may be truncated or of another kind."
        ) from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != FORMAT:
        if found == "blindspot-checkpoint/1":
            raise BlindspotError(
                f"'{path}' is a version-1 blindspot checkpoint; the model architectures have changed since "
                f"(format '{FORMAT}'), so it cannot be loaded: retrain the model."
            )
        if isinstance(found, str) and found.startswith("blindspot-checkpoint/"):
            raise BlindspotError(f"'{path}' has checkpoint format '{found}'; this blindspot version reads '{FORMAT}'.")
        raise BlindspotError(f"'{path}' is not a blindspot checkpoint (it has no \"format\": \"{FORMAT}\" entry).")
    missing = [key for key in _KEYS if key not in payload]
    if missing:
        raise BlindspotError(f"checkpoint '{path}' lacks the entries {', '.join(missing)}; the file is damaged.")
    _check_model_entry(path, payload["model"])
    _check_preparation(path, payload["preparation"])
    if not (isinstance(payload["step"], int) and not isinstance(payload["step"], bool) and payload["step"] >= 0):
        raise _damaged(path, "step", f"is {payload['step']!r}; expected a non-negative integer")
    return payload


def exported_kind(path: Path) -> str | None:
    """The kind of an exported model that ``blindspot audit`` reads ("a TorchScript", "an ONNX"), or None.

    A TorchScript archive (torch.jit.save) holds ``constants.pkl`` and ``code/``; a torch.save file
    does not. ONNX files are known by their suffix.
    """
    if path.suffix.lower() == ".onnx":
        return "an ONNX"
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            return "a TorchScript" if any(name.endswith("/constants.pkl") for name in archive.namelist()) else None
    except (OSError, zipfile.BadZipFile):
        return None


def _damaged(path: Path, field: str, problem: str) -> BlindspotError:
    """The error for a checkpoint entry that cannot be right: the file, the field (quoted, not a flag) and why."""
    return BlindspotError(f"'{path}': field '{field}' {problem} (the checkpoint may be damaged).")


def _check_model_entry(path: Path, entry: Any) -> None:
    """The ``"model"`` entry names a registered model, and its options exist and have their defaults' types."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise _damaged(path, "model.name", "is missing; expected the name of a registered model")
    name = entry["name"]
    if name not in list_models():
        raise _damaged(path, "model.name", f"is {name!r}, none of the registered models {', '.join(list_models())}")
    accepted = model_options(name)
    for option, value in entry.items():
        if option == "name":
            continue
        if option not in accepted:
            raise _damaged(path, f"model.{option}", f"is not an option of model {name!r}, which takes {', '.join(accepted)}")
        default = accepted[option]
        if isinstance(default, (bool, int, float, str)) and not _same_kind(value, default):
            raise _damaged(path, f"model.{option}", f"is {value!r}; expected {_kind(default)} like the default {default!r}")


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, (bool, str)):
        return type(value) is type(default)
    number = (int,) if isinstance(default, int) else (int, float)
    return isinstance(value, number) and not isinstance(value, bool)


def _kind(default: Any) -> str:
    return {bool: "True or False", int: "an integer", float: "a number", str: "a string"}[type(default)]


def _check_preparation(path: Path, preparation: Any) -> None:
    """The ``"preparation"`` entry is None or a dict whose preparation fields are valid."""
    if preparation is None:
        return
    if not isinstance(preparation, dict):
        raise _damaged(path, "preparation", f"is {preparation!r}; expected a dict or None")
    known = {key: preparation[key] for key in asdict(Preparation()) if key in preparation}
    try:
        Preparation(**known)
    except BlindspotError as err:  # its message names the field as `name`: quote it, a field is not a flag
        problem = re.sub(r"^`(\w+)` ", "", str(err)).rstrip(".")
        field = re.match(r"`(\w+)`", str(err))
        raise _damaged(path, f"preparation.{field.group(1) if field else ''}".rstrip("."), problem) from None


def load_model(path: str | Path, *, device: str | torch.device | None = "cpu") -> ReconstructionModel:
    """Rebuild the model stored in a checkpoint, with its weights, in eval mode.

    The architecture comes from the checkpoint alone (``create_model(**checkpoint["model"])``);
    ``model.input_range`` and ``model.preparation`` are set from the file, so
    :func:`blindspot.models.inference.reconstruct` feeds the model as it was trained. Also
    available as :func:`blindspot.models.load`.

    Parameters
    ----------
    path : str or Path
        A checkpoint file (``best_ap.pt``, ``best_loss.pt`` or ``last.pt`` of a run folder).
    device : str, torch.device or None
        Where to put the model; ``None`` picks CUDA, then MPS, then the CPU
        (:func:`blindspot.models.device.select_device`).

    Raises
    ------
    BlindspotError
        Naming the file and the field when an entry cannot be right (see :func:`load_checkpoint`).
    """
    checkpoint = load_checkpoint(path)
    options = dict(checkpoint["model"])
    name = options.pop("name")
    try:
        model = create_model(name, **options)
    except BlindspotError as err:  # a value the constructor refuses (d=0): it names the option
        reason = str(err).rstrip(".").replace("`", "'")  # quoted: the checkpoint's field, not a flag
        raise _damaged(path, "model", f"does not build a {name!r} model: {reason}") from None
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError:
        raise BlindspotError(
            f"the weights in '{path}' do not fit a '{name}' model with options {options}; the file may come from another blindspot version."
        ) from None
    try:
        model.input_range = checkpoint["input_range"]
    except BlindspotError:
        raise _damaged(path, "input_range", f"is {checkpoint['input_range']!r}; expected [low, high] with low < high") from None
    model.preparation = checkpoint["preparation"]
    return model.to(select_device(device)).eval()

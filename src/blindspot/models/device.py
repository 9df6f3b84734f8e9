"""The torch device a model runs on: the one place where ``device`` is chosen and checked."""

from __future__ import annotations

import torch

from blindspot.errors import BlindspotError

__all__ = ["select_device"]


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a ``torch.device``, checked; None picks CUDA, then Apple MPS, then the CPU.

    >>> select_device("cpu")
    device(type='cpu')
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda", "mps"):
        raise BlindspotError(f"`device` must be cpu, cuda, cuda:N or mps; got '{device}'.")
    if chosen.type == "cuda" and (not torch.cuda.is_available() or (chosen.index or 0) >= torch.cuda.device_count()):
        raise BlindspotError(f"`device` {device} is not available on this machine (CUDA devices: {torch.cuda.device_count()}).")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise BlindspotError("`device` mps is not available on this machine.")
    return chosen

"""The torch device a model runs on: the one place where ``device`` is chosen and checked."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from blindspot.errors import BlindspotError

__all__ = ["select_device", "torch_threads"]


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


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Set torch's intra-op threads (None: leave them) and restore them afterwards."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)

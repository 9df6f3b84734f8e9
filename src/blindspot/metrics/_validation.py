"""The one input check and the one warning shared by every metric form (functional, batched, table).

A mistake gets the same message whichever form receives it, apart from the function name, e.g.
``average_precision: labels must be binary (bool or 0/1); got values [2].`` Undefined metrics (no
positive, one class) warn with :class:`UndefinedMetricWarning` and return a documented value.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from blindspot.errors import BlindspotError

__all__ = ["UndefinedMetricWarning", "check_pair", "warn_undefined"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the given labels (e.g. no positive) and a convention was used."""


def _as_binary(name: str, param: str, x: np.ndarray) -> np.ndarray:
    """``x`` as a bool array; raises unless it holds only bools or the numbers 0 and 1."""
    if x.dtype == np.bool_:
        return x
    if x.dtype.kind not in "iuf":
        raise BlindspotError(f"{name}: {param} must be bool or 0/1 numbers; got dtype {x.dtype}.")
    ok = (x == 0) | (x == 1)
    if not ok.all():
        bad = np.unique(x[~ok])
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        raise BlindspotError(
            f"{name}: {param} must be binary (bool or 0/1); got values {bad[:5].tolist()}{more}."
        )
    return x == 1


def _as_scores(name: str, param: str, x: np.ndarray) -> np.ndarray:
    """``x`` unchanged if it is a real, finite numeric array (never cast: ties depend on the dtype)."""
    if x.dtype.kind not in "biuf":
        raise BlindspotError(f"{name}: {param} must be real numbers; got dtype {x.dtype}.")
    if x.dtype.kind == "f":
        n_bad = x.size - np.count_nonzero(np.isfinite(x))
        if n_bad:
            raise BlindspotError(
                f"{name}: {param} must be finite; got {n_bad} NaN or infinite value(s)."
            )
    return x


def check_pair(
    name: str,
    labels,
    other,
    *,
    other_name: str = "scores",
    batch: bool = False,
    allow_empty: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels against scores (or a binary prediction) of the same shape.

    Parameters
    ----------
    name : str
        The public function, named in every message.
    labels, other : array-like
        Labels must be bool or 0/1. ``other`` is checked as binary when ``other_name`` is
        ``"prediction"`` and as real, finite scores otherwise.
    batch : bool
        Inputs have shape ``(N, ...)``: at least two axes, none empty.
    allow_empty : bool
        Accept zero pixels (tables and accumulators; the scalar metrics need at least one).

    Returns
    -------
    labels : ndarray of bool
    other : ndarray
        Flattened to shape ``(size,)``, or ``(N, prod(...))`` with ``batch=True``; scores keep
        their dtype.
    """
    labels, other = np.asarray(labels), np.asarray(other)
    if labels.shape != other.shape:
        raise BlindspotError(
            f"{name}: labels and {other_name} must have the same shape; "
            f"got {labels.shape} and {other.shape}."
        )
    if batch:
        if labels.ndim < 2 or labels.size == 0:
            raise BlindspotError(
                f"{name}: labels and {other_name} must have shape (N, ...) with at least two "
                f"axes and no empty axis; got {labels.shape}."
            )
        shape = (labels.shape[0], -1)
    else:
        if labels.size == 0 and not allow_empty:
            raise BlindspotError(
                f"{name}: labels and {other_name} must be non-empty; got shape {labels.shape}."
            )
        shape = (-1,)
    labels = _as_binary(name, "labels", labels.reshape(shape))
    other = other.reshape(shape)
    if other_name == "prediction":
        return labels, _as_binary(name, other_name, other)
    return labels, _as_scores(name, other_name, other)


def warn_undefined(name: str, reason: str, value: str, *, rows: tuple[int, int] | None = None) -> None:
    """Emit the :class:`UndefinedMetricWarning` of ``name``, attributed to the caller's code.

    ``reason`` completes "labels ..." (e.g. ``"contain no positive"``); ``value`` is what is
    returned. For batches, ``rows = (n_undefined, n_rows)`` gives one warning for the batch.
    """
    if rows is None:
        message = f"{name}: labels {reason}; returning {value}."
    else:
        message = f"{name}: {rows[0]} of {rows[1]} rows {reason}; their result is {value}."
    # point at the first frame outside blindspot.metrics, whichever metric form warned
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UndefinedMetricWarning, stacklevel=level)

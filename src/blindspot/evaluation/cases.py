"""The cases an evaluation takes, and the validation hold-out.

A :class:`Case` is one anomaly map with its pixel label, brain mask and image-level label, checked
before use (:meth:`Case.checked`); a :class:`CaseStream` produces cases on demand, for data larger
than memory; :func:`split_validation` holds out a fraction of the volumes as validation cases.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import numpy as np

from blindspot.errors import BlindspotError

__all__ = ["MIN_TEST_VOLUMES", "Case", "CaseStream", "split_validation", "validation_volumes"]


#: Test volumes that must remain after a ``val_fraction`` hold-out (a normal and an anomalous one at the least).
MIN_TEST_VOLUMES = 2


@dataclass(frozen=True)
class Case:
    """One anomaly map to evaluate, with what is known about it.

    Attributes
    ----------
    name : str
        Shown in errors, ``per_case.csv`` and overlays (the file name for maps from a folder).
    map : ndarray, shape (H, W) or (D, H, W)
        Anomaly scores (higher = more anomalous), finite; slices along the first axis of volumes.
    label : ndarray of bool or None
        Pixel annotation of the same shape; None = no pixel annotation.
    brain : ndarray of bool or None
        Brain (foreground) mask of the same shape.
    image : ndarray or None
        The input image, for overlays only.
    volume : str or None
        Pooling unit of per-volume pooling; None = the case itself.
    anomalous : bool or None
        Image-level label; None = ``label.any()``.
    """

    name: str
    map: np.ndarray
    label: np.ndarray | None = None
    brain: np.ndarray | None = None
    image: np.ndarray | None = None
    volume: str | None = None
    anomalous: bool | None = None

    def checked(self) -> "Case":
        """Validate shapes and values; returns the case with ``volume`` and ``anomalous`` filled in."""
        scores = np.asarray(self.map)
        if scores.ndim not in (2, 3) or scores.dtype.kind not in "biuf":
            raise BlindspotError(f"map '{self.name}' must be a 2-D or 3-D numeric array; got {scores.dtype} {scores.shape}.")
        if scores.dtype.kind == "f" and not np.isfinite(scores).all():
            raise BlindspotError(f"map '{self.name}' contains NaN or infinite values; anomaly scores must be finite.")
        for what, array in (("label", self.label), ("brain mask", self.brain), ("image", self.image)):
            if array is not None and np.shape(array) != scores.shape:
                raise BlindspotError(f"the {what} of '{self.name}' has shape {np.shape(array)} but its map has {scores.shape}.")
        label = None if self.label is None else np.asarray(self.label, bool)
        anomalous = bool(label.any()) if self.anomalous is None and label is not None else self.anomalous
        if anomalous is None:
            raise BlindspotError(f"case '{self.name}' has neither a pixel label nor an image-level label.")
        return replace(self, map=scores, label=label, anomalous=bool(anomalous),
                       brain=None if self.brain is None else np.asarray(self.brain, bool),
                       volume=self.name if self.volume is None else self.volume)


class CaseStream:
    """A re-iterable source of cases produced on demand (data larger than memory).

    ``make()`` must return a fresh iterator over the same cases in the same order each time; the
    evaluation iterates it once per pass and never keeps more than a few cases at once. ``has_labels``
    says whether the cases carry pixel labels; ``count`` (if known) how many there are.
    """

    def __init__(self, make: Callable[[], Iterator[Case]], *, has_labels: bool, description: str = "",
                 count: int | None = None) -> None:
        self.make = make
        self.has_labels = has_labels
        self.description = description
        self.count = count

    def __iter__(self) -> Iterator[Case]:
        return self.make()


def split_validation(cases: Sequence[Case], fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """Hold out ``fraction`` of the volumes (seeded permutation of the sorted ids) as validation:
    ``(test, validation)``, both in the original case order."""
    cases = [c.checked() for c in cases]
    chosen = validation_volumes([c.volume for c in cases], fraction, seed)
    return [c for c in cases if c.volume not in chosen], [c for c in cases if c.volume in chosen]


def validation_volumes(volumes: Sequence, fraction: float, seed: int) -> set:
    """The ids :func:`split_validation` holds out: ``fraction`` of the distinct ones (at least one), leaving at
    least :data:`MIN_TEST_VOLUMES` to test (fewer is refused: nothing would be left to measure)."""
    ids = sorted(set(volumes))
    n_val = max(1, round(fraction * len(ids)))
    if len(ids) - n_val < MIN_TEST_VOLUMES:
        raise BlindspotError(f"`val_fraction` {fraction:g} holds out {n_val} of the {len(ids)} test volumes and leaves "
                             f"{len(ids) - n_val}; at least {MIN_TEST_VOLUMES} must remain to be measured (lower "
                             "`val_fraction`, or give separate validation cases).")
    return set(np.asarray(ids, dtype=object)[np.random.default_rng(seed).permutation(len(ids))[:n_val]])

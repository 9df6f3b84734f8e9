"""Mergeable accumulators: exact ranking metrics over a data set, one volume at a time.

Two accumulators share ``update(labels, scores)``, ``merge(other)`` and ``compute()``, and both
produce a :class:`~blindspot.metrics.tables.CountTable`, whose metrics are the definitions:

* :class:`ExactAccumulator` keeps the full table. Its metrics equal scikit-learn's on the pooled
  pixels. Memory is O(number of distinct scores): 16 bytes plus the score itemsize per distinct
  value, i.e. at most about the size of the scores themselves, and much less for quantised maps or
  large constant backgrounds.
* :class:`BinnedAccumulator` keeps two histograms over the bit patterns of the float32 scores
  (``bits`` leading bits: sign, exponent and ``bits - 9`` mantissa bits), so memory is constant
  (``2 ** bits`` bins × 2 × 8 bytes, 16 MiB at the default 20 bits) whatever the scale of the
  scores. Its metrics are the exact metrics of the scores rounded down to their bin's lower edge;
  a bin spans a relative width of at most ``2 ** -(bits - 9)`` (0.05 % at 20 bits). Every binned
  metric comes with a guaranteed interval for the exact value
  (:func:`~blindspot.metrics.tables.error_bounds`); counts at a bin edge, hence Dice / precision /
  recall at a threshold chosen from the bins, are exact.
"""

from __future__ import annotations

import numpy as np

from blindspot.errors import BlindspotError
from blindspot.metrics._validation import check_pair
from blindspot.metrics.tables import CountTable, _table_of_valid, merge_tables, summarize

__all__ = ["BinnedAccumulator", "ExactAccumulator", "binned_table"]


class ExactAccumulator:
    """Exact, mergeable pixel counts: metrics equal to scikit-learn's on all pixels seen.

    ``update`` stores the count table of a chunk (e.g. one volume); ``merge`` takes over another
    accumulator's tables; the tables are merged (one sort of their rows, see
    :func:`~blindspot.metrics.tables.merge_tables`) only when a result is asked for.
    Memory: O(distinct scores).

    Examples
    --------
    >>> a, b = ExactAccumulator(), ExactAccumulator()
    >>> _ = a.update([1, 0], [0.9, 0.5]); _ = b.update([1, 0], [0.5, 0.1])
    >>> a.merge(b).compute()["ap"]
    0.8333333333333333
    """

    def __init__(self) -> None:
        self._tables: list[CountTable] = []

    def update(self, labels, scores) -> "ExactAccumulator":
        """Add the pixels of one chunk (any shape)."""
        return self.add_table(_table_of_valid(*check_pair("ExactAccumulator.update", labels, scores, allow_empty=True)))

    def add_table(self, table: CountTable) -> "ExactAccumulator":
        """Add an already computed table of pixels not seen before."""
        if len(table):
            self._tables.append(table)
        return self

    def merge(self, other: "ExactAccumulator") -> "ExactAccumulator":
        """Add everything ``other`` has seen (in place; returns self)."""
        if not isinstance(other, ExactAccumulator):
            raise BlindspotError(f"ExactAccumulator.merge: expected an ExactAccumulator; got {type(other).__name__}.")
        self._tables.extend(other._tables)
        return self

    def table(self) -> CountTable:
        """The merged count table of every pixel seen."""
        if not self._tables:
            raise BlindspotError("ExactAccumulator: no pixel was added.")
        if len(self._tables) > 1:
            self._tables = [merge_tables(self._tables)]
        return self._tables[0]

    def compute(self) -> dict:
        """:func:`~blindspot.metrics.tables.summarize` of the merged table."""
        return summarize(self.table())


# --------------------------------------------------------------------------------------------
# float32 bit-pattern bins


def _ordered_bits(values: np.ndarray) -> np.ndarray:
    """uint32 codes of float32 values whose unsigned order is the numeric order (-0.0 just below +0.0)."""
    pattern = values.view(np.uint32)
    return np.where(pattern >> np.uint32(31), ~pattern, pattern | np.uint32(0x80000000))


def _float32_keys(name: str, scores: np.ndarray, bits: int) -> np.ndarray:
    """Monotone bin index of each score: the leading ``bits`` bits of its order-preserving float32 pattern."""
    with np.errstate(over="ignore"):  # out-of-range values become inf and are rejected below
        s32 = np.asarray(scores, dtype=np.float32).ravel() + np.float32(0.0)  # + 0 turns -0.0 into +0.0
    if not np.isfinite(s32).all():
        raise BlindspotError(f"{name}: scores must lie within the float32 range (about ±3.4e38) to be binned.")
    return (_ordered_bits(s32) >> np.uint32(32 - bits)).astype(np.int64)


def _bin_lower_edges(keys: np.ndarray, bits: int) -> np.ndarray:
    """The smallest float32 of each bin (inverse of :func:`_float32_keys` with zeroed trailing bits)."""
    ordered = keys.astype(np.uint32) << np.uint32(32 - bits)
    positive = (ordered & np.uint32(0x80000000)) != 0
    pattern = np.where(positive, ordered & np.uint32(0x7FFFFFFF), ~ordered)
    return pattern.view(np.float32)


def binned_table(labels, scores, bits: int = 20) -> CountTable:
    """The count table of the pixels with scores rounded down to their float32 bit-pattern bin.

    The sparse form of one :class:`BinnedAccumulator` update (only non-empty bins), for many small
    binned tables, e.g. one per volume.
    """
    labels, scores = check_pair("binned_table", labels, scores, allow_empty=True)
    keys = _float32_keys("binned_table", scores, bits)
    values, counts = np.unique(keys, return_counts=True)
    positive_keys, positive_counts = np.unique(keys[labels], return_counts=True)
    positives = np.zeros(len(values), np.int64)
    positives[np.searchsorted(values, positive_keys)] = positive_counts
    return CountTable(_bin_lower_edges(values, bits), positives, counts.astype(np.int64) - positives)


class BinnedAccumulator:
    """Constant-memory, mergeable pixel histograms over float32 bit-pattern bins.

    Parameters
    ----------
    bits : int, default 20
        Leading bits of the order-preserving float32 pattern used as the bin index, in [10, 24]:
        ``2 ** bits`` bins, relative bin width at most ``2 ** -(bits - 9)``. No score range has to
        be known in advance.

    Notes
    -----
    ``compute()`` returns the exact metrics of the scores rounded down to their bin's lower edge
    (so a threshold is always a bin edge, where counts are exact) and, under ``"bounds"``, intervals
    that are guaranteed to hold the exact metrics of the float32 scores
    (:func:`~blindspot.metrics.tables.error_bounds`).
    """

    def __init__(self, bits: int = 20) -> None:
        if not (isinstance(bits, int) and 10 <= bits <= 24):
            raise BlindspotError(f"BinnedAccumulator: bits must be an integer in [10, 24]; got {bits!r}.")
        self.bits = bits
        self._positives = np.zeros(2**bits, np.int64)
        self._negatives = np.zeros(2**bits, np.int64)

    def _add(self, histogram: np.ndarray, keys: np.ndarray) -> None:
        if len(keys) * 8 >= len(histogram):
            histogram += np.bincount(keys, minlength=len(histogram))
        else:  # small chunk: avoid touching every bin
            unique, counts = np.unique(keys, return_counts=True)
            histogram[unique] += counts

    def update(self, labels, scores) -> "BinnedAccumulator":
        """Add the pixels of one chunk (any shape)."""
        labels, scores = check_pair("BinnedAccumulator.update", labels, scores, allow_empty=True)
        keys = _float32_keys("BinnedAccumulator.update", scores, self.bits)
        self._add(self._positives, keys[labels])
        self._add(self._negatives, keys[~labels])
        return self

    def merge(self, other: "BinnedAccumulator") -> "BinnedAccumulator":
        """Add everything ``other`` has seen (in place; returns self); both must use the same bits."""
        if not isinstance(other, BinnedAccumulator) or other.bits != self.bits:
            got = f"bits={other.bits}" if isinstance(other, BinnedAccumulator) else type(other).__name__
            raise BlindspotError(f"BinnedAccumulator.merge: expected a BinnedAccumulator with bits={self.bits}; got {got}.")
        self._positives += other._positives
        self._negatives += other._negatives
        return self

    def table(self) -> CountTable:
        """The non-empty bins as a count table whose values are the bins' lower edges (float32)."""
        keys = np.flatnonzero(self._positives + self._negatives)
        if len(keys) == 0:
            raise BlindspotError("BinnedAccumulator: no pixel was added.")
        return CountTable(_bin_lower_edges(keys, self.bits), self._positives[keys], self._negatives[keys])

    def compute(self) -> dict:
        """:func:`~blindspot.metrics.tables.summarize` of the binned table, with guaranteed intervals under ``"bounds"``."""
        return summarize(self.table(), bounds=True)

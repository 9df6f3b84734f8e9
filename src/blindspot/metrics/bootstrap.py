"""Case-level bootstrap: percentile intervals that resample cases (images or volumes), never pixels.

A resample draws ``n`` of the ``n`` resampling units (cases, or volumes) with replacement; a
unit drawn k times counts k times. The percentile interval at confidence c is the (1 − c)/2 and
(1 + c)/2 quantiles (linear interpolation) of the metric over the resamples, as
``scipy.stats.bootstrap(..., method="percentile")``; the draws are
``numpy.random.default_rng(seed).integers(0, n, (n_resamples, n))``, exactly scipy's draws for
the same generator, so both give the same interval (tested).

Pooled pixel metrics of a resample are computed without touching pixels: the resample's count
table is the weighted merge Σ_case multiplicity × (case's count table). :class:`CaseTables` puts
every case's table on one shared set of rows once; each resample is then a matrix product (or a
bincount for sparse rows) and cumulative sums, vectorised over resamples.

Shared rows, exactly: AP, AUROC and the best Dice only look at the cumulative counts *at values
that hold a positive pixel* (and, for AUROC, at the negatives tied with them). So every distinct
value holding a positive (in any case) keeps its own row, and each run of values between two of
them that hold only negatives becomes one row (the negatives ranked between them). The metrics of
a weighted merge of these reduced tables equal those of the full tables (tested against the
explicitly resampled pixels). Pooled data sets with many distinct positive scores are binned
first (float32 bit-pattern bins, :func:`bin_table`), which the caller decides and records.

A resample count is 0 (no intervals) or at least :data:`MIN_RESAMPLES` (fewer give percentile
intervals so coarse they can exclude the estimate): :func:`check_bootstrap` is the one rule of
every command. The draws cost about 32 bytes per unit and resample at their peak
(:func:`resample_bytes`); :func:`check_resample_memory` refuses, before drawing, what does not fit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from blindspot.errors import BlindspotError
from blindspot.metrics.accumulators import _bin_lower_edges, _float32_keys
from blindspot.metrics.tables import CountTable, run_starts
from blindspot.progress import progress
from blindspot.resources import check_memory
from blindspot.wording import count

__all__ = [
    "CONFIDENCE",
    "MIN_RESAMPLES",
    "N_RESAMPLES",
    "CaseTables",
    "bin_table",
    "check_bootstrap",
    "check_resample_memory",
    "mean_intervals",
    "multiplicities",
    "percentile_interval",
    "resample_bytes",
    "resample_indices",
    "resampled_means",
]

#: Resamples and confidence level of every interval unless told otherwise.
N_RESAMPLES = 1000
CONFIDENCE = 0.95
#: The fewest resamples of an interval (0 turns intervals off).
MIN_RESAMPLES = 100

#: Resample × row elements computed at once (bounds the memory of the vectorised metrics).
_BLOCK_ELEMENTS = 1 << 21


def check_bootstrap(n_resamples, confidence, *, unit: str = "case") -> None:
    """Refuse a resample count that is not 0 or an integer >= :data:`MIN_RESAMPLES`, or a confidence outside (0, 1).

    A count whose resamples cannot fit in memory even for two ``unit`` (case, image) is refused here
    too, before any data are read (the callers check again with the real number of units).
    """
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 0:
        raise BlindspotError(f"`bootstrap` must be an integer >= 0 (the number of resamples; 0 = no intervals); got {n_resamples!r}.")
    if 0 < n_resamples < MIN_RESAMPLES:
        raise BlindspotError(f"`bootstrap` must be 0 (no intervals) or at least {MIN_RESAMPLES} resamples: fewer give "
                             f"intervals too coarse to hold the estimate; got {n_resamples}.")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)) or not 0 < confidence < 1:
        raise BlindspotError(f"`confidence` must be a level in (0, 1), e.g. 0.95; got {confidence!r}.")
    check_resample_memory(2, n_resamples, unit=unit, at_least=True)


def resample_bytes(n_units: int, n_resamples: int, values_per_resample: float = 0) -> float:
    """Peak bytes of ``n_resamples`` resamples of ``n_units`` units: the draws, their offsets and the
    multiplicities (:func:`multiplicities`, 32 bytes a draw) and ``values_per_resample`` float64s of each."""
    return float(n_resamples) * (32.0 * n_units + 8.0 * values_per_resample)


def check_resample_memory(n_units: int, n_resamples: int, values_per_resample: float = 0, *, unit: str = "case",
                          at_least: bool = False) -> None:
    """Refuse, before drawing, resamples whose :func:`resample_bytes` exceed the memory available (naming `bootstrap`).

    ``unit``: what is resampled (case, image, volume); ``at_least``: ``n_units`` is a lower bound
    (the data are not read yet).
    """
    units = f"{'at least ' if at_least else ''}{count(n_units, unit)}"
    check_memory(resample_bytes(n_units, n_resamples, values_per_resample), f"the resamples of {units}", parameter="bootstrap",
                 value=n_resamples, per_unit=resample_bytes(n_units, 1, values_per_resample))


def resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """Units drawn with replacement, shape ``(n_resamples, n)``: the draws of ``scipy.stats.bootstrap``.

    ``numpy.random.default_rng(seed).integers(0, n, (n_resamples, n))`` is exactly what
    ``scipy.stats.bootstrap(..., rng=numpy.random.default_rng(seed))`` draws for one sample (or
    paired samples) of length n, in one batch.

    Examples
    --------
    >>> resample_indices(3, 2, seed=0).shape
    (2, 3)
    """
    if n < 1:
        raise BlindspotError("resample_indices: there is no unit to resample.")
    check_resample_memory(n, n_resamples)
    return np.random.default_rng(seed).integers(0, n, (n_resamples, n))


def multiplicities(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of the ``n`` units is drawn in each resample: ``(n_resamples, n)`` float64 (exact integers)."""
    indices = np.asarray(indices)
    offsets = indices + n * np.arange(len(indices))[:, None]
    return np.bincount(offsets.ravel(), minlength=len(indices) * n).reshape(len(indices), n).astype(np.float64)


def percentile_interval(distribution, confidence: float = CONFIDENCE):
    """Percentile interval of a bootstrap distribution along its first axis (linear quantiles).

    Undefined resamples (nan) are left out; an interval is nan only when every resample is.
    Returns ``(low, high)``: floats for a 1-D distribution, else arrays of the remaining shape.

    Examples
    --------
    >>> percentile_interval(np.arange(5.0), 0.5)
    (1.0, 3.0)
    """
    values = np.asarray(distribution, np.float64)
    alpha = (1 - confidence) / 2
    defined = ~np.isnan(values)
    if defined.all():
        low, high = np.quantile(values, [alpha, 1 - alpha], axis=0)
    elif not defined.any(axis=0).any():
        low = high = np.full(values.shape[1:], np.nan)
    else:
        with warnings.catch_warnings():  # a column without a defined resample is nan by design
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanquantile(values, [alpha, 1 - alpha], axis=0)
    if values.ndim == 1:
        return float(low), float(high)
    return low, high


def resampled_means(per_unit: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Means over the units of every resample: ``weights`` (B, N) multiplicities, ``per_unit`` (N, ...) → (B, ...)."""
    per_unit = np.asarray(per_unit, np.float64)
    flat = per_unit.reshape(len(per_unit), -1)
    means = (weights @ flat) / weights.sum(axis=1, keepdims=True)
    return means.reshape((len(weights), *per_unit.shape[1:]))


def mean_intervals(per_unit, *, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0):
    """Percentile intervals of the mean over units (axis 0) of every cell, resampling the units.

    Parameters
    ----------
    per_unit : array of shape (N, ...)
        One value per unit (e.g. the AP of each image) and cell (e.g. each (intensity, σ)).

    Returns
    -------
    low, high : arrays of shape (...)
        The interval of the mean of each cell; every cell uses the same resamples.
    """
    check_bootstrap(n_resamples, confidence)
    per_unit = np.asarray(per_unit, np.float64)
    n = len(per_unit)
    flat = per_unit.reshape(n, -1)
    step = max(1, _BLOCK_ELEMENTS // max(n_resamples, 1))
    check_resample_memory(n, n_resamples, 3 * min(step, flat.shape[1]))  # a block of means and the quantiles' copies
    weights = multiplicities(resample_indices(n, n_resamples, seed), n)
    low, high = np.empty(flat.shape[1]), np.empty(flat.shape[1])
    with progress(flat.shape[1], "intervals", unit="cell") as bar:
        for start in range(0, flat.shape[1], step):
            block = resampled_means(flat[:, start:start + step], weights)
            low[start:start + step], high[start:start + step] = percentile_interval(block, confidence)
            bar.update(block.shape[1])
    return low.reshape(per_unit.shape[1:]), high.reshape(per_unit.shape[1:])


# --------------------------------------------------------------------------------------------
# pooled count tables of resamples


def bin_table(table: CountTable, bits: int) -> CountTable:
    """The table of the same pixels with scores rounded down to their float32 bit-pattern bin.

    Equal to :func:`blindspot.metrics.binned_table` of the table's pixels, computed from its rows
    in one pass (the bin index is monotone in the value, so equal bins are neighbours).
    """
    if not len(table):
        return table
    keys = _float32_keys("bin_table", table.values, bits)
    starts = run_starts(keys)
    return CountTable(_bin_lower_edges(keys[starts], bits), np.add.reduceat(table.positives, starts),
                      np.add.reduceat(table.negatives, starts))


@dataclass(frozen=True)
class CaseTables:
    """The count tables of several cases on one shared set of rows, for pooled metrics of resamples.

    Row 0 holds the highest scores. Each value holding a positive pixel (in any case) has its own
    row; each run of values between two of them holding only negatives is one row (see the module
    docstring: AP, AUROC and best Dice of any weighted merge are unchanged).

    Attributes
    ----------
    case, row : ndarray of int64, shape (S,)
        The non-zero entries, sorted by row: case index and shared row.
    positives, negatives : ndarray of int64, shape (S,)
        Pixel counts of that case in that row.
    n_cases, n_rows : int
    resolution : str
        ``"exact"``, or ``"binned (B bits)"`` when the tables were binned first.
    """

    case: np.ndarray
    row: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    n_cases: int
    n_rows: int
    resolution: str = "exact"

    @classmethod
    def from_tables(cls, tables: Sequence[CountTable | None], *, bits: int | None = None) -> "CaseTables":
        """Shared rows of one count table per case (None or empty: a case without pixels).

        ``bits``: bin every table first (:func:`bin_table`), for data sets whose distinct
        positive scores are too many for exact rows.
        """
        tables = [None if t is None or not len(t) else (bin_table(t, bits) if bits else t) for t in tables]
        resolution = f"binned ({bits} bits)" if bits else "exact"
        present = [k for k, t in enumerate(tables) if t is not None]
        empty = np.zeros(0, np.int64)
        if not present:
            return cls(empty, empty, empty, empty, len(tables), 0, resolution)
        values = np.concatenate([tables[k].values for k in present])  # the common dtype, as merge_tables
        union = np.unique(values)
        held = np.concatenate([tables[k].values[tables[k].positives > 0] for k in present])
        has_positive = np.zeros(len(union), bool)
        has_positive[np.searchsorted(union, held)] = True
        # ascending groups: every positive value alone; negative-only runs between them together
        starts = np.ones(len(union), bool)
        starts[1:] = has_positive[1:] | has_positive[:-1]
        group = np.cumsum(starts) - 1
        n_rows = int(group[-1]) + 1
        lengths = [len(tables[k]) for k in present]
        case = np.repeat(np.asarray(present, np.int64), lengths)
        row = (n_rows - 1 - group)[np.searchsorted(union, values)]
        positives = np.concatenate([tables[k].positives for k in present]).astype(np.int64)
        negatives = np.concatenate([tables[k].negatives for k in present]).astype(np.int64)
        key = row * len(tables) + case  # sorted by row, then case
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = run_starts(key)
        return cls(case[order][first], row[order][first], np.add.reduceat(positives[order], first),
                   np.add.reduceat(negatives[order], first), len(tables), n_rows, resolution)

    def __len__(self) -> int:
        return len(self.row)

    def case_totals(self) -> tuple[np.ndarray, np.ndarray]:
        """Positive and negative pixels of each case, ``(n_cases,)`` each."""
        return (np.bincount(self.case, weights=self.positives, minlength=self.n_cases),
                np.bincount(self.case, weights=self.negatives, minlength=self.n_cases))

    def merged(self, weights) -> CountTable:
        """The weighted merge Σ weights[case] × table[case] as a count table (values: minus the row index).

        For checks: its metrics are those of the explicitly resampled pixels.
        """
        weights = np.asarray(weights)
        pos = np.bincount(self.row, weights=self.positives * weights[self.case], minlength=self.n_rows)
        neg = np.bincount(self.row, weights=self.negatives * weights[self.case], minlength=self.n_rows)
        keep = (pos + neg) > 0
        values = -np.arange(self.n_rows, dtype=np.float64)[keep][::-1]
        return CountTable(values, pos[keep][::-1].round().astype(np.int64), neg[keep][::-1].round().astype(np.int64))

    def _block(self, weights: np.ndarray, lo: int, hi: int, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """Pooled counts of rows [lo, hi) for every resample: (B, hi − lo) positives and negatives."""
        n_resamples, width, nnz = len(weights), hi - lo, last - first
        case, row = self.case[first:last], self.row[first:last] - lo
        if nnz * 64 >= self.n_cases * width:  # dense enough (>= 1.6 %): a matrix product (BLAS) beats a bincount
            pos = np.zeros((self.n_cases, width))
            neg = np.zeros((self.n_cases, width))
            pos[case, row] = self.positives[first:last]
            neg[case, row] = self.negatives[first:last]
            return weights @ pos, weights @ neg
        pos, neg = np.empty((n_resamples, width)), np.empty((n_resamples, width))
        step = max(1, _BLOCK_ELEMENTS // max(nnz, 1))
        for b0 in range(0, n_resamples, step):  # sparse: one bincount over (resample, row) pairs
            w = weights[b0:b0 + step]
            index = (np.arange(len(w))[:, None] * width + row[None, :]).ravel()
            size = len(w) * width
            pos[b0:b0 + step] = np.bincount(index, weights=(w[:, case] * self.positives[first:last]).ravel(),
                                            minlength=size).reshape(len(w), width)
            neg[b0:b0 + step] = np.bincount(index, weights=(w[:, case] * self.negatives[first:last]).ravel(),
                                            minlength=size).reshape(len(w), width)
        return pos, neg

    def metrics(self, weights) -> dict[str, np.ndarray]:
        """AP, AUROC and best Dice of the weighted merge of the case tables, for every row of ``weights``.

        Parameters
        ----------
        weights : array of shape (B, n_cases)
            Multiplicity of each case in each resample (:func:`multiplicities`), or any non-negative
            integer weights.

        Returns
        -------
        dict of ``ap``, ``auroc``, ``best_dice``: arrays of shape (B,); nan where the metric is
        undefined (no positive pixel; for AUROC also no negative), as
        :func:`blindspot.metrics.summarize`. Equal to the table metrics of the merged pixels to 1e-12.
        """
        weights = np.atleast_2d(np.asarray(weights, np.float64))
        if weights.shape[1] != self.n_cases:
            raise BlindspotError(f"CaseTables.metrics: weights must have {self.n_cases} columns, one per case; got {weights.shape}.")
        out = {name: np.empty(len(weights)) for name in ("ap", "auroc", "best_dice")}
        case_pos, case_neg = self.case_totals()
        chunk = 1024  # resamples at once
        with progress(len(weights), "bootstrap", unit="resample") as bar:
            for b0 in range(0, len(weights), chunk):
                part = weights[b0:b0 + chunk]
                for name, values in self._metrics(part, part @ case_pos, part @ case_neg).items():
                    out[name][b0:b0 + chunk] = values
                bar.update(len(part))
        return out

    def _metrics(self, weights: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray) -> dict[str, np.ndarray]:
        n_resamples = len(weights)
        tp, fp = np.zeros(n_resamples), np.zeros(n_resamples)
        ap, twice_u, dice = np.zeros(n_resamples), np.zeros(n_resamples), np.zeros(n_resamples)
        width = max(1, _BLOCK_ELEMENTS // max(n_resamples, self.n_cases))  # rows at once
        bounds = np.searchsorted(self.row, np.arange(0, self.n_rows + width, width))
        for j, lo in enumerate(range(0, self.n_rows, width)):
            hi = min(lo + width, self.n_rows)
            pos, neg = self._block(weights, lo, hi, int(bounds[j]), int(bounds[j + 1]))
            tps = tp[:, None] + np.cumsum(pos, axis=1)
            fps = fp[:, None] + np.cumsum(neg, axis=1)
            held = pos > 0
            precision = np.divide(tps, tps + fps, out=np.zeros_like(tps), where=held)
            ap += (pos * precision).sum(axis=1)
            twice_u += (pos * (2 * (n_neg[:, None] - fps) + neg)).sum(axis=1)
            dice = np.maximum(dice, (2 * tps / np.maximum(n_pos[:, None] + tps + fps, 1)).max(axis=1))
            tp, fp = tps[:, -1], fps[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = np.where(n_pos > 0, ap / n_pos, np.nan)
            auroc = np.where((n_pos > 0) & (n_neg > 0), twice_u / (2 * n_pos * n_neg), np.nan)
        return {"ap": ap, "auroc": auroc, "best_dice": np.where(n_pos > 0, dice, np.nan)}

    # ---------------------------------------------------------------- storage
    def arrays(self, prefix: str = "tables_") -> dict[str, np.ndarray]:
        """The tables as arrays for an ``.npz`` (counts in the smallest unsigned type that holds them)."""
        def small(a: np.ndarray) -> np.ndarray:
            top = int(a.max()) if len(a) else 0
            return a.astype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32 if top < 2**32 else np.int64)

        return {f"{prefix}case": small(self.case), f"{prefix}row": small(self.row), f"{prefix}positives": small(self.positives),
                f"{prefix}negatives": small(self.negatives), f"{prefix}shape": np.array([self.n_cases, self.n_rows], np.int64),
                f"{prefix}resolution": np.array(self.resolution)}

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "tables_") -> "CaseTables":
        """The inverse of :meth:`arrays`."""
        n_cases, n_rows = (int(v) for v in arrays[f"{prefix}shape"])
        return cls(*(np.asarray(arrays[f"{prefix}{k}"], np.int64) for k in ("case", "row", "positives", "negatives")),
                   n_cases, n_rows, str(arrays[f"{prefix}resolution"]))

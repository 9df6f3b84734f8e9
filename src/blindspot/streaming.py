"""Pixel-count tables and mergeable accumulators: exact ranking metrics one volume at a time.

Every threshold-based metric of an anomaly map over labelled pixels (average precision, AUROC,
best Dice, Dice / precision / recall at a threshold, the PR and ROC curves, a threshold at a given
false-positive rate) depends only on a *count table*: the distinct score values and, at each one,
the number of anomalous (positive) and normal (negative) pixels. The tables of disjoint pixel sets
merge exactly (equal values add their counts), so a metric over a whole data set can be computed
volume by volume, in any order, and equal the metric of the pooled pixels.

Two accumulators share ``update(labels, scores)``, ``merge(other)`` and ``compute()``:

* :class:`ExactAccumulator` keeps the full table. Its metrics equal scikit-learn's on the pooled
  pixels (AP follows sklearn's operation order; AUROC and best Dice come from exact integer counts).
  Memory is O(number of distinct scores): 16 bytes plus the score itemsize per distinct value, i.e.
  at most about the size of the scores themselves, and much less for quantised maps or large
  constant backgrounds.
* :class:`BinnedAccumulator` keeps two histograms over the bit patterns of the float32 scores
  (``bits`` leading bits: sign, exponent and ``bits - 9`` mantissa bits), so memory is constant
  (``2 ** bits`` bins × 2 × 8 bytes, 16 MiB at the default 20 bits) whatever the scale of the
  scores. Its metrics are the exact metrics of the scores rounded down to their bin's lower edge;
  a bin spans a relative width of at most ``2 ** -(bits - 9)`` (0.05 % at 20 bits). Every binned
  metric comes with a guaranteed interval for the exact value (:func:`error_bounds`); counts at a
  bin edge, hence Dice / precision / recall at a threshold chosen from the bins, are exact.

Conventions: positive = anomaly, higher score = more anomalous, a threshold ``t`` predicts
``score >= t``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from blindspot.errors import BlindspotError
from blindspot.metrics import UndefinedMetricWarning

__all__ = [
    "BinnedAccumulator",
    "CountTable",
    "ExactAccumulator",
    "average_precision",
    "best_dice",
    "best_mean_dice",
    "binned_table",
    "count_table",
    "counts_at",
    "error_bounds",
    "merge_tables",
    "pr_curve",
    "roc_auc",
    "roc_curve",
    "summarize",
    "threshold_at_fpr",
]


# --------------------------------------------------------------------------------------------
# count tables


@dataclass(frozen=True)
class CountTable:
    """Distinct score values and the pixel counts at each one.

    Attributes
    ----------
    values : ndarray, shape (U,)
        Strictly increasing distinct scores (dtype of the scores).
    positives, negatives : ndarray of int64, shape (U,)
        Number of anomalous / normal pixels with exactly that score.
    """

    values: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    @property
    def n_positive(self) -> int:
        return int(self.positives.sum())

    @property
    def n_negative(self) -> int:
        return int(self.negatives.sum())


def _check_pixels(name: str, labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Flatten and validate labels (binary) and scores (finite real numbers) of one shape."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.shape != scores.shape:
        raise BlindspotError(f"{name}: labels and scores must have the same shape; got {labels.shape} and {scores.shape}.")
    if scores.dtype.kind not in "iuf":
        raise BlindspotError(f"{name}: scores must be real numbers; got dtype {scores.dtype}.")
    scores = scores.ravel()
    if scores.dtype.kind == "f" and not np.isfinite(scores).all():
        raise BlindspotError(f"{name}: scores must be finite; got NaN or infinite values.")
    labels = labels.ravel()
    if labels.dtype != np.bool_:
        if labels.dtype.kind not in "iuf" or not ((labels == 0) | (labels == 1)).all():
            raise BlindspotError(f"{name}: labels must be bool or 0/1; got other values (dtype {labels.dtype}).")
        labels = labels == 1
    return labels, scores


def count_table(labels, scores) -> CountTable:
    """The count table of one set of pixels (any shape; labels bool or 0/1, scores finite).

    Scores keep their dtype, so ties are decided by equality in that dtype (as in scikit-learn).

    Examples
    --------
    >>> t = count_table([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1])
    >>> t.values.tolist(), t.positives.tolist(), t.negatives.tolist()
    ([0.1, 0.5, 0.9], [0, 1, 1], [1, 1, 0])
    """
    labels, scores = _check_pixels("count_table", labels, scores)
    values, counts = np.unique(scores, return_counts=True)
    positive_values, positive_counts = np.unique(scores[labels], return_counts=True)
    positives = np.zeros(len(values), np.int64)
    positives[np.searchsorted(values, positive_values)] = positive_counts
    return CountTable(values, positives, counts.astype(np.int64) - positives)


def _ordered_bits(values: np.ndarray) -> np.ndarray:
    """uint32 codes of float32 values whose unsigned order is the numeric order (-0.0 just below +0.0)."""
    pattern = values.view(np.uint32)
    return np.where(pattern >> np.uint32(31), ~pattern, pattern | np.uint32(0x80000000))


def _sort_order(values: np.ndarray) -> np.ndarray:
    """A permutation sorting ``values`` ascending (ties in any order).

    float32 values are sorted as packed uint64 keys (order-preserving value bits, then the index),
    which uses numpy's vectorised integer sort and is several times faster than ``argsort``;
    other dtypes use a stable argsort, which is fast on concatenated sorted runs.
    """
    if values.dtype == np.float32 and len(values) < 2**32:
        keys = (_ordered_bits(values).astype(np.uint64) << np.uint64(32)) | np.arange(len(values), dtype=np.uint64)
        keys.sort()
        return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return np.argsort(values, kind="stable")


def merge_tables(tables) -> CountTable:
    """The table of the union of disjoint pixel sets: one exact merge, whatever the order.

    Parameters
    ----------
    tables : iterable of CountTable
        At least one non-empty table; values of different dtypes are promoted (float32 with
        float64 → float64). One sort of all rows (see :func:`_sort_order`).
    """
    tables = [t for t in tables if len(t)]
    if not tables:
        raise BlindspotError("merge_tables: got no non-empty table to merge.")
    if len(tables) == 1:
        return tables[0]
    values = np.concatenate([t.values for t in tables])
    order = _sort_order(values)
    values = values[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    positives = np.add.reduceat(np.concatenate([t.positives for t in tables])[order], starts)
    negatives = np.add.reduceat(np.concatenate([t.negatives for t in tables])[order], starts)
    return CountTable(values[starts], positives, negatives)


# --------------------------------------------------------------------------------------------
# metrics of a table


def _descending(table: CountTable):
    """(values, positives, negatives, tps, fps) with values in descending order; tps/fps cumulative int64.

    Computed once per table (cached on it), since every metric starts from these counts.
    """
    cached = table.__dict__.get("_descending")
    if cached is None:
        values, pos, neg = table.values[::-1], table.positives[::-1], table.negatives[::-1]
        cached = (values, pos, neg, np.cumsum(pos), np.cumsum(neg))
        object.__setattr__(table, "_descending", cached)
    return cached


def average_precision(table: CountTable) -> float:
    """Average precision of the pixels counted in ``table``, equal to scikit-learn's.

    The step rule AP = Σ (R_n − R_{n−1}) P_n over the distinct thresholds, computed in
    ``sklearn.metrics.average_precision_score``'s operation order. Without a positive pixel it
    warns (:class:`~blindspot.metrics.UndefinedMetricWarning`) and returns 0.0, like sklearn.
    """
    _, _, _, tps, fps = _descending(table)
    if len(tps) == 0 or tps[-1] == 0:
        warnings.warn("average_precision: the table has no positive pixel; returning 0.0.", UndefinedMetricWarning, stacklevel=2)
        return 0.0
    tps, fps = tps.astype(np.float64), fps.astype(np.float64)
    precision = np.hstack(((tps / (tps + fps))[::-1], 1.0))
    recall = np.hstack(((tps / tps[-1])[::-1], 0.0))
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def _twice_u(pos: np.ndarray, neg: np.ndarray, fps: np.ndarray) -> int:
    """2 × Mann-Whitney U: a positive beats the negatives below its value and ties with those at it."""
    n_neg = int(fps[-1])
    return int(np.sum(pos * (2 * (n_neg - fps) + neg)))


def roc_auc(table: CountTable) -> float:
    """Area under the ROC curve (Mann-Whitney U / (P·N), ties count 1/2); nan with a warning if one class."""
    _, pos, neg, tps, fps = _descending(table)
    n_pos, n_neg = (int(tps[-1]), int(fps[-1])) if len(tps) else (0, 0)
    if n_pos == 0 or n_neg == 0:
        warnings.warn("roc_auc: the table holds only one class; returning nan.", UndefinedMetricWarning, stacklevel=2)
        return float("nan")
    return _twice_u(pos, neg, fps) / (2 * n_pos * n_neg)


def best_dice(table: CountTable) -> tuple[float, float]:
    """Exact max over thresholds t of Dice(labels, scores >= t), and the largest t reaching it.

    Thresholding at a distinct value v predicts every pixel with score >= v, so Dice(v) =
    2 TP(v) / (P + TP(v) + FP(v)) from exact counts; equal Dice values compare equal and the first
    maximum in descending order is the largest threshold (as :func:`blindspot.metrics.best_dice`).
    Without a positive pixel: (nan, nan) with a warning.
    """
    values, _, _, tps, fps = _descending(table)
    if len(tps) == 0 or tps[-1] == 0:
        warnings.warn("best_dice: the table has no positive pixel; returning (nan, nan).", UndefinedMetricWarning, stacklevel=2)
        return float("nan"), float("nan")
    dice = 2 * tps / (tps[-1] + tps + fps)
    k = int(np.argmax(dice))
    return float(dice[k]), float(values[k])


def counts_at(table: CountTable, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of the prediction ``score >= threshold``."""
    k = int(np.searchsorted(table.values, threshold, side="left"))
    tp, fp = int(table.positives[k:].sum()), int(table.negatives[k:].sum())
    return tp, fp, table.n_positive - tp


def threshold_at_fpr(table: CountTable, fpr: float) -> tuple[float, float]:
    """The smallest score value t whose false-positive rate (negatives with score >= t) is <= ``fpr``.

    Positives are ignored: the table is meant to hold healthy validation pixels. Returns ``(t,
    achieved_fpr)``; with ties the achieved rate can be below ``fpr``. If even the largest value is
    too frequent, t is the next representable number above it (nothing predicted, rate 0).
    """
    if not 0 < fpr < 1:
        raise BlindspotError(f"threshold_at_fpr: fpr must be in (0, 1); got {fpr}.")
    values, _, neg, _, fps = _descending(table)
    n_neg = int(fps[-1]) if len(fps) else 0
    if n_neg == 0:
        raise BlindspotError("threshold_at_fpr: the table holds no negative (healthy) pixel.")
    allowed = np.flatnonzero(fps <= fpr * n_neg)
    if len(allowed) == 0:
        top = values[0]
        return float(np.nextafter(top, np.array(np.inf, dtype=top.dtype))), 0.0
    k = int(allowed[-1])
    return float(values[k]), float(fps[k] / n_neg)


def pr_curve(table: CountTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall points at every threshold that holds a positive pixel.

    Returns ``(recall, precision, thresholds)`` with thresholds in descending order (recall
    increasing). These are the corners of the step curve whose area is the AP; between them recall
    stays constant. Each point is also a point of ``sklearn.metrics.precision_recall_curve``.
    """
    values, pos, _, tps, fps = _descending(table)
    keep = pos > 0
    tps, fps = tps[keep].astype(np.float64), fps[keep].astype(np.float64)
    return tps / max(tps[-1] if len(tps) else 1.0, 1.0), tps / (tps + fps), values[keep]


def roc_curve(table: CountTable) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve's corners ``(fpr, tpr)``, from (0, 0) to (1, 1).

    For every value holding positives the curve has a point just before and just after that value's
    pixels are predicted; the segment between them is the tie diagonal. The trapezoid area under
    these points is exactly :func:`roc_auc`, and each point is a point of ``sklearn.metrics.roc_curve``.
    """
    _, pos, neg, tps, fps = _descending(table)
    n_pos, n_neg = max(int(tps[-1]), 1), max(int(fps[-1]), 1)
    keep = np.flatnonzero(pos > 0)
    before_fp, before_tp = fps[keep] - neg[keep], tps[keep] - pos[keep]
    fp = np.column_stack((before_fp, fps[keep])).ravel()
    tp = np.column_stack((before_tp, tps[keep])).ravel()
    fpr = np.r_[0.0, fp / n_neg, 1.0]
    tpr = np.r_[0.0, tp / n_pos, 1.0]
    return fpr, tpr


def error_bounds(table: CountTable) -> dict[str, tuple[float, float]]:
    """Guaranteed intervals for AP, AUROC and best Dice when each table row may hide any order.

    For a binned table (rows = bins) this bounds the exact metrics of the unbinned scores, because
    the exact value differs only in how pixels inside one bin are ordered. For a positive in a row
    with cumulative counts (TP0, FP0) before and (TP1, FP1) after the row, its exact precision lies
    in [(TP0+1)/(TP0+1+FP1), TP1/(TP1+FP0)]; in-row positive/negative pairs change the AUROC by at
    most 1/2 each; a threshold inside a row reaches at most 2·TP1/(P+TP1+FP0) Dice, and a bin edge
    is one of the exact thresholds, so the binned best Dice is a lower bound.
    """
    _, pos, neg, tps1, fps1 = _descending(table)
    n_pos, n_neg = (int(tps1[-1]), int(fps1[-1])) if len(tps1) else (0, 0)
    nan = (float("nan"), float("nan"))
    if n_pos == 0:
        return {"ap": nan, "auroc": nan, "best_dice": nan}
    keep = pos > 0
    p, t1, f1 = pos[keep].astype(np.float64), tps1[keep].astype(np.float64), fps1[keep].astype(np.float64)
    t0, f0 = t1 - p, f1 - neg[keep]
    ap = (float(np.sum(p * (t0 + 1) / (t0 + 1 + f1)) / n_pos), float(np.sum(p * t1 / (t1 + f0)) / n_pos))
    if n_neg:
        auc = _twice_u(pos, neg, fps1) / (2 * n_pos * n_neg)
        slack = float(np.sum(pos * neg)) / (2 * n_pos * n_neg)
        auroc = (max(0.0, auc - slack), min(1.0, auc + slack))
    else:
        auroc = nan
    dice_low = float(np.max(2 * tps1 / (n_pos + tps1 + fps1)))
    dice_high = float(np.max(2 * t1 / (n_pos + t1 + f0)))
    return {"ap": (min(ap), max(ap)), "auroc": auroc, "best_dice": (dice_low, dice_high)}


def summarize(table: CountTable, *, bounds: bool = False) -> dict:
    """Counts, AP, AUROC and best Dice (with its threshold) of a table, without warnings.

    Undefined metrics are nan (AP included, unlike :func:`average_precision`), so a summary of a
    normal-only set reads as "not applicable". With ``bounds=True`` the :func:`error_bounds`
    intervals are added under ``"bounds"``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        n_pos = table.n_positive
        dice, threshold = best_dice(table)
        out = {
            "n_positive": n_pos,
            "n_negative": table.n_negative,
            "ap": average_precision(table) if n_pos else float("nan"),
            "auroc": roc_auc(table),
            "best_dice": dice,
            "best_dice_threshold": threshold,
        }
    if bounds:
        out["bounds"] = error_bounds(table)
    return out


def best_mean_dice(tables) -> tuple[float, float]:
    """The threshold maximising the mean Dice over several units (volumes or images), exactly.

    Units without a positive pixel are skipped (their Dice is not averaged). Every unit's Dice
    changes only at its own values, so one merged sweep over all units' values in descending order,
    adding each row's change of its unit's Dice, gives the mean Dice at every distinct threshold
    (exact counts; the running sum adds float rounding of order 1e-16 per unit). Returns
    ``(mean_dice, threshold)``, the largest threshold among equal maxima; (nan, nan) if no unit has
    a positive.
    """
    rows = []
    for table in tables:
        values, _, _, tps, fps = _descending(table)
        if len(tps) == 0 or tps[-1] == 0:
            continue
        dice = 2 * tps / (tps[-1] + tps + fps)
        rows.append((values, np.diff(dice, prepend=0.0)))
    if not rows:
        return float("nan"), float("nan")
    values = np.concatenate([r[0] for r in rows])
    order = _sort_order(values)[::-1]
    values, total = values[order], np.cumsum(np.concatenate([r[1] for r in rows])[order])
    is_end = np.r_[values[1:] != values[:-1], True]
    candidates = np.where(is_end, total, -np.inf)
    k = int(np.argmax(candidates))
    return float(candidates[k] / len(rows)), float(values[k])


# --------------------------------------------------------------------------------------------
# accumulators


class ExactAccumulator:
    """Exact, mergeable pixel counts: metrics equal to scikit-learn's on all pixels seen.

    ``update`` stores the count table of a chunk (e.g. one volume); ``merge`` takes over another
    accumulator's tables; tables are merged pairwise only when needed. Memory: O(distinct scores).

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
        table = count_table(labels, scores)
        if len(table):
            self._tables.append(table)
        return self

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
        """:func:`summarize` of the merged table."""
        return summarize(self.table())


def _float32_keys(scores: np.ndarray, bits: int) -> np.ndarray:
    """Monotone bin index of each score: the leading ``bits`` bits of its order-preserving float32 pattern."""
    with np.errstate(over="ignore"):  # out-of-range values become inf and are rejected below
        s32 = np.asarray(scores, dtype=np.float32).ravel() + np.float32(0.0)  # + 0 turns -0.0 into +0.0
    if not np.isfinite(s32).all():
        raise BlindspotError("BinnedAccumulator: scores must be finite and within the float32 range.")
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
    labels, scores = _check_pixels("binned_table", labels, scores)
    keys = _float32_keys(scores, bits)
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
    that are guaranteed to hold the exact metrics of the float32 scores (:func:`error_bounds`).
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
        labels, scores = _check_pixels("BinnedAccumulator.update", labels, scores)
        keys = _float32_keys(scores, self.bits)
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
        """:func:`summarize` of the binned table, with guaranteed intervals under ``"bounds"``."""
        return summarize(self.table(), bounds=True)

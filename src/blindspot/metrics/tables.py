"""Pixel-count tables: the one definition of every threshold metric of an anomaly map.

Every metric of scores against binary labels that only depends on how the scores rank (average
precision, AUROC, best Dice, Dice / precision / recall at a threshold, the PR and ROC curves, a
threshold at a given false-positive rate) is a function of a *count table*: the distinct score
values and, at each one, the number of anomalous (positive) and normal (negative) pixels. This
module computes all of them from the table, once. The functional metrics of
:mod:`blindspot.metrics.ranking` are ``count_table`` plus the function of the same name here.

Tables of disjoint pixel sets merge exactly (equal values add their counts), so a metric over a
whole data set can be computed volume by volume, in any order, and equal the metric of the
pooled pixels (:func:`merge_tables`, :class:`~blindspot.metrics.ExactAccumulator`).

Conventions: positive = anomaly, higher score = more anomalous, a threshold ``t`` predicts
``score >= t`` (except :func:`benchmark_best_dice`, which reproduces a published rule). Scores
keep their dtype, so ties are decided by equality in that dtype, as in scikit-learn.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from blindspot.errors import BlindspotError
from blindspot.metrics._validation import UndefinedMetricWarning, check_pair, warn_undefined

__all__ = [
    "CountTable",
    "average_precision",
    "benchmark_best_dice",
    "best_dice",
    "best_mean_dice",
    "count_table",
    "counts_at",
    "error_bounds",
    "merge_tables",
    "pr_curve",
    "rates",
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


def _table_of_valid(labels: np.ndarray, scores: np.ndarray) -> CountTable:
    """The table of already validated pixels: bool ``labels`` and real ``scores``, both 1-D."""
    values, counts = np.unique(scores, return_counts=True)
    positive_values, positive_counts = np.unique(scores[labels], return_counts=True)
    positives = np.zeros(len(values), np.int64)
    positives[np.searchsorted(values, positive_values)] = positive_counts
    return CountTable(values, positives, counts.astype(np.int64) - positives)


def count_table(labels, scores) -> CountTable:
    """The count table of one set of pixels.

    Parameters
    ----------
    labels : array-like of bool or 0/1, any shape
    scores : array-like of real numbers, same shape as ``labels``
        Finite; kept in their dtype. Zero pixels give an empty table.

    Examples
    --------
    >>> t = count_table([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1])
    >>> t.values.tolist(), t.positives.tolist(), t.negatives.tolist()
    ([0.1, 0.5, 0.9], [0, 1, 1], [1, 1, 0])
    """
    return _table_of_valid(*check_pair("count_table", labels, scores, allow_empty=True))


def run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal neighbours begins in a sorted 1-D array (indices; 0 first unless empty)."""
    change = np.empty(len(values), bool)
    change[:1] = True
    np.not_equal(values[1:], values[:-1], out=change[1:])
    return np.flatnonzero(change)


def _collapse_ties(values: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> CountTable:
    """A table from non-decreasing ``values``, adding the counts of equal neighbours."""
    starts = run_starts(values)
    if len(starts) == len(values):
        return CountTable(values, positives, negatives)
    return CountTable(
        values[starts], np.add.reduceat(positives, starts), np.add.reduceat(negatives, starts)
    )


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of a sorted array and how often each occurs."""
    starts = run_starts(values)
    return values[starts], np.diff(starts, append=len(values))


def _merge_two(a: CountTable, b: CountTable) -> CountTable:
    """Two tables of one dtype merged in linear time: the smaller one's values located in the larger (one
    ``searchsorted``), its counts added where the value exists, its other rows inserted in place."""
    if len(b) > len(a):
        a, b = b, a
    values, other = a.values, b.values
    at = np.searchsorted(values, other)
    equal = at < len(values)
    equal[equal] = values[at[equal]] == other[equal]
    positives, negatives = a.positives.copy(), a.negatives.copy()
    positives[at[equal]] += b.positives[equal]
    negatives[at[equal]] += b.negatives[equal]
    new = ~equal
    if not new.any():
        return CountTable(values, positives, negatives)
    placed = at[new] + np.arange(np.count_nonzero(new))  # the new rows' places in the merged table (ascending)
    is_new = np.zeros(len(values) + len(placed), bool)
    is_new[placed] = True
    merged = []
    for old, added in ((values, other[new]), (positives, b.positives[new]), (negatives, b.negatives[new])):
        out = np.empty(len(is_new), old.dtype)
        out[placed] = added
        out[~is_new] = old
        merged.append(out)
    return CountTable(*merged)


def _pixels_by_value(values: np.ndarray, anomalous: np.ndarray) -> CountTable:
    """The table of pixels given one by one: all their ``values`` and those of the ``anomalous`` ones."""
    distinct, counts = _runs(np.sort(values))
    anomalous, anomalous_counts = _runs(np.sort(anomalous))
    positive = np.zeros(len(distinct), np.int64)
    positive[np.searchsorted(distinct, anomalous)] = anomalous_counts
    return CountTable(distinct, positive, counts - positive)


def merge_tables(tables) -> CountTable:
    """The table of the union of disjoint pixel sets, exactly, whatever the order.

    Parameters
    ----------
    tables : iterable of CountTable
        At least one non-empty table; empty ones are ignored. Values of different dtypes are
        first cast to their common dtype (float32 with float64 → float64, as ``np.concatenate``
        does), so the result equals :func:`count_table` of the concatenated pixels.

    Notes
    -----
    Most rows of continuous maps count a single pixel: those are split off table by table (while
    each table is in cache), their values sorted directly, with no index to carry along, and each
    distinct value's pixels and anomalous pixels follow from runs of equal values. Only the rows of
    tied pixels are argsorted, and the two partial tables merge in linear time, as do two tables
    given alone (the pairs of a merge tree). The sort is numpy's default (a vectorised introsort,
    O(S log S) for S rows): on 10⁸ pixels in 300 tables it is twice as fast as a timsort, which
    would merge the tables' sorted runs in O(S log N), and 3.5× as fast as one argsort of every
    row (``benchmarks/cluster.md``).
    """
    tables = [t for t in tables if len(t)]
    if not tables:
        raise BlindspotError("merge_tables: got no non-empty table to merge.")
    if len(tables) == 1:
        return tables[0]
    if len(tables) == 2 and tables[0].values.dtype == tables[1].values.dtype:  # (a cast could make values equal)
        return _merge_two(*tables)
    dtype = np.result_type(*(t.values.dtype for t in tables))  # the common dtype, as np.concatenate casts
    pixels, anomalous, tied = [], [], []
    for t in tables:
        values = t.values.astype(dtype, copy=False)
        single = (t.positives + t.negatives) == 1
        pixels.append(values[single])
        anomalous.append(values[single & (t.positives == 1)])
        if not single.all():
            tied.append((values[~single], t.positives[~single], t.negatives[~single]))
    partial = _pixels_by_value(np.concatenate(pixels), np.concatenate(anomalous))
    if not tied:
        return partial
    values, positives, negatives = (np.concatenate(column) for column in zip(*tied))
    order = np.argsort(values, kind="stable")
    sorted_rest = _collapse_ties(values[order], positives[order], negatives[order])
    return sorted_rest if not len(partial) else _merge_two(partial, sorted_rest)


# --------------------------------------------------------------------------------------------
# metrics of a table


def _descending(table: CountTable):
    """(values, positives, negatives, tps, fps) in descending value order; tps/fps cumulative int64.

    Computed once per table (cached on it), since every metric starts from these counts.
    """
    cached = table.__dict__.get("_descending")
    if cached is None:
        values, pos, neg = table.values[::-1], table.positives[::-1], table.negatives[::-1]
        cached = (values, pos, neg, np.cumsum(pos), np.cumsum(neg))
        object.__setattr__(table, "_descending", cached)
    return cached


def average_precision(table: CountTable) -> float:
    """Average precision of the pixels counted in ``table``, bitwise equal to scikit-learn's.

    The step rule AP = Σ (R_n − R_{n−1}) P_n over the distinct thresholds, computed in
    ``sklearn.metrics.average_precision_score``'s operation order (flip, ``diff(recall) *
    precision[:-1]``, negated sum). Every positive in a group of tied scores gets the precision
    after the whole group. Without a positive pixel it warns
    (:class:`~blindspot.metrics.UndefinedMetricWarning`) and returns 0.0, like sklearn.
    """
    _, _, _, tps, fps = _descending(table)
    if len(tps) == 0 or tps[-1] == 0:
        warn_undefined("average_precision", "contain no positive", "0.0")
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
    """Area under the ROC curve: Mann-Whitney U / (P·N) from exact integer counts, ties count 1/2.

    Equal to ``sklearn.metrics.roc_auc_score`` to 1e-12. With only one class it warns and
    returns nan.
    """
    _, pos, neg, tps, fps = _descending(table)
    n_pos, n_neg = (int(tps[-1]), int(fps[-1])) if len(tps) else (0, 0)
    if n_pos == 0 or n_neg == 0:
        warn_undefined("roc_auc", "contain only one class", "nan")
        return float("nan")
    return _twice_u(pos, neg, fps) / (2 * n_pos * n_neg)


def best_dice(table: CountTable) -> tuple[float, float]:
    """Exact max over thresholds t of Dice(labels, scores >= t), and the largest t reaching it.

    Thresholding at a distinct value v predicts every pixel with score >= v, so Dice(v) =
    2 TP(v) / (P + TP(v) + FP(v)) from exact counts; equal Dice values compare equal and the
    first maximum in descending order is the largest threshold. Without a positive pixel it
    warns and returns (nan, nan).
    """
    values, _, _, tps, fps = _descending(table)
    if len(tps) == 0 or tps[-1] == 0:
        warn_undefined("best_dice", "contain no positive", "(nan, nan)")
        return float("nan"), float("nan")
    dice = 2 * tps / (tps[-1] + tps + fps)
    k = int(np.argmax(dice))
    return float(dice[k]), float(values[k])


def benchmark_best_dice(table: CountTable) -> tuple[float, float]:
    """Best Dice by the MedIAnomaly benchmark's published rule, for comparison with its numbers.

    With N pooled pixels, step = N // 200 (1 when N < 200); the thresholds are the ascending
    sorted scores at sorted indices 0, step, 2·step, … (< N); the prediction is ``score > t``
    (strictly greater) and Dice = 2·|pred ∩ label| / (|pred| + |label|). Computed exactly from
    the table's cumulative counts (the rank of each grid index is located in them), without
    touching pixels.

    Returns
    -------
    dice : float
        The best Dice on that grid: at most :func:`best_dice`, and far below it when the
        anomaly is smaller than one grid step (the top 0.15 % of pixels, say).
    threshold : float
        Its t; among equal maxima the smallest (the first of the ascending grid, as the
        benchmark's ``argmax``). (nan, nan) with a warning if there is no positive pixel.
    """
    n_pos = table.n_positive
    if n_pos == 0:
        warn_undefined("benchmark_best_dice", "contain no positive", "(nan, nan)")
        return float("nan"), float("nan")
    at_or_below = np.cumsum(table.positives + table.negatives)  # pixels with score <= values[i]
    n = int(at_or_below[-1])
    ranks = np.arange(0, n, max(n // 200, 1))  # sorted-pixel indices of the thresholds
    rows = np.searchsorted(at_or_below, ranks, side="right")  # the value at each of those ranks
    predicted = n - at_or_below[rows]
    true_positive = n_pos - np.cumsum(table.positives)[rows]
    dice = 2 * true_positive / (predicted + n_pos)
    k = int(np.argmax(dice))
    return float(dice[k]), float(table.values[rows[k]])


def counts_at(table: CountTable, threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of the prediction ``score >= threshold``."""
    k = int(np.searchsorted(table.values, threshold, side="left"))
    tp, fp = int(table.positives[k:].sum()), int(table.negatives[k:].sum())
    return tp, fp, table.n_positive - tp


def rates(tp: int, fp: int, fn: int) -> dict:
    """Dice, precision and recall from counts, e.g. those of :func:`counts_at`.

    Precision is 0.0 when nothing is predicted (scikit-learn's ``zero_division`` default);
    Dice is nan when both masks are empty and recall is nan without a positive.

    Examples
    --------
    >>> rates(3, 1, 2)
    {'dice': 0.6666666666666666, 'precision': 0.75, 'recall': 0.6}
    """
    return {"dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else float("nan")}


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
    order = np.argsort(values, kind="stable")[::-1]  # timsort merges the units' sorted runs
    values, total = values[order], np.cumsum(np.concatenate([r[1] for r in rows])[order])
    is_end = np.r_[values[1:] != values[:-1], True]
    candidates = np.where(is_end, total, -np.inf)
    k = int(np.argmax(candidates))
    return float(candidates[k] / len(rows)), float(values[k])

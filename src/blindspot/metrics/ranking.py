"""Functional ranking and overlap metrics, and their vectorised fast paths.

The front door, ``average_precision(labels, scores)``, :func:`roc_auc`, :func:`dice` and
:func:`best_dice`, is: validate, build the count table, apply the metric of that name in
:mod:`blindspot.metrics.tables` (the definition). Inputs are array-likes of any shape, flattened;
labels are bool or 0/1 numbers; scores are never cast or rescaled, so ties are decided by equality
in the dtype given (two float64 values that round to the same float32 tie only if the caller passes
float32).

The fast paths compute the same numbers without a table, for shapes where a table per row would
be slow; the tests hold each one to the definition:

* ``*_batch``: arrays of shape ``(N, ...)`` (first axis = image), one value per image, vectorised
  across images with one argsort per row (descending scores, cumulative positives, and the
  tie-group ends, the only positions where a threshold can fall). Summation order differs from
  the definition: equal to 1e-12.
* :func:`ap_against_negatives`: the experiment grid's AP of many positive sets against one shared,
  pre-sorted set of negatives.
"""

from __future__ import annotations

import numpy as np

from blindspot.metrics import tables
from blindspot.metrics._validation import check_pair, warn_undefined
from blindspot.metrics.tables import _table_of_valid, counts_at

__all__ = [
    "ap_against_negatives",
    "average_precision",
    "average_precision_batch",
    "best_dice",
    "best_dice_batch",
    "dice",
    "dice_batch",
    "roc_auc",
    "roc_auc_batch",
]


# --------------------------------------------------------------------------------------------
# the front door: validation + count table + the table's metric


def average_precision(labels, scores) -> float:
    """Average precision of ``scores`` for detecting ``labels``, identical to scikit-learn's.

    The non-interpolated step rule AP = sum_n (R_n - R_{n-1}) P_n over the distinct score
    thresholds, i.e. the area under the precision-recall step curve. Every positive in a group
    of tied scores gets the precision after the whole group. The operations follow
    ``sklearn.metrics.average_precision_score`` in the same order, so results are bitwise equal
    (:func:`blindspot.metrics.tables.average_precision`).

    Parameters
    ----------
    labels : array-like of bool or 0/1, any shape
        Ground truth; 1 marks an anomaly.
    scores : array-like of real numbers, same shape as ``labels``
        Anomaly scores; higher means more anomalous. Must be finite.

    Returns
    -------
    float
        AP in [0, 1]. Without any positive label AP is undefined: returns 0.0 and warns with
        :class:`~blindspot.metrics.UndefinedMetricWarning` (scikit-learn's convention).

    Examples
    --------
    >>> average_precision([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1])
    0.8333333333333333
    """
    labels, scores = check_pair("average_precision", labels, scores)
    return tables.average_precision(_table_of_valid(labels, scores))


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve, equal to ``sklearn.metrics.roc_auc_score`` to 1e-12.

    Computed as the Mann-Whitney U statistic divided by P * N (ties count one half) from exact
    integer rank counts, so it is the probability that a random anomaly outscores a random
    normal pixel.

    Parameters
    ----------
    labels : array-like of bool or 0/1, any shape
        Ground truth; 1 marks an anomaly.
    scores : array-like of real numbers, same shape as ``labels``
        Anomaly scores; higher means more anomalous. Must be finite.

    Returns
    -------
    float
        AUROC in [0, 1]; nan with an :class:`~blindspot.metrics.UndefinedMetricWarning` if
        ``labels`` holds only one class.

    Examples
    --------
    >>> roc_auc([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1])
    0.875
    """
    labels, scores = check_pair("roc_auc", labels, scores)
    return tables.roc_auc(_table_of_valid(labels, scores))


def dice(labels, prediction, *, empty_score: float = 1.0) -> float:
    """Dice overlap 2|A∩B| / (|A| + |B|) of two binary masks, from exact integer counts.

    Parameters
    ----------
    labels : array-like of bool or 0/1, any shape
        Ground-truth mask A.
    prediction : array-like of bool or 0/1, same shape as ``labels``
        Predicted mask B.
    empty_score : float, keyword-only, default 1.0
        Returned when both masks are empty (Dice is 0/0 there; by default two empty masks agree
        perfectly).

    Returns
    -------
    float
        Dice in [0, 1], or ``empty_score``.

    Examples
    --------
    >>> dice([1, 1, 0, 0], [1, 0, 1, 0])
    0.5
    """
    labels, prediction = check_pair("dice", labels, prediction, other_name="prediction")
    tp, fp, fn = counts_at(_table_of_valid(labels, prediction), True)
    return tables.rates(tp, fp, fn)["dice"] if tp + fp + fn else float(empty_score)


def best_dice(labels, scores) -> tuple[float, float]:
    """Best achievable Dice of a global threshold: max over t of ``dice(labels, scores >= t)``.

    Exact maximum over every distinct value t of ``scores``, from one count table. It measures
    how well the best single threshold could segment the anomaly.

    Parameters
    ----------
    labels : array-like of bool or 0/1, any shape
        Ground truth; 1 marks an anomaly.
    scores : array-like of real numbers, same shape as ``labels``
        Anomaly scores; higher means more anomalous. Must be finite.

    Returns
    -------
    dice : float
        The maximum Dice.
    threshold : float
        A score value reaching it; when several do, the largest one. Both are nan, with an
        :class:`~blindspot.metrics.UndefinedMetricWarning`, if ``labels`` has no positive.

    Examples
    --------
    >>> best_dice([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1])
    (0.8, 0.5)
    """
    labels, scores = check_pair("best_dice", labels, scores)
    return tables.best_dice(_table_of_valid(labels, scores))


# --------------------------------------------------------------------------------------------
# fast path: rows of shape (N, M), one argsort per row


def _ranked(labels: np.ndarray, scores: np.ndarray):
    """Sort every row by descending score.

    Returns ``(sorted_scores, tps, is_end)``, all of shape ``(N, M)``: the scores in descending
    order, the int64 count of positives at or before each position (true positives when the
    threshold is that position's score) and a mask that is True at the last position of each
    group of equal scores. Order inside a tie group never matters, so a plain sort is enough.
    """
    order = np.argsort(scores, axis=1)[:, ::-1]
    sorted_scores = np.take_along_axis(scores, order, axis=1)
    tps = np.take_along_axis(labels, order, axis=1).astype(np.int64)
    np.cumsum(tps, axis=1, out=tps)  # in place on int64: much faster than casting bools inside
    is_end = np.empty(scores.shape, dtype=bool)
    np.not_equal(sorted_scores[:, :-1], sorted_scores[:, 1:], out=is_end[:, :-1])
    is_end[:, -1] = True
    return sorted_scores, tps, is_end


def _before_group(counts: np.ndarray, is_end: np.ndarray) -> np.ndarray:
    """For each position, the value of nondecreasing ``counts`` at the previous tie-group end.

    At a group end this is the count just before the group starts (0 for the first group).
    """
    out = np.zeros_like(counts)
    np.maximum.accumulate(np.where(is_end, counts, 0)[:, :-1], axis=1, out=out[:, 1:])
    return out


def _average_precision_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-row AP as the sum over tie groups of (R_g - R_{g-1}) * P_g (0.0 without a positive)."""
    _, tps, is_end = _ranked(labels, scores)
    n_pos = tps[:, -1:]
    denom = np.where(n_pos > 0, n_pos, 1)
    rank = np.arange(1, tps.shape[1] + 1)
    recall_step = tps / denom - _before_group(tps, is_end) / denom
    terms = np.where(is_end, recall_step * (tps / rank), 0.0)
    return terms.sum(axis=1)


def _roc_auc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-row Mann-Whitney U / (P * N), ties counting one half; nan for one-class rows.

    With descending order, a positive in tie group g beats the N - fps_g negatives below the
    group and ties with the neg_g = fps_g - fps_{g-1} negatives inside it, so
    2U = sum_g pos_g * (2N - fps_g - fps_{g-1}), an exact int64.
    """
    _, tps, is_end = _ranked(labels, scores)
    fps = np.arange(1, tps.shape[1] + 1) - tps
    n_pos, n_neg = tps[:, -1], fps[:, -1]
    pos_in_group = tps - _before_group(tps, is_end)
    beaten_twice = 2 * n_neg[:, None] - fps - _before_group(fps, is_end)
    twice_u = np.where(is_end, pos_in_group * beaten_twice, 0).sum(axis=1)
    defined = (n_pos > 0) & (n_neg > 0)
    return np.where(defined, twice_u / np.where(defined, 2 * n_pos * n_neg, 1), np.nan)


def _best_dice_rows(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row max over thresholds t of dice(labels, scores >= t), and the largest arg-max t.

    Thresholding at a tie-group end predicts every position up to it, so with k predicted and
    tps_k true positives the Dice is 2 tps_k / (P + k). Both are exact integers and the
    division is correctly rounded, so equal Dice values compare equal and argmax (first hit in
    descending order) picks the largest threshold. Rows without a positive give (nan, nan).
    """
    sorted_scores, tps, is_end = _ranked(labels, scores)
    n_pos = tps[:, -1]
    predicted = np.arange(1, tps.shape[1] + 1)
    candidates = np.where(is_end, 2 * tps / (n_pos[:, None] + predicted), -1.0)
    best = candidates.argmax(axis=1)[:, None]
    defined = n_pos > 0
    best_dice = np.where(defined, np.take_along_axis(candidates, best, axis=1)[:, 0], np.nan)
    threshold = np.take_along_axis(sorted_scores, best, axis=1)[:, 0].astype(np.float64)
    return best_dice, np.where(defined, threshold, np.nan)


def _dice_rows(labels: np.ndarray, prediction: np.ndarray, empty_score: float) -> np.ndarray:
    """Per-row 2|A∩B| / (|A| + |B|) from integer counts; ``empty_score`` where both are empty."""
    overlap = np.count_nonzero(labels & prediction, axis=1)
    total = np.count_nonzero(labels, axis=1) + np.count_nonzero(prediction, axis=1)
    return np.where(total > 0, 2 * overlap / np.where(total > 0, total, 1), float(empty_score))


def _warn_rows(name: str, undefined: np.ndarray, reason: str, value: str) -> None:
    """One warning for the batch if any row is undefined."""
    n = int(np.count_nonzero(undefined))
    if n:
        warn_undefined(name, reason, value, rows=(n, undefined.size))


def average_precision_batch(labels, scores) -> np.ndarray:
    """:func:`average_precision` of each image in a batch, vectorised across images.

    Parameters
    ----------
    labels : array-like of bool or 0/1, shape (N, ...)
    scores : array-like of real numbers, shape (N, ...)

    Returns
    -------
    ndarray of float64, shape (N,)
        Each entry equals ``average_precision(labels[i], scores[i])`` to 1e-12 (summation order
        differs). Images without a positive give 0.0, with one warning for the batch.
    """
    labels, scores = check_pair("average_precision_batch", labels, scores, batch=True)
    _warn_rows("average_precision_batch", ~labels.any(axis=1), "contain no positive", "0.0")
    return _average_precision_rows(labels, scores)


def roc_auc_batch(labels, scores) -> np.ndarray:
    """:func:`roc_auc` of each image in a batch, vectorised across images.

    Parameters
    ----------
    labels : array-like of bool or 0/1, shape (N, ...)
    scores : array-like of real numbers, shape (N, ...)

    Returns
    -------
    ndarray of float64, shape (N,)
        Equal to the scalar :func:`roc_auc` of each image; nan for images with only one class,
        with one warning for the batch.
    """
    labels, scores = check_pair("roc_auc_batch", labels, scores, batch=True)
    auc = _roc_auc_rows(labels, scores)
    _warn_rows("roc_auc_batch", np.isnan(auc), "contain only one class", "nan")
    return auc


def dice_batch(labels, prediction, *, empty_score: float = 1.0) -> np.ndarray:
    """:func:`dice` of each image in a batch of binary masks.

    Parameters
    ----------
    labels : array-like of bool or 0/1, shape (N, ...)
    prediction : array-like of bool or 0/1, shape (N, ...)
    empty_score : float, keyword-only, default 1.0
        Value for images where both masks are empty.

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    labels, prediction = check_pair(
        "dice_batch", labels, prediction, other_name="prediction", batch=True
    )
    return _dice_rows(labels, prediction, empty_score)


def best_dice_batch(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """:func:`best_dice` of each image in a batch (one threshold per image).

    Parameters
    ----------
    labels : array-like of bool or 0/1, shape (N, ...)
    scores : array-like of real numbers, shape (N, ...)

    Returns
    -------
    dice : ndarray of float64, shape (N,)
    threshold : ndarray of float64, shape (N,)
        Per image, as :func:`best_dice`; (nan, nan) for images without a positive, with one
        warning for the batch.
    """
    labels, scores = check_pair("best_dice_batch", labels, scores, batch=True)
    best, threshold = _best_dice_rows(labels, scores)
    _warn_rows("best_dice_batch", np.isnan(best), "contain no positive", "(nan, nan)")
    return best, threshold


# --------------------------------------------------------------------------------------------
# fast path: many positive sets against one shared set of negatives (the experiment grid)


def ap_against_negatives(positives: np.ndarray, negatives_sorted: np.ndarray, n_negatives: int) -> np.ndarray:
    """Average precision of each row of ``positives`` against the same negatives.

    In the experiment-1 grid every anomaly variant of an image shares the negatives (the pixels
    outside the label), so they are sorted once and each variant's positives are ranked against
    them with one ``searchsorted``. Each positive at score v contributes
    ``tp(>= v) / (tp(>= v) + fp(>= v)) / K``, the step rule with ties (sklearn's AP).

    Parameters
    ----------
    positives : ndarray, shape (V, K)
        Non-negative scores of the K positives of each of V variants.
    negatives_sorted : ndarray, shape (M,)
        The negatives' scores that are > 0, ascending, same dtype as ``positives``.
    n_negatives : int
        All negatives: the other ``n_negatives - M`` score exactly 0.

    Returns
    -------
    ndarray of float64, shape (V,)
        Equal to :func:`average_precision` of each row with the negatives to 1e-12 (the sum runs
        over positives, not thresholds). Inputs are not validated: this runs in the grid's loop.
    """
    pos = np.sort(positives, axis=1)
    k = pos.shape[1]
    # tp(>= v) for every positive: K minus the index where its tie group starts.
    starts = np.ones(pos.shape, bool)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(k), 0), axis=1)
    tp = k - first
    n_nonzero = len(negatives_sorted)
    fp = n_nonzero - np.searchsorted(negatives_sorted, pos) + (n_negatives - n_nonzero) * (pos <= 0)
    return (tp / (tp + fp)).mean(axis=1)

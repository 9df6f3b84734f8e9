"""Exact ranking and overlap metrics of anomaly maps, in pure numpy: one definition of each.

Conventions: the positive class is the anomaly (label 1 or ``True``), a higher score means more
anomalous, a threshold ``t`` predicts ``score >= t``. Scores are never cast or rescaled, so ties
are decided by equality in the dtype given, as in scikit-learn.

Which is the definition, and which to use when:

* :mod:`~blindspot.metrics.tables` is **the definition**. A count table (distinct scores and the
  positives and negatives at each) determines AP (bitwise equal to
  ``sklearn.metrics.average_precision_score``), AUROC, best Dice, Dice / precision / recall at a
  threshold, the curves and thresholds at a false-positive rate. Use tables for pooled pixels of a
  whole data set: one table per volume, merged exactly (:func:`merge_tables`).
  Its metrics that share a name with a functional one are reached as
  ``blindspot.metrics.tables.average_precision`` (``roc_auc``, ``best_dice``).
* :mod:`~blindspot.metrics.ranking` is the functional front door for one image or any set of
  pixels: :func:`average_precision`, :func:`roc_auc`, :func:`dice`, :func:`best_dice` = input
  check + :func:`count_table` + the table metric. It also holds the **fast paths**, same numbers to
  1e-12, tested against the definition: the ``*_batch`` functions for stacks of images (one value
  per image, vectorised across images), and :func:`ap_against_negatives`, the experiment grid's
  AP of many positive sets against shared, pre-sorted negatives.
* :mod:`~blindspot.metrics.accumulators`: :class:`ExactAccumulator` (tables, exact) and
  :class:`BinnedAccumulator` (constant memory, with guaranteed error bounds) to stream volumes and
  merge partial results.

Every form checks its inputs the same way and says the same thing about the same mistake
(:mod:`~blindspot.metrics._validation`); undefined metrics warn with
:class:`UndefinedMetricWarning` and return scikit-learn's value (AP 0.0, AUROC nan).
"""

from blindspot.metrics import tables
from blindspot.metrics._validation import UndefinedMetricWarning
from blindspot.metrics.accumulators import BinnedAccumulator, ExactAccumulator, binned_table
from blindspot.metrics.ranking import (
    ap_against_negatives,
    average_precision,
    average_precision_batch,
    best_dice,
    best_dice_batch,
    dice,
    dice_batch,
    roc_auc,
    roc_auc_batch,
)
from blindspot.metrics.tables import (
    CountTable,
    benchmark_best_dice,
    best_mean_dice,
    count_table,
    counts_at,
    error_bounds,
    merge_tables,
    pr_curve,
    rates,
    roc_curve,
    summarize,
    threshold_at_fpr,
)

__all__ = [
    "BinnedAccumulator",
    "CountTable",
    "ExactAccumulator",
    "UndefinedMetricWarning",
    "ap_against_negatives",
    "average_precision",
    "average_precision_batch",
    "benchmark_best_dice",
    "best_dice",
    "best_dice_batch",
    "best_mean_dice",
    "binned_table",
    "count_table",
    "counts_at",
    "dice",
    "dice_batch",
    "error_bounds",
    "merge_tables",
    "pr_curve",
    "rates",
    "roc_auc",
    "roc_auc_batch",
    "roc_curve",
    "summarize",
    "tables",
    "threshold_at_fpr",
]

"""Tests for blindspot.metrics.ranking: scikit-learn parity, brute force, batch == scalar, edge
cases, and the fast paths (batched row kernels, the grid's shared-negatives kernel) against the
count-table definition."""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import average_precision_score, roc_auc_score

from blindspot.errors import BlindspotError
from blindspot.metrics import (
    UndefinedMetricWarning,
    ap_against_negatives,
    average_precision,
    average_precision_batch,
    best_dice,
    best_dice_batch,
    dice,
    dice_batch,
    roc_auc,
    roc_auc_batch,
    tables,
)
from blindspot.metrics.tables import count_table

FAST = settings(max_examples=200, deadline=None)
TIE_POOL = [0.0, 0.25, 0.5, 0.75, 1.0]


@st.composite
def score_pools(draw):
    """A small pool of score values (many ties) or a wider random one, in float64 or float32."""
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    if draw(st.booleans()):
        pool = TIE_POOL
    else:
        width = 64 if dtype is np.float64 else 32
        pool = draw(st.lists(st.floats(-1e3, 1e3, width=width), min_size=1, max_size=60))
    return dtype, pool


@st.composite
def labelled_scores(draw, max_n=300, dyadic=False):
    """(labels, scores) of one shared length n in [1, max_n], scores drawn from a pool.

    ``dyadic=True`` always uses the float64 multiples of 1/4 in TIE_POOL.
    """
    dtype, pool = (np.float64, TIE_POOL) if dyadic else draw(score_pools())
    n = draw(st.integers(1, max_n))
    labels = draw(hnp.arrays(np.int8, n, elements=st.integers(0, 1)))
    picks = draw(hnp.arrays(np.int16, n, elements=st.integers(0, len(pool) - 1)))
    return labels, np.asarray(pool, dtype)[picks]


@st.composite
def labelled_batches(draw):
    """(labels, scores) of shape (N, H, W) with heavy ties, rows possibly without a positive."""
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 8)))
    dtype, pool = draw(score_pools())
    labels = draw(hnp.arrays(np.bool_, shape))
    picks = draw(hnp.arrays(np.int16, shape, elements=st.integers(0, len(pool) - 1)))
    return labels, np.asarray(pool, dtype)[picks]


def brute_force_best_dice(labels, scores):
    """Slow reference: every distinct threshold from the largest down, keeping strict gains."""
    labels = np.ravel(labels).astype(bool)
    scores = np.ravel(scores)
    best, best_t = Fraction(-1), None
    for t in sorted(set(scores.tolist()), reverse=True):
        predicted = [s >= t for s in scores.tolist()]
        overlap = sum(1 for y, p in zip(labels.tolist(), predicted) if y and p)
        value = Fraction(2 * overlap, int(labels.sum()) + sum(predicted))
        if value > best:
            best, best_t = value, t
    return float(best), float(best_t)


# --------------------------------------------------------------------------------------------
# parity with scikit-learn and brute force


@FAST
@given(labelled_scores())
def test_average_precision_and_roc_auc_match_sklearn(data):
    labels, scores = data
    assume(labels.any())
    ours, ref = average_precision(labels, scores), average_precision_score(labels, scores)
    assert abs(ours - ref) <= 1e-12
    if scores.dtype == np.float64:
        assert ours == ref  # same operation order as scikit-learn: bitwise equal
    if not labels.all():
        assert abs(roc_auc(labels, scores) - roc_auc_score(labels, scores)) <= 1e-12


@FAST
@given(labelled_scores(max_n=60))
def test_best_dice_matches_brute_force(data):
    labels, scores = data
    assume(labels.any())
    assert best_dice(labels, scores) == brute_force_best_dice(labels, scores)


@FAST
@given(hnp.arrays(np.bool_, st.integers(1, 200)), st.data())
def test_dice_matches_hand_count(labels, data):
    prediction = data.draw(hnp.arrays(np.int64, labels.shape, elements=st.integers(0, 1)))
    overlap = sum(1 for a, b in zip(labels.tolist(), prediction.tolist()) if a and b)
    total = sum(labels.tolist()) + sum(prediction.tolist())
    expected = 1.0 if total == 0 else 2 * overlap / total
    assert dice(labels, prediction) == expected


# --------------------------------------------------------------------------------------------
# batches and invariances


@FAST
@given(labelled_batches())
def test_batch_equals_scalar_per_row(data):
    labels, scores = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        ap = average_precision_batch(labels, scores)
        auc = roc_auc_batch(labels, scores)
        bd, bt = best_dice_batch(labels, scores)
        d = dice_batch(labels, scores >= np.median(scores))
        rows = [
            (
                average_precision(y, s),
                roc_auc(y, s),
                *best_dice(y, s),
                dice(y, s >= np.median(scores)),
            )
            for y, s in zip(labels, scores)
        ]
    expected = np.array(rows, dtype=np.float64).reshape(len(labels), 5)
    got = np.stack([ap, auc, bd, bt, d], axis=1)
    assert got.shape == (len(labels), 5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, equal_nan=True)


@FAST
@given(labelled_scores(), st.integers(0, 2**32 - 1))
def test_permutation_invariance(data, seed):
    labels, scores = data
    assume(labels.any() and not labels.all())
    perm = np.random.default_rng(seed).permutation(labels.size)
    for metric in (average_precision, roc_auc, best_dice):
        assert metric(labels[perm], scores[perm]) == metric(labels, scores)


@FAST
@given(
    labelled_scores(dyadic=True),
    st.sampled_from([0.5, 2.0, 4.0]),
    st.sampled_from([-3.0, 0.0, 7.0]),
)
def test_average_precision_scale_shift_invariance(data, scale, shift):
    labels, scores = data
    assume(labels.any())
    # dyadic scores and power-of-two scales keep scale * s + shift exact, so ties are unchanged
    assert average_precision(labels, scale * scores + shift) == average_precision(labels, scores)


# --------------------------------------------------------------------------------------------
# named regression cases


def test_average_precision_tie_group_example():
    # the two tied 0.5 scores share the precision after the whole group (2/3)
    assert average_precision([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]) == 0.8333333333333333


def test_average_precision_constant_score_is_prevalence():
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0])
    assert average_precision(labels, np.full(10, 0.7)) == 0.3


def test_average_precision_accepts_bool_labels_and_int_scores_of_any_shape():
    labels = np.array([[True, False], [True, False]])
    scores = np.array([[9, 5], [5, 1]], dtype=np.int16)
    assert average_precision(labels, scores) == 0.8333333333333333


def test_average_precision_no_positive_is_zero_with_warning():
    match = "average_precision: labels contain no positive"
    with pytest.warns(UndefinedMetricWarning, match=match):
        assert average_precision([0, 0, 0], [0.1, 0.2, 0.3]) == 0.0


def test_roc_auc_one_class_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="roc_auc: labels contain only one class"):
        assert np.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_roc_auc_counts_ties_as_half():
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5
    assert roc_auc([1, 0, 1, 0], [0.9, 0.5, 0.5, 0.1]) == 0.875


def test_best_dice_no_positive_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="best_dice: labels contain no positive"):
        result = best_dice([0, 0], [0.3, 0.1])
    assert np.isnan(result).all()


def test_best_dice_returns_largest_of_tied_thresholds():
    # thresholds 4 (1 of 1 predicted) and 1 (2 of 4 predicted) both reach 2/3
    assert best_dice([1, 0, 0, 1], [4, 3, 2, 1]) == (2 / 3, 4.0)


def test_dice_empty_masks_use_empty_score():
    assert dice([0, 0], [0, 0]) == 1.0
    assert dice([0, 0], [0, 0], empty_score=0.0) == 0.0
    assert dice([1, 1, 0], [1, 0, 0]) == 2 / 3


def test_float32_ties_are_not_merged_in_float64():
    # two float64 scores one ulp apart are distinct, but round to the same float32 value:
    # in float64 the positive ranks first (AP 1), in float32 the two tie (AP 0.5)
    labels = np.array([1, 0])
    scores64 = np.array([np.nextafter(0.1, 1.0), 0.1])
    scores32 = scores64.astype(np.float32)
    assert scores32[0] == scores32[1]
    assert average_precision(labels, scores64) == 1.0
    assert average_precision(labels, scores32) == 0.5
    assert average_precision(labels, scores32) == average_precision_score(labels, scores32)


def test_batch_warns_once_with_count():
    labels = np.array([[1, 0], [0, 0], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.5, 0.4], [0.2, 0.2]])
    with pytest.warns(UndefinedMetricWarning, match="2 of 3 rows") as record:
        best, threshold = best_dice_batch(labels, scores)
    assert len(record) == 1
    np.testing.assert_array_equal(best, [1.0, np.nan, np.nan])
    np.testing.assert_array_equal(threshold, [0.9, np.nan, np.nan])
    with pytest.warns(UndefinedMetricWarning, match="2 of 3 rows"):
        np.testing.assert_array_equal(average_precision_batch(labels, scores), [1.0, 0.0, 0.0])
    with pytest.warns(UndefinedMetricWarning, match="2 of 3 rows"):
        np.testing.assert_array_equal(roc_auc_batch(labels, scores), [1.0, np.nan, np.nan])


def test_dice_batch_shapes_and_empty_score():
    labels = np.zeros((2, 3, 3), dtype=bool)
    labels[0, 0, 0] = True
    prediction = labels.copy()
    np.testing.assert_array_equal(dice_batch(labels, prediction), [1.0, 1.0])
    np.testing.assert_array_equal(dice_batch(labels, prediction, empty_score=0.0), [1.0, 0.0])


# --------------------------------------------------------------------------------------------
# user errors


@pytest.mark.parametrize("metric", [average_precision, roc_auc, best_dice])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_score_raises(metric, bad):
    with pytest.raises(BlindspotError, match=rf"{metric.__name__}: scores must be finite; got 1 "):
        metric([1, 0, 1], [0.2, bad, 0.4])


def test_shape_mismatch_raises():
    match = (
        r"average_precision: labels and scores must have the same shape; "
        r"got \(10,\) and \(11,\)\."
    )
    with pytest.raises(BlindspotError, match=match):
        average_precision(np.ones(10), np.ones(11))


def test_non_binary_labels_raise_with_offending_values():
    match = r"roc_auc: labels must be binary .*got values \[2, 5\]"
    with pytest.raises(BlindspotError, match=match):
        roc_auc([0, 1, 2, 5, 2], [0.1, 0.2, 0.3, 0.4, 0.5])
    with pytest.raises(BlindspotError, match=r"dice: prediction must be binary .*\[0\.5\]"):
        dice([0, 1], [0.5, 1.0])


def test_empty_input_raises():
    with pytest.raises(BlindspotError, match="best_dice: labels and scores must be non-empty"):
        best_dice([], [])


def test_non_numeric_input_raises():
    with pytest.raises(BlindspotError, match="average_precision: scores must be real numbers"):
        average_precision([0, 1], ["a", "b"])


@pytest.mark.parametrize("shape", [(4,), (0, 3), (2, 0)])
def test_batch_needs_two_non_empty_axes(shape):
    match = r"roc_auc_batch: labels and scores must have shape \(N, \.\.\.\)"
    with pytest.raises(BlindspotError, match=match):
        roc_auc_batch(np.zeros(shape), np.zeros(shape))


# --------------------------------------------------------------------------------------------
# fast paths against the definition (the count table)


def _table_metrics(labels, scores):
    """AP, AUROC, best Dice and its threshold of one row, by the count-table definition."""
    table = count_table(labels, scores)
    return (tables.average_precision(table), tables.roc_auc(table), *tables.best_dice(table))


@FAST
@given(labelled_batches())
def test_batch_kernels_equal_the_table_definition(data):
    labels, scores = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        got = np.stack([average_precision_batch(labels, scores), roc_auc_batch(labels, scores),
                        *best_dice_batch(labels, scores)], axis=1)
        expected = np.array([_table_metrics(y, s) for y, s in zip(labels, scores)], dtype=np.float64)
    np.testing.assert_allclose(got, expected.reshape(got.shape), rtol=0, atol=1e-12, equal_nan=True)
    # dice_batch: Dice at a threshold = counts_at + rates on the table
    threshold = np.median(scores)
    for row, (y, s) in zip(dice_batch(labels, scores >= threshold), zip(labels, scores)):
        tp, fp, fn = tables.counts_at(count_table(y, s), threshold)
        assert row == (tables.rates(tp, fp, fn)["dice"] if tp + fp + fn else 1.0)


@FAST
@given(
    st.integers(1, 4),
    st.integers(1, 40),
    st.integers(0, 60),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**32 - 1),
)
def test_ap_against_negatives_equals_the_table_definition(n_variants, k, n_neg, dtype, seed):
    rng = np.random.default_rng(seed)
    pool = np.array([0.0, 0.25, 0.5, 0.75, 1.0], dtype)  # non-negative, many ties, zeros included
    positives = rng.choice(pool, (n_variants, k))
    negatives = rng.choice(pool, n_neg)
    got = ap_against_negatives(positives, np.sort(negatives[negatives > 0]), n_neg)
    labels = np.r_[np.ones(k, bool), np.zeros(n_neg, bool)]
    for ap, row in zip(got, positives):
        assert abs(ap - tables.average_precision(count_table(labels, np.r_[row, negatives]))) <= 1e-12

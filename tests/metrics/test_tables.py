"""Count tables, the definition: sklearn parity, brute force, exact merging, the benchmark's Dice rule."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from metric_data import pixels
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from blindspot.errors import BlindspotError
from blindspot.metrics import UndefinedMetricWarning
from blindspot.metrics.tables import (
    average_precision,
    benchmark_best_dice,
    best_dice,
    best_mean_dice,
    count_table,
    counts_at,
    error_bounds,
    merge_tables,
    pr_curve,
    rates,
    roc_auc,
    roc_curve,
    summarize,
    threshold_at_fpr,
)

FAST = settings(max_examples=150, deadline=None)


def brute_best_dice(labels, scores):
    """Dice of scores >= t for every distinct t, by direct counting (the slow reference)."""
    best, arg = -1.0, None
    for t in np.unique(scores):
        pred = scores >= t
        d = 2 * np.sum(pred & labels) / (pred.sum() + labels.sum())
        if d >= best:  # ascending t: >= keeps the largest threshold among equal maxima
            best, arg = d, t
    return best, arg


def brute_benchmark_best_dice(labels, scores):
    """The MedIAnomaly rule on the pixels: rank-spaced thresholds, prediction score > t, first argmax."""
    n = scores.size
    thresholds = np.sort(scores)[np.arange(0, n, max(n // 200, 1))]
    dices = [2 * np.sum((scores > t) & labels) / (np.sum(scores > t) + np.sum(labels)) for t in thresholds]
    k = int(np.argmax(dices))
    return float(dices[k]), float(thresholds[k])


def assert_same_table(got, expected):
    assert got.values.dtype == expected.values.dtype
    for field in ("values", "positives", "negatives"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))


@FAST
@given(pixels())
def test_table_metrics_equal_sklearn_and_brute_force(data):
    labels, scores, _ = data
    table = count_table(labels, scores)
    assert average_precision(table) == average_precision_score(labels, scores)  # bitwise
    assert roc_auc(table) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert best_dice(table) == pytest.approx(brute_best_dice(labels, scores), abs=1e-12)
    t = float(np.median(scores))
    tp, fp, fn = counts_at(table, t)
    assert (tp, fp, fn) == (np.sum((scores >= t) & labels), np.sum((scores >= t) & ~labels), np.sum((scores < t) & labels))


# --------------------------------------------------------------------------------------------
# merging


@FAST
@given(pixels(), st.integers(1, 8))
def test_tables_merge_in_any_order(data, n_chunks):
    labels, scores, rng = data
    one_shot = count_table(labels, scores)
    chunks = np.array_split(rng.permutation(len(labels)), n_chunks)
    tables = [count_table(labels[c], scores[c]) for c in chunks if len(c)]
    merged = merge_tables([tables[k] for k in rng.permutation(len(tables))])
    for field in ("values", "positives", "negatives"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(one_shot, field))


@FAST
@given(
    st.integers(0, 2**31),
    st.lists(st.sampled_from(["float32", "float64", "int16", "int32", "bool"]), min_size=1, max_size=40),
)
def test_merge_tables_equals_the_table_of_the_concatenated_pixels(seed, dtypes):
    """Random chunkings (empty chunks included) and dtype mixes: the merge promotes as concatenation does."""
    rng = np.random.default_rng(seed)
    chunks = []
    for k, dtype in enumerate(dtypes):
        n = int(rng.integers(1 if k == 0 else 0, 40))
        pool = {"bool": [0, 1], "int16": [-3, 0, 1, 2, 300], "int32": [-3, 0, 2, 70000]}.get(dtype, [-0.5, 0, 0.1, 1 / 3, 2])
        chunks.append((rng.random(n) < 0.3, rng.choice(pool, n).astype(dtype)))
    # empty tables take no part in the merge, so an empty chunk's dtype does not promote the values
    pixels = [c for c in chunks if len(c[0])]
    one_shot = count_table(np.concatenate([c[0] for c in pixels]), np.concatenate([c[1] for c in pixels]))
    tables = [count_table(*c) for c in chunks]
    assert_same_table(merge_tables(tables), one_shot)
    assert_same_table(merge_tables(tables[::-1]), one_shot)


@FAST
@given(st.integers(0, 2**31), st.integers(2, 12), st.sampled_from([2, 6, 10**6]))
def test_merge_tables_of_single_pixel_rows_ties_and_pairs(seed, n_tables, distinct):
    """The merge's paths: rows of one pixel (sorted directly), rows of tied pixels (argsorted), two tables (linear)."""
    rng = np.random.default_rng(seed)
    chunks = [(rng.random(n) < 0.2, rng.integers(0, distinct, n).astype(np.float32) / distinct)
              for n in rng.integers(1, 60, n_tables)]
    one_shot = count_table(np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks]))
    tables = [count_table(*c) for c in chunks]
    assert_same_table(merge_tables(tables), one_shot)
    assert_same_table(merge_tables([merge_tables(tables[: n_tables // 2]), merge_tables(tables[n_tables // 2 :])]), one_shot)


def test_merge_tables_collapses_values_that_meet_in_the_common_dtype():
    # 2**53 and 2**53 + 1 are distinct int64 scores but the same float64, as in np.concatenate
    big = np.array([2**53, 2**53 + 1, 5], np.int64)
    small = np.array([0.5, 5.0])
    labels_big, labels_small = np.array([True, False, False]), np.array([True, True])
    one_shot = count_table(np.r_[labels_big, labels_small], np.concatenate([big, small]))
    merged = merge_tables([count_table(labels_big, big), count_table(labels_small, small)])
    assert_same_table(merged, one_shot)
    assert merged.values.tolist() == [0.5, 5.0, 2.0**53] and merged.positives.tolist() == [1, 1, 1]


def test_merge_tables_needs_a_non_empty_table():
    with pytest.raises(BlindspotError, match="merge_tables: got no non-empty table"):
        merge_tables([count_table([], [])])


# --------------------------------------------------------------------------------------------
# the MedIAnomaly benchmark's best-Dice rule


@st.composite
def benchmark_pixels(draw):
    """(labels, scores) of up to 2000 pixels with a positive: step = N // 200 from 1 to 10."""
    n = draw(st.integers(1, 2000))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    labels = rng.random(n) < draw(st.floats(0.001, 0.5))
    labels[rng.integers(n)] = True
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    if draw(st.booleans()):  # heavy ties: a small pool, labels pushed up a little
        scores = rng.choice([0.0, 0.1, 0.2, 0.5, 1.0], n) + 0.1 * labels
    else:
        scores = rng.normal(size=n) + labels
    return labels, scores.astype(dtype)


@settings(max_examples=200, deadline=None)
@given(benchmark_pixels())
def test_benchmark_best_dice_equals_the_rule_on_pixels(data):
    labels, scores = data
    table = count_table(labels, scores)
    assert benchmark_best_dice(table) == brute_benchmark_best_dice(labels, scores)  # exactly
    assert benchmark_best_dice(table)[0] <= best_dice(table)[0]


def test_benchmark_best_dice_misses_anomalies_smaller_than_a_grid_step():
    # anomalies = the top 0.15 % of pixels: a step is 0.5 % of the pixels, so the highest grid
    # threshold already predicts 0.5 % of the pixels (protocols.md, benchmark best Dice rule)
    rng = np.random.default_rng(0)
    scores = rng.random(200_000)
    labels = scores > np.quantile(scores, 1 - 0.0015)
    table = count_table(labels, scores)
    exact, _ = best_dice(table)
    grid, threshold = benchmark_best_dice(table)
    assert exact == 1.0
    assert grid < 0.5 * exact and threshold < scores[labels].min()


def test_benchmark_best_dice_small_sets_use_every_pixel_and_the_smallest_tied_threshold():
    # N < 200: step 1, every sorted score is a threshold, the prediction is score > t
    assert benchmark_best_dice(count_table([0, 1, 0, 1], [1, 2, 3, 4])) == (0.8, 1.0)
    # t = 1 (4 predicted, 2 hits) and t = 4 (1 predicted, 1 hit) both give Dice 2/3: the smaller t
    assert benchmark_best_dice(count_table([0, 1, 0, 0, 1], [1, 2, 3, 4, 5])) == (2 / 3, 1.0)
    with pytest.warns(UndefinedMetricWarning, match="benchmark_best_dice: labels contain no positive"):
        assert np.isnan(benchmark_best_dice(count_table([0, 0], [1, 2]))).all()


# --------------------------------------------------------------------------------------------
# curves, thresholds, rates


@FAST
@given(pixels())
def test_curves_are_points_of_sklearns_curves(data):
    labels, scores, _ = data
    table = count_table(labels, scores)
    recall, precision, thresholds = pr_curve(table)
    sk_precision, sk_recall, sk_thresholds = precision_recall_curve(labels, scores)
    index = np.searchsorted(sk_thresholds, thresholds)
    np.testing.assert_array_equal(sk_thresholds[index], thresholds)
    np.testing.assert_allclose(sk_precision[index], precision, atol=1e-12)
    np.testing.assert_allclose(sk_recall[index], recall, atol=1e-12)
    fpr, tpr = roc_curve(table)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    sk_points = set(zip(np.round(sk_fpr, 12), np.round(sk_tpr, 12))) | {(1.0, 1.0)}
    assert set(zip(np.round(fpr, 12), np.round(tpr, 12))) <= sk_points


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.1])
def test_threshold_at_fpr_gives_the_requested_rate(rate):
    rng = np.random.default_rng(1)
    healthy = rng.normal(size=10000)
    table = count_table(np.zeros(healthy.size, bool), healthy)
    t, achieved = threshold_at_fpr(table, rate)
    assert achieved == np.mean(healthy >= t) == int(rate * healthy.size) / healthy.size
    below = healthy[healthy < t].max()
    assert np.mean(healthy >= below) > rate  # the next lower threshold exceeds the rate


def test_threshold_at_fpr_with_ties_and_with_nothing_allowed():
    table = count_table(np.zeros(10, bool), np.r_[np.zeros(9), 1.0])
    t, achieved = threshold_at_fpr(table, 0.05)  # the max alone is 10 % > 5 %: predict nothing
    assert t > 1.0 and achieved == 0.0
    t, achieved = threshold_at_fpr(table, 0.5)
    assert (t, achieved) == (1.0, 0.1)


def test_rates_conventions():
    assert rates(3, 1, 2) == {"dice": 6 / 9, "precision": 0.75, "recall": 0.6}
    nothing_predicted = rates(0, 0, 4)
    assert nothing_predicted["precision"] == 0.0 and nothing_predicted["dice"] == 0.0 and nothing_predicted["recall"] == 0.0
    assert np.isnan(rates(0, 0, 0)["dice"]) and np.isnan(rates(0, 5, 0)["recall"])


def test_best_mean_dice_equals_brute_force_over_thresholds():
    rng = np.random.default_rng(5)
    units = []
    for k in range(5):
        n = rng.integers(30, 80)
        labels = rng.random(n) < 0.3
        labels[0] = True
        units.append((labels, np.round(rng.random(n) + 0.5 * labels, 2)))
    units.append((np.zeros(10, bool), rng.random(10)))  # no positive: not averaged
    best, threshold = best_mean_dice([count_table(y, s) for y, s in units])
    candidates = np.unique(np.concatenate([s for _, s in units]))
    means = [np.mean([2 * np.sum((s >= t) & y) / (np.sum(s >= t) + y.sum()) for y, s in units if y.any()]) for t in candidates]
    k = len(means) - 1 - int(np.argmax(means[::-1]))  # the largest threshold among maxima
    assert best == pytest.approx(max(means), abs=1e-12) and threshold == candidates[k]


def test_edge_cases_and_errors():
    table = count_table(np.zeros(4, bool), [0.1, 0.2, 0.2, 0.3])
    with pytest.warns(UndefinedMetricWarning):
        assert average_precision(table) == 0.0
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(roc_auc(table))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(summarize(table)["ap"])  # summaries never warn
    assert np.isnan(error_bounds(table)["ap"][0])
    with pytest.raises(BlindspotError, match="finite"):
        count_table([0, 1], [0.5, np.nan])
    with pytest.raises(BlindspotError, match="same shape"):
        count_table([0, 1], [0.5])
    with pytest.raises(BlindspotError, match="bool or 0/1"):
        count_table([0, 2], [0.5, 0.1])

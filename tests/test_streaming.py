"""Count tables and accumulators: sklearn parity, brute force, merge order, binned error bounds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from blindspot.errors import BlindspotError
from blindspot.metrics import UndefinedMetricWarning
from blindspot.streaming import (
    BinnedAccumulator,
    ExactAccumulator,
    _bin_lower_edges,
    _float32_keys,
    average_precision,
    best_dice,
    best_mean_dice,
    binned_table,
    count_table,
    counts_at,
    error_bounds,
    merge_tables,
    pr_curve,
    roc_auc,
    roc_curve,
    summarize,
    threshold_at_fpr,
)

FAST = settings(max_examples=150, deadline=None)
POOL = [-0.5, 0.0, 0.25, 0.5, 0.75, 1.0]


@st.composite
def pixels(draw, max_n=200):
    """(labels, scores) with both classes, scores tie-heavy or wide, float64 or float32."""
    n = draw(st.integers(2, max_n))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < draw(st.floats(0.05, 0.95))
    labels[:2] = [True, False]
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    if draw(st.booleans()):
        scores = rng.choice(POOL, n)
    else:
        scores = rng.normal(size=n) * 10 ** draw(st.integers(-3, 3))
    return labels, scores.astype(dtype), rng


def brute_best_dice(labels, scores):
    """Dice of scores >= t for every distinct t, by direct counting (the slow reference)."""
    best, arg = -1.0, None
    for t in np.unique(scores):
        pred = scores >= t
        d = 2 * np.sum(pred & labels) / (pred.sum() + labels.sum())
        if d >= best:  # ascending t: >= keeps the largest threshold among equal maxima
            best, arg = d, t
    return best, arg


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


@FAST
@given(pixels(), st.integers(1, 8))
def test_tables_and_exact_accumulators_merge_in_any_order(data, n_chunks):
    labels, scores, rng = data
    one_shot = count_table(labels, scores)
    chunks = np.array_split(rng.permutation(len(labels)), n_chunks)
    tables = [count_table(labels[c], scores[c]) for c in chunks if len(c)]
    merged = merge_tables([tables[k] for k in rng.permutation(len(tables))])
    for field in ("values", "positives", "negatives"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(one_shot, field))
    accumulators = [ExactAccumulator().update(labels[c], scores[c]) for c in chunks]
    order = rng.permutation(len(accumulators))
    total = accumulators[order[0]]
    for k in order[1:]:
        total.merge(accumulators[k])
    assert total.compute() == summarize(one_shot)


@FAST
@given(pixels(), st.integers(1, 6), st.sampled_from([10, 14, 18]))
def test_binned_accumulator_is_order_free_and_bounds_hold(data, n_chunks, bits):
    labels, scores, rng = data
    chunks = np.array_split(rng.permutation(len(labels)), n_chunks)
    forward, backward = BinnedAccumulator(bits), BinnedAccumulator(bits)
    parts = [BinnedAccumulator(bits).update(labels[c], scores[c]) for c in chunks]
    for part in parts:
        forward.merge(part)
    for part in reversed(parts):
        backward.merge(part)
    result = forward.compute()
    assert result == backward.compute()
    assert result == BinnedAccumulator(bits).update(labels, scores).compute()
    # the binned metrics are the exact metrics of the scores floored to their bin's lower edge
    floored = _bin_lower_edges(_float32_keys(scores, bits), bits)
    exact_floored = summarize(count_table(labels, floored))
    assert result["ap"] == pytest.approx(exact_floored["ap"], abs=1e-12)
    assert result["best_dice"] == pytest.approx(exact_floored["best_dice"], abs=1e-12)
    # and the exact metrics of the float32 scores lie within the reported bounds
    exact = summarize(count_table(labels, scores.astype(np.float32)))
    for name in ("ap", "auroc", "best_dice"):
        low, high = result["bounds"][name]
        assert low - 1e-12 <= exact[name] <= high + 1e-12, name


def test_binned_resolution_tightens_bounds():
    rng = np.random.default_rng(3)
    labels = rng.random(20000) < 0.05
    scores = rng.normal(size=20000) + 1.5 * labels
    widths = []
    for bits in (10, 14, 18, 22):
        low, high = BinnedAccumulator(bits).update(labels, scores).compute()["bounds"]["ap"]
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True) and widths[-1] < 1e-3 < widths[0]


def test_binned_edges_are_monotone_and_handle_signs():
    values = np.array([-3e5, -1.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 1.0, 2.0, 3e38], np.float32)
    keys = _float32_keys(values, 20)
    assert np.all(np.diff(keys) >= 0) and keys[3] == keys[4]  # -0.0 and +0.0 share a bin
    edges = _bin_lower_edges(keys, 20)
    assert np.all(edges <= values) and np.all(np.diff(edges) >= 0)
    assert np.all(np.abs(values - edges) <= np.abs(values) * 2.0**-11 + 1e-38)


def test_binned_table_matches_accumulator():
    rng = np.random.default_rng(0)
    labels, scores = rng.random(5000) < 0.1, rng.random(5000)
    sparse = binned_table(labels, scores, 16)
    dense = BinnedAccumulator(16).update(labels, scores).table()
    for field in ("values", "positives", "negatives"):
        np.testing.assert_array_equal(getattr(sparse, field), getattr(dense, field))


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
    with pytest.raises(BlindspotError, match="bits=20; got bits=12"):
        BinnedAccumulator(20).merge(BinnedAccumulator(12))
    with pytest.raises(BlindspotError, match="expected an ExactAccumulator"):
        ExactAccumulator().merge(BinnedAccumulator())
    with pytest.raises(BlindspotError, match="bits must be"):
        BinnedAccumulator(40)
    with pytest.raises(BlindspotError, match="no pixel"):
        ExactAccumulator().compute()
    with pytest.raises(BlindspotError, match="float32 range"):
        BinnedAccumulator().update([0, 1], [0.0, 1e300])

"""Accumulators: exact merges in any order, binned histograms and their guaranteed error bounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from metric_data import pixels

from blindspot.errors import BlindspotError
from blindspot.metrics.accumulators import (
    BinnedAccumulator,
    ExactAccumulator,
    _bin_lower_edges,
    _float32_keys,
    binned_table,
)
from blindspot.metrics.tables import count_table, summarize

FAST = settings(max_examples=150, deadline=None)


@FAST
@given(pixels(), st.integers(1, 8))
def test_exact_accumulators_merge_in_any_order(data, n_chunks):
    labels, scores, rng = data
    one_shot = count_table(labels, scores)
    chunks = np.array_split(rng.permutation(len(labels)), n_chunks)
    accumulators = [ExactAccumulator().update(labels[c], scores[c]) for c in chunks]
    order = rng.permutation(len(accumulators))
    total = accumulators[order[0]]
    for k in order[1:]:
        total.merge(accumulators[k])
    assert total.compute() == summarize(one_shot)


def test_exact_accumulator_table_is_the_pooled_table():
    # many volumes (an odd number, so the merge tree has an odd one out at several levels)
    rng = np.random.default_rng(7)
    labels = rng.random(50_000) < 0.02
    scores = np.round(rng.random(50_000), 3).astype(np.float32) + np.float32(0.5) * labels
    accumulator = ExactAccumulator()
    for chunk in np.array_split(np.arange(labels.size), 37):
        accumulator.update(labels[chunk], scores[chunk])
    table, pooled = accumulator.table(), count_table(labels, scores)
    for field in ("values", "positives", "negatives"):
        np.testing.assert_array_equal(getattr(table, field), getattr(pooled, field))
    assert accumulator.table() is table  # merged once, then kept


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
    floored = _bin_lower_edges(_float32_keys("test", scores, bits), bits)
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
    keys = _float32_keys("test", values, 20)
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


def test_edge_cases_and_errors():
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
    # empty chunks are no-ops, not errors
    assert ExactAccumulator().update([], []).update([1, 0], [0.5, 0.1]).compute()["auroc"] == 1.0
    assert BinnedAccumulator(10).update([], []).update([1, 0], [0.5, 0.1]).compute()["auroc"] == 1.0

"""Hypothesis strategies shared by the count-table and accumulator tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

POOL = [-0.5, 0.0, 0.25, 0.5, 0.75, 1.0]


@st.composite
def pixels(draw, max_n=200):
    """(labels, scores, rng) with both classes, scores tie-heavy or wide, float64 or float32."""
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

"""One check, one message per mistake, one warning: the same for scalar, batch and table forms."""

from __future__ import annotations

import numpy as np
import pytest

from blindspot.errors import BlindspotError
from blindspot.metrics import (
    BinnedAccumulator,
    ExactAccumulator,
    UndefinedMetricWarning,
    average_precision,
    average_precision_batch,
    best_dice,
    best_dice_batch,
    binned_table,
    count_table,
    roc_auc,
    roc_auc_batch,
    tables,
)

# every form that takes (labels, scores), by the name its messages start with
FORMS = {
    "average_precision": average_precision,
    "roc_auc": roc_auc,
    "best_dice": best_dice,
    "average_precision_batch": average_precision_batch,
    "roc_auc_batch": roc_auc_batch,
    "best_dice_batch": best_dice_batch,
    "count_table": count_table,
    "binned_table": binned_table,
    "ExactAccumulator.update": lambda y, s: ExactAccumulator().update(y, s),
    "BinnedAccumulator.update": lambda y, s: BinnedAccumulator(10).update(y, s),
}
GOOD_LABELS = np.array([[1, 0, 1], [0, 1, 0]])
GOOD_SCORES = np.array([[0.9, 0.5, 0.5], [0.1, 0.3, 0.2]])


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        (np.array([[0, 2, 1], [5, 1, 0]]), GOOD_SCORES, "labels must be binary (bool or 0/1); got values [2, 5]."),
        (GOOD_LABELS.astype(str), GOOD_SCORES, "labels must be bool or 0/1 numbers; got dtype <U21."),
        (GOOD_LABELS, np.where(GOOD_LABELS, np.nan, GOOD_SCORES), "scores must be finite; got 3 NaN or infinite value(s)."),
        (GOOD_LABELS, GOOD_SCORES.astype(str), "scores must be real numbers; got dtype <U32."),
        (GOOD_LABELS, GOOD_SCORES[:, :2], "labels and scores must have the same shape; got (2, 3) and (2, 2)."),
    ],
    ids=["non-binary labels", "text labels", "nan scores", "text scores", "shape mismatch"],
)
def test_one_message_per_mistake(labels, scores, message):
    for name, form in FORMS.items():
        with pytest.raises(BlindspotError) as raised:
            form(labels, scores)
        assert str(raised.value) == f"{name}: {message}"


def test_undefined_metrics_warn_alike_from_every_form_and_point_at_the_caller():
    labels, scores = np.zeros((1, 3), int), np.array([[0.1, 0.2, 0.3]])
    with pytest.warns(UndefinedMetricWarning) as record:
        average_precision(labels, scores)
        tables.average_precision(count_table(labels, scores))
        average_precision_batch(labels, scores)
    assert [str(w.message) for w in record] == [
        "average_precision: labels contain no positive; returning 0.0.",
        "average_precision: labels contain no positive; returning 0.0.",
        "average_precision_batch: 1 of 1 rows contain no positive; their result is 0.0.",
    ]
    assert {w.filename for w in record} == {__file__}

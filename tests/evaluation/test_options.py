"""Protocol options (blindspot.evaluation.options): presets, validation, options that cannot act."""

from __future__ import annotations

import warnings
from dataclasses import asdict

import pytest

from blindspot.errors import BlindspotError
from blindspot.evaluation import PRESETS, EvaluationOptions, make_options


def test_presets_are_the_issue_conventions_with_overrides_on_top():
    bench = make_options("benchmark")
    assert (bench.image_score, bench.pooling, bench.threshold, bench.positive_residual, bench.mask_erosion,
            bench.median_size, bench.min_component_size) == ("mean", "pooled", "oracle", False, None, 0, 0)
    assert bench.best_dice_rule == "exact"
    compat = make_options("benchmark-compat")
    assert asdict(compat) == {**asdict(bench), "best_dice_rule": "benchmark"}
    brain = make_options("brain-mri")
    assert brain.positive_residual and brain.mask_erosion == 3 and brain.median_size == 5
    assert brain.min_component_size == 20 and brain.threshold == "val-dice"
    assert make_options("brain-mri", median_size=3, pooling="volume").median_size == 3
    assert make_options("brain-mri", mask_erosion=None).mask_erosion is None
    assert make_options("brain-mri", threshold=None).threshold == "val-dice"  # None = not given
    assert set(PRESETS) == {"benchmark", "benchmark-compat", "brain-mri"}
    assert make_options() == EvaluationOptions()
    with pytest.raises(BlindspotError, match="`preset` must be one of benchmark, benchmark-compat, brain-mri"):
        make_options("miccai")
    with pytest.raises(BlindspotError, match="unknown evaluation option 'pool'"):
        make_options(pool="x")


def test_fpr_is_a_percentage():
    assert EvaluationOptions().fpr == 5.0
    assert make_options(threshold="fpr", fpr=5).fpr == 5
    for bad in (0, 100, -1, 150):
        with pytest.raises(BlindspotError, match=r"`fpr` must be a percentage in \(0, 100\)"):
            EvaluationOptions(fpr=bad)
    with pytest.warns(UserWarning, match=r"`fpr` is a percentage: 0.05 means 0.05 % of healthy pixels \(for 5 % give 5\)"):
        assert make_options(threshold="fpr", fpr=0.05).fpr == 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_options(threshold="fpr", fpr=1)
        make_options(threshold="fpr")


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(fpr=5), "`fpr` has no effect here: it applies with `threshold` fpr"),
    (dict(val_fraction=0.2), "`val_fraction` has no effect here: it applies with `threshold` val-dice or fpr"),
    (dict(top_percent=5), "`top_percent` has no effect here: it applies with `image_score` top-k"),
    (dict(bits=16), "`bits` has no effect here: it applies with `accumulator` binned"),
    (dict(median_dims=3), "`median_dims` has no effect here: it applies with a `median_size` above 1"),
    (dict(best_dice_rule="benchmark", pooling="volume"), "`best_dice_rule` has no effect here"),
    (dict(best_dice_rule="benchmark", accumulator="binned"), "`best_dice_rule` has no effect here"),
])
def test_options_without_effect_are_refused(overrides, message):
    with pytest.raises(BlindspotError, match=message):
        make_options(**overrides)


def test_options_that_act_are_accepted():
    assert make_options(threshold="val-dice", val_fraction=0.2).val_fraction == 0.2
    assert make_options(image_score="top-k", top_percent=5).top_percent == 5
    assert make_options(accumulator="binned", bits=16).bits == 16
    assert make_options(median_size=3, median_dims=3).median_dims == 3
    assert make_options("brain-mri", median_dims=2).median_dims == 2  # the preset's median filter is on
    assert make_options(best_dice_rule="exact", pooling="volume").best_dice_rule == "exact"
    with pytest.raises(BlindspotError, match="`val_fraction` has no effect"):
        make_options("benchmark", val_fraction=0.3)  # the benchmark's oracle threshold needs no validation


@pytest.mark.parametrize(("field", "value", "message"), [
    ("image_score", "median", "`image_score` must be one of mean, max, mask-mean, top-k"),
    ("top_percent", 0, r"`top_percent` must be a percentage in \(0, 100\]"),
    ("pooling", "subject", "`pooling` must be one of pooled, volume, image"),
    ("threshold", "best", "`threshold` must be one of oracle, val-dice, fpr"),
    ("mask_erosion", -1, "`mask_erosion` must be an integer >= 0"),
    ("mask_erosion", 1.5, "`mask_erosion` must be an integer >= 0"),
    ("median_size", True, "`median_size` must be an integer >= 0"),
    ("median_dims", 4, "`median_dims` must be 2 or 3"),
    ("min_component_size", -3, "`min_component_size` must be an integer >= 0"),
    ("accumulator", "approx", "`accumulator` must be one of exact, binned"),
    ("bits", 30, r"`bits` must be an integer in \[10, 24\]"),
    ("best_dice_rule", "fast", "`best_dice_rule` must be one of exact, benchmark"),
    ("val_fraction", 1.0, r"`val_fraction` must be a fraction in \(0, 1\)"),
    ("seed", -1, "`seed` must be an integer >= 0"),
])
def test_bad_values_name_the_option(field, value, message):
    with pytest.raises(BlindspotError, match=message):
        EvaluationOptions(**{field: value})


def test_which_protocols_read_brain_masks():
    from blindspot.evaluation.options import reads_masks

    assert not reads_masks(make_options()) and not reads_masks(make_options(), validation=True)
    assert reads_masks(make_options(mask_erosion=0)) and reads_masks(make_options(mask_erosion=0), validation=True)
    assert reads_masks(make_options(image_score="mask-mean")) and not reads_masks(make_options(image_score="mask-mean"),
                                                                                  validation=True)
    assert reads_masks(make_options(threshold="fpr"), validation=True) and not reads_masks(make_options(threshold="fpr"))
    assert reads_masks(make_options(threshold="fpr", val_fraction=0.3))  # the held-out test cases are the validation

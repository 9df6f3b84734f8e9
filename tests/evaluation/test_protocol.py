"""The evaluation protocol (blindspot.evaluation.protocol): every metric against an independent
computation (sklearn, brute force over every threshold), every option toggled."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from blindspot.errors import BlindspotError
from blindspot.evaluation import Case, CaseStream, evaluate, make_options, split_validation
from blindspot.scoring import erode_mask


def random_cases(seed=0, n=8, size=16, signed=False, per_volume=2):
    """2D cases in volumes of ``per_volume`` slices; odd cases have a lesion with higher scores.

    Scores are rounded to 3 decimals, so the pooled pixels hold many ties.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(n):
        label = np.zeros((size, size), bool)
        if k % 2:
            label[3 + k % 5: 8 + k % 5, 4:9] = True
        brain = np.zeros((size, size), bool)
        brain[1:-1, 1:-1] = True
        noise = rng.normal(0, 0.3, label.shape) if signed else rng.random(label.shape)
        scores = np.round(noise + 0.6 * label * rng.random(label.shape), 3).astype(np.float32)
        cases.append(Case(f"c{k}", scores, label, brain, volume=f"v{k // per_volume}"))
    return cases


def pooled(cases, transform=lambda c: c.map):
    labels = np.concatenate([c.label.ravel() for c in cases])
    scores = np.concatenate([np.asarray(transform(c)).ravel() for c in cases])
    return labels, scores


def brute_best_dice(labels, scores):
    dices = [(2 * np.sum((scores >= t) & labels) / (np.sum(scores >= t) + labels.sum()), t) for t in np.unique(scores)]
    return max(dices)


def brute_benchmark_dice(labels, scores):
    """The MedIAnomaly rule, pixel by pixel: thresholds at every (N // 200)-th sorted score, prediction score > t."""
    ordered = np.sort(scores)
    dices = [2 * np.sum((scores > t) & labels) / (np.sum(scores > t) + labels.sum()) for t in ordered[:: max(len(scores) // 200, 1)]]
    return max(dices)


def same_metrics(a, b):
    return json.dumps(a.metrics, sort_keys=True, default=str) == json.dumps(b.metrics, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------- metrics


def test_pooled_metrics_equal_sklearn_and_brute_force():
    cases = random_cases()
    result = evaluate(cases, make_options("benchmark"))
    labels, scores = pooled(cases)
    pixel = result.metrics["pixel"]
    assert pixel["ap"] == average_precision_score(labels, scores)
    assert pixel["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    dice, threshold = brute_best_dice(labels, scores)
    assert pixel["best_dice"] == pytest.approx(dice, abs=1e-12) and pixel["best_dice_threshold"] == threshold
    at = result.metrics["at_threshold"]  # oracle threshold, no component filter: Dice at t is the best Dice
    assert result.metrics["threshold"]["value"] == threshold and at["dice"] == pytest.approx(dice, abs=1e-12)
    assert at["precision"] == np.sum((scores >= threshold) & labels) / np.sum(scores >= threshold)
    for row, case in zip(result.per_case, cases):
        if case.label.any():
            assert row["pixel_ap"] == average_precision_score(case.label.ravel(), case.map.ravel())
            assert row["best_dice"] == pytest.approx(brute_best_dice(case.label.ravel(), case.map.ravel())[0], abs=1e-12)
        assert row["tp"] == np.sum((case.map >= threshold) & case.label)


@pytest.mark.parametrize("pooling", ["pooled", "volume"])
def test_tie_heavy_maps_still_equal_sklearn(pooling):
    """Four score levels only: almost every pixel ties with thousands of others."""
    rng = np.random.default_rng(21)
    cases = []
    for k in range(6):
        label = np.zeros((20, 20), bool)
        label[5:9 + k % 3, 6:11] = k % 2 == 1
        scores = rng.integers(0, 3, label.shape) + 2 * (label & (rng.random(label.shape) < 0.6))
        cases.append(Case(f"t{k}", (scores / 4).astype(np.float32), label, volume=f"v{k // 3}"))
    result = evaluate(cases, make_options(pooling=pooling))
    pixel = result.metrics["pixel"]
    if pooling == "pooled":
        labels, scores = pooled(cases)
        assert pixel["ap"] == average_precision_score(labels, scores)
        assert pixel["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert pixel["best_dice"] == pytest.approx(brute_best_dice(labels, scores)[0], abs=1e-12)
    else:
        units = [pooled(cases[:3]), pooled(cases[3:])]
        assert pixel["ap"] == pytest.approx(np.mean([average_precision_score(y, s) for y, s in units]), abs=1e-12)
        assert pixel["auroc"] == pytest.approx(np.mean([roc_auc_score(y, s) for y, s in units]), abs=1e-12)
    anomalous = np.array([c.label.any() for c in cases])
    image = np.array([c.map.mean(dtype=np.float64) for c in cases])
    assert result.metrics["image"]["ap"] == average_precision_score(anomalous, image)


@pytest.mark.parametrize(("kind", "manual"), [
    ("mean", lambda c: c.map.mean()),
    ("max", lambda c: c.map.max()),
    ("mask-mean", lambda c: c.map[c.brain].mean()),
    ("top-k", lambda c: np.sort(c.map.ravel())[-13:].mean()),  # 5 % of 256 pixels → 13
])
def test_image_scores_and_image_metrics(kind, manual):
    cases = random_cases(seed=1)
    result = evaluate(cases, make_options(image_score=kind, **({"top_percent": 5} if kind == "top-k" else {})))
    expected = np.array([manual(c) for c in cases])
    np.testing.assert_allclose([r["image_score"] for r in result.per_case], expected, rtol=1e-6)
    anomalous = np.array([c.label.any() for c in cases])
    scores = np.array([r["image_score"] for r in result.per_case])
    assert result.metrics["image"]["auroc"] == pytest.approx(roc_auc_score(anomalous, scores), abs=1e-12)
    assert result.metrics["image"]["ap"] == average_precision_score(anomalous, scores)


@pytest.mark.parametrize("pooling", ["volume", "image"])
def test_per_unit_pooling_matches_manual_means_and_differs_from_pooled(pooling):
    cases = random_cases(seed=2)
    result = evaluate(cases, make_options(pooling=pooling))
    groups = {}
    for c in cases:
        groups.setdefault(c.volume if pooling == "volume" else c.name, []).append(c)
    units = [pooled(g) for g in groups.values()]
    units = [(y, s) for y, s in units if y.any()]
    pixel = result.metrics["pixel"]
    assert pixel["n_units_with_positive"] == len(units)
    assert pixel["ap"] == pytest.approx(np.mean([average_precision_score(y, s) for y, s in units]), abs=1e-12)
    assert pixel["auroc"] == pytest.approx(np.mean([roc_auc_score(y, s) for y, s in units]), abs=1e-12)
    assert pixel["best_dice"] == pytest.approx(np.mean([brute_best_dice(y, s)[0] for y, s in units]), abs=1e-12)
    # the oracle threshold maximises the mean Dice over units, checked over every distinct score
    candidates = np.unique(np.concatenate([s for _, s in units]))
    mean_dice = [np.mean([2 * np.sum((s >= t) & y) / (np.sum(s >= t) + y.sum()) for y, s in units]) for t in candidates]
    assert result.metrics["at_threshold"]["dice"] == pytest.approx(max(mean_dice), abs=1e-12)
    pooled_result = evaluate(cases, make_options(pooling="pooled"))
    assert pixel["ap"] != pooled_result.metrics["pixel"]["ap"]
    assert len(result.per_unit) == len(groups)


def test_volume_cases_and_per_slice_units():
    rng = np.random.default_rng(3)
    label = np.zeros((4, 12, 12), bool)
    label[1:3, 4:8, 4:8] = True
    volume = Case("vol", (rng.random(label.shape) + label).astype(np.float32), label)
    by_slice = evaluate([volume], make_options(pooling="image"))
    assert [u["unit"] for u in by_slice.per_unit] == [f"vol[slice={k}]" for k in range(4)]
    expected = np.mean([average_precision_score(label[k].ravel(), volume.map[k].ravel()) for k in (1, 2)])
    assert by_slice.metrics["pixel"]["ap"] == pytest.approx(expected, abs=1e-12)
    assert by_slice.overlays[0]["name"] in ("vol[slice=1]", "vol[slice=2]")


def test_benchmark_rule_best_dice_is_reported_next_to_the_exact_one():
    cases = random_cases(seed=13, n=10, size=24)
    labels, scores = pooled(cases)
    compat = evaluate(cases, make_options("benchmark-compat"))
    pixel = compat.metrics["pixel"]
    assert pixel["best_dice_rule"] == "benchmark"
    assert pixel["best_dice"] == pytest.approx(brute_benchmark_dice(labels, scores), abs=1e-12)
    assert pixel["best_dice_exact"] == pytest.approx(brute_best_dice(labels, scores)[0], abs=1e-12)
    assert pixel["best_dice"] <= pixel["best_dice_exact"]
    exact = evaluate(cases, make_options("benchmark"))
    assert exact.metrics["pixel"]["best_dice"] == pixel["best_dice_exact"] and "best_dice_exact" not in exact.metrics["pixel"]
    assert exact.metrics["pixel"]["ap"] == pixel["ap"]  # only the best-Dice rule differs


def test_labels_must_be_all_or_none_and_shapes_must_agree():
    label = np.zeros((6, 6), bool)
    label[2:4, 2:4] = True
    scores = np.random.default_rng(0).random((6, 6)).astype(np.float32)
    with pytest.raises(BlindspotError, match="has no pixel label while 'a' has one"):
        evaluate([Case("a", scores, label), Case("b", scores, anomalous=True)])
    with pytest.raises(BlindspotError, match=r"the label of 'a' has shape \(5, 5\)"):
        evaluate([Case("a", scores, label[:5, :5])])
    with pytest.raises(BlindspotError, match="neither a pixel label nor an image-level label"):
        evaluate([Case("a", scores)])
    only_images = evaluate([Case("a", scores, anomalous=True), Case("b", scores * 0.5, anomalous=False)])
    assert "pixel" not in only_images.metrics and only_images.metrics["image"]["auroc"] == 1.0
    assert any("no pixel labels" in note for note in only_images.notes)


# ---------------------------------------------------------------------------------------- options


def test_positive_residual_keeps_only_positive_values():
    cases = random_cases(seed=4, signed=True)
    on = evaluate(cases, make_options(positive_residual=True))
    clipped = [Case(c.name, np.maximum(c.map, 0), c.label, c.brain, volume=c.volume) for c in cases]
    assert same_metrics(on, evaluate(clipped, make_options()))
    assert not same_metrics(on, evaluate(cases, make_options()))
    assert on.n_signed == len(cases)


def test_mask_erosion_shrinks_the_mask():
    cases = random_cases(seed=5)
    for iterations in (0, 2):
        result = evaluate(cases, make_options(mask_erosion=iterations))
        manual = [Case(c.name, np.where(erode_mask(c.brain, iterations), c.map, 0), c.label, c.brain, volume=c.volume) for c in cases]
        assert same_metrics(result, evaluate(manual, make_options()))
    two = evaluate(cases, make_options(mask_erosion=2, image_score="mask-mean"))
    expected = [c.map[erode_mask(c.brain, 2)].mean() for c in cases]  # mask-mean uses the eroded mask
    np.testing.assert_allclose([r["image_score"] for r in two.per_case], expected, rtol=1e-6)
    assert not same_metrics(evaluate(cases, make_options(mask_erosion=0)), evaluate(cases, make_options(mask_erosion=2)))
    with pytest.raises(BlindspotError, match="`mask_erosion` needs brain masks but 'x' has none"):
        evaluate([Case("x", cases[1].map, cases[1].label)], make_options(mask_erosion=1))


def test_median_filter_2d_and_3d():
    rng = np.random.default_rng(6)
    label = np.zeros((5, 12, 12), bool)
    label[2, 3:9, 3:9] = True
    volume = Case("v", (rng.random(label.shape) + 0.5 * label).astype(np.float32), label)
    for dims, size in ((2, (1, 5, 5)), (3, (5, 5, 5))):
        result = evaluate([volume], make_options(median_size=5, median_dims=dims))
        manual = Case("v", ndimage.median_filter(volume.map, size=size), label)
        assert same_metrics(result, evaluate([manual], make_options()))
    assert not same_metrics(evaluate([volume], make_options(median_size=5, median_dims=2)),
                            evaluate([volume], make_options(median_size=5, median_dims=3)))
    with pytest.raises(BlindspotError, match="`median_dims` 3 needs 3-D maps"):
        evaluate(random_cases(), make_options(median_size=3, median_dims=3))


def test_component_filter_changes_only_the_thresholded_metrics():
    cases = random_cases(seed=7)
    plain, filtered = evaluate(cases, make_options()), evaluate(cases, make_options(min_component_size=6))
    assert plain.metrics["pixel"] == filtered.metrics["pixel"]  # threshold-free metrics are unchanged
    t = filtered.metrics["threshold"]["value"]
    tp = fp = fn = 0
    for c in cases:
        labels, n = ndimage.label(c.map >= t)
        sizes = np.bincount(labels.ravel())
        keep = (sizes >= 6)[labels] & (labels > 0)
        tp, fp, fn = tp + np.sum(keep & c.label), fp + np.sum(keep & ~c.label), fn + np.sum(~keep & c.label)
    at = filtered.metrics["at_threshold"]
    assert (at["tp"], at["fp"], at["fn"]) == (tp, fp, fn)
    assert at["fp"] < plain.metrics["at_threshold"]["fp"]


def healthy_cases(seed=8, n=4, size=20, offset=0.0):
    rng = np.random.default_rng(seed)
    brain = np.zeros((size, size), bool)
    brain[2:-2, 2:-2] = True
    return [Case(f"h{k}", (rng.random((size, size)) + offset).astype(np.float32), brain=brain, anomalous=False)
            for k in range(n)], brain


def test_fpr_threshold_gives_the_rate_in_percent_on_healthy_validation_pixels():
    healthy, brain = healthy_cases()
    inside = np.concatenate([c.map[brain] for c in healthy])
    for percent in (1, 5, 10):
        result = evaluate(random_cases(seed=9, size=20), make_options(threshold="fpr", fpr=percent), validation=healthy)
        threshold = result.metrics["threshold"]
        assert threshold["target_fpr_percent"] == percent
        assert 100 * np.mean(inside >= threshold["value"]) == threshold["validation_fpr_percent"]
        assert threshold["validation_fpr_percent"] == 100 * (int(percent / 100 * inside.size) / inside.size)
    default = evaluate(random_cases(seed=9, size=20), make_options(threshold="fpr"), validation=healthy)
    assert default.metrics["threshold"]["target_fpr_percent"] == 5  # the default is 5 %, not 0.05 %
    assert default.metrics["threshold"]["value"] == evaluate(random_cases(seed=9, size=20), make_options(threshold="fpr", fpr=5),
                                                             validation=healthy).metrics["threshold"]["value"]
    with pytest.raises(BlindspotError, match="needs healthy"):
        evaluate(random_cases(), make_options(threshold="fpr"), validation=random_cases()[1::2])


def test_fpr_threshold_that_predicts_no_pixel_gets_a_note_and_a_warning():
    healthy, _ = healthy_cases(offset=5.0)  # validation scores far above every test score
    with pytest.warns(UserWarning, match="predicts no test pixel: Dice is 0"):
        result = evaluate(random_cases(seed=9, size=20), make_options(threshold="fpr"), validation=healthy)
    assert result.metrics["at_threshold"]["predicted"] == 0 and result.metrics["at_threshold"]["dice"] == 0
    assert any("predicts no test pixel" in note and "5 %" in note for note in result.notes)
    normal_healthy, _ = healthy_cases()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a threshold that predicts pixels: no warning
        fine = evaluate(random_cases(seed=9, size=20), make_options(threshold="fpr"), validation=normal_healthy)
    assert fine.metrics["at_threshold"]["predicted"] > 0 and not any("predicts no" in note for note in fine.notes)


def test_validation_dice_threshold_and_hold_out():
    cases, validation = random_cases(seed=10), random_cases(seed=11)
    result = evaluate(cases, make_options(threshold="val-dice"), validation=validation)
    dice, threshold = brute_best_dice(*pooled(validation))
    assert result.metrics["threshold"]["value"] == threshold
    assert result.metrics["threshold"]["validation_dice"] == pytest.approx(dice, abs=1e-12)
    test, held = split_validation(cases, 0.25, seed=0)
    assert {c.volume for c in test}.isdisjoint({c.volume for c in held}) and len(held) == 2
    assert [c.name for c in split_validation(cases, 0.25, seed=0)[1]] == [c.name for c in held]
    auto = evaluate(cases, make_options(threshold="val-dice", val_fraction=0.25))
    assert auto.metrics["n_cases"] == 6
    assert auto.metrics["threshold"]["value"] == brute_best_dice(*pooled(held))[1]
    with pytest.raises(BlindspotError, match="needs validation cases"):
        evaluate(cases, make_options(threshold="val-dice"))
    with pytest.raises(BlindspotError, match="either validation cases or a `val_fraction`"):
        evaluate(cases, make_options(threshold="val-dice", val_fraction=0.25), validation=validation)


def test_stream_equals_in_memory_and_binned_is_within_bounds():
    cases = random_cases(seed=12, n=10)
    for pooling in ("pooled", "volume"):
        memory = evaluate(cases, make_options(pooling=pooling, min_component_size=3))
        stream = evaluate(CaseStream(lambda: iter(cases), has_labels=True), make_options(pooling=pooling, min_component_size=3))
        assert same_metrics(memory, stream) and json.dumps(memory.per_case) == json.dumps(stream.per_case)
    exact = evaluate(cases, make_options())
    binned = evaluate(cases, make_options(accumulator="binned", bits=12))
    for name in ("ap", "auroc", "best_dice"):
        low, high = binned.metrics["pixel"]["bounds"][name]
        assert low - 1e-12 <= exact.metrics["pixel"][name] <= high + 1e-12
    at = binned.metrics["at_threshold"]  # counts at a bin edge are exact
    labels, scores = pooled(cases)
    assert at["tp"] == np.sum((scores >= binned.metrics["threshold"]["value"]) & labels)


def test_a_hold_out_must_leave_two_test_volumes():
    from blindspot.evaluation.cases import validation_volumes

    assert len(validation_volumes(["a", "b", "c"], 0.3, seed=0)) == 1
    for volumes, fraction, counts in ((["a", "b", "c"], 0.5, "2 of the 3 test volumes and leaves 1"),
                                      (["a", "b", "c"], 0.99, "3 of the 3 test volumes and leaves 0"),
                                      (["a", "a"], 0.5, "1 of the 1 test volumes and leaves 0")):
        with pytest.raises(BlindspotError, match=f"`val_fraction` {fraction:g} holds out {counts}; at least 2 must remain"):
            validation_volumes(volumes, fraction, seed=0)


def test_inputs_that_leave_nothing_to_measure_are_warned_about():
    cases = random_cases(seed=13, n=4)
    empty_labels = [Case(c.name, c.map, np.zeros_like(c.label)) for c in cases]
    with pytest.warns(UserWarning, match="the test labels mark no anomalous pixel in any case: no metric can be measured"):
        result = evaluate(empty_labels, make_options(bootstrap=0))
    assert any("no metric can be measured" in note for note in result.notes)
    empty_masks = [Case(c.name, c.map, c.label, np.zeros(c.map.shape, bool)) for c in cases]
    with pytest.warns(UserWarning, match=r"every post-processed test map is 0 everywhere \(are the brain masks empty\?\)"):
        result = evaluate(empty_masks, make_options(mask_erosion=0, bootstrap=0))
    assert result.metrics["pixel"]["auroc"] == 0.5
    constant = [Case(c.name, np.ones(c.map.shape), anomalous=bool(k % 2)) for k, c in enumerate(cases)]
    with pytest.warns(UserWarning, match="every test case has the image score 1: no case can be told from another"):
        evaluate(constant, make_options(bootstrap=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # maps that measure something: no warning
        evaluate(cases, make_options(bootstrap=0))

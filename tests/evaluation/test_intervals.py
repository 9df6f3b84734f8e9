"""Bootstrap intervals of an evaluation (blindspot.evaluation.intervals): every metric's interval against an
independent bootstrap on the same resampled cases (sklearn and brute force on the explicitly resampled pixels), point
estimates unchanged, seeded, streamed = in memory, exact or binned tables, and the bootstrap.npz round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

import blindspot.evaluation.intervals as intervals_module
from blindspot.errors import BlindspotError
from blindspot.evaluation import Case, CaseStream, evaluate, make_options
from blindspot.evaluation.intervals import load_case_data
from blindspot.metrics.bootstrap import percentile_interval, resample_indices

B = 200


def cases_of(seed=0, n=12, size=12, per_volume=3):
    """2-D cases in volumes of ``per_volume``; odd cases hold a lesion with higher, tied scores."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(n):
        label = np.zeros((size, size), bool)
        if k % 2:
            label[2 + k % 4: 6 + k % 4, 3:7] = True
        scores = np.round(rng.random(label.shape) + 0.7 * label * rng.random(label.shape), 2).astype(np.float32)
        cases.append(Case(f"c{k}", scores, label, volume=f"v{k // per_volume}"))
    return cases


def by_threshold(labels, scores):
    """TP and FP at every distinct score t (prediction score >= t), descending t: the slow, direct way."""
    thresholds = np.unique(scores)[::-1]
    predicted = scores[None, :] >= thresholds[:, None]
    return (predicted & labels[None, :]).sum(axis=1), (predicted & ~labels[None, :]).sum(axis=1)


def average_precision(labels, scores):
    """Σ (R_t − R_{t−1}) P_t over the distinct thresholds (sklearn's definition)."""
    tp, fp = by_threshold(labels, scores)
    recall = np.r_[0, tp / labels.sum()]
    return float(np.sum(np.diff(recall) * tp / (tp + fp)))


def auroc(labels, scores):
    """Mann-Whitney: the share of (anomalous, normal) pairs ranked right, ties counting one half."""
    ranks = rankdata(scores)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def brute_best_dice(labels, scores):
    tp, fp = by_threshold(labels, scores)
    return float(np.max(2 * tp / (tp + fp + labels.sum())))


def pixel_metrics(cases):
    labels = np.concatenate([c.label.ravel() for c in cases])
    scores = np.concatenate([c.map.ravel() for c in cases])
    if not labels.any():
        return {"ap": np.nan, "auroc": np.nan, "best_dice": np.nan}
    return {"ap": average_precision(labels, scores), "auroc": auroc(labels, scores), "best_dice": brute_best_dice(labels, scores)}


def image_metrics(cases):
    labels = np.array([c.label.any() for c in cases])
    scores = np.array([c.map.astype(np.float64).mean() for c in cases])
    if labels.all() or not labels.any():
        return {"auroc": np.nan, "ap": np.nan}
    return {"auroc": auroc(labels, scores), "ap": average_precision(labels, scores)}


def at_threshold(cases, t):
    tp = sum(int(np.sum((c.map >= t) & c.label)) for c in cases)
    fp = sum(int(np.sum((c.map >= t) & ~c.label)) for c in cases)
    fn = sum(int(np.sum((c.map < t) & c.label)) for c in cases)
    return {"dice": 2 * tp / (2 * tp + fp + fn), "precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn)}


def test_the_independent_metrics_are_sklearns():
    rng = np.random.default_rng(0)
    labels, scores = rng.random(300) < 0.3, np.round(rng.random(300), 1)
    assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def check(interval, distribution):
    low, high = percentile_interval(np.asarray(distribution, float), 0.95)
    assert interval == pytest.approx([low, high], abs=1e-12)


def test_pooled_intervals_equal_an_independent_bootstrap_of_the_resampled_cases():
    cases = cases_of()
    result = evaluate(cases, make_options("benchmark", bootstrap=B, seed=3), n_overlays=0)
    m = result.metrics
    assert m["bootstrap"] == {"method": "percentile", "n_resamples": B, "confidence": 0.95, "seed": 3, "resampled": "cases",
                              "n_resampled": len(cases), "pixel_tables": "exact", "undefined_resamples": {}}
    draws = resample_indices(len(cases), B, 3)
    independent = [(image_metrics(d), pixel_metrics(d), at_threshold(d, m["threshold"]["value"]))
                   for d in ([cases[i] for i in draw] for draw in draws)]
    for name in ("auroc", "ap"):
        check(m["image"]["intervals"][name], [r[0][name] for r in independent])
    for name in ("ap", "auroc", "best_dice"):
        check(m["pixel"]["intervals"][name], [r[1][name] for r in independent])
    for name in ("dice", "precision", "recall"):
        check(m["at_threshold"]["intervals"][name], [r[2][name] for r in independent])
    for section in ("image", "pixel", "at_threshold"):  # each interval holds its point estimate
        for name, (low, high) in m[section]["intervals"].items():
            assert low <= m[section][name] <= high, (section, name)


def test_volume_pooling_resamples_volumes_and_averages_the_drawn_units():
    cases = cases_of(seed=1)
    result = evaluate(cases, make_options(pooling="volume", bootstrap=B, seed=0), n_overlays=0)
    m = result.metrics
    assert m["bootstrap"]["resampled"] == "volumes" and m["bootstrap"]["n_resampled"] == 4
    volumes = sorted({c.volume for c in cases})
    per_volume = {v: pixel_metrics([c for c in cases if c.volume == v]) for v in volumes}
    draws = resample_indices(len(volumes), B, 0)
    for name in ("ap", "auroc", "best_dice"):
        means = [np.mean([per_volume[volumes[i]][name] for i in draw if not np.isnan(per_volume[volumes[i]][name])])
                 for draw in draws]
        check(m["pixel"]["intervals"][name], means)
    drawn_cases = [[c for i in draw for c in cases if c.volume == volumes[i]] for draw in draws]
    check(m["image"]["intervals"]["auroc"], [image_metrics(d)["auroc"] for d in drawn_cases])


def test_point_estimates_do_not_change_and_bootstrap_0_turns_intervals_off():
    cases = cases_of(seed=2)
    on = evaluate(cases, make_options(threshold="val-dice", val_fraction=0.3, min_component_size=2), n_overlays=0)
    off = evaluate(cases, make_options(threshold="val-dice", val_fraction=0.3, min_component_size=2, bootstrap=0), n_overlays=0)

    def without_intervals(metrics):
        return {k: {n: v for n, v in section.items() if n != "intervals"} if isinstance(section, dict) else section
                for k, section in metrics.items() if k != "bootstrap"}

    assert json.dumps(without_intervals(on.metrics), sort_keys=True) == json.dumps(off.metrics, sort_keys=True)
    assert off.cases is None and "bootstrap" not in off.metrics and "intervals" not in off.metrics["pixel"]
    assert json.dumps(on.per_case) == json.dumps(off.per_case) and on.cases is not None
    with pytest.raises(BlindspotError, match="`confidence` has no effect here: it applies with a `bootstrap` above 0"):
        make_options(bootstrap=0, confidence=0.9)


def test_same_seed_same_intervals_other_seed_other_intervals_and_the_level_widens_them():
    cases = cases_of(seed=4)
    a, b = (evaluate(cases, make_options(bootstrap=300, seed=5), n_overlays=0).metrics for _ in range(2))
    c = evaluate(cases, make_options(bootstrap=300, seed=6), n_overlays=0).metrics
    wide = evaluate(cases, make_options(bootstrap=300, seed=5, confidence=0.99), n_overlays=0).metrics
    assert a["pixel"]["intervals"] == b["pixel"]["intervals"] and a["image"]["intervals"] == b["image"]["intervals"]
    assert a["pixel"]["intervals"] != c["pixel"]["intervals"]
    low, high = a["pixel"]["intervals"]["ap"]
    wide_low, wide_high = wide["pixel"]["intervals"]["ap"]
    assert wide_low <= low and high <= wide_high and wide["bootstrap"]["confidence"] == 0.99


@pytest.mark.parametrize("pooling", ["pooled", "volume", "image"])
def test_a_stream_gives_the_intervals_of_the_cases_in_memory(pooling):
    cases = cases_of(seed=5)
    options = make_options(pooling=pooling, bootstrap=100)
    memory = evaluate(cases, options, n_overlays=0).metrics
    stream = evaluate(CaseStream(lambda: iter(cases), has_labels=True), options, n_overlays=0).metrics
    for section in ("image", "pixel", "at_threshold"):
        assert memory[section]["intervals"] == stream[section]["intervals"]


def test_large_tables_are_binned_and_recorded(monkeypatch):
    cases = cases_of(seed=6, n=10, size=24)
    exact = evaluate(cases, make_options(bootstrap=200), n_overlays=0).metrics
    monkeypatch.setattr(intervals_module, "EXACT_COST", 0)  # shared rows too costly: bins of 20 bits
    binned = evaluate(cases, make_options(bootstrap=200), n_overlays=0).metrics
    assert binned["bootstrap"]["pixel_tables"] == "binned (20 bits)"
    assert binned["pixel"]["ap"] == exact["pixel"]["ap"]  # the point estimate stays exact
    for name in ("ap", "auroc", "best_dice"):
        assert binned["pixel"]["intervals"][name] == pytest.approx(exact["pixel"]["intervals"][name], abs=2e-3)
    monkeypatch.setattr(intervals_module, "EXACT_ROWS", 100)  # too many rows to keep: binned while collecting
    assert evaluate(cases, make_options(bootstrap=100), n_overlays=0).metrics["bootstrap"]["pixel_tables"] == "binned (20 bits)"
    accumulated = evaluate(cases, make_options(bootstrap=100, accumulator="binned", bits=14), n_overlays=0).metrics
    assert accumulated["bootstrap"]["pixel_tables"] == "binned (14 bits)"  # the evaluation's own bins


def test_the_bootstrap_file_round_trips(tmp_path):
    cases = cases_of(seed=7)
    for options in (make_options(bootstrap=100), make_options(pooling="volume", bootstrap=100), make_options(pooling="image", bootstrap=100)):
        data = evaluate(cases, options, n_overlays=0).cases
        data.save(tmp_path / "b.npz")
        again = load_case_data(tmp_path / "b.npz")
        assert (again.names, again.volumes, again.group_names, again.resampled, again.pooling) == \
            (data.names, data.volumes, data.group_names, data.resampled, data.pooling)
        for field in ("group", "anomalous", "image_scores", "n_pixels", "counts"):
            np.testing.assert_array_equal(getattr(again, field), getattr(data, field))
        assert (again.tables is None) == (data.tables is None)
        assert set(again.parts) == set(data.parts)
    with pytest.raises(BlindspotError, match="does not exist; the evaluation was made with `bootstrap` 0"):
        load_case_data(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(BlindspotError, match="is not a readable blindspot bootstrap file"):
        load_case_data(tmp_path / "bad.npz")


def test_one_class_resamples_are_left_out_and_counted():
    cases = cases_of(seed=8, n=4)
    m = evaluate(cases, make_options(bootstrap=400), n_overlays=0).metrics
    undefined = m["bootstrap"]["undefined_resamples"]
    assert undefined["image.auroc"] > 0  # 4 cases: some resamples draw one class only
    low, high = m["image"]["intervals"]["auroc"]
    assert 0 <= low <= high <= 1


def test_the_cli_flags_and_their_errors(tmp_path, capsys):
    from blindspot.cli import main

    maps, labels = tmp_path / "maps", tmp_path / "labels"
    maps.mkdir(), labels.mkdir()
    for case in cases_of(seed=9, n=6):
        np.save(maps / f"{case.name}.npy", case.map)
        np.save(labels / f"{case.name}.npy", case.label)
    code = main(["evaluate", "--maps", str(maps), "--labels", str(labels), "--bootstrap", "0", "--confidence", "0.9",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "error: --confidence has no effect here: it applies with a --bootstrap above 0."
    assert main(["evaluate", "--maps", str(maps), "--labels", str(labels), "--bootstrap", "100", "--confidence", "0.8",
                 "--seed", "3", "--overlays", "0", "--out", str(tmp_path / "o")]) == 0
    record = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert record["protocol"]["bootstrap"] == 100 and record["protocol"]["confidence"] == 0.8
    assert record["metrics"]["bootstrap"]["seed"] == 3 and record["metrics"]["bootstrap"]["n_resamples"] == 100
    summary = (tmp_path / "o" / "summary.md").read_text()
    assert "In brackets: 80 % percentile bootstrap intervals over the 6 test cases (100 resamples" in summary
    low, high = record["metrics"]["pixel"]["intervals"]["ap"]
    assert f"| AP | {record['metrics']['pixel']['ap']:.4f} [{low:.4f}, {high:.4f}] |" in summary

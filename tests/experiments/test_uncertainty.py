"""Intervals over images in experiments 1–3 (blindspot.experiments.uncertainty): each cell's mean AP and the blind
band stated with its uncertainty, against an independent bootstrap; and what the result folders hold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blindspot.data import DataConfig
from blindspot.errors import BlindspotError
from blindspot.experiments.pitfalls import MATCH_KEYS
from blindspot.experiments.runs import _model_summary, run_intensity, run_texture
from blindspot.experiments.uncertainty import blind_spot_rows, grid_intervals
from blindspot.metrics.bootstrap import percentile_interval, resample_indices
from blindspot.report import blind_spot_markdown


def test_grid_intervals_are_the_bootstrap_of_each_cells_mean_over_images():
    per_image = np.random.default_rng(0).random((12, 5, 3))
    got = grid_intervals(per_image, {"seed": 4, "bootstrap": 400, "confidence": 0.9})
    draws = resample_indices(12, 400, 4)
    means = np.stack([per_image[draw].mean(axis=0) for draw in draws])
    low, high = percentile_interval(means, 0.9)
    np.testing.assert_allclose(got["ap_low"], low, atol=1e-12)
    np.testing.assert_allclose(got["ap_high"], high, atol=1e-12)
    assert grid_intervals(per_image, {"seed": 4, "bootstrap": 0}) == {}
    with pytest.raises(BlindspotError, match="`confidence` must be a level in"):
        grid_intervals(per_image, {"bootstrap": 100, "confidence": 1.5})


def test_the_blind_band_is_stated_with_its_uncertainty():
    rng = np.random.default_rng(1)
    intensities = np.linspace(0, 1, 6)
    sigmas = np.array([0.0, 1.0])
    centre = np.array([[0.9, 0.9], [0.2, 0.45], [0.48, 0.1], [0.52, 0.2], [0.9, 0.3], [0.9, 0.95]])  # (I, S)
    per_image = np.clip(centre[None] + rng.normal(0, 0.12, (30, 6, 2)), 0, 1)
    ap = per_image.mean(axis=0)
    rows = blind_spot_rows(intensities, sigmas, ap, per_image, {"seed": 0}, at_sigmas=(0, 1))
    draws = resample_indices(30, 1000, 0)
    for row, s in zip(rows, (0, 1)):
        curves = np.stack([per_image[draw, :, s].mean(axis=0) for draw in draws])
        low, high = percentile_interval(curves)
        below = high < 0.5
        straddle = (low < 0.5) & (high >= 0.5)
        assert [a for a, _ in row["below_bands"]] == [intensities[i] for i in np.flatnonzero(below & ~np.r_[False, below[:-1]])]
        assert sum(b - a for a, b in row["straddle_bands"]) == pytest.approx(
            sum(b - a for a, b in _runs(intensities, straddle)))
        assert row["min_ap_interval"] == pytest.approx(percentile_interval(curves.min(axis=1)), abs=1e-12)
        assert row["mean_ap_interval"] == pytest.approx(percentile_interval(curves.mean(axis=1)), abs=1e-12)
        assert row["min_ap_interval"][0] <= row["min_ap"] <= row["min_ap_interval"][1]
    assert rows[0]["below_bands"] == [(0.2, 0.2)] and rows[0]["straddle_bands"] == [(intensities[2], intensities[3])]  # 0.48, 0.52
    table = blind_spot_markdown(rows)
    assert "95 % interval entirely below 0.5" in table and "95 % interval straddles 0.5" in table
    assert f"{rows[0]['min_ap']:.3f} [{rows[0]['min_ap_interval'][0]:.3f}, " in table
    plain = blind_spot_markdown(blind_spot_rows(intensities, sigmas, ap, None, {"seed": 0}, at_sigmas=(0, 1)))
    assert "interval" not in plain and "intensities with AP < 0.5" in plain


def _runs(values, inside):
    edges = np.diff(np.r_[0, inside.astype(int), 0])
    return [(values[a], values[b - 1]) for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]


def test_experiment_folders_hold_the_intervals_of_every_cell(tmp_path):
    data = DataConfig().with_preparation(size=32)
    grid = dict(radius=40, n_intensities=6, n_sigmas=3, sigma_max=2.0, seed=2)
    exp1 = run_intensity(tmp_path / "e1", data, **grid, bootstrap=300, confidence=0.9)
    with np.load(exp1 / "results.npz") as saved:
        expected = grid_intervals(saved["ap_per_image"], {"seed": 2, "bootstrap": 300, "confidence": 0.9})
        np.testing.assert_array_equal(saved["ap_low"], expected["ap_low"])
        assert (saved["ap_low"] <= saved["ap"] + 1e-12).all() and (saved["ap"] <= saved["ap_high"] + 1e-12).all()
    config = json.loads((exp1 / "config.json").read_text())
    assert config["parameters"]["bootstrap"] == 300 and config["parameters"]["confidence"] == 0.9
    summary = (exp1 / "summary.md").read_text()
    assert "90 % percentile bootstrap intervals of the mean over the 10 images" in summary
    assert "Mean AP over the whole grid: " in summary and "90 % interval straddles 0.5" in summary
    exp2 = run_texture(tmp_path / "e2", data, **grid, match=exp1, bootstrap=0)
    with np.load(exp2 / "results.npz") as saved:
        assert "ap_low" not in saved.files
    assert "bootstrap" not in (exp2 / "summary.md").read_text()
    exp2 = run_texture(tmp_path / "e2b", data, **grid, match=exp1)
    with np.load(exp2 / "results.npz") as saved:
        assert saved["ap_low"].shape == saved["ap"].shape
    assert "] |" in (exp2 / "summary.md").read_text()  # table cells with their intervals


def test_the_model_summary_states_the_models_and_the_blurs_uncertainty():
    rng = np.random.default_rng(3)
    intensities = np.linspace(0, 1, 5)
    model = np.clip(np.array([0.9, 0.3, 0.5, 0.7, 0.9])[None] + rng.normal(0, 0.1, (8, 5)), 0, 1)
    blur = np.clip(np.array([0.8, 0.2, 0.45, 0.8, 0.9])[None, :, None] + rng.normal(0, 0.05, (8, 5, 2)), 0, 1)
    arrays = {"intensities": intensities, "ap": model.mean(axis=0), "ap_per_image": model, "matched_ap": blur[:, :, 1].mean(axis=0),
              "matched_sigma": np.float64(1.0), "matched_sigma_index": np.int64(1), "matched": np.bool_(True),
              "matched_l1": np.float64(0.1), "sigmas": np.array([0.0, 1.0]), "recon_error": np.float64(0.01),
              **{f"match_{k}": np.float64(v) for k, v in zip(MATCH_KEYS, (0.02, 0.01, 0.03, 0.05, 0.1))}}
    config = {"model": {"name": "bench-ae", "d": 4}, "parameters": {"seed": 0, "reconstruct": "normal", "radius": 20,
                                                                       "radius_used": 20}, "checkpoint": {"path": "m.pt"},
              "data": {"data": "mni152"}, "centers": "sampled", "match": "computed"}

    class Images:
        images = np.zeros((8, 32, 32))

        def __len__(self):
            return 8

    text = _model_summary(arrays, config, Images(), blur_per_image=blur)
    assert "95 % percentile bootstrap intervals of the mean over the 8 images" in text
    rows = [line for line in text.splitlines() if line.startswith("| bench-ae") or line.startswith("| blur")]
    assert len(rows) == 2 and all(line.count("[") >= 2 for line in rows)


def test_the_audit_ranking_states_each_scores_uncertainty():
    from blindspot.experiments.audit import profile_summary, rank_scores
    from blindspot.experiments.uncertainty import audit_intervals
    from blindspot.report_html import ranking_rows

    rng = np.random.default_rng(5)
    intensities = np.linspace(0, 1, 6)
    truth = np.array([[0.9, 0.3, 0.48, 0.9, 0.9, 0.9], [0.9, 0.9, 0.7, 0.9, 0.9, 0.9]])  # (F, I)
    per_image = np.clip(truth[None] + rng.normal(0, 0.1, (20, 2, 6)), 0, 1)
    counts, edges = np.ones(10), np.linspace(0, 1, 11)
    result = {"intensities": intensities, "scores": np.array(["l1", "ssim"]), "has_anomalous": np.bool_(False),
              "ranking_mode": np.str_("normal"), "ap_per_image_normal": per_image, "ap_normal": per_image.mean(axis=0)}
    summary = profile_summary(result["ap_normal"], intensities, counts, edges)
    result.update({f"{k}_normal": v for k, v in summary.items()}, ranking=rank_scores(summary))
    result.update(audit_intervals(result, {"seed": 1}))
    draws = resample_indices(20, 1000, 1)
    curves = np.stack([per_image[d].mean(axis=0) for d in draws])
    np.testing.assert_allclose(result["ap_low_normal"], percentile_interval(curves)[0], atol=1e-12)
    np.testing.assert_allclose(result["mean_ap_interval_normal"][:, 1], percentile_interval(curves.mean(axis=2))[1], atol=1e-12)
    np.testing.assert_allclose(result["blind_fraction_interval_normal"][:, 0],
                               percentile_interval((curves < 0.5).mean(axis=2))[0], atol=1e-12)
    header, rows = ranking_rows(result)
    l1 = next(row for row in rows if row[1] == "`l1`")
    assert l1[2].count("[") == 1 and "[" in l1[3] and " at " in l1[3]
    assert "(95 % interval below 0.5: 0.20;" in l1[4] and "straddling 0.5: 0.40)" in l1[4]
    assert audit_intervals(result, {"seed": 1, "bootstrap": 0}) == {}

"""Intervals over images for the pitfall grids: the mean AP of each cell, and the blind band with its uncertainty.

Every cell of experiments 1–3 (and of the audit) is a mean over images of one AP per image. Its
percentile interval resamples the images with replacement (the same resamples for every cell;
:func:`blindspot.metrics.bootstrap.mean_intervals`), seeded by the experiment's seed. The blind
band is then stated in three parts: the intensities whose interval lies entirely below
:data:`BLIND_AP` (blind on these images whatever the draw), those whose interval straddles it
(undecided), and the rest.
"""

from __future__ import annotations

import numpy as np

from blindspot.experiments.pitfalls import blind_spot_table, value_bands
from blindspot.metrics.bootstrap import (
    CONFIDENCE,
    N_RESAMPLES,
    check_bootstrap,
    check_resample_memory,
    mean_intervals,
    multiplicities,
    percentile_interval,
    resample_indices,
    resampled_means,
)

__all__ = ["BLIND_AP", "audit_intervals", "blind_spot_rows", "bootstrap_settings", "curve_uncertainty", "grid_intervals", "interval_sentence",
           "interval_text"]

#: An intensity is blind when the mean AP there is below this.
BLIND_AP = 0.5
#: Float64 values per resample and intensity of a resampled curve (the curve and the quantiles' copies).
CURVE_VALUES = 3


def bootstrap_settings(parameters: dict) -> tuple[int, float, int]:
    """``(n_resamples, confidence, seed)`` of an experiment's parameters (defaults where absent), checked.

    With ``n_intensities`` the resampled curves of :func:`blind_spot_rows` must fit in memory too (for
    two images, before any are read; again with the images when the intervals are computed).
    """
    n, level = parameters.get("bootstrap", N_RESAMPLES), parameters.get("confidence", CONFIDENCE)
    check_bootstrap(n, level, unit="image")
    if n and isinstance(parameters.get("n_intensities"), int):
        check_resample_memory(2, n, CURVE_VALUES * parameters["n_intensities"], unit="image",
                              at_least=True)
    return n, level, int(parameters.get("seed", 0))


def interval_sentence(n_resamples: int, confidence: float, seed: int, count: int, unit: str = "image") -> str:
    """How a summary's bracketed intervals were computed, over ``count`` images or volumes ('' without resamples)."""
    if not n_resamples:
        return ""
    units = f"{count} {unit}" + ("s" if count != 1 else "")
    spread = f"; one {unit} gives no spread" if count == 1 else ""
    return (f"In brackets: {100 * confidence:g} % percentile bootstrap intervals of the mean over the {units} ({unit}s "
            f"resampled with replacement, {n_resamples:.0f} resamples, seed {seed:.0f}{spread}).")


def grid_intervals(ap_per_image: np.ndarray, parameters: dict) -> dict[str, np.ndarray]:
    """``ap_low`` and ``ap_high``: the interval of the mean over images (axis 0) of every cell; {} with 0 resamples."""
    n, level, seed = bootstrap_settings(parameters)
    if not n:
        return {}
    low, high = mean_intervals(ap_per_image, n_resamples=n, confidence=level, seed=seed)
    return {"ap_low": low, "ap_high": high}


def curve_uncertainty(intensities: np.ndarray, curves: np.ndarray, confidence: float) -> dict:
    """The uncertain blind band of one AP-over-intensity curve from its resampled curves ``(B, I)``."""
    low, high = percentile_interval(curves, confidence)
    return {"below_bands": value_bands(intensities, high < BLIND_AP),
            "straddle_bands": value_bands(intensities, (low < BLIND_AP) & (high >= BLIND_AP)),
            "min_ap_interval": percentile_interval(curves.min(axis=1), confidence),
            "mean_ap_interval": percentile_interval(curves.mean(axis=1), confidence)}


def blind_spot_rows(intensities: np.ndarray, sigmas: np.ndarray, ap: np.ndarray, ap_per_image: np.ndarray | None,
                    parameters: dict, at_sigmas=(0.5, 1, 2, 3, 5)) -> list[dict]:
    """:func:`~blindspot.experiments.pitfalls.blind_spot_table` and, with per-image AP, each row's uncertainty.

    ``ap_per_image`` (N, I, S): the rows gain ``below_bands`` (interval entirely below 0.5),
    ``straddle_bands`` (interval straddles 0.5), ``min_ap_interval`` and ``mean_ap_interval`` (of the
    minimum and the mean over intensities of the resampled curve), and ``confidence``.
    """
    rows = blind_spot_table(intensities, sigmas, ap, at_sigmas=at_sigmas)
    n, level, seed = bootstrap_settings(parameters)
    if ap_per_image is None or not n:
        return rows
    check_resample_memory(len(ap_per_image), n, CURVE_VALUES * ap_per_image.shape[1], unit="image")
    weights = multiplicities(resample_indices(len(ap_per_image), n, seed), len(ap_per_image))
    for row in rows:
        s = int(np.flatnonzero(sigmas == row["sigma"])[0])
        row.update(curve_uncertainty(intensities, resampled_means(ap_per_image[:, :, s], weights), level), confidence=level)
    return rows


def interval_text(value: float, low: np.ndarray | float | None, high=None, digits: int = 3) -> str:
    """``0.812 [0.779, 0.840]``, or the value alone without an interval."""
    if low is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{float(low):.{digits}f}, {float(high):.{digits}f}]"


def audit_intervals(result: dict, parameters: dict) -> dict[str, np.ndarray]:
    """Intervals over images for an audit's intensity profiles (:func:`blindspot.experiments.audit.audit`).

    For each computed mode (``normal``, and ``anomalous`` when the model reconstructs anomalous
    images), from ``ap_per_image_{mode}`` (N, F, I): ``ap_low_{mode}`` / ``ap_high_{mode}`` (F, I),
    the interval of each mean AP; ``mean_ap_interval_{mode}``, ``min_ap_interval_{mode}`` and
    ``blind_fraction_interval_{mode}`` (F, 2), of each score's mean AP, minimum AP and share of the
    intensity grid with AP < 0.5 over the resampled profiles. {} with 0 resamples.
    """
    n, level, seed = bootstrap_settings(parameters)
    if not n:
        return {}
    modes = ["normal", "anomalous"] if bool(result.get("has_anomalous", False)) else ["normal"]
    out = {}
    for mode in modes:
        per_image = np.asarray(result[f"ap_per_image_{mode}"], np.float64)  # (N, F, I)
        check_resample_memory(len(per_image), n, CURVE_VALUES * per_image[0].size, unit="image")
        weights = multiplicities(resample_indices(len(per_image), n, seed), len(per_image))
        curves = resampled_means(per_image, weights)  # (B, F, I)
        out[f"ap_low_{mode}"], out[f"ap_high_{mode}"] = percentile_interval(curves, level)
        for name, values in (("mean_ap", curves.mean(axis=2)), ("min_ap", curves.min(axis=2)),
                             ("blind_fraction", (curves < BLIND_AP).mean(axis=2))):
            out[f"{name}_interval_{mode}"] = np.stack(percentile_interval(values, level), axis=1)
    out["bootstrap"] = np.array([n, level, seed], np.float64)
    return out

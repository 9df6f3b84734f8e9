"""The one HTML report writer: a single self-contained page per result, readable offline.

Figures come from :mod:`blindspot.report` and are embedded as base64 PNG (``data:`` URIs); the
style sheet is inline; the page has no script and loads nothing from the network. The audit's page
(:func:`audit_html`) puts the verdict first (blind band, matched blur σ, the scoring function that
closes the band best, with numbers), then the profiles, a table per scoring function, the worst
cases as overlays, the histogram, and the full provenance.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from blindspot.experiments.pitfalls import MATCH_KEYS, match_distance_text, match_rule, value_bands
from blindspot.report import (
    plot_audit_case,
    plot_audit_profiles,
    plot_blind_bands,
    plot_size_curves,
    plot_texture_ap,
)
from blindspot.results import jsonable, write_text
from blindspot.scoring import score_description

__all__ = ["audit_html", "audit_verdict", "figure_html", "ranking_rows", "write_audit_html"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em;
       color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
.verdict { background: #f4f7fb; border-left: 5px solid #2f6fb0; padding: .6em 1.2em; }
.verdict li { margin: .4em 0; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .88em; color: #555; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; }
.note { color: #7a4d00; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .85em; }
"""


def figure_html(fig: Figure, alt: str, caption: str = "") -> str:
    """A ``<figure>`` with ``fig`` embedded as a base64 PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    text = f"<figcaption>{_inline(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">{text}</figure>'


def _inline(text: str) -> str:
    """Escape ``text`` and turn its `code` spans into ``<code>``."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _bold(text: str) -> str:
    """Markdown ``**bold**`` spans as ``<b>``."""
    return re.sub(r"[*][*](.+?)[*][*]", r"<b>\1</b>", text)


def _table(header: list[str] | None, rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_inline(str(h))}</th>" for h in header or [])
    cell = lambda k, c: f"<td class=num>{_inline(str(c))}</td>" if k in numeric else f"<td>{_inline(str(c))}</td>"
    body = "".join("<tr>" + "".join(cell(k, c) for k, c in enumerate(row)) + "</tr>" for row in rows)
    head = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{head}<tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------------------------
# the audit's words (shared by report.html and summary.md)


def _band_text(intensities: np.ndarray, curve: np.ndarray) -> str:
    bands = value_bands(intensities, curve < 0.5)
    return ", ".join(f"{a:.2f}–{b:.2f}" if a != b else f"{a:.2f}" for a, b in bands) or "none"


def _modes(result: dict) -> list[str]:
    return ["normal", "anomalous"] if bool(result["has_anomalous"]) else ["normal"]


def audit_verdict(result: dict) -> list[str]:
    """The verdict in three or four sentences (markdown code spans): blind band, matched σ, best score, error."""
    names = [str(n) for n in result["scores"]]
    mode = str(result["ranking_mode"])
    ref = names.index(str(result["reference_score"]))
    intensities = result["intensities"]
    curve = result[f"ap_{mode}"][ref]
    realistic = "reconstructing the anomalous image" if mode == "anomalous" else "reconstructing the normal image"
    fraction, mass = result[f"blind_fraction_{mode}"][ref], result[f"blind_mass_{mode}"][ref]
    low, at = result[f"min_ap_{mode}"][ref], result[f"min_at_{mode}"][ref]
    if fraction > 0:
        band = (f"**Blind band** of `{names[ref]}` ({realistic}): intensities {_band_text(intensities, curve)} have AP < 0.5 "
                f"({fraction:.0%} of the intensity grid, where {mass:.0%} of the healthy foreground pixels lie); the lowest "
                f"AP is {low:.3f}, at intensity {at:.2f}.")
    else:
        band = f"**No blind band** for `{names[ref]}` ({realistic}): AP ≥ 0.5 at every intensity (lowest {low:.3f}, at {at:.2f})."
    sentences = [band]
    parts = []
    for m in _modes(result):
        suffix = "" if m == "normal" else "_anomalous"
        sigma = float(result[f"matched_sigma{suffix}"])
        if not np.isfinite(sigma):
            continue
        close = match_distance_text(*(float(result.get(f"matched_{k}{suffix}", np.nan)) for k in MATCH_KEYS[:4]))
        if bool(result[f"matched{suffix}"]):
            parts.append(f"reconstructing the {m} image, like a Gaussian blur of σ = {sigma:.2f} px (mean |ΔAP| {close})")
        elif int(result[f"matched_sigma_index{suffix}"]) == len(result["sigmas"]) - 1:
            parts.append(f"reconstructing the {m} image, like no blur of the grid: the closest is its largest σ, {sigma:.2f} "
                         f"(mean |ΔAP| {close}), so the model may blur more (a larger `sigma_max` extends the grid)")
        else:
            parts.append(f"reconstructing the {m} image, like no blur of the grid (the closest, σ = {sigma:.2f}, differs by "
                         f"a mean |ΔAP| of {close}; {match_rule()})")
    if parts:
        sentences.append(f"**Matched blur**: the `{names[ref]}` profile behaves, " + "; ".join(parts) + ".")
    else:
        sentences.append("**Matched blur**: not computed (the blur grid is matched to the `l1` residual; audit `l1` too).")
    best = int(result["ranking"][0])
    b = {k: result[f"{k}_{mode}"] for k in ("blind_fraction", "min_ap", "mean_ap")}
    if best == ref or len(names) == 1:
        sentences.append(f"**Best scoring function**: `{names[best]}` itself; no other score narrows its band "
                         f"(blind for {b['blind_fraction'][best]:.0%} of intensities, minimum AP {b['min_ap'][best]:.3f}, "
                         f"mean AP {b['mean_ap'][best]:.3f}).")
    else:
        sentences.append(
            f"**Best scoring function**: `{names[best]}` closes the band best: blind for {b['blind_fraction'][best]:.0%} "
            f"of intensities (`{names[ref]}`: {b['blind_fraction'][ref]:.0%}), minimum AP {b['min_ap'][best]:.3f} "
            f"({b['min_ap'][ref]:.3f}), mean AP {b['mean_ap'][best]:.3f} ({b['mean_ap'][ref]:.3f})."
            + (" It does not use the model." if names[best] in ("image", "zscore") else ""))
    sentences.append(f"Mean L1 reconstruction error of the normal images: {float(result['recon_error']):.5f}.")
    return sentences


def ranking_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """The ranking table (realistic mode): rank, score, mean AP, min AP (at), blind band, width, tissue share."""
    names = [str(n) for n in result["scores"]]
    mode = str(result["ranking_mode"])
    rows = []
    for rank, f in enumerate(result["ranking"], start=1):
        rows.append([str(rank), f"`{names[f]}`", f"{result[f'mean_ap_{mode}'][f]:.3f}",
                     f"{result[f'min_ap_{mode}'][f]:.3f} at {result[f'min_at_{mode}'][f]:.2f}",
                     _band_text(result["intensities"], result[f"ap_{mode}"][f]),
                     f"{result[f'blind_fraction_{mode}'][f]:.0%}", f"{result[f'blind_mass_{mode}'][f]:.0%}"])
        if f"ap_low_{mode}" in result:  # intervals over images (blindspot.experiments.uncertainty.audit_intervals)
            rows[-1] = _with_intervals(rows[-1], result, mode, f)
    header = ["rank", "score", "mean AP", "min AP (at intensity)", "blind band (AP < 0.5)", "band width",
              "healthy pixels in band"]
    return header, rows


def _with_intervals(row: list[str], result: dict, mode: str, f: int) -> list[str]:
    """A ranking row with the interval over images of its mean AP, min AP and band width, and its band's uncertainty."""
    def interval(name: str, percent: bool = False) -> str:
        low, high = result[f"{name}_interval_{mode}"][f]
        return f" [{low:.0%}, {high:.0%}]" if percent else f" [{low:.3f}, {high:.3f}]"

    intensities = result["intensities"]
    low, high = result[f"ap_low_{mode}"][f], result[f"ap_high_{mode}"][f]
    below = _band_text(intensities, np.where(high < 0.5, 0.0, 1.0))
    straddles = _band_text(intensities, np.where((low < 0.5) & (high >= 0.5), 0.0, 1.0))
    level = f"{100 * float(result['bootstrap'][1]):g} %"
    minimum, at = row[3].split(" at ")
    return [row[0], row[1], row[2] + interval("mean_ap"), f"{minimum}{interval('min_ap')} at {at}",
            f"{row[4]} ({level} interval below 0.5: {below}; straddling 0.5: {straddles})",
            row[5] + interval("blind_fraction", percent=True), row[6]]


def _score_table(result: dict, f: int) -> str:
    modes = _modes(result)
    rows = []
    for m in modes:
        rows.append([f"intensity profile, {m} mode", f"{result[f'mean_ap_{m}'][f]:.3f}",
                     f"{result[f'min_ap_{m}'][f]:.3f} at {result[f'min_at_{m}'][f]:.2f}",
                     _band_text(result["intensities"], result[f"ap_{m}"][f]), f"{result[f'blind_fraction_{m}'][f]:.0%}",
                     f"{result[f'blind_mass_{m}'][f]:.0%}"])
    table = _table(["", "mean AP", "min AP (at)", "blind band", "width", "healthy pixels in band"], rows, {1})
    extra = []
    if bool(result["has_anomalous"]):
        extra.append(_table(["texture", *[str(t) for t in result["textures"]]],
                            [["AP (anomalous mode)", *[f"{v:.3f}" for v in result["ap_texture"][f]]]], set(range(1, 9))))
    radii = [f"r = {r:g}" for r in result["radii"]]
    size_rows = []
    for m in modes:
        for j, what in enumerate(("blindest", "most visible")):
            size_rows.append([f"{m} mode, {what} intensity {result['size_intensities'][j]:.2f}",
                              *[f"{v:.3f}" for v in result[f"ap_size_{m}"][f, j]]])
    extra.append(_table(["anomaly radius (px)", *radii], size_rows, set(range(1, len(radii) + 1))))
    return table + "".join(extra)


def _provenance(config: dict) -> str:
    model, p = config["model"], config["parameters"]
    rows = [["model", f"`{model.get('spec')}` ({model.get('kind')})"]]
    for key, label in (("sha256", "model file SHA-256"), ("weights", "weights"), ("weights_sha256", "weights SHA-256"),
                       ("source", "factory source"), ("source_sha256", "factory source SHA-256"), ("class", "network class"),
                       ("model", "architecture"), ("providers", "onnxruntime providers"), ("onnxruntime", "onnxruntime")):
        if model.get(key) not in (None, "", []):
            rows.append([label, f"`{json.dumps(jsonable(model[key]))}`" if isinstance(model[key], (dict, list)) else f"`{model[key]}`"])
    rows.append(["input range", f"{model.get('input_range')}"])
    data = config["data"]
    rows += [["data", f"`{data.get('data')}` (layout {data.get('layout')}, {data.get('split')} split, {len(config['images'])} "
                      f"normal images)"],
             ["preparation", f"`{json.dumps(config['preparation'])}`" + (" (the checkpoint's)" if model.get("preparation") else "")],
             ["seed", str(config["seed"])], ["centres", str(config["centers"])],
             ["disk radius", f"{p['radius']:g} px native, {p['radius_used']:g} px prepared"],
             ["grid", f"{p['n_intensities']} intensities, {p['n_sigmas']} σ in [0, {p['sigma_max']:g}]"],
             ["healthy statistics", f"{config['statistics'].get('source')}; `{json.dumps(jsonable({k: v for k, v in config['statistics'].items() if k != 'source'}))}`"],
             ["model calls", f"{config['model_calls']} ({config['model_images']} images)"],
             ["time per part (s)", ", ".join(f"{k}: {v:.2f}" for k, v in config["timings"].items())],
             ["versions", ", ".join(f"{k} {v}" for k, v in config["versions"].items())],
             ["image fingerprint", f"`{config['fingerprint']}`"]]
    hashes = config.get("input_hashes", {})
    table = _table(None, rows)
    if hashes:
        table += "<details><summary>Input files and their SHA-256</summary>" + _table(
            ["file", "SHA-256"], [[f"`{k}`", f"`{v}`"] for k, v in hashes.items()]) + "</details>"
    return table


def audit_html(result: dict, config: dict) -> str:
    """The audit's report page (module docstring): a complete HTML document as a string."""
    names = [str(n) for n in result["scores"]]
    mode = str(result["ranking_mode"])
    best = names[int(result["ranking"][0])]
    spec = str(config["model"].get("spec"))
    parts = [f"<h1>Where <code>{html.escape(spec)}</code> is blind</h1>",
             f"<p>{len(config['images'])} normal images of <code>{html.escape(str(config['data'].get('data')))}</code>, "
             f"a disk anomaly of radius {config['parameters']['radius_used']:g} px at {len(result['intensities'])} intensities, "
             f"scored with average precision over all pixels of each image (mean over images) by {len(names)} scoring "
             "functions.</p>"]
    if config.get("note"):
        parts.append(f'<p class="note">{_inline(config["note"])}</p>')
    parts += [f'<p class="note"><strong>Note:</strong> {_inline(text)}</p>' for text in config.get("notes", [])]
    verdict = "".join(f"<li>{_bold(_inline(s))}</li>" for s in audit_verdict(result))
    header, rows = ranking_rows(result)
    parts.append(f'<section class="verdict"><h2>Verdict</h2><ul>{verdict}</ul>'
                 f"<p>Scoring functions ranked by the width of their blind band, then the minimum and the mean AP "
                 f"({mode} mode):</p>{_table(header, rows, {2})}</section>")
    parts.append("<section><h2>Intensity profiles</h2>" + figure_html(
        plot_audit_profiles(result), "AP over anomaly intensity per scoring function",
        "AP over the anomaly intensity, one line per scoring function (the reference score thicker), with the matched "
        "Gaussian blur of experiment 1 dashed and the healthy histogram in grey. Left: the model reconstructs the normal "
        "image; right: the anomalous image (what a deployed model sees).") + "</section>")
    if bool(result["has_anomalous"]):
        parts.append("<section><h2>Texture anomalies</h2>" + figure_html(
            plot_texture_ap(result), "AP of texture anomalies per scoring function",
            "Pixel shuffle, sink and source deformation (MIDL 2022 experiment 2), the model reconstructing the anomalous "
            "image.") + "</section>")
    parts.append("<section><h2>Anomaly size</h2>" + figure_html(
        plot_size_curves(result), "AP over anomaly radius",
        f"AP over the disk radius at the blindest and at the most visible intensity of `{result['reference_score']}` "
        f"({mode} mode).") + "</section>")
    tables = "".join(f"<h3><code>{html.escape(n)}</code></h3><p>{_inline(score_description(n))}.</p>{_score_table(result, f)}"
                     for f, n in enumerate(names))
    parts.append(f"<section><h2>Each scoring function</h2>{tables}</section>")
    if len(result["worst_index"]):
        shown = [str(result["reference_score"]), best]
        cases = "".join(figure_html(plot_audit_case(result, w, scores=shown), f"worst case {w + 1}")
                        for w in range(len(result["worst_index"])))
        parts.append(f"<section><h2>Worst cases</h2><p>The images where <code>{html.escape(shown[0])}</code> has the lowest "
                     f"AP at the blindest intensity ({float(result['worst_intensity']):.2f}), with the map of the best "
                     f"scoring function, <code>{html.escape(best)}</code>.</p>{cases}</section>")
    parts.append("<section><h2>Healthy intensity histogram and the blind band</h2>" + figure_html(
        plot_blind_bands(result), "blind band per scoring function against the foreground histogram",
        "Top: the foreground intensities of the audited images (and the p̂ of the rarity score, fitted to healthy "
        "images). Bottom: the intensities where each scoring function has AP < 0.5.") + "</section>")
    parts.append(f"<section><h2>Provenance</h2>{_provenance(config)}</section>")
    title = html.escape(f"blindspot audit: {spec}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>'
            f"<body>{''.join(parts)}</body></html>\n")


def write_audit_html(path: str | Path, result: dict, config: dict) -> None:
    """Write :func:`audit_html` to ``path`` (atomically)."""
    write_text(path, audit_html(result, config))

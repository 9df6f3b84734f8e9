"""``blindspot compare``: paired differences, with intervals, between evaluations of the same cases.

Two or more evaluation folders (``blindspot evaluate``) of the same test cases, e.g. two models, a
model and a baseline, or two protocols on the same maps, are resampled *together*: each resample
draws the same cases (volumes with ``pooling="volume"``) for every evaluation, so the difference of
a metric between two evaluations is computed on the same cases in every resample (a paired
bootstrap). Per metric and pair, the difference of the point estimates and its percentile interval
are reported; a pair whose interval contains 0 is *indistinguishable* on these cases.

Each folder's ``bootstrap.npz`` holds what is resampled (:class:`~blindspot.evaluation.intervals.CaseData`);
its ``metrics.json`` the point estimates, which are not recomputed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from blindspot.errors import BlindspotError
from blindspot.evaluation.intervals import CaseData, load_case_data, resampled_metrics
from blindspot.metrics.bootstrap import (
    CONFIDENCE,
    N_RESAMPLES,
    check_bootstrap,
    multiplicities,
    percentile_interval,
    resample_indices,
)
from blindspot.report import markdown_table, plot_differences, save_figure
from blindspot.results import check_output, csv_text, input_hashes, load_json, provenance, result_folder, write_json, write_text
from blindspot.wording import count

__all__ = ["METRIC_LABELS", "compare_evaluations", "paired_differences"]

#: Row labels of the compared metrics, ``section.name`` as in ``metrics.json``.
METRIC_LABELS = {
    "image.auroc": "image AUROC", "image.ap": "image AP", "pixel.ap": "pixel AP", "pixel.auroc": "pixel AUROC",
    "pixel.best_dice": "best Dice", "pixel.best_dice_exact": "best Dice (exact)", "at_threshold.dice": "Dice at the threshold",
    "at_threshold.precision": "precision at the threshold", "at_threshold.recall": "recall at the threshold",
}


def _load(folder: Path) -> tuple[dict, dict, CaseData]:
    config = load_json(folder / "config.json")
    if config.get("command") != "evaluate":
        raise BlindspotError(f"'{folder}' is not an evaluation folder (written by blindspot evaluate).")
    return load_json(folder / "metrics.json"), config, load_case_data(folder / "bootstrap.npz")


def _prepared_size(config: dict) -> int | None:
    """The image size an evaluation prepared its images at (None: their native size or no data)."""
    return ((config.get("source") or {}).get("data") or {}).get("preparation", {}).get("size")


def _size_fix(config_a: dict, config_b: dict, a: str, b: str) -> str | None:
    """How to make two evaluations of images prepared at different sizes comparable: which one to rerun, with what."""
    size_a, size_b = _prepared_size(config_a), _prepared_size(config_b)
    if size_a == size_b:
        return None
    at = {name: f"`size` {size}" if size else "their native size" for name, size in ((a, size_a), (b, size_b))}
    rerun, size = (b, size_a) if size_a else (a, size_b)
    return f"'{a}' prepared its images at {at[a]}, '{b}' at {at[b]}; rerun '{rerun}' with `size` {size}"


def _same_cases(reference: CaseData, other: CaseData, a: str, b: str, size_fix: str | None = None) -> np.ndarray:
    """The position in ``other`` of each case of ``reference``; refuses evaluations of other cases in one sentence.

    ``size_fix`` (:func:`_size_fix`) replaces the generic advice when the cases differ in size.
    """
    position = {name: k for k, name in enumerate(other.names)}

    def refuse(detail: str, fix: str | None = None) -> BlindspotError:
        return BlindspotError(f"'{a}' and '{b}' are not evaluations of the same cases ({detail}); "
                              f"{fix or 'compare evaluations of the same test cases'}.")

    if len(position) != len(other.names) or len(set(reference.names)) != len(reference.names):
        raise refuse("a case name occurs twice")
    only_a = [n for n in reference.names if n not in position]
    only_b = sorted(set(other.names) - set(reference.names))
    if only_a or only_b:
        name, where = (only_a[0], a) if only_a else (only_b[0], b)
        raise refuse(f"{len(reference.names)} and {count(len(other.names), 'case')}; '{name}' is only in '{where}'")
    order = np.array([position[n] for n in reference.names], np.int64)
    for what, mine, theirs, fix in (("labelled anomalous", reference.anomalous, other.anomalous[order], None),
                                    ("of a different size", reference.n_pixels, other.n_pixels[order], size_fix)):
        differ = np.flatnonzero(mine != theirs)
        if len(differ):
            raise refuse(f"case '{reference.names[differ[0]]}' is {what} in one of them", fix)
    return order


def _group_map(reference: CaseData, other: CaseData, order: np.ndarray, a: str, b: str) -> np.ndarray:
    """For each resampled unit of ``other``, the reference's unit: both must resample the same groups of cases."""
    pairs = set(zip(reference.group.tolist(), other.group[order].tolist()))
    if len(pairs) != reference.n_groups or len(pairs) != other.n_groups:
        raise BlindspotError(f"'{a}' resamples {reference.resampled} and '{b}' {other.resampled}: their bootstrap units "
                             "differ; compare evaluations made with the same `pooling` unit (volume or not).")
    mapping = np.empty(other.n_groups, np.int64)
    for ref_group, other_group in pairs:
        mapping[other_group] = ref_group
    return mapping


def paired_differences(points: list[dict[str, float]], distributions: list[dict[str, np.ndarray]], labels: Sequence[str],
                       confidence: float) -> list[dict]:
    """Every pair (A listed before B) and metric both have: B − A, its percentile interval and a verdict."""
    rows = []
    for metric in METRIC_LABELS:
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                a, b = points[i].get(metric), points[j].get(metric)
                if a is None or b is None or math.isnan(a) or math.isnan(b) or metric not in distributions[i] \
                        or metric not in distributions[j]:
                    continue
                low, high = percentile_interval(distributions[j][metric] - distributions[i][metric], confidence)
                verdict = ("indistinguishable" if math.isnan(low) or low <= 0 <= high
                           else f"{labels[j]} higher" if low > 0 else f"{labels[i]} higher")
                rows.append({"metric": metric, "a": labels[i], "b": labels[j], "difference": b - a, "low": low, "high": high,
                             "verdict": verdict})
    return rows


def _points(record: dict) -> dict[str, float]:
    metrics = record["metrics"]
    out = {}
    for key in METRIC_LABELS:
        section, name = key.split(".")
        value = metrics.get(section, {}).get(name)
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif value is None and name in metrics.get(section, {}):
            out[key] = float("nan")
    return out


def _fmt(value: float, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def compare_evaluations(evaluations: Sequence[str | Path], out: str | Path, *, n_resamples: int = N_RESAMPLES,
                        confidence: float = CONFIDENCE, seed: int = 0, overwrite: bool = False) -> Path:
    """Paired bootstrap differences between evaluations of the same cases, written to the result folder ``out``.

    Parameters
    ----------
    evaluations : paths
        At least two ``blindspot evaluate`` folders (each with its ``bootstrap.npz``) of the same
        test cases: same case names, image labels and sizes, and the same resampled unit.
    n_resamples, confidence, seed
        The shared resamples (``numpy.random.default_rng(seed)``) and the interval level.

    Writes ``comparison.json`` (every value, interval and difference), ``differences.csv``,
    ``summary.md``, ``differences.png`` and ``config.json``.
    """
    check_bootstrap(n_resamples, confidence)
    if n_resamples < 1:
        raise BlindspotError("`bootstrap` must be at least 1 for a comparison.")
    folders = [Path(f) for f in evaluations]
    check_output(out, inputs=folders, overwrite=overwrite, fingerprint="compare")
    if len(folders) < 2:
        raise BlindspotError(f"compare needs at least two evaluation folders; got {len(folders)}.")
    loaded = [_load(f) for f in folders]
    names = [f.name for f in folders]
    labels = names if len(set(names)) == len(names) else [str(f) for f in folders]
    reference = loaded[0][2]
    indices = resample_indices(reference.n_groups, n_resamples, seed)
    weights = multiplicities(indices, reference.n_groups)
    points, distributions = [], []
    for (record, config, data), folder in zip(loaded, folders):
        fix = _size_fix(loaded[0][1], config, str(folders[0]), str(folder))
        order = _same_cases(reference, data, str(folders[0]), str(folder), fix)
        mapping = _group_map(reference, data, order, str(folders[0]), str(folder))
        resampled = resampled_metrics(data, weights[:, mapping])
        distributions.append({f"{s}.{k}": v for s, values in resampled.items() for k, v in values.items()})
        points.append(_points(record))
    differences = paired_differences(points, distributions, labels, confidence)
    values = {key: [{"evaluation": label, "value": p.get(key), "interval": list(percentile_interval(d[key], confidence))
                     if key in d else None} for label, p, d in zip(labels, points, distributions)]
              for key in METRIC_LABELS if any(key in p for p in points)}
    bootstrap = {"method": "percentile", "paired": True, "n_resamples": n_resamples, "confidence": confidence, "seed": seed,
                 "resampled": reference.resampled, "n_resampled": reference.n_groups}
    poolings = sorted({data.pooling for _, _, data in loaded})
    files = [p for f in folders for p in (f / "metrics.json", f / "bootstrap.npz")]
    with result_folder(out, overwrite=overwrite, inputs=folders, fingerprint="compare") as folder:
        write_json(folder / "config.json", {"command": "compare", "evaluations": [str(f) for f in folders], "labels": labels,
                                            "bootstrap": bootstrap, "input_hashes": input_hashes(files),
                                            "versions": provenance()})
        write_json(folder / "comparison.json", {"evaluations": labels, "cases": len(reference.names), "bootstrap": bootstrap,
                                                "values": values, "differences": differences})
        write_text(folder / "differences.csv", csv_text(differences))
        write_text(folder / "summary.md", _summary(labels, loaded, folders, values, differences, bootstrap, poolings))
        save_figure(plot_differences([dict(row, label=METRIC_LABELS[row["metric"]]) for row in differences], confidence),
                    folder / "differences.png")
    return Path(out)


def _summary(labels, loaded, folders, values, differences, bootstrap, poolings) -> str:
    level = f"{100 * bootstrap['confidence']:g} %"
    lines = ["# Paired comparison of evaluations", "",
             f"{len(labels)} evaluations of the same {count(len(loaded[0][2].names), 'test case')}; {level} percentile "
             f"intervals from {count(bootstrap['n_resamples'], 'resample')} of the "
             f"{count(bootstrap['n_resampled'], bootstrap['resampled'].rstrip('s'))} (seed "
             f"{bootstrap['seed']}), the same resamples for every evaluation, so each difference is paired.", ""]
    lines += [markdown_table(["evaluation", "folder", "preset", "pooling", "threshold"],
                             [[label, f"`{folder}`", f"`{record.get('preset') or 'none'}`", record["protocol"]["pooling"],
                               record["protocol"]["threshold"]] for label, folder, (record, _, _) in zip(labels, folders, loaded)]), ""]
    if len(poolings) > 1:
        lines += [f"The evaluations pool pixels differently ({', '.join(poolings)}): their pixel metrics are different "
                  "quantities, compared here on the same cases all the same.", ""]
    header = ["metric", *labels]
    rows = []
    for key, entries in values.items():
        cells = []
        for entry in entries:
            value, interval = entry["value"], entry["interval"]
            cell = _fmt(value)
            if interval is not None and cell != "n/a":
                cell += f" [{_fmt(interval[0])}, {_fmt(interval[1])}]"
            cells.append(cell)
        rows.append([METRIC_LABELS[key], *cells])
    lines += ["## Values", "", markdown_table(header, rows), ""]
    lines += ["## Paired differences (B − A)", "",
              markdown_table(["metric", "A", "B", "B − A", f"{level} interval", "verdict"],
                             [[METRIC_LABELS[r["metric"]], r["a"], r["b"], f"{r['difference']:+.4f}",
                               f"[{_fmt(r['low'])}, {_fmt(r['high'])}]", r["verdict"]] for r in differences]), ""]
    same = [r for r in differences if r["verdict"] == "indistinguishable"]
    lines += [f"{len(differences) - len(same)} of {len(differences)} differences have an interval that excludes 0; the "
              f"others are indistinguishable on these cases." if differences else "No metric is defined for two evaluations.", "",
              "![paired differences](differences.png)", ""]
    return "\n".join(lines)

"""``blindspot evaluate``: build the cases from a source, evaluate them, write the result folder."""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from blindspot.data.io import stem
from blindspot.evaluation.options import EvaluationOptions
from blindspot.execution import Execution, execution_record, open_pool
from blindspot.evaluation.protocol import Evaluation, evaluate
from blindspot.evaluation.sources import MapsFolder, OnData
from blindspot.metrics.tables import count_table, pr_curve, roc_curve
from blindspot.report import markdown_table, plot_eval_curves, plot_overlay, save_figure
from blindspot.results import (check_output, csv_text, input_hashes, output_lock, provenance, result_folder, save_npz,
                               write_json, write_text)
from blindspot.wording import count

__all__ = ["image_curves", "overlay_files", "overlay_name", "run_evaluation", "summary_markdown", "write_evaluation"]


def image_curves(evaluation: Evaluation) -> dict | None:
    """PR and ROC points of the image scores (None when one class is missing)."""
    labels = np.array([r["anomalous"] for r in evaluation.per_case], bool)
    if labels.all() or not labels.any():
        return None
    table = count_table(labels, np.array([r["image_score"] for r in evaluation.per_case]))
    recall, precision, _ = pr_curve(table)
    fpr, tpr = roc_curve(table)
    return {"recall": recall, "precision": precision, "fpr": fpr, "tpr": tpr, "prevalence": labels.mean()}


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _with_interval(section: dict, name: str, point=None) -> str:
    """A metric and, when there is one, its bootstrap interval: ``0.8123 [0.7712, 0.8501]``."""
    value = section.get(name) if point is None else point
    interval = section.get("intervals", {}).get(name)
    if interval is None or _fmt(value) == "n/a":
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(interval[0])}, {_fmt(interval[1])}]"


def _bootstrap_sentence(bootstrap: dict) -> str:
    tables = f"; pooled pixel metrics of each resample from the drawn cases' {bootstrap['pixel_tables']} count tables" \
        if bootstrap.get("pixel_tables") else ""
    undefined = bootstrap.get("undefined_resamples") or {}
    left_out = (" Resamples where a metric is undefined (e.g. one class only) are left out: "
                + ", ".join(f"{k} {v}" for k, v in undefined.items()) + ".") if undefined else ""
    return (f"In brackets: {100 * bootstrap['confidence']:g} % percentile bootstrap intervals over the "
            f"{count(bootstrap['n_resampled'], 'test ' + bootstrap['resampled'].rstrip('s'))} "
            f"({count(bootstrap['n_resamples'], 'resample')} with replacement, "
            f"seed {bootstrap['seed']}{tables}; the threshold is held fixed for the metrics at the threshold).{left_out}")


def summary_markdown(evaluation: Evaluation, config: dict) -> str:
    """The human-readable summary: protocol, metrics, threshold, notes."""
    m = evaluation.metrics
    lines = [f"# Evaluation of {config['source'].get('description', 'anomaly maps')}", ""]
    lines += [f"{count(m['n_cases'], 'case')}; preset `{config.get('preset') or 'none'}`; "
              f"blindspot {config['versions']['blindspot']}.", ""]
    if "test_set" in config["source"]:
        test_set = config["source"]["test_set"]
        lines += [f"The data have no labels: the test set is the synthetic one (each image, then a copy with one "
                  f"{'/'.join(test_set['kinds'])} anomaly of radius {test_set['radius_range'][0]:.3g}–"
                  f"{test_set['radius_range'][1]:.3g} px, seed {test_set['seed']}).", ""]
    lines += ["## Protocol", "", markdown_table(["option", "value"], [[k, f"`{v}`"] for k, v in asdict(evaluation.options).items()]), ""]
    image = m["image"]
    lines += ["## Image level", "", markdown_table(
        ["score", "normal", "anomalous", "AUROC", "AP"],
        [[image["score"], image["n_normal"], image["n_anomalous"], _with_interval(image, "auroc"), _with_interval(image, "ap")]]), ""]
    if "pixel" in m:
        pixel, threshold, at = m["pixel"], m["threshold"], m["at_threshold"]
        unit = ("pooled pixels" if pixel["pooling"] == "pooled"
                else f"mean over {pixel['n_units_with_positive']} {pixel['pooling']} units with anomalous pixels")
        rule = "the benchmark's 200-threshold rule" if pixel.get("best_dice_rule") == "benchmark" else "exact"
        rows = [["AP", _with_interval(pixel, "ap")], ["AUROC", _with_interval(pixel, "auroc")],
                [f"best Dice ({rule}; on the test labels: an upper bound)", _with_interval(pixel, "best_dice")]]
        if "best_dice_exact" in pixel:
            rows.append(["best Dice (exact maximum)", _with_interval(pixel, "best_dice_exact")])
        if "bounds" in pixel:
            rows += [[f"exact {k} lies in", f"[{_fmt(lo)}, {_fmt(hi)}]"] for k, (lo, hi) in pixel["bounds"].items()]
        lines += [f"## Pixel level ({unit}; {pixel['accumulator']} counts)", "", markdown_table(["metric", "value"], rows), ""]
        lines += ["## At the threshold", "",
                  f"Threshold `{_fmt(threshold['value'])}` chosen by `{threshold['method']}` ({threshold['source']})"
                  + (f", components < {at['min_component_size']} pixels removed" if at["min_component_size"] > 1 else "") + ".", "",
                  markdown_table(["Dice", "precision", "recall"], [[_with_interval(at, k) for k in ("dice", "precision", "recall")]]), ""]
    if "bootstrap" in m:
        lines += [_bootstrap_sentence(m["bootstrap"]) + (
            " The benchmark rule's best Dice has no interval (its threshold grid depends on the rank of every pixel, which "
            "the resampled tables do not keep); the exact best Dice has one." if "best_dice_exact" in m.get("pixel", {}) else ""), ""]
    if evaluation.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in evaluation.notes] + [""]
    lines += ["Per-case values: `per_case.csv`" + ("; what the bootstrap resamples (for `blindspot compare`): `bootstrap.npz`"
              if evaluation.cases is not None else "") + "; all numbers and the protocol: `metrics.json`; config: `config.json`.", ""]
    return "\n".join(lines)


def write_evaluation(folder: Path, evaluation: Evaluation, config: dict) -> None:
    """Write every result file of an evaluation into ``folder`` (see ``docs/evaluation.md``)."""
    folder = Path(folder)
    record = {"protocol": asdict(evaluation.options), "preset": config.get("preset"), "metrics": evaluation.metrics,
              "notes": evaluation.notes, "seed": evaluation.options.seed, "versions": config["versions"]}
    write_json(folder / "metrics.json", record)
    write_json(folder / "config.json", config)
    write_text(folder / "per_case.csv", csv_text(evaluation.per_case))
    if evaluation.per_unit:
        write_text(folder / f"per_{evaluation.options.pooling}.csv", csv_text(evaluation.per_unit))
    arrays = {f"pixel_{k}": v for k, v in evaluation.curves.items()}
    arrays["image_scores"] = np.array([r["image_score"] for r in evaluation.per_case])
    arrays["image_labels"] = np.array([r["anomalous"] for r in evaluation.per_case], bool)
    save_npz(folder / "curves.npz", **arrays)
    if evaluation.cases is not None:
        evaluation.cases.save(folder / "bootstrap.npz")
    write_text(folder / "summary.md", summary_markdown(evaluation, config))
    images = image_curves(evaluation)
    if evaluation.curves or images:
        sets = [("pixels (pooled)", evaluation.curves, evaluation.metrics.get("pixel", {})),
                ("images", images, evaluation.metrics["image"])]
        save_figure(plot_eval_curves(sets, "pr"), folder / "pr_curve.png")
        save_figure(plot_eval_curves(sets, "roc"), folder / "roc_curve.png")
    if evaluation.overlays:
        (folder / "overlays").mkdir(exist_ok=True)
        threshold = evaluation.metrics["threshold"]["value"]
        for name, item in overlay_files(evaluation.overlays):
            save_figure(plot_overlay(item, threshold), folder / "overlays" / name)


def overlay_name(case: str) -> str:
    """A file-name stem for a case: its name without the extension, a slice as ``_sliceK``.

    >>> overlay_name("case_000.nii.gz[slice=16]"), overlay_name("c 1.npy")
    ('case_000_slice16', 'c_1')
    """
    found = re.fullmatch(r"(.*)\[slice=(\d+)\]", case)
    base, index = found.groups() if found else (case, None)
    clean = re.sub(r"[^\w.-]+", "_", stem(base)).strip("_") or "case"
    return clean + (f"_slice{index}" if index is not None else "")


def overlay_files(overlays: list[dict]) -> list[tuple[str, dict]]:
    """``(file name, overlay)`` with each case once: best and worst taken in turn, a case already shown skipped.

    With few cases the best and the worst lists share cases (and ``--overlays`` above the number of
    cases would list each case twice); a case shown among the best is not shown again among the worst.
    """
    queues = {kind: [o for o in overlays if o["kind"] == kind] for kind in ("best", "worst")}
    shown, files, counts = set(), [], {"best": 0, "worst": 0}
    for rank in range(max(map(len, queues.values()), default=0)):
        for kind, queue in queues.items():
            if rank < len(queue) and queue[rank]["name"] not in shown:
                shown.add(queue[rank]["name"])
                counts[kind] += 1
                files.append((f"{kind}_{counts[kind]}_{overlay_name(queue[rank]['name'])}.png", queue[rank]))
    return files


def run_evaluation(out: str | Path, source: MapsFolder | OnData, options: EvaluationOptions, *, preset: str | None = None,
                   n_overlays: int = 3, overwrite: bool = False, execution: Execution | None = None) -> Path:
    """``blindspot evaluate``: the cases of ``source`` under ``options``, written to the result folder ``out``.

    ``execution``: read and score the test cases on a Dask cluster (:mod:`blindspot.evaluation.distributed`);
    every number is the same as in this process.
    """
    check_output(out, inputs=source.inputs(), overwrite=overwrite, fingerprint="evaluate")
    with output_lock(out, "evaluate"):  # held from here until the folder is renamed: one command per --out
        if isinstance(source, MapsFolder):
            source.check(options)  # masks that change nothing are refused before any case is read
        with open_pool(execution) as pool:
            if isinstance(source, MapsFolder):
                cases, validation, record = source.cases(options.seed, pool=pool)
            else:
                cases, validation, record = source.cases(options.seed, options.positive_residual, pool=pool)
            evaluation = evaluate(cases, options, validation=validation, n_overlays=n_overlays)
            executed = execution_record(pool)
        if isinstance(source, MapsFolder) and options.positive_residual and evaluation.n_signed == 0:
            evaluation.notes.append("the positive-residual option had no effect: no map has a negative value; it needs "
                                    "signed residuals x − x̂.")
        files = record.pop("files")
        config = {"command": "evaluate", "preset": preset, "protocol": asdict(options), "source": record, "seed": options.seed,
                  "cases": [r["name"] for r in evaluation.per_case], "execution": executed, "input_hashes": input_hashes(files),
                  "versions": provenance()}
        with result_folder(out, overwrite=overwrite, inputs=source.inputs(), fingerprint="evaluate") as folder:
            write_evaluation(folder, evaluation, config)
    return Path(out)

"""The evaluation protocol: cases in, every metric out, each choice explicit and computed exactly.

An evaluation takes *cases* (:mod:`~blindspot.evaluation.cases`: one anomaly map per image or volume, with
its pixel labels, brain mask and image-level label) and :class:`~blindspot.evaluation.options.EvaluationOptions`;
:func:`evaluate` returns every metric, per-case values, curves and overlay data. In order:

1. Post-processing of each map (:func:`blindspot.scoring.postprocess`): positive part → median
   filter → multiplication by the eroded brain mask.
2. Image score of each case; image AUROC and AP over cases.
3. Pixel metrics over all pixels, *pooled*, or per *volume* / per 2-D *image* and then averaged
   over the units that contain anomalous pixels: AP, AUROC and the best Dice.
4. One threshold t: the oracle (best on the test labels, an upper bound), the best on a labelled
   validation split, or a false-positive rate (percent) on healthy validation pixels.
5. Prediction ``map >= t``, small connected components removed, then Dice, precision and recall.
6. With ``options.bootstrap`` resamples: a percentile interval of every metric over resampled test
   cases (:mod:`blindspot.evaluation.intervals`), from the per-case count tables of step 3.

Every pixel metric comes from count tables (:mod:`blindspot.metrics.tables`), merged exactly.
"""

from __future__ import annotations

import heapq
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from blindspot.errors import BlindspotError
from blindspot.evaluation.cases import Case, CaseStream, split_validation
from blindspot.evaluation.intervals import CaseData, TableCollector, add_intervals
from blindspot.evaluation.options import EvaluationOptions
from blindspot.metrics import average_precision, roc_auc
from blindspot.metrics.accumulators import BinnedAccumulator, ExactAccumulator, binned_table
from blindspot.metrics.tables import (
    CountTable,
    benchmark_best_dice,
    best_mean_dice,
    count_table,
    merge_tables,
    pr_curve,
    rates,
    roc_curve,
    summarize,
    threshold_at_fpr,
)
from blindspot.progress import progress
from blindspot.scoring import erode_mask, image_scores, postprocess, remove_small_components

__all__ = ["Evaluation", "Ranked", "evaluate", "rank_case", "threshold_cases", "threshold_result"]


@dataclass
class Evaluation:
    """Everything :func:`evaluate` measured (see :mod:`blindspot.evaluation.output` for the files)."""

    options: EvaluationOptions
    metrics: dict
    per_case: list[dict]
    per_unit: list[dict]
    curves: dict
    overlays: list[dict]
    notes: list[str] = field(default_factory=list)
    n_signed: int = 0
    #: Per-case values for the bootstrap and ``blindspot compare`` (None with ``bootstrap`` 0).
    cases: "CaseData | None" = None


def _processed(case: Case, options: EvaluationOptions) -> tuple[np.ndarray, np.ndarray | None]:
    """The post-processed map of a checked case and the mask used for mask-based scores."""
    dims = case.map.ndim
    median_dims = options.median_dims or dims
    if options.median_size > 1 and median_dims > dims:
        raise BlindspotError(f"`median_dims` 3 needs 3-D maps (volumes); '{case.name}' is 2-D.")
    if options.mask_erosion is not None and case.brain is None:
        raise BlindspotError(f"`mask_erosion` needs brain masks but '{case.name}' has none (give `masks`, or no masking).")
    scores = postprocess(case.map, masks=case.brain, positive=options.positive_residual, median_size=options.median_size,
                         median_dims=median_dims, mask_erosion=options.mask_erosion, dims=dims)
    if options.accumulator == "binned":
        scores = scores.astype(np.float32, copy=False)
    mask = case.brain
    if mask is not None and options.mask_erosion:
        mask = erode_mask(mask, options.mask_erosion, dims=dims)
    return scores, mask


def _units(case: Case, pooling: str) -> list[tuple[str, tuple]]:
    """(unit id, index into the case) of each pooling unit inside a case."""
    if pooling == "image" and case.map.ndim == 3:
        return [(f"{case.name}[slice={k}]", (k,)) for k in range(case.map.shape[0])]
    return [(case.volume if pooling == "volume" else case.name, ())]


def _nanmean(values) -> float:
    values = np.asarray([v for v in values if not math.isnan(v)], np.float64)
    return float(values.mean()) if len(values) else float("nan")


class _Run:
    """State of one evaluation: the passes over the cases and what they accumulate."""

    def __init__(self, cases: Iterable[Case], options: EvaluationOptions, n_overlays: int, what: str = "test"):
        self.options, self.n_overlays, self.what = options, n_overlays, what
        self.notes: list[str] = []
        self.stream: CaseStream | None = None
        self.signed: set[str] = set()  # cases whose raw map has a negative value
        self.cache: list[tuple[Case, np.ndarray, np.ndarray | None]] | None = None
        if isinstance(cases, CaseStream):
            self.stream = cases
            return
        checked = [c.checked() for c in cases]
        if not checked:
            raise BlindspotError(f"there is no {what} case to evaluate.")
        if options.pooling == "volume":  # each volume's cases together (stable), so units are contiguous
            checked.sort(key=lambda c: c.volume)
        self.cache = [(c, *self._process(c)) for c in checked]

    def _process(self, case: Case) -> tuple[np.ndarray, np.ndarray | None]:
        if case.map.dtype.kind in "if" and case.map.min() < 0:
            self.signed.add(case.name)
        return _processed(case, self.options)

    @property
    def in_memory(self) -> bool:
        return self.cache is not None

    def processed(self, desc: str) -> Iterator[tuple[Case, np.ndarray, np.ndarray | None]]:
        """(case, post-processed map, score mask) of each case: from memory, or read again from the stream."""
        if self.cache is not None:
            return iter(self.cache)
        return self._read(desc)

    def _read(self, desc: str) -> Iterator[tuple[Case, np.ndarray, np.ndarray | None]]:
        seen = 0
        with progress(self.stream.count or 0, desc, unit="case") as bar:
            for case in self.stream:
                case = case.checked()
                seen += 1
                yield (case, *self._process(case))
                bar.update(1)
        if seen == 0:
            raise BlindspotError(f"there is no case to evaluate in {self.stream.description or 'the stream'}.")

    def has_labels(self) -> bool:
        """Whether pixel metrics apply: some case has a label (then every anomalous case needs one)."""
        if self.stream is not None:
            return self.stream.has_labels
        labelled = [c.name for c, _, _ in self.cache if c.label is not None]
        lacking = [c.name for c, _, _ in self.cache if c.label is None and c.anomalous]
        if labelled and lacking:
            raise BlindspotError(f"anomalous case '{lacking[0]}' has no pixel label while '{labelled[0]}' has one; "
                                 "give every anomalous case a label, or none.")
        return bool(labelled)

    # ---------------------------------------------------------------- threshold-free pass
    def ranked(self, pixel_level: bool, keep_tables: bool) -> Iterator["Ranked"]:
        """:func:`rank_case` of every case, in order (the pooled accumulators fed on the way)."""
        opts = self.options
        self._pooled_exact = ExactAccumulator() if not self.in_memory and opts.accumulator == "exact" else None
        self._pooled_binned = BinnedAccumulator(opts.bits) if opts.accumulator == "binned" else None
        for case, scores, mask in self.processed(f"{self.what} cases, metrics"):
            ranked = rank_case(case, scores, mask, opts, pixel_level)
            if pixel_level:
                if self._pooled_exact is not None:
                    self._pooled_exact.add_table(ranked.table)
                if self._pooled_binned is not None:
                    self._pooled_binned.update(case.label if case.label is not None else np.zeros(scores.shape, bool), scores)
            yield ranked

    def pooled_table(self) -> CountTable:
        """The count table of every test pixel (after :meth:`ranked` has run)."""
        if self._pooled_binned is not None:
            return self._pooled_binned.table()
        if self._pooled_exact is not None:
            return self._pooled_exact.table()
        # in memory: one table of all pixels (one sort) is faster than merging the case tables
        labels = np.concatenate([(c.label if c.label is not None else np.zeros(s.shape, bool)).ravel() for c, s, _ in self.cache])
        return count_table(labels, np.concatenate([s.ravel() for _, s, _ in self.cache]))

    def ranking_pass(self, pixel_level: bool, collector: TableCollector | None = None) -> dict:
        opts = self.options
        per_case, unit_rows, objective_tables = [], [], []
        finished_units: set[str] = set()
        current_unit, current_tables = None, []
        binned_unit_tables: dict[str, list[CountTable]] = {}

        def close_unit():
            if current_unit is None or opts.pooling == "pooled":
                return
            table = merge_tables(current_tables)
            unit_rows.append({"unit": current_unit, **_table_row(table)})
            if table.n_positive and opts.accumulator == "exact":
                objective_tables.append(table)

        for ranked in self.ranked(pixel_level, keep_tables=collector is not None):
            for unit, unit_table in ranked.units:
                if unit != current_unit:
                    close_unit()
                    if unit in finished_units:
                        raise BlindspotError(f"the cases of volume '{unit}' are not consecutive; a streamed source must "
                                             "give each volume's cases together.")
                    finished_units.add(unit)
                    current_unit, current_tables = unit, []
                current_tables.append(unit_table)
            for unit, binned in ranked.binned_units:
                binned_unit_tables.setdefault(unit, []).append(binned)
            per_case.append(ranked.row)
            if collector is not None:
                collector.add(ranked, ranked.table, ranked.unit_names)
        close_unit()

        result = {"per_case": per_case, "per_unit": unit_rows}
        if not pixel_level:
            return result
        if opts.accumulator == "binned":
            objective_tables = [t for t in (merge_tables(ts) for ts in binned_unit_tables.values()) if t.n_positive]
        result["pooled_table"] = self.pooled_table()
        result["objective_tables"] = objective_tables
        return result

    # ---------------------------------------------------------------- thresholded pass
    def threshold_pass(self, threshold: float) -> dict:
        part = threshold_cases(((case, scores) for case, scores, _ in self.processed(f"{self.what} cases, threshold")),
                               threshold, self.options, self.n_overlays)
        return threshold_result(part)


@dataclass
class Ranked:
    """What the threshold-free pass computes of one case (here, or in a task on a Dask worker).

    ``row``: the case's row of ``per_case.csv``; ``table``: its count table (None without pixel
    metrics, or when not kept); ``units``: the count table of each of its pooling units (per-volume
    or per-image pooling); ``binned_units``: their binned tables (binned accumulator);
    ``unit_names``: its pooling units.
    """

    name: str
    volume: str
    row: dict
    table: CountTable | None
    units: list
    binned_units: list
    unit_names: list


def rank_case(case: Case, scores: np.ndarray, mask: np.ndarray | None, opts: EvaluationOptions, pixel_level: bool) -> Ranked:
    """The per-case part of the threshold-free pass: image score, count table, per-unit tables."""
    table, units, binned_units = None, [], []
    row = {"name": case.name, "volume": case.volume, "anomalous": case.anomalous,
           "image_score": float(image_scores(scores[None], opts.image_score, masks=None if mask is None else mask[None],
                                             top_percent=opts.top_percent)[0]),
           "n_pixels": int(scores.size)}
    if pixel_level:
        if case.label is None and case.anomalous:
            raise BlindspotError(f"anomalous case '{case.name}' has no pixel label; pixel metrics need a label for every anomalous case.")
        label = case.label if case.label is not None else np.zeros(scores.shape, bool)
        table = count_table(label, scores)
        row.update(_table_row(table))
        for unit, index in _units(case, opts.pooling) if opts.pooling != "pooled" else []:
            units.append((unit, table if not index else count_table(label[index], scores[index])))
            if opts.accumulator == "binned":
                binned_units.append((unit, binned_table(label[index], scores[index], opts.bits)))
    return Ranked(case.name, case.volume, row, table, units, binned_units, [unit for unit, _ in _units(case, opts.pooling)])


def threshold_cases(items: Iterable[tuple[Case, np.ndarray]], threshold: float, opts: EvaluationOptions, n_overlays: int,
                    first: int = 0) -> dict:
    """Counts at ``threshold`` of each (case, post-processed map), per case and per unit, and the overlay candidates.

    ``first`` is the order of the first case among all cases (the overlays' tie-break). The best
    and worst ``n_overlays`` candidates (heaps of ``(key, payload)``) of several parts merge
    exactly (:func:`threshold_result`), since keys are unique.
    """
    counts_case, counts_unit = [], {}
    best: list = []
    worst: list = []
    for order, (case, scores) in enumerate(items, start=first):
        label = case.label if case.label is not None else np.zeros(scores.shape, bool)
        prediction = remove_small_components(scores >= threshold, opts.min_component_size, dims=scores.ndim)
        tp, fp, fn = _counts(prediction, label)
        counts_case.append((tp, fp, fn))
        for unit, index in _units(case, opts.pooling) if opts.pooling != "pooled" else []:
            c = _counts(prediction[index], label[index]) if index else (tp, fp, fn)
            total = counts_unit.setdefault(unit, [0, 0, 0])
            for k in range(3):
                total[k] += c[k]
        if n_overlays and label.any():
            dice = rates(tp, fp, fn)["dice"]
            payload = lambda: _overlay(case, scores, prediction, label, dice)  # noqa: E731
            _keep(best, (dice, -order, case.name), payload, n_overlays)
            _keep(worst, (-dice, -order, case.name), payload, n_overlays)
    return {"case": counts_case, "unit": counts_unit, "best": best, "worst": worst}


def threshold_result(part: dict, more: Iterable[dict] = (), n_overlays: int = 0) -> dict:
    """The thresholded pass's result from :func:`threshold_cases` parts (in case order): counts and overlays."""
    for other in more:
        part["case"] = part["case"] + other["case"]
        for unit, counts in other["unit"].items():
            total = part["unit"].setdefault(unit, [0, 0, 0])
            for k in range(3):
                total[k] += counts[k]
        for heap, extra in ((part["best"], other["best"]), (part["worst"], other["worst"])):
            for key, payload in extra:
                _keep(heap, key, lambda payload=payload: payload, n_overlays)
    overlays = [dict(o, kind="best") for _, o in sorted(part["best"], key=lambda x: x[0], reverse=True)]
    overlays += [dict(o, kind="worst") for _, o in sorted(part["worst"], key=lambda x: x[0], reverse=True)]
    return {"case": part["case"], "unit": part["unit"], "overlays": overlays}


def _table_row(table: CountTable) -> dict:
    s = summarize(table)
    return {"n_positive": s["n_positive"], "pixel_ap": s["ap"], "pixel_auroc": s["auroc"],
            "best_dice": s["best_dice"], "best_dice_threshold": s["best_dice_threshold"]}


def _counts(prediction: np.ndarray, label: np.ndarray) -> tuple[int, int, int]:
    tp = int(np.count_nonzero(prediction & label))
    return tp, int(np.count_nonzero(prediction)) - tp, int(np.count_nonzero(label)) - tp


def _keep(heap: list, key: tuple, payload: Callable[[], dict], n: int) -> None:
    """Keep the n largest keys (payload built only for kept items)."""
    if len(heap) < n:
        heapq.heappush(heap, (key, payload()))
    elif key > heap[0][0]:
        heapq.heapreplace(heap, (key, payload()))


def _overlay(case: Case, scores: np.ndarray, prediction: np.ndarray, label: np.ndarray, dice: float) -> dict:
    """2-D panels of a case for an overlay figure (for a volume: the slice with the most anomalous pixels)."""
    if scores.ndim == 3:
        k = int(np.argmax(label.reshape(len(label), -1).sum(axis=1)))
        pick, name = (lambda a: None if a is None else np.asarray(a)[k]), f"{case.name}[slice={k}]"
    else:
        pick, name = (lambda a: None if a is None else np.asarray(a)), case.name
    return {"name": name, "dice": dice, "image": pick(case.image), "map": pick(scores),
            "prediction": pick(prediction), "label": pick(label)}


def _oracle(table_or_tables, opts: EvaluationOptions, pooled: bool) -> tuple[float, float]:
    """(best Dice, threshold) on labelled pixels: the pooled table's or the best mean over units."""
    if not pooled:
        return best_mean_dice(table_or_tables)
    if opts.best_dice_rule == "benchmark":
        return benchmark_best_dice(table_or_tables)
    s = summarize(table_or_tables)
    return s["best_dice"], s["best_dice_threshold"]


def _choose_threshold(run: _Run, validation: Iterable[Case] | None, ranking: dict) -> dict:
    """The Dice threshold and how it was chosen."""
    opts = run.options
    pooled = opts.pooling == "pooled"
    if opts.threshold == "oracle":
        objective, value = _oracle(ranking["pooled_table"] if pooled else ranking["objective_tables"], opts, pooled)
        return {"method": "oracle", "value": value, "objective": objective,
                "source": "test labels: an upper bound, not an achievable result"}
    if validation is None:
        raise BlindspotError(f"`threshold` {opts.threshold} needs validation cases; give validation maps, validation data "
                             "or a `val_fraction`.")
    val_run = _Run(validation, opts, 0, what="validation")
    if opts.threshold == "fpr":
        tables, n_healthy = [], 0
        for case, scores, mask in val_run.processed("validation cases"):
            if case.anomalous:
                continue
            n_healthy += 1
            inside = scores if mask is None else scores[mask]
            if inside.size:
                tables.append(count_table(np.zeros(inside.shape, bool), inside))
        if not tables:
            raise BlindspotError("`threshold` fpr needs healthy (normal) validation images; the validation cases are all anomalous.")
        value, achieved = threshold_at_fpr(merge_tables(tables), opts.fpr / 100)
        return {"method": "fpr", "value": value, "target_fpr_percent": opts.fpr, "validation_fpr_percent": 100 * achieved,
                "n_validation_cases": n_healthy, "source": "healthy validation pixels (inside the brain mask when there is one)"}
    if not val_run.has_labels():
        raise BlindspotError("`threshold` val-dice needs pixel labels for the validation cases.")
    val_ranking = val_run.ranking_pass(pixel_level=True)
    objective, value = _oracle(val_ranking["pooled_table"] if pooled else val_ranking["objective_tables"], opts, pooled)
    if math.isnan(value):
        raise BlindspotError("`threshold` val-dice needs anomalous pixels in the validation labels; the validation cases have none.")
    return {"method": "val-dice", "value": value, "validation_dice": objective,
            "n_validation_cases": len(val_ranking["per_case"]), "source": "best Dice on the labelled validation split"}


def evaluate(
    cases: Iterable[Case],
    options: EvaluationOptions = EvaluationOptions(),
    *,
    validation: Iterable[Case] | None = None,
    n_overlays: int = 3,
) -> Evaluation:
    """Evaluate anomaly maps under an explicit protocol.

    Parameters
    ----------
    cases : list of Case, a CaseStream, or CaseChunks
        The test cases. A list is processed once and kept in memory; a :class:`CaseStream` is
        re-read for each pass (two passes, plus one over ``validation``); the cases of a
        :class:`~blindspot.evaluation.distributed.CaseChunks` are read and scored on a Dask cluster,
        with the same numbers.
    options : EvaluationOptions
    validation : list of Case, CaseStream or None
        Validation cases for ``threshold="val-dice"`` (labelled) or ``"fpr"`` (its normal cases).
        When None and ``options.val_fraction`` is set, that fraction of the test volumes is held
        out (in-memory lists only).
    n_overlays : int
        Best and worst cases (by Dice at the threshold) kept for overlay figures.

    With ``options.bootstrap`` > 0 each section of ``metrics`` gets ``intervals`` and ``metrics``
    gets ``bootstrap`` (how they were computed); ``Evaluation.cases`` holds what was resampled.
    """
    if options.val_fraction is not None and options.threshold != "oracle":
        if validation is not None:
            raise BlindspotError("give either validation cases or a `val_fraction`, not both.")
        if hasattr(cases, "split_validation"):  # cases on a cluster (blindspot.evaluation.distributed.CaseChunks)
            cases, validation = cases.split_validation(options.val_fraction, options.seed)
        elif not isinstance(cases, (list, tuple)):
            raise BlindspotError("`val_fraction` needs an in-memory case list; give separate validation maps for a streamed evaluation.")
        else:
            cases, validation = split_validation(cases, options.val_fraction, options.seed)
    run = cases.make_run(options, n_overlays) if hasattr(cases, "make_run") else _Run(cases, options, n_overlays)
    has_labels = run.has_labels()
    collector = TableCollector(options.pooling, options.bits if options.accumulator == "binned" else None) if options.bootstrap else None
    ranking = run.ranking_pass(pixel_level=has_labels, collector=collector)
    per_case = ranking["per_case"]
    anomalous = np.array([r["anomalous"] for r in per_case], bool)
    scores = np.array([r["image_score"] for r in per_case])
    metrics: dict = {"n_cases": len(per_case), "image": _image_metrics(anomalous, scores, options, run.notes)}
    curves, overlays, per_unit = {}, [], ranking["per_unit"]
    if has_labels:
        threshold = _choose_threshold(run, validation, ranking)
        thresholded = run.threshold_pass(threshold["value"]) if not math.isnan(threshold["value"]) else None
        metrics["pixel"] = _pixel_metrics(ranking, thresholded, options, run.notes)
        metrics["threshold"] = threshold
        metrics["at_threshold"] = _at_threshold(thresholded, per_case, per_unit, options)
        if threshold["method"] == "fpr" and metrics["at_threshold"].get("predicted", 1) == 0:
            message = (f"the threshold at {options.fpr:g} % false positives predicts no test pixel: Dice is 0 "
                       "(is `fpr` meant in percent?).")
            run.notes.append(message)
            warnings.warn(message, UserWarning, stacklevel=2)
        table = ranking["pooled_table"]
        if table.n_positive:
            recall, precision, pr_thresholds = pr_curve(table)
            fpr, tpr = roc_curve(table)
            curves = {"recall": recall, "precision": precision, "pr_thresholds": pr_thresholds, "fpr": fpr, "tpr": tpr,
                      "prevalence": table.n_positive / (table.n_positive + table.n_negative)}
        overlays = thresholded["overlays"] if thresholded else []
    else:
        run.notes.append("no pixel labels: only image-level metrics were computed.")
    _warn_unmeasurable(run, anomalous, scores, ranking.get("pooled_table"))
    cases_data = None
    if collector is not None:
        cases_data = CaseData.from_evaluation(collector, per_case, per_unit, thresholded if has_labels else None, options)
        add_intervals(metrics, cases_data, n_resamples=options.bootstrap, confidence=options.confidence, seed=options.seed)
        if cases_data.n_groups < 2:
            run.notes.append(f"one {cases_data.resampled[:-1]} only: the bootstrap intervals are degenerate.")
    return Evaluation(options, metrics, per_case, per_unit, curves, overlays, run.notes, len(run.signed), cases_data)


def _warn_unmeasurable(run, anomalous: np.ndarray, scores: np.ndarray, table: CountTable | None) -> None:
    """A warning (and a note) when the inputs leave nothing to measure: labels without any anomaly, or maps that
    are one value everywhere after post-processing (as brain masks that are all empty make them)."""
    if table is not None and not anomalous.any():
        message = ("the test labels mark no anomalous pixel in any case: no metric can be measured (image and pixel "
                   "AUROC, AP and Dice are nan).")
    elif table is not None and len(table) == 1:
        value = float(table.values[0])
        masked = " (are the brain masks empty?)" if run.options.mask_erosion is not None and value == 0 else ""
        message = (f"every post-processed test map is {value:g} everywhere{masked}: no pixel can be told from another "
                   "(AUROC 0.5 measures nothing).")
    elif table is None and anomalous.any() and not anomalous.all() and len(np.unique(scores)) == 1:
        message = (f"every test case has the image score {float(scores[0]):g}: no case can be told from another (image "
                   "AUROC 0.5 measures nothing).")
    else:
        return
    run.notes.append(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def _image_metrics(anomalous: np.ndarray, scores: np.ndarray, options: EvaluationOptions, notes: list[str]) -> dict:
    out = {"score": options.image_score, "n_normal": int((~anomalous).sum()), "n_anomalous": int(anomalous.sum())}
    if options.image_score == "top-k":
        out["top_percent"] = options.top_percent
    if anomalous.all() or not anomalous.any():
        notes.append("image-level AUROC and AP need normal and anomalous cases; they are nan.")
        return {**out, "auroc": float("nan"), "ap": float("nan")}
    return {**out, "auroc": roc_auc(anomalous, scores), "ap": average_precision(anomalous, scores)}


def _pixel_metrics(ranking: dict, thresholded: dict | None, options: EvaluationOptions, notes: list[str]) -> dict:
    table = ranking["pooled_table"]
    out = {"pooling": options.pooling, "accumulator": options.accumulator,
           "n_pixels": table.n_positive + table.n_negative, "n_positive": table.n_positive}
    if options.accumulator == "binned":
        out["bits"] = options.bits
    if options.pooling == "pooled":
        s = summarize(table, bounds=options.accumulator == "binned")
        out.update(ap=s["ap"], auroc=s["auroc"], best_dice=s["best_dice"], best_dice_threshold=s["best_dice_threshold"],
                   best_dice_rule=options.best_dice_rule)
        if options.best_dice_rule == "benchmark":
            out["best_dice"], out["best_dice_threshold"] = benchmark_best_dice(table)
            out["best_dice_exact"] = s["best_dice"]
        if "bounds" in s:
            out["bounds"] = s["bounds"]
        if table.n_positive == 0:
            notes.append("the test labels hold no anomalous pixel: pixel metrics are nan.")
        return out
    units = ranking["per_unit"]
    with_positive = [u for u in units if u["n_positive"] > 0]
    out.update(n_units=len(units), n_units_with_positive=len(with_positive),
               ap=_nanmean(u["pixel_ap"] for u in with_positive), auroc=_nanmean(u["pixel_auroc"] for u in with_positive),
               best_dice=_nanmean(u["best_dice"] for u in with_positive))
    if len(with_positive) < len(units):
        notes.append(f"{len(units) - len(with_positive)} of {len(units)} {options.pooling} units hold no anomalous pixel "
                     "and are left out of the per-unit means.")
    return out


def _at_threshold(thresholded: dict | None, per_case: list[dict], per_unit: list[dict], options: EvaluationOptions) -> dict:
    """Fill per-case and per-unit rows with their counts at the threshold; return the summary."""
    out = {"min_component_size": options.min_component_size}
    if thresholded is None:
        return {**out, "dice": float("nan"), "precision": float("nan"), "recall": float("nan")}
    for row, (tp, fp, fn) in zip(per_case, thresholded["case"]):
        row.update(tp=tp, fp=fp, fn=fn, **rates(tp, fp, fn))
    for row in per_unit:
        tp, fp, fn = thresholded["unit"][row["unit"]]
        row.update(tp=tp, fp=fp, fn=fn, **rates(tp, fp, fn))
    tp, fp, fn = (int(sum(c[k] for c in thresholded["case"])) for k in range(3))
    if options.pooling == "pooled":
        return {**out, "tp": tp, "fp": fp, "fn": fn, "predicted": tp + fp, **rates(tp, fp, fn)}
    units = [u for u in per_unit if u["n_positive"] > 0]
    return {**out, "predicted": tp + fp, **{k: _nanmean(u[k] for u in units) for k in ("dice", "precision", "recall")}}

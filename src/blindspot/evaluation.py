"""The evaluation protocol: every choice explicit, recorded, and computed exactly.

An evaluation takes *cases* (one anomaly map per image or volume, with its pixel labels, brain mask
and image-level label) and an :class:`EvaluationOptions`; :func:`evaluate` returns every metric,
per-case values, curves and overlay data. :func:`run_evaluation` (``blindspot evaluate``) builds
the cases from a folder of maps, a checkpoint or a baseline on a data set, and writes the result
folder (``metrics.json``, ``per_case.csv``, ``summary.md``, curves and overlays).

Protocol, in order (see ``docs/evaluation.md``):

1. Post-processing of each map (:func:`blindspot.scoring.postprocess`): positive part (for signed
   residuals x − x̂) → median filter (size, over 2 or 3 axes) → multiplication by the brain mask
   eroded by k iterations.
2. Image score of each case: mean, max, mean inside the brain mask, or mean of the top k %;
   image AUROC and AP over cases.
3. Pixel metrics over all pixels of the maps, *pooled* over the data set, or per *volume* / per 2D
   *image* and then averaged over the units that contain anomalous pixels: AP, AUROC and the exact
   best Dice (each unit with its own best threshold when not pooled).
4. One threshold t: the oracle (the exact best on the test labels: an upper bound), the best on a
   labelled validation split, or the given false-positive rate on healthy validation pixels
   (inside the brain mask when there is one). Pooled: the pooled Dice is maximised; otherwise the
   mean Dice over units.
5. Prediction ``map >= t``, connected components smaller than a size removed, then Dice,
   precision and recall at t (pooled counts, or the mean over units with anomalous pixels).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from blindspot.errors import BlindspotError
from blindspot.scoring import IMAGE_SCORES, erode_mask, image_scores, postprocess, remove_small_components
from blindspot.streaming import (
    BinnedAccumulator,
    CountTable,
    ExactAccumulator,
    best_mean_dice,
    binned_table,
    count_table,
    merge_tables,
    pr_curve,
    roc_curve,
    summarize,
    threshold_at_fpr,
)

__all__ = [
    "ACCUMULATORS",
    "POOLINGS",
    "PRESETS",
    "THRESHOLDS",
    "Case",
    "CaseStream",
    "Evaluation",
    "EvaluationOptions",
    "evaluate",
    "make_options",
    "maps_cases",
    "split_validation",
]

POOLINGS = ("pooled", "volume", "image")
THRESHOLDS = ("oracle", "val-dice", "fpr")
ACCUMULATORS = ("exact", "binned")

#: The two conventions of the protocols file; options not named keep their defaults.
PRESETS: dict[str, dict] = {
    # MedIAnomaly benchmark (Cai et al.): mean map as image score, all test pixels pooled, oracle
    # best Dice, no post-processing.
    "benchmark": dict(image_score="mean", pooling="pooled", threshold="oracle", positive_residual=False,
                      mask_erosion=None, median_size=0, min_component_size=0),
    # Brain-MRI practice: positive residual, brain mask eroded 3 iterations, median filter 5 (over the
    # case's own axes: 5×5 for slices, 5×5×5 for volumes), components < 20 pixels removed, threshold =
    # best Dice on a labelled validation split.
    "brain-mri": dict(positive_residual=True, mask_erosion=3, median_size=5, median_dims=None,
                      min_component_size=20, threshold="val-dice"),
}


# --------------------------------------------------------------------------------------------
# options


@dataclass(frozen=True)
class EvaluationOptions:
    """Every protocol choice of an evaluation (recorded in ``metrics.json``).

    Attributes
    ----------
    image_score : {"mean", "max", "mask-mean", "top-k"}
        Image-level score of a case's (post-processed) map.
    top_percent : float
        k of the "top-k" score: mean of the k % largest values (at least one pixel).
    pooling : {"pooled", "volume", "image"}
        Pixel metrics over all pixels together, or per volume / per 2D image then averaged over
        the units with anomalous pixels.
    threshold : {"oracle", "val-dice", "fpr"}
        How the Dice threshold is chosen: on the test labels (upper bound), as the best Dice on a
        labelled validation split, or at a false-positive rate on healthy validation images.
    fpr : float
        Target false-positive rate for ``threshold="fpr"``, in (0, 1) (0.01, 0.05, 0.1 in papers).
    positive_residual : bool
        Keep only positive values (x − x̂ > 0) of signed residual maps.
    mask_erosion : int or None
        None: maps are not masked; k >= 0: maps are multiplied by the brain mask eroded k times.
    median_size : int
        Median filter window (0 or 1: off).
    median_dims : int or None
        Axes the median filter spans: 2 (each slice) or 3 (volumes); None: the case's own
        dimensionality.
    min_component_size : int
        Connected components of the thresholded map smaller than this are removed (0: off).
    accumulator : {"exact", "binned"}
        Pooled pixel counts: exact (sklearn-equal) or float32-bit-pattern histograms of
        ``bits`` bits (constant memory, with guaranteed error bounds).
    bits : int
        Histogram resolution of the binned accumulator (relative bin width 2^-(bits − 9)).
    val_fraction : float or None
        Hold out this fraction of the test volumes (seeded) as the validation split when no
        separate validation maps are given.
    seed : int
        Seed of the validation hold-out.
    """

    image_score: str = "mean"
    top_percent: float = 1.0
    pooling: str = "pooled"
    threshold: str = "oracle"
    fpr: float = 0.05
    positive_residual: bool = False
    mask_erosion: int | None = None
    median_size: int = 0
    median_dims: int | None = None
    min_component_size: int = 0
    accumulator: str = "exact"
    bits: int = 20
    val_fraction: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(option: str, expected: str, value) -> BlindspotError:
            return BlindspotError(f"--{option} must be {expected}; got {value!r}.")

        if self.image_score not in IMAGE_SCORES:
            raise bad("image-score", f"one of {', '.join(IMAGE_SCORES)}", self.image_score)
        if not 0 < self.top_percent <= 100:
            raise bad("top-percent", "a percentage in (0, 100]", self.top_percent)
        if self.pooling not in POOLINGS:
            raise bad("pooling", f"one of {', '.join(POOLINGS)}", self.pooling)
        if self.threshold not in THRESHOLDS:
            raise bad("threshold", f"one of {', '.join(THRESHOLDS)}", self.threshold)
        if not 0 < self.fpr < 1:
            raise bad("fpr", "a rate in (0, 1) (e.g. 0.05 for 5 %)", self.fpr)
        if self.mask_erosion is not None and not (isinstance(self.mask_erosion, int) and self.mask_erosion >= 0):
            raise bad("mask-erosion", "an integer >= 0", self.mask_erosion)
        if not (isinstance(self.median_size, int) and self.median_size >= 0):
            raise bad("median", "an integer >= 0", self.median_size)
        if self.median_dims not in (None, 2, 3):
            raise bad("median-dims", "2 or 3", self.median_dims)
        if not (isinstance(self.min_component_size, int) and self.min_component_size >= 0):
            raise bad("min-component", "an integer >= 0", self.min_component_size)
        if self.accumulator not in ACCUMULATORS:
            raise bad("accumulator", f"one of {', '.join(ACCUMULATORS)}", self.accumulator)
        if not (isinstance(self.bits, int) and 10 <= self.bits <= 24):
            raise bad("bits", "an integer in [10, 24]", self.bits)
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise bad("val-fraction", "a fraction in (0, 1)", self.val_fraction)


def make_options(preset: str | None = None, **overrides) -> EvaluationOptions:
    """Options of a preset (or the defaults) with individual options on top.

    Overrides set to None are ignored (a CLI option that was not given), except ``mask_erosion``
    and ``median_dims``, whose None is meaningful: pass them only when set.

    Examples
    --------
    >>> make_options("brain-mri", threshold="fpr").median_size
    5
    """
    if preset is not None and preset not in PRESETS:
        raise BlindspotError(f"--preset must be one of {', '.join(PRESETS)}; got '{preset}'.")
    names = {f.name for f in fields(EvaluationOptions)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise BlindspotError(f"unknown evaluation option '{unknown[0]}'; known: {', '.join(sorted(names))}.")
    values = dict(PRESETS.get(preset, {})) if preset else {}
    values.update({k: v for k, v in overrides.items() if v is not None or k in ("mask_erosion", "median_dims")})
    return EvaluationOptions(**values)


# --------------------------------------------------------------------------------------------
# cases


@dataclass(frozen=True)
class Case:
    """One anomaly map to evaluate, with what is known about it.

    Attributes
    ----------
    name : str
        Shown in errors, ``per_case.csv`` and overlays (the file name for maps from a folder).
    map : ndarray, shape (H, W) or (D, H, W)
        Anomaly scores (higher = more anomalous), finite; slices along the first axis of volumes.
    label : ndarray of bool or None
        Pixel annotation of the same shape; None = no pixel annotation (counted as all normal when
        the case is normal).
    brain : ndarray of bool or None
        Brain (foreground) mask of the same shape.
    image : ndarray or None
        The input image, for overlays only.
    volume : str or None
        Pooling unit of per-volume pooling; None = the case itself.
    anomalous : bool or None
        Image-level label; None = ``label.any()``.
    """

    name: str
    map: np.ndarray
    label: np.ndarray | None = None
    brain: np.ndarray | None = None
    image: np.ndarray | None = None
    volume: str | None = None
    anomalous: bool | None = None

    def checked(self) -> "Case":
        """Validate shapes and values; returns the case with ``volume`` and ``anomalous`` filled in."""
        scores = np.asarray(self.map)
        if scores.ndim not in (2, 3) or scores.dtype.kind not in "biuf":
            raise BlindspotError(f"map '{self.name}' must be a 2-D or 3-D numeric array; got {scores.dtype} {scores.shape}.")
        if scores.dtype.kind == "f" and not np.isfinite(scores).all():
            raise BlindspotError(f"map '{self.name}' contains NaN or infinite values; anomaly scores must be finite.")
        for what, array in (("label", self.label), ("brain mask", self.brain), ("image", self.image)):
            if array is not None and np.shape(array) != scores.shape:
                raise BlindspotError(f"the {what} of '{self.name}' has shape {np.shape(array)} but its map has {scores.shape}.")
        label = None if self.label is None else np.asarray(self.label, bool)
        anomalous = bool(label.any()) if self.anomalous is None and label is not None else self.anomalous
        if anomalous is None:
            raise BlindspotError(f"case '{self.name}' has neither a pixel label nor an image-level label.")
        return replace(self, map=scores, label=label, anomalous=bool(anomalous),
                       brain=None if self.brain is None else np.asarray(self.brain, bool),
                       volume=self.name if self.volume is None else self.volume)


class CaseStream:
    """A re-iterable source of cases produced on demand (data larger than memory).

    ``make()`` must return a fresh iterator over the same cases in the same order each time; the
    evaluation iterates it once per pass and never keeps more than a few cases at once.
    ``has_labels`` says whether the cases carry pixel labels (then every anomalous case must).
    """

    def __init__(self, make: Callable[[], Iterator[Case]], *, has_labels: bool, description: str = "") -> None:
        self.make = make
        self.has_labels = has_labels
        self.description = description

    def __iter__(self) -> Iterator[Case]:
        return self.make()


def split_validation(cases: Sequence[Case], fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    """Hold out ``fraction`` of the volumes (seeded permutation of the sorted ids) as validation.

    Returns ``(test, validation)``; both keep the original case order.
    """
    cases = [c.checked() for c in cases]
    ids = sorted({c.volume for c in cases})
    if len(ids) < 2:
        raise BlindspotError(f"--val-fraction needs at least 2 volumes to split; the test set has {len(ids)}.")
    n_val = min(len(ids) - 1, max(1, round(fraction * len(ids))))
    chosen = set(np.asarray(ids, dtype=object)[np.random.default_rng(seed).permutation(len(ids))[:n_val]])
    return [c for c in cases if c.volume not in chosen], [c for c in cases if c.volume in chosen]


# --------------------------------------------------------------------------------------------
# the evaluation


@dataclass
class Evaluation:
    """Everything :func:`evaluate` measured (see :func:`write_evaluation` for the files)."""

    options: EvaluationOptions
    metrics: dict
    per_case: list[dict]
    per_unit: list[dict]
    curves: dict
    overlays: list[dict]
    notes: list[str] = field(default_factory=list)
    n_signed: int = 0


def _processed(case: Case, options: EvaluationOptions) -> tuple[np.ndarray, np.ndarray | None]:
    """The post-processed map of a checked case and the mask used for mask-based scores."""
    dims = case.map.ndim
    median_dims = options.median_dims or dims
    if options.median_size > 1 and median_dims > dims:
        raise BlindspotError(f"--median-dims 3 needs 3-D maps (volumes); '{case.name}' is 2-D.")
    if options.mask_erosion is not None and case.brain is None:
        raise BlindspotError(f"--mask-erosion needs brain masks but '{case.name}' has none (pass --masks DIR, or drop the mask with --no-mask).")
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


def _rates(tp: int, fp: int, fn: int) -> dict:
    """Dice, precision and recall from counts (precision 0 when nothing is predicted, as sklearn)."""
    return {"dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else float("nan")}


def _nanmean(values) -> float:
    values = np.asarray([v for v in values if not math.isnan(v)], np.float64)
    return float(values.mean()) if len(values) else float("nan")


class _Run:
    """State of one evaluation: the passes over the cases and what they accumulate."""

    def __init__(self, cases: Iterable[Case], options: EvaluationOptions, n_overlays: int):
        self.options = options
        self.n_overlays = n_overlays
        self.notes: list[str] = []
        self.stream: CaseStream | None = None
        self.signed: set[str] = set()  # cases whose raw map has a negative value
        self.cache: list[tuple[Case, np.ndarray, np.ndarray | None]] | None = None
        if isinstance(cases, CaseStream):
            self.stream = cases
            return
        checked = [c.checked() for c in cases]
        if not checked:
            raise BlindspotError("there is no case to evaluate.")
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

    def processed(self) -> Iterator[tuple[Case, np.ndarray, np.ndarray | None]]:
        """(case, post-processed map, score mask) of each case: from memory, or read again from the stream."""
        if self.cache is not None:
            return iter(self.cache)
        return self._read()

    def _read(self) -> Iterator[tuple[Case, np.ndarray, np.ndarray | None]]:
        seen = 0
        for case in self.stream:
            case = case.checked()
            seen += 1
            yield (case, *self._process(case))
        if seen == 0:
            raise BlindspotError(f"there is no case to evaluate in {self.stream.description or 'the stream'}.")

    def has_labels(self) -> bool:
        """Whether pixel metrics apply: some case has a label (then every anomalous case needs one)."""
        if self.stream is not None:
            return self.stream.has_labels
        labelled = [c.name for c, _, _ in self.cache if c.label is not None]
        lacking = [c.name for c, _, _ in self.cache if c.label is None and c.anomalous]
        if labelled and lacking:
            raise BlindspotError(f"anomalous case '{lacking[0]}' has no pixel label while '{labelled[0]}' has one; give every anomalous case a label, or none.")
        return bool(labelled)

    # ---------------------------------------------------------------- threshold-free pass
    def ranking_pass(self, pixel_level: bool) -> dict:
        opts = self.options
        per_case, unit_rows, objective_tables = [], [], []
        pooled_exact = ExactAccumulator() if not self.in_memory and opts.accumulator == "exact" else None
        pooled_binned = BinnedAccumulator(opts.bits) if opts.accumulator == "binned" else None
        finished_units: set[str] = set()
        current_unit, current_tables = None, []

        def close_unit():
            if current_unit is None or opts.pooling == "pooled":
                return
            table = merge_tables(current_tables)
            unit_rows.append({"unit": current_unit, **_table_row(table)})
            if table.n_positive and opts.accumulator == "exact":
                objective_tables.append(table)

        binned_unit_tables: dict[str, list[CountTable]] = {}
        for case, scores, mask in self.processed():
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
                if pooled_exact is not None:
                    pooled_exact.add_table(table)
                if pooled_binned is not None:
                    pooled_binned.update(label, scores)
                for unit, index in _units(case, opts.pooling) if opts.pooling != "pooled" else []:
                    unit_table = table if not index else count_table(label[index], scores[index])
                    if unit != current_unit:
                        close_unit()
                        if unit in finished_units:
                            raise BlindspotError(f"the cases of volume '{unit}' are not consecutive; a streamed source must give each volume's cases together.")
                        finished_units.add(unit)
                        current_unit, current_tables = unit, []
                    current_tables.append(unit_table)
                    if opts.accumulator == "binned":
                        binned_unit_tables.setdefault(unit, []).append(binned_table(label[index], scores[index], opts.bits))
            per_case.append(row)
        close_unit()

        result = {"per_case": per_case, "per_unit": unit_rows}
        if not pixel_level:
            return result
        if pooled_binned is not None:
            pooled_table = pooled_binned.table()
            objective_tables = [t for t in (merge_tables(ts) for ts in binned_unit_tables.values()) if t.n_positive]
        elif pooled_exact is not None:
            pooled_table = pooled_exact.table()
        else:  # in memory: one table of all pixels (one sort) is faster than merging the case tables
            labels = np.concatenate([(c.label if c.label is not None else np.zeros(s.shape, bool)).ravel() for c, s, _ in self.cache])
            pooled_table = count_table(labels, np.concatenate([s.ravel() for _, s, _ in self.cache]))
        result["pooled_table"] = pooled_table
        result["objective_tables"] = objective_tables
        return result

    # ---------------------------------------------------------------- thresholded pass
    def threshold_pass(self, threshold: float) -> dict:
        opts = self.options
        counts_case, counts_unit = [], {}
        best: list = []
        worst: list = []
        for order, (case, scores, _) in enumerate(self.processed()):
            label = case.label if case.label is not None else np.zeros(scores.shape, bool)
            prediction = remove_small_components(scores >= threshold, opts.min_component_size, dims=scores.ndim)
            tp, fp, fn = _counts(prediction, label)
            counts_case.append((tp, fp, fn))
            for unit, index in _units(case, opts.pooling) if opts.pooling != "pooled" else []:
                c = _counts(prediction[index], label[index]) if index else (tp, fp, fn)
                total = counts_unit.setdefault(unit, [0, 0, 0])
                for k in range(3):
                    total[k] += c[k]
            if self.n_overlays and label.any():
                dice = _rates(tp, fp, fn)["dice"]
                item = (dice, -order, case.name)
                payload = lambda: _overlay(case, scores, prediction, label, dice)  # noqa: E731
                _keep(best, item, payload, self.n_overlays)
                _keep(worst, (-dice, -order, case.name), payload, self.n_overlays)
        overlays = [dict(o, kind="best") for _, o in sorted(best, key=lambda x: x[0], reverse=True)]
        overlays += [dict(o, kind="worst") for _, o in sorted(worst, key=lambda x: x[0], reverse=True)]
        return {"case": counts_case, "unit": counts_unit, "overlays": overlays}


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
    """2D panels of a case for an overlay figure (for a volume: the slice with the most anomalous pixels)."""
    if scores.ndim == 3:
        k = int(np.argmax(label.reshape(len(label), -1).sum(axis=1)))
        pick, name = (lambda a: None if a is None else np.asarray(a)[k]), f"{case.name}[slice={k}]"
    else:
        pick, name = (lambda a: None if a is None else np.asarray(a)), case.name
    return {"name": name, "dice": dice, "image": pick(case.image), "map": pick(scores),
            "prediction": pick(prediction), "label": pick(label)}


def _choose_threshold(run: _Run, validation: Iterable[Case] | None, ranking: dict) -> dict:
    """The Dice threshold and how it was chosen."""
    opts = run.options
    if opts.threshold == "oracle":
        if opts.pooling == "pooled":
            s = summarize(ranking["pooled_table"])
            value, objective = s["best_dice_threshold"], s["best_dice"]
        else:
            objective, value = best_mean_dice(ranking["objective_tables"])
        return {"method": "oracle", "value": value, "objective": objective,
                "source": "test labels: an upper bound, not an achievable result"}
    if validation is None:
        raise BlindspotError(f"--threshold {opts.threshold} needs validation cases; pass --val-maps DIR with --val-labels DIR, --val-data, or --val-fraction F.")
    val_run = _Run(validation, opts, 0)
    if opts.threshold == "fpr":
        tables, n_healthy = [], 0
        for case, scores, mask in val_run.processed():
            if case.anomalous:
                continue
            n_healthy += 1
            inside = scores if mask is None else scores[mask]
            if inside.size:
                tables.append(count_table(np.zeros(inside.shape, bool), inside))
        if not tables:
            raise BlindspotError("--threshold fpr needs healthy (normal) validation images; the validation cases are all anomalous.")
        value, achieved = threshold_at_fpr(merge_tables(tables), opts.fpr)
        return {"method": "fpr", "value": value, "target_fpr": opts.fpr, "validation_fpr": achieved,
                "n_validation_cases": n_healthy,
                "source": "healthy validation pixels (inside the brain mask when there is one)"}
    if not val_run.has_labels():
        raise BlindspotError("--threshold val-dice needs pixel labels for the validation cases; pass --val-labels DIR.")
    val_ranking = val_run.ranking_pass(pixel_level=True)
    if opts.pooling == "pooled":
        s = summarize(val_ranking["pooled_table"])
        value, objective = s["best_dice_threshold"], s["best_dice"]
    else:
        objective, value = best_mean_dice(val_ranking["objective_tables"])
    if math.isnan(value):
        raise BlindspotError("--threshold val-dice needs anomalous pixels in the validation labels; the validation cases have none.")
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
    cases : list of Case, or a CaseStream
        The test cases. A list is processed once and kept in memory; a :class:`CaseStream` is
        re-read for each pass (two passes, plus one over ``validation``).
    options : EvaluationOptions
    validation : list of Case, CaseStream or None
        Validation cases for ``threshold="val-dice"`` (labelled) or ``"fpr"`` (its normal cases).
        When None and ``options.val_fraction`` is set, that fraction of the test volumes is held
        out (in-memory lists only).
    n_overlays : int
        Best and worst cases (by Dice at the threshold) kept for overlay figures.

    Returns
    -------
    Evaluation
    """
    if validation is None and options.val_fraction is not None and options.threshold != "oracle":
        if not isinstance(cases, (list, tuple)):
            raise BlindspotError("--val-fraction needs an in-memory case list; pass separate validation maps for a streamed evaluation.")
        cases, validation = split_validation(cases, options.val_fraction, options.seed)
    run = _Run(cases, options, n_overlays)
    has_labels = run.has_labels()
    ranking = run.ranking_pass(pixel_level=has_labels)
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
        table = ranking["pooled_table"]
        if table.n_positive:
            recall, precision, pr_thresholds = pr_curve(table)
            fpr, tpr = roc_curve(table)
            curves = {"recall": recall, "precision": precision, "pr_thresholds": pr_thresholds, "fpr": fpr, "tpr": tpr,
                      "prevalence": table.n_positive / (table.n_positive + table.n_negative)}
        overlays = thresholded["overlays"] if thresholded else []
    else:
        run.notes.append("no pixel labels: only image-level metrics were computed.")
    return Evaluation(options, metrics, per_case, per_unit, curves, overlays, run.notes, len(run.signed))


def _image_metrics(anomalous: np.ndarray, scores: np.ndarray, options: EvaluationOptions, notes: list[str]) -> dict:
    from blindspot.metrics import average_precision, roc_auc

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
        out.update(ap=s["ap"], auroc=s["auroc"], best_dice=s["best_dice"], best_dice_threshold=s["best_dice_threshold"])
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
        row.update(tp=tp, fp=fp, fn=fn, **_rates(tp, fp, fn))
    for row in per_unit:
        tp, fp, fn = thresholded["unit"][row["unit"]]
        row.update(tp=tp, fp=fp, fn=fn, **_rates(tp, fp, fn))
    if options.pooling == "pooled":
        tp, fp, fn = (int(sum(c[k] for c in thresholded["case"])) for k in range(3))
        return {**out, "tp": tp, "fp": fp, "fn": fn, **_rates(tp, fp, fn)}
    units = [u for u in per_unit if u["n_positive"] > 0]
    return {**out, **{k: _nanmean(u[k] for u in units) for k in ("dice", "precision", "recall")}}


# --------------------------------------------------------------------------------------------
# maps from a folder


def _stemmed(folder, what: str) -> dict[str, Path]:
    from blindspot.data.folder import index_by_stem

    return index_by_stem(folder, what)


def _as_case_array(array: np.ndarray, path: Path, axis: int | None) -> np.ndarray:
    """Volumes get their slice axis first (default: 2 for NIfTI, 0 for .npy)."""
    if array.ndim == 2:
        return array
    if axis is None:
        axis = 2 if path.name.lower().endswith((".nii", ".nii.gz")) else 0
    return np.moveaxis(array, axis, 0)


def maps_cases(
    maps: str | Path,
    labels: str | Path | None,
    *,
    masks: str | Path | None = None,
    images: str | Path | None = None,
    axis: int | None = None,
    volume_regex: str | None = None,
    stream: bool = False,
) -> list[Case] | CaseStream:
    """Cases from a folder of maps (NIfTI or ``.npy``), paired by file name with labels, masks, images.

    Every map needs a label file with the same name without extension (any supported type,
    binarised > 0), and every label a map; masks (binarised > 0) and images are optional but,
    when given, needed for every map. Volumes are moved to slice axis first (``axis``: default 2
    for NIfTI, 0 for ``.npy``). ``volume_regex`` takes volume ids from the file names. Pairing is
    checked before any array is read; with ``stream=True`` arrays are read one case at a time.
    """
    from blindspot.data.benchmark import volumes_from_names
    from blindspot.data.folder import read_array

    map_files = _stemmed(maps, "maps")
    label_files = _stemmed(labels, "labels") if labels is not None else None
    others = {"mask": _stemmed(masks, "masks") if masks is not None else None,
              "image": _stemmed(images, "images") if images is not None else None}
    if label_files is not None:
        for key in map_files:
            if key not in label_files:
                raise BlindspotError(f"map '{map_files[key]}' has no label file named '{key}.*' in '{labels}'.")
        for key in label_files:
            if key not in map_files:
                raise BlindspotError(f"label '{label_files[key]}' has no map file named '{key}.*' in '{maps}'.")
    for what, index in others.items():
        if index is not None:
            missing = [k for k in map_files if k not in index]
            if missing:
                raise BlindspotError(f"map '{map_files[missing[0]]}' has no {what} file named '{missing[0]}.*'.")
    keys = list(map_files)
    volumes = volumes_from_names(keys, volume_regex) if volume_regex else keys

    def load(key: str, volume: str) -> Case:
        path = map_files[key]
        scores = read_array(path)
        if scores.dtype.kind == "f" and not np.isfinite(scores).all():
            raise BlindspotError(f"map '{path}' contains NaN or infinite values; anomaly scores must be finite.")
        arrays = {"map": _as_case_array(scores, path, axis)}
        for what, index in (("label", label_files), ("brain", others["mask"]), ("image", others["image"])):
            if index is None:
                continue
            other = read_array(index[key])
            if other.shape != scores.shape:
                raise BlindspotError(f"{'mask' if what == 'brain' else what} '{index[key]}' has shape {other.shape} but map '{path}' has {scores.shape}.")
            arrays[what] = _as_case_array(other > 0 if what in ("label", "brain") else other, index[key], axis)
        anomalous = None if label_files is not None else False
        return Case(name=path.name, volume=volume, anomalous=anomalous, **arrays)

    if stream:
        return CaseStream(lambda: (load(k, v) for k, v in zip(keys, volumes)), has_labels=label_files is not None,
                          description=f"maps folder '{maps}'")
    return [load(k, v) for k, v in zip(keys, volumes)]


# --------------------------------------------------------------------------------------------
# maps from a checkpoint or a baseline on a data set


@dataclass(frozen=True)
class DatasetSpec:
    """A labelled data set to compute maps on (see :func:`blindspot.data.benchmark.load_labelled`).

    ``volumes=True`` (brats layout only) evaluates whole subjects as 3-D cases, read one at a time.
    """

    path: str
    layout: str = "auto"
    split: str | None = None
    modality: str = "flair"
    axis: int = 2
    slices: tuple[int, ...] | None = None
    volumes: bool = False
    preprocessing: "Preprocessing | None" = None
    volume_regex: str | None = None

    @property
    def prep(self):
        from blindspot.data.benchmark import Preprocessing

        return self.preprocessing or Preprocessing()

    def resolved_layout(self) -> str:
        from blindspot.data.benchmark import detect_layout

        return detect_layout(self.path) if self.layout == "auto" else self.layout

    def load(self, *, split: str | None = None):
        from blindspot.data.benchmark import load_labelled

        return load_labelled(self.path, layout=self.resolved_layout(), split=split or self.split, modality=self.modality,
                             axis=self.axis, slices=self.slices, preprocessing=self.prep, volume_regex=self.volume_regex)

    def record(self) -> dict:
        out = asdict(self)
        out["preprocessing"] = asdict(self.prep)
        return out


def _signed_to_map(signed: np.ndarray, positive: bool) -> np.ndarray:
    """|s|, or max(s, 0) with the positive-residual option."""
    return np.maximum(signed, 0) if positive else np.abs(signed)


def dataset_cases(spec: DatasetSpec, make_maps: Callable[[np.ndarray], np.ndarray]) -> list[Case] | CaseStream:
    """Cases of a data set with maps from ``make_maps(images (N, H, W)) -> maps (N, H, W)``.

    2-D images are loaded at once (a list); ``spec.volumes`` streams BraTS subjects as 3-D cases.
    """
    if spec.volumes:
        from blindspot.data.brats import iter_brats_volumes

        layout = spec.resolved_layout()
        if layout != "brats":
            raise BlindspotError(f"--volumes applies to the brats layout (subject folders of NIfTI files); '{spec.path}' has the {layout} layout.")
        split = spec.split or "all"
        iter_brats_volumes(spec.path, modality=spec.modality, axis=spec.axis, split=split, preprocessing=spec.prep)  # checks the layout now

        def generate() -> Iterator[Case]:
            for volume in iter_brats_volumes(spec.path, modality=spec.modality, axis=spec.axis, split=split, preprocessing=spec.prep):
                yield Case(volume.name, make_maps(volume.image), volume.labels, volume.brain, volume.image, volume.name)

        return CaseStream(generate, has_labels=True, description=f"subjects of '{spec.path}'")
    data = spec.load()
    maps = make_maps(data.images)
    return [Case(name, maps[k], None if data.labels is None else data.labels[k], None if data.brain is None else data.brain[k],
                 data.images[k], data.volumes[k], bool(data.anomalous[k])) for k, name in enumerate(data.names)]


def model_map_maker(checkpoint: str | Path, *, positive: bool, batch_size: int = 64, device: str | None = None):
    """``(make_maps, record)``: maps of a trained model (its loss's residual, signed part optional) and its description."""
    from blindspot.checkpoint import load_checkpoint, load_model
    from blindspot.scoring import residual_map
    from blindspot.training import reconstruct

    path = Path(checkpoint)
    record = load_checkpoint(path)
    model = load_model(path, device=device or "cpu")
    input_range = tuple(record["config"].get("input_range", (0.0, 1.0)))
    kind = "l2" if getattr(model, "loss", "l1") == "mse" else "l1"

    def make_maps(images: np.ndarray) -> np.ndarray:
        size = getattr(model, "size", images.shape[-1])
        if images.shape[-2:] != (size, size):
            raise BlindspotError(f"the model of '{path}' takes {size}×{size} images but the data are {images.shape[-2]}×{images.shape[-1]}; pass --resize {size}.")
        recon = reconstruct(model, images, input_range=input_range, batch_size=batch_size, device=device)
        return residual_map(images, recon, kind=kind, positive=positive)

    return make_maps, {"checkpoint": str(path), "model": record["model"], "step": record["step"],
                       "input_range": list(input_range), "residual": kind, "size": getattr(model, "size", None)}


def baseline_map_maker(name: str, *, positive: bool, train: DatasetSpec | None = None):
    """``(make_maps, record)`` of a baseline (:mod:`blindspot.baselines`)."""
    from blindspot.baselines import BASELINES, ZScore

    if name not in BASELINES:
        raise BlindspotError(f"--baseline must be one of {', '.join(BASELINES)}; got '{name}'.")
    if name == "image":
        return (lambda images: _signed_to_map(np.asarray(images, np.float32), positive)), {"baseline": "image"}
    if train is None:
        raise BlindspotError("the zscore baseline needs healthy training images; pass --train-data PATH (or use a layout with a train split).")
    layout = train.resolved_layout()
    train_set = train.load(split=train.split or ("train" if layout in ("benchmark", "brats2021", "folder") else "all"))
    normal = train_set.images[~train_set.anomalous]
    zscore = ZScore.fit(normal)
    record = {"baseline": "zscore", "train_data": train.record(), "n_train_images": zscore.n_images, "min_std": zscore.min_std}
    return (lambda images: _signed_to_map(zscore.maps(images), positive)), record


# --------------------------------------------------------------------------------------------
# output files


def _clean(value):
    """JSON-ready values: NaN and infinities become null, tuples lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _thin(*arrays: np.ndarray, limit: int = 20000) -> tuple[np.ndarray, ...]:
    """At most ``limit`` evenly spaced points (first and last kept), for drawing only."""
    n = len(arrays[0])
    if n <= limit:
        return arrays
    index = np.unique(np.linspace(0, n - 1, limit).round().astype(int))
    return tuple(a[index] for a in arrays)


def _image_curves(evaluation: Evaluation) -> dict | None:
    labels = np.array([r["anomalous"] for r in evaluation.per_case], bool)
    if labels.all() or not labels.any():
        return None
    table = count_table(labels, np.array([r["image_score"] for r in evaluation.per_case]))
    recall, precision, _ = pr_curve(table)
    fpr, tpr = roc_curve(table)
    return {"recall": recall, "precision": precision, "fpr": fpr, "tpr": tpr, "prevalence": labels.mean()}


def plot_curves(evaluation: Evaluation, kind: str):
    """PR (``kind="pr"``) or ROC (``"roc"``) curves: pooled pixels and image scores, with AP / AUROC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.4), layout="constrained")
    sets = [("pixels (pooled)", evaluation.curves, evaluation.metrics.get("pixel", {})),
            ("images", _image_curves(evaluation), evaluation.metrics["image"])]
    for label, curves, metrics in sets:
        if not curves:
            continue
        if kind == "pr":
            recall, precision = _thin(curves["recall"], curves["precision"])
            (line,) = ax.step(np.r_[0, recall], np.r_[precision[0], precision], where="pre", label=f"{label}: AP {metrics.get('ap', float('nan')):.3f}")
            ax.axhline(curves["prevalence"], color=line.get_color(), lw=0.8, ls=":")
        else:
            fpr, tpr = _thin(curves["fpr"], curves["tpr"])
            ax.plot(fpr, tpr, label=f"{label}: AUROC {metrics.get('auroc', float('nan')):.3f}")
    if kind == "pr":
        ax.set(xlabel="recall", ylabel="precision", title="precision-recall (dotted: prevalence)")
    else:
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="lower left" if kind == "pr" else "lower right")
    return fig


def plot_overlay(item: dict, threshold: float):
    """Image, map, thresholded map and ground truth of one case, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(11, 3.2), layout="constrained")
    if item["image"] is not None:
        axes[0].imshow(item["image"], cmap="gray")
        axes[0].contour(item["label"], levels=[0.5], colors="lime", linewidths=0.7)
    else:
        axes[0].text(0.5, 0.5, "no image\n(--images DIR)", ha="center", va="center")
    shown = axes[1].imshow(item["map"], cmap="magma")
    fig.colorbar(shown, ax=axes[1], shrink=0.8)
    axes[2].imshow(item["prediction"], cmap="gray", vmin=0, vmax=1)
    axes[3].imshow(item["label"], cmap="gray", vmin=0, vmax=1)
    titles = ["image (green: ground truth)", "anomaly map", f"map ≥ {threshold:.4g}", "ground truth"]
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"{item['kind']}: {item['name']} (Dice {item['dice']:.3f})", fontsize=10)
    return fig


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def summary_markdown(evaluation: Evaluation, config: dict) -> str:
    """The human-readable summary: protocol, metrics, threshold, notes."""
    from blindspot.report import markdown_table

    m = evaluation.metrics
    lines = [f"# Evaluation of {config['source'].get('description', 'anomaly maps')}", ""]
    lines += [f"{m['n_cases']} cases; preset `{config.get('preset') or 'none'}`; blindspot {config['versions']['blindspot']}.", ""]
    lines += ["## Protocol", "", markdown_table(["option", "value"], [[k, f"`{v}`"] for k, v in asdict(evaluation.options).items()]), ""]
    image = m["image"]
    lines += ["## Image level", "", markdown_table(
        ["score", "normal", "anomalous", "AUROC", "AP"],
        [[image["score"], image["n_normal"], image["n_anomalous"], _fmt(image["auroc"]), _fmt(image["ap"])]]), ""]
    if "pixel" in m:
        pixel, threshold, at = m["pixel"], m["threshold"], m["at_threshold"]
        unit = "pooled pixels" if pixel["pooling"] == "pooled" else f"mean over {pixel['n_units_with_positive']} {pixel['pooling']} units with anomalous pixels"
        rows = [["AP", _fmt(pixel["ap"])], ["AUROC", _fmt(pixel["auroc"])], ["best Dice (exact, oracle: upper bound)", _fmt(pixel["best_dice"])]]
        if "bounds" in pixel:
            rows += [[f"exact {k} lies in", f"[{_fmt(lo)}, {_fmt(hi)}]"] for k, (lo, hi) in pixel["bounds"].items()]
        lines += [f"## Pixel level ({unit}; {pixel['accumulator']} counts)", "", markdown_table(["metric", "value"], rows), ""]
        lines += ["## At the threshold", "",
                  f"Threshold `{_fmt(threshold['value'])}` chosen by `{threshold['method']}` ({threshold['source']})"
                  + (f", components < {at['min_component_size']} pixels removed" if at["min_component_size"] > 1 else "") + ".", "",
                  markdown_table(["Dice", "precision", "recall"], [[_fmt(at["dice"]), _fmt(at["precision"]), _fmt(at["recall"])]]), ""]
    if evaluation.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in evaluation.notes] + [""]
    lines += ["Per-case values: `per_case.csv`; all numbers and the protocol: `metrics.json`; config: `config.json`.", ""]
    return "\n".join(lines)


def write_evaluation(folder: Path, evaluation: Evaluation, config: dict) -> None:
    """Write every result file of an evaluation into ``folder`` (see ``docs/evaluation.md``)."""
    from blindspot.report import save_figure
    from blindspot.results import csv_text, save_npz, write_json

    folder = Path(folder)
    record = {"protocol": asdict(evaluation.options), "preset": config.get("preset"), "metrics": evaluation.metrics,
              "notes": evaluation.notes, "seed": evaluation.options.seed, "versions": config["versions"]}
    write_json(folder / "metrics.json", _clean(record))
    write_json(folder / "config.json", _clean(config))
    (folder / "per_case.csv").write_text(csv_text(evaluation.per_case))
    if evaluation.per_unit:
        (folder / f"per_{evaluation.options.pooling}.csv").write_text(csv_text(evaluation.per_unit))
    arrays = {f"pixel_{k}": v for k, v in evaluation.curves.items()}
    arrays["image_scores"] = np.array([r["image_score"] for r in evaluation.per_case])
    arrays["image_labels"] = np.array([r["anomalous"] for r in evaluation.per_case], bool)
    save_npz(folder / "curves.npz", **arrays)
    (folder / "summary.md").write_text(summary_markdown(evaluation, config))
    if evaluation.curves or _image_curves(evaluation):
        save_figure(plot_curves(evaluation, "pr"), folder / "pr_curve.png")
        save_figure(plot_curves(evaluation, "roc"), folder / "roc_curve.png")
    if evaluation.overlays:
        (folder / "overlays").mkdir(exist_ok=True)
        threshold = evaluation.metrics["threshold"]["value"]
        counters: dict[str, int] = {}
        for item in evaluation.overlays:
            counters[item["kind"]] = counters.get(item["kind"], 0) + 1
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in item["name"])
            save_figure(plot_overlay(item, threshold), folder / "overlays" / f"{item['kind']}_{counters[item['kind']]}_{safe}.png")


def run_evaluation(
    out: str | Path,
    *,
    options: EvaluationOptions,
    preset: str | None = None,
    maps: str | Path | None = None,
    labels: str | Path | None = None,
    masks: str | Path | None = None,
    images: str | Path | None = None,
    val_maps: str | Path | None = None,
    val_labels: str | Path | None = None,
    val_masks: str | Path | None = None,
    checkpoint: str | Path | None = None,
    baseline: str | None = None,
    data: DatasetSpec | None = None,
    val_data: DatasetSpec | None = None,
    train_data: DatasetSpec | None = None,
    axis: int | None = None,
    volume_regex: str | None = None,
    stream: bool = False,
    batch_size: int = 64,
    device: str | None = None,
    n_overlays: int = 3,
    overwrite: bool = False,
) -> Path:
    """``blindspot evaluate``: build the cases, evaluate them, write the result folder ``out``.

    Exactly one map source: ``maps`` (+ ``labels``, optional ``masks``/``images``), ``checkpoint``
    on ``data``, or ``baseline`` on ``data``. Validation for threshold choices: ``val_maps`` (+
    ``val_labels``/``val_masks``) for maps, ``val_data`` for a checkpoint or a baseline, or
    ``options.val_fraction``.
    """
    from blindspot.results import check_out_dir, provenance, result_folder

    chosen = [name for name, value in (("--maps", maps), ("--checkpoint", checkpoint), ("--baseline", baseline)) if value is not None]
    if len(chosen) != 1:
        raise BlindspotError(f"give exactly one map source: --maps DIR, --checkpoint FILE or --baseline NAME; got {', '.join(chosen) or 'none'}.")
    check_out_dir(out, overwrite=overwrite)
    validation = None
    if maps is not None:
        if labels is None:
            raise BlindspotError("--maps needs --labels DIR with one label file per map (same name).")
        if data is not None or val_data is not None:
            raise BlindspotError("--data and --val-data apply to --checkpoint and --baseline, not to --maps.")
        cases = maps_cases(maps, labels, masks=masks, images=images, axis=axis, volume_regex=volume_regex, stream=stream)
        source = {"kind": "maps", "maps": str(maps), "labels": str(labels), "masks": masks and str(masks),
                  "images": images and str(images), "description": f"maps in `{maps}`"}
        if val_maps is not None:
            validation = maps_cases(val_maps, val_labels, masks=val_masks, axis=axis, volume_regex=volume_regex, stream=stream)
            source["validation"] = {"maps": str(val_maps), "labels": val_labels and str(val_labels), "masks": val_masks and str(val_masks)}
        elif val_labels is not None or val_masks is not None:
            raise BlindspotError("--val-labels and --val-masks need --val-maps DIR.")
    else:
        if data is None:
            raise BlindspotError(f"{chosen[0]} needs --data PATH (the data set to compute maps on).")
        if val_maps is not None:
            raise BlindspotError("--val-maps applies to --maps; with --checkpoint or --baseline pass --val-data PATH.")
        if checkpoint is not None:
            if data.prep.resize is None:
                from blindspot.checkpoint import load_checkpoint

                size = load_checkpoint(checkpoint)["model"].get("size")
                data = replace(data, preprocessing=replace(data.prep, resize=size))
                val_data = val_data and replace(val_data, preprocessing=replace(val_data.prep, resize=size))
            make_maps, record = model_map_maker(checkpoint, positive=options.positive_residual, batch_size=batch_size, device=device)
            source = {"kind": "checkpoint", **record, "description": f"checkpoint `{checkpoint}` on `{data.path}`"}
        else:
            layout = data.resolved_layout()
            train = train_data or (replace(data, split=None, volumes=False) if layout in ("benchmark", "brats2021", "folder") else None)
            make_maps, record = baseline_map_maker(baseline, positive=options.positive_residual, train=train)
            source = {"kind": "baseline", **record, "description": f"the {baseline} baseline on `{data.path}`"}
        cases = dataset_cases(data, make_maps)
        source["data"] = data.record()
        if val_data is not None:
            if val_data.volumes and val_data.resolved_layout() != "brats":  # e.g. healthy MOOD slices for an FPR threshold
                val_data = replace(val_data, volumes=False)
            validation = dataset_cases(val_data, make_maps)
            source["validation"] = val_data.record()
    evaluation = evaluate(cases, options, validation=validation, n_overlays=n_overlays)
    if maps is not None and options.positive_residual and evaluation.n_signed == 0:
        evaluation.notes.append("--positive-residual had no effect: no map has a negative value; it needs signed residuals x − x̂.")
    config = {"command": "evaluate", "preset": preset, "protocol": asdict(options), "source": source,
              "seed": options.seed, "cases": [r["name"] for r in evaluation.per_case], "versions": provenance()}
    with result_folder(out, overwrite=overwrite) as folder:
        write_evaluation(folder, evaluation, config)
    return Path(out)

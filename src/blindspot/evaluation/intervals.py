"""Bootstrap intervals of an evaluation: what each metric would be on resampled test cases.

Every metric :func:`~blindspot.evaluation.evaluate` reports gets a percentile interval from
resampling the test *cases* with replacement (the *volumes* with ``pooling="volume"``; never
pixels), ``options.bootstrap`` times, seeded by ``options.seed``:

* image AUROC and AP: the image scores of the drawn cases (one count-table row each);
* pooled pixel AP, AUROC and best Dice: the weighted merge of the drawn cases' count tables
  (:class:`blindspot.metrics.bootstrap.CaseTables`), recomputing the best Dice's threshold in each
  resample; with per-volume or per-image pooling, the mean over the drawn units;
* Dice, precision and recall at the chosen threshold: the drawn cases' counts at that threshold
  (held fixed: the interval is over the test cases, not over the choice of the threshold).

Point estimates are never changed. :class:`CaseData` is everything this needs, and what
``bootstrap.npz`` in an evaluation folder holds, so ``blindspot compare`` and the latent sweep can
resample several evaluations of the same cases together (paired differences).

Pooled pixel tables are exact while they are small: the cases' tables hold at most
:data:`EXACT_ROWS` rows in all and their shared rows cost at most :data:`EXACT_COST`
(rows × (cases + 64)). Beyond that (e.g. 10⁸ float32 pixels with 10⁶ distinct anomalous scores) the
tables are binned on float32 bit patterns of :data:`BINNED_BITS` bits (relative bin width 2⁻¹¹; the
evaluation's own bits with ``accumulator="binned"``; fewer bits while the cost exceeds :data:`BINNED_COST`);
which one was used is recorded. On 10⁷ float32 pixels the 20-bit intervals differ from the exact ones by
about 1e-4 (``benchmarks/bootstrap.md``), far inside the intervals' width.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blindspot.errors import BlindspotError
from blindspot.metrics.bootstrap import (
    CaseTables,
    bin_table,
    check_resample_memory,
    multiplicities,
    percentile_interval,
    resample_indices,
)
from blindspot.metrics.tables import CountTable
from blindspot.results import save_npz

__all__ = ["BINNED_BITS", "BINNED_COST", "EXACT_COST", "EXACT_ROWS", "CaseData", "TableCollector", "add_intervals", "load_case_data",
           "resample_values", "resampled_metrics"]

#: Rows of the cases' exact count tables kept in memory for exact resampling (about 20 bytes each).
EXACT_ROWS = 1 << 22
#: Shared rows × (cases + 64) up to which resamples use exact tables (about 3 s for 1,000 resamples on 2 cores).
EXACT_COST = 1 << 24
#: Float32 bit-pattern bins of the tables beyond that.
BINNED_BITS = 20
#: Shared rows × (cases + 64) of binned tables above which fewer bits are used (2 at a time, down to 12).
BINNED_COST = 1 << 27

#: The metrics that get intervals, by section of ``metrics.json``.
SECTIONS = {"image": ("auroc", "ap"), "pixel": ("ap", "auroc", "best_dice"), "at_threshold": ("dice", "precision", "recall")}


class TableCollector:
    """The count table of every test case, kept as the ranking pass computes them (compact beyond a size)."""

    def __init__(self, pooling: str, bits: int | None = None) -> None:
        self.pooling = pooling
        self.fixed_bits = bits  # the evaluation's binned accumulator
        self.binned_bits = bits
        self.tables: list[CountTable | None] = []
        self.names: list[str] = []
        self.volumes: list[str] = []
        self.parts: list[tuple[str, int]] = []  # (pooling unit, case order) of units inside cases
        self.rows = 0

    def add(self, case, table: CountTable | None, units: list[str]) -> None:
        """Record a checked case, its table (None without pixel metrics) and its pooling units."""
        order = len(self.names)
        self.names.append(case.name)
        self.volumes.append(case.volume)
        if self.pooling != "pooled":
            self.parts += [(unit, order) for unit in units]
        if table is not None and self.binned_bits is None:
            self.rows += len(table)
            if self.rows > EXACT_ROWS:  # too many rows to keep exactly: bin what is kept, and what comes
                self.binned_bits = BINNED_BITS
                self.tables = [None if t is None else bin_table(t, BINNED_BITS) for t in self.tables]
        if table is not None and self.binned_bits is not None:
            table = bin_table(table, self.binned_bits)
        self.tables.append(table)

    def case_tables(self) -> CaseTables | None:
        """The shared-row tables: exact when affordable, else binned (fewer bits while still too large)."""
        if all(t is None for t in self.tables):
            return None
        if self.binned_bits is None:
            exact = CaseTables.from_tables(self.tables)
            if exact.n_rows * (exact.n_cases + 64) <= EXACT_COST:
                return exact
        bits = self.fixed_bits or BINNED_BITS
        while True:
            binned = CaseTables.from_tables(self.tables, bits=bits)
            if binned.n_rows * (binned.n_cases + 64) <= BINNED_COST or bits <= 12:
                return binned
            bits -= 2


@dataclass
class CaseData:
    """Per-case values of one evaluation: what its bootstrap (and ``blindspot compare``) resamples.

    Cases are in the evaluation's order. ``group`` is the resampled unit of each case (an index
    into ``group_names``: the case itself, or its volume with ``pooling="volume"``).
    """

    names: list[str]
    volumes: list[str]
    group: np.ndarray
    group_names: list[str]
    resampled: str  # "cases" or "volumes"
    anomalous: np.ndarray
    image_scores: np.ndarray
    n_pixels: np.ndarray
    pooling: str
    best_dice_rule: str = "exact"
    tables: CaseTables | None = None
    counts: np.ndarray | None = None  # (cases, 3): TP, FP, FN at the threshold
    parts: dict = field(default_factory=dict)  # per pooling unit: group, n_positive, ap, auroc, best_dice, dice, ...

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    @classmethod
    def from_evaluation(cls, collector: TableCollector, per_case: list[dict], per_unit: list[dict], thresholded,
                        options) -> "CaseData":
        by_volume = options.pooling == "volume"
        keys = collector.volumes if by_volume else collector.names
        group_names = list(dict.fromkeys(keys))
        index = {name: k for k, name in enumerate(group_names)}
        data = cls(names=list(collector.names), volumes=list(collector.volumes), group=np.array([index[k] for k in keys], np.int64),
                   group_names=group_names, resampled="volumes" if by_volume else "cases",
                   anomalous=np.array([r["anomalous"] for r in per_case], bool),
                   image_scores=np.array([r["image_score"] for r in per_case], np.float64),
                   n_pixels=np.array([r["n_pixels"] for r in per_case], np.int64), pooling=options.pooling,
                   best_dice_rule=options.best_dice_rule, tables=collector.case_tables())
        if thresholded is not None:
            data.counts = np.array(thresholded["case"], np.int64).reshape(-1, 3)
        if per_unit:
            case_of = dict(collector.parts)
            parts = {"name": [u["unit"] for u in per_unit],
                     "group": np.array([data.group[case_of[u["unit"]]] for u in per_unit], np.int64)}
            for key in ("n_positive", "pixel_ap", "pixel_auroc", "best_dice", "dice", "precision", "recall"):
                parts[key] = np.array([u.get(key, np.nan) for u in per_unit], np.float64)
            data.parts = parts
        return data

    # ---------------------------------------------------------------- storage
    def save(self, path: str | Path) -> None:
        """Write ``bootstrap.npz`` (documented in ``docs/evaluation.md``)."""
        meta = {"format": "blindspot-bootstrap/1", "resampled": self.resampled, "pooling": self.pooling,
                "best_dice_rule": self.best_dice_rule}
        arrays = {"meta": np.array(json.dumps(meta)), "names": np.array(self.names, dtype=str),
                  "volumes": np.array(self.volumes, dtype=str), "group": self.group,
                  "group_names": np.array(self.group_names, dtype=str), "anomalous": self.anomalous,
                  "image_scores": self.image_scores, "n_pixels": self.n_pixels}
        if self.tables is not None:
            arrays.update(self.tables.arrays())
        if self.counts is not None:
            arrays["counts_at_threshold"] = self.counts
        for key, value in self.parts.items():
            arrays[f"part_{key}"] = np.array(value, dtype=str) if key == "name" else value
        save_npz(path, **arrays)


def load_case_data(path: str | Path) -> CaseData:
    """Read a ``bootstrap.npz`` written by :meth:`CaseData.save`, with a clear error for anything else."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {k: saved[k] for k in saved.files}
        meta = json.loads(str(arrays["meta"]))
        data = CaseData(names=arrays["names"].tolist(), volumes=arrays["volumes"].tolist(), group=arrays["group"].astype(np.int64),
                        group_names=arrays["group_names"].tolist(), resampled=meta["resampled"],
                        anomalous=arrays["anomalous"].astype(bool), image_scores=arrays["image_scores"].astype(np.float64),
                        n_pixels=arrays["n_pixels"].astype(np.int64), pooling=meta["pooling"],
                        best_dice_rule=meta["best_dice_rule"])
    except FileNotFoundError:
        raise BlindspotError(f"'{path}' does not exist; the evaluation was made with `bootstrap` 0 or by an older blindspot: "
                             "evaluate again to resample it.") from None
    except (OSError, KeyError, ValueError) as err:
        raise BlindspotError(f"'{path}' is not a readable blindspot bootstrap file ({err}).") from None
    if "tables_shape" in arrays:
        data.tables = CaseTables.from_arrays(arrays)
    if "counts_at_threshold" in arrays:
        data.counts = arrays["counts_at_threshold"].astype(np.int64)
    parts = {k[len("part_"):]: v for k, v in arrays.items() if k.startswith("part_")}
    if parts:
        parts["name"] = parts["name"].tolist()
        data.parts = parts
    return data


# --------------------------------------------------------------------------------------------
# resampled metrics


def _weighted_nanmean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per resample, the weighted mean of the defined values (nan if none is drawn)."""
    defined = ~np.isnan(values)
    w = weights[:, defined]
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (w @ values[defined]) / total, np.nan)


def _rates(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`blindspot.metrics.rates`, vectorised."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"dice": np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
                "precision": np.where(tp + fp > 0, tp / (tp + fp), 0.0),
                "recall": np.where(tp + fn > 0, tp / (tp + fn), np.nan)}


def image_tables(data: CaseData) -> CaseTables:
    """One count-table row per case: its image score, counted as a positive when the case is anomalous."""
    rows = [CountTable(np.array([s]), np.array([int(a)]), np.array([1 - int(a)])) for s, a in zip(data.image_scores, data.anomalous)]
    return CaseTables.from_tables(rows)


def resampled_metrics(data: CaseData, weights: np.ndarray, image: CaseTables | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Every metric of every resample, by section of ``metrics.json``.

    Parameters
    ----------
    data : CaseData
    weights : array of shape (B, data.n_groups)
        Multiplicity of each resampled unit in each resample.
    image : CaseTables, optional
        :func:`image_tables` of ``data``, when already built.
    """
    case_weights = weights[:, data.group]
    out: dict[str, dict[str, np.ndarray]] = {}
    image = image if image is not None else image_tables(data)
    m = image.metrics(case_weights)
    n_anomalous = case_weights @ data.anomalous.astype(np.float64)
    one_class = (n_anomalous == 0) | (n_anomalous == case_weights.sum(axis=1))
    out["image"] = {"auroc": np.where(one_class, np.nan, m["auroc"]), "ap": np.where(one_class, np.nan, m["ap"])}
    if data.pooling == "pooled":
        if data.tables is not None:
            pixel = data.tables.metrics(case_weights)
            key = "best_dice_exact" if data.best_dice_rule == "benchmark" else "best_dice"
            out["pixel"] = {"ap": pixel["ap"], "auroc": pixel["auroc"], key: pixel["best_dice"]}
        if data.counts is not None:
            tp, fp, fn = (case_weights @ data.counts[:, k].astype(np.float64) for k in range(3))
            out["at_threshold"] = _rates(tp, fp, fn)
    elif data.parts:
        parts = data.parts
        with_positive = parts["n_positive"] > 0
        part_weights = weights[:, parts["group"][with_positive]]
        def mean(key):
            return _weighted_nanmean(parts[key][with_positive], part_weights)
        out["pixel"] = {"ap": mean("pixel_ap"), "auroc": mean("pixel_auroc"), "best_dice": mean("best_dice")}
        if data.counts is not None:
            out["at_threshold"] = {k: mean(k) for k in ("dice", "precision", "recall")}
    return out


def resample_values(data: CaseData) -> int:
    """Float64 values :func:`resampled_metrics` holds per resample: the cases' (and units') weights and about 32
    metric distributions."""
    return len(data.names) + len(data.parts.get("name", ())) + 32


def add_intervals(metrics: dict, data: CaseData, *, n_resamples: int, confidence: float, seed: int) -> None:
    """Put the percentile interval of every metric next to it in ``metrics`` (``intervals`` of each section).

    Refused first when the resamples do not fit in memory (:func:`resample_values`).
    """
    check_resample_memory(data.n_groups, n_resamples, resample_values(data), unit=data.resampled[:-1])
    indices = resample_indices(data.n_groups, n_resamples, seed)
    distributions = resampled_metrics(data, multiplicities(indices, data.n_groups))
    undefined = {}
    for section, values in distributions.items():
        if section not in metrics:
            continue
        intervals = {}
        for name, distribution in values.items():
            point = metrics[section].get(name)
            if point is None or (isinstance(point, float) and math.isnan(point)):
                continue
            intervals[name] = list(percentile_interval(distribution, confidence))
            missing = int(np.isnan(distribution).sum())
            if missing:
                undefined[f"{section}.{name}"] = missing
        if intervals:
            metrics[section]["intervals"] = intervals
    metrics["bootstrap"] = {
        "method": "percentile", "n_resamples": n_resamples, "confidence": confidence, "seed": seed,
        "resampled": data.resampled, "n_resampled": data.n_groups,
        "pixel_tables": None if data.tables is None or data.pooling != "pooled" else data.tables.resolution,
        "undefined_resamples": undefined,
    }

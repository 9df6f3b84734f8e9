"""Every protocol choice of an evaluation, its presets, and which options apply to which choices."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

from blindspot.errors import BlindspotError
from blindspot.metrics.bootstrap import check_bootstrap
from blindspot.scoring import IMAGE_SCORES

__all__ = ["ACCUMULATORS", "BEST_DICE_RULES", "POOLINGS", "PRESETS", "THRESHOLDS", "EvaluationOptions", "make_options",
           "reads_masks"]

POOLINGS = ("pooled", "volume", "image")
THRESHOLDS = ("oracle", "val-dice", "fpr")
ACCUMULATORS = ("exact", "binned")
#: ``exact``: the maximum over every distinct threshold; ``benchmark``: the MedIAnomaly benchmark's
#: published rule (200 rank-spaced thresholds, strict ``>``), to put numbers next to its tables.
BEST_DICE_RULES = ("exact", "benchmark")

_BENCHMARK = dict(image_score="mean", pooling="pooled", threshold="oracle", positive_residual=False, mask_erosion=None,
                  median_size=0, min_component_size=0)
#: Named conventions; options not named keep their defaults, and explicit options override them.
PRESETS: dict[str, dict] = {
    # MedIAnomaly benchmark (Cai et al.): mean map as image score, all test pixels pooled, oracle
    # best Dice (exact maximum), no post-processing.
    "benchmark": _BENCHMARK,
    # The same, with the benchmark's published 200-threshold best-Dice rule.
    "benchmark-compat": {**_BENCHMARK, "best_dice_rule": "benchmark"},
    # Brain-MRI practice: positive residual, brain mask eroded 3 iterations, median filter 5 (over the
    # case's own axes), components < 20 pixels removed, threshold = best Dice on a validation split.
    "brain-mri": dict(positive_residual=True, mask_erosion=3, median_size=5, median_dims=None, min_component_size=20,
                      threshold="val-dice"),
}

#: Options that only act under another choice: (option, the choice, its description).
_APPLIES = (
    ("fpr", lambda o: o.threshold == "fpr", "`threshold` fpr"),
    ("val_fraction", lambda o: o.threshold != "oracle", "`threshold` val-dice or fpr"),
    ("top_percent", lambda o: o.image_score == "top-k", "`image_score` top-k"),
    ("bits", lambda o: o.accumulator == "binned", "`accumulator` binned"),
    ("median_dims", lambda o: o.median_size > 1, "a `median_size` above 1"),
    ("confidence", lambda o: o.bootstrap > 0, "a `bootstrap` above 0"),
    ("best_dice_rule", lambda o: o.best_dice_rule == "exact" or (o.pooling == "pooled" and o.accumulator == "exact"),
     "`pooling` pooled with the exact `accumulator`"),
)


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
        Pixel metrics over all pixels together, or per volume / per 2-D image then averaged over
        the units with anomalous pixels.
    threshold : {"oracle", "val-dice", "fpr"}
        How the Dice threshold is chosen: on the test labels (upper bound), as the best Dice on a
        labelled validation split, or at a false-positive rate on healthy validation images.
    fpr : float
        Target false-positive rate of ``threshold="fpr"``, in PERCENT, in (0, 100) (1, 5, 10 in papers).
    positive_residual : bool
        Keep only positive values (x − x̂ > 0) of signed residual maps.
    mask_erosion : int or None
        None: maps are not masked; k >= 0: maps are multiplied by the brain mask eroded k times.
    median_size : int
        Median filter window (0 or 1: off).
    median_dims : int or None
        Axes the median filter spans: 2 (each slice) or 3 (volumes); None: the case's own.
    min_component_size : int
        Connected components of the thresholded map smaller than this are removed (0: off).
    accumulator : {"exact", "binned"}
        Pooled pixel counts: exact (sklearn-equal) or float32-bit-pattern histograms of ``bits`` bits.
    bits : int
        Histogram resolution of the binned accumulator (relative bin width 2^-(bits − 9)).
    best_dice_rule : {"exact", "benchmark"}
        The oracle best Dice: the exact maximum over every threshold (default), or the benchmark's
        200-threshold rule (pooled exact counts only); both are reported with the benchmark rule.
    val_fraction : float or None
        Hold out this fraction of the test volumes (seeded) as the validation split.
    seed : int
        Seed of the validation hold-out, of a synthetic test set and of the bootstrap resamples.
    bootstrap : int
        Resamples of the test cases (volumes with ``pooling="volume"``) for the percentile interval
        of every metric (:mod:`blindspot.evaluation.intervals`); 0: no intervals.
    confidence : float
        Level of those intervals, in (0, 1).
    """

    image_score: str = "mean"
    top_percent: float = 1.0
    pooling: str = "pooled"
    threshold: str = "oracle"
    fpr: float = 5.0
    positive_residual: bool = False
    mask_erosion: int | None = None
    median_size: int = 0
    median_dims: int | None = None
    min_component_size: int = 0
    accumulator: str = "exact"
    bits: int = 20
    best_dice_rule: str = "exact"
    val_fraction: float | None = None
    seed: int = 0
    bootstrap: int = 1000
    confidence: float = 0.95

    def __post_init__(self) -> None:
        def bad(option: str, expected: str, value) -> BlindspotError:
            return BlindspotError(f"`{option}` must be {expected}; got {value!r}.")

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if self.image_score not in IMAGE_SCORES:
            raise bad("image_score", f"one of {', '.join(IMAGE_SCORES)}", self.image_score)
        if not 0 < self.top_percent <= 100:
            raise bad("top_percent", "a percentage in (0, 100]", self.top_percent)
        if self.pooling not in POOLINGS:
            raise bad("pooling", f"one of {', '.join(POOLINGS)}", self.pooling)
        if self.threshold not in THRESHOLDS:
            raise bad("threshold", f"one of {', '.join(THRESHOLDS)}", self.threshold)
        if not 0 < self.fpr < 100:
            raise bad("fpr", "a percentage in (0, 100) (e.g. 5 for 5 %)", self.fpr)
        if self.mask_erosion is not None and not (is_int(self.mask_erosion) and self.mask_erosion >= 0):
            raise bad("mask_erosion", "an integer >= 0", self.mask_erosion)
        if not (is_int(self.median_size) and self.median_size >= 0):
            raise bad("median_size", "an integer >= 0", self.median_size)
        if self.median_dims not in (None, 2, 3):
            raise bad("median_dims", "2 or 3", self.median_dims)
        if not (is_int(self.min_component_size) and self.min_component_size >= 0):
            raise bad("min_component_size", "an integer >= 0", self.min_component_size)
        if self.accumulator not in ACCUMULATORS:
            raise bad("accumulator", f"one of {', '.join(ACCUMULATORS)}", self.accumulator)
        if not (is_int(self.bits) and 10 <= self.bits <= 24):
            raise bad("bits", "an integer in [10, 24]", self.bits)
        if self.best_dice_rule not in BEST_DICE_RULES:
            raise bad("best_dice_rule", f"one of {', '.join(BEST_DICE_RULES)}", self.best_dice_rule)
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise bad("val_fraction", "a fraction in (0, 1)", self.val_fraction)
        if not (is_int(self.seed) and self.seed >= 0):
            raise bad("seed", "an integer >= 0", self.seed)
        check_bootstrap(self.bootstrap, self.confidence)


def reads_masks(options: EvaluationOptions, *, validation: bool = False) -> bool:
    """Whether the protocol reads the brain masks of its test (or ``validation``) cases.

    Masks act through masking (``mask_erosion``), the ``mask-mean`` image score (test cases) and the
    healthy pixels of ``threshold`` fpr (validation cases, held out of the test cases by ``val_fraction``);
    anywhere else they change nothing.
    """
    fpr = options.threshold == "fpr" and (validation or options.val_fraction is not None)
    return options.mask_erosion is not None or fpr or (not validation and options.image_score == "mask-mean")


def make_options(preset: str | None = None, **overrides) -> EvaluationOptions:
    """Options of a preset (or the defaults) with explicit options on top.

    Overrides set to None are ignored (an option that was not given), except ``mask_erosion`` and
    ``median_dims``, whose None is meaningful: pass them only when set. An explicit option that has
    no effect under the resulting protocol (e.g. ``fpr`` without ``threshold="fpr"``) is refused,
    and an ``fpr`` below 1 % gets a warning that it is a percentage.

    Examples
    --------
    >>> make_options("brain-mri", threshold="fpr").median_size
    5
    """
    if preset is not None and preset not in PRESETS:
        raise BlindspotError(f"`preset` must be one of {', '.join(PRESETS)}; got '{preset}'.")
    names = {f.name for f in fields(EvaluationOptions)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise BlindspotError(f"unknown evaluation option '{unknown[0]}'; known: {', '.join(sorted(names))}.")
    given = {k: v for k, v in overrides.items() if v is not None or k in ("mask_erosion", "median_dims")}
    options = EvaluationOptions(**{**PRESETS.get(preset or "", {}), **given})
    for name, applies, condition in _APPLIES:
        if name in given and not applies(options):
            raise BlindspotError(f"`{name}` has no effect here: it applies with {condition}.")
    if "fpr" in given and options.fpr < 1:
        warnings.warn(f"`fpr` is a percentage: {options.fpr:g} means {options.fpr:g} % of healthy pixels "
                      f"(for {options.fpr * 100:g} % give {options.fpr * 100:g}).", UserWarning, stacklevel=2)
    return options

"""The latent-size sweep of Cai et al. (MICCAI 2024): train an AE for every latent size d, evaluate each.

Every (d, repeat k) run trains in its own folder ``OUT/runs/d{d}-r{k}`` with seed ``seed + k`` (the
benchmark's script wrote every d into one folder, so its runs overwrote each other) on the healthy
training split of the data. The sweep resumes at the granularity of training steps: a run whose
``last.pt`` is at the final step and whose ``evaluation.json`` exists is skipped, a finished run is
only evaluated, and any other run resumes training from its last checkpoint.

Each run is evaluated by the one evaluation protocol (:mod:`blindspot.evaluation`, preset
``benchmark``) on the test split of the same data, prepared as the model was trained: its own
labels (pixel labels where the layout has them, image labels only otherwise), or, for a source
without labels (the embedded template, healthy NIfTI volumes), the synthetic test set
(:func:`blindspot.anomalies.synthetic_test_set`). Its numbers therefore equal
``blindspot evaluate --checkpoint RUN/last.pt --data SAME --preset benchmark``. The reconstruction
error of a group of test images is the mean of their image scores (their mean per-pixel loss, in
[0, 1] units).

On a Dask cluster (``execution``, :mod:`blindspot.execution`) every unfinished (d, repeat) run is one
task, tagged ``GPU=1`` when a CUDA device is asked for, so that a GPU worker trains one run at a time.
The workers train into the run folders under ``OUT/runs`` (storage they share with this process) and
read the data themselves. A task whose worker dies is run again (Dask reschedules it; ``retries``
covers a failure inside it) and resumes from the run's last checkpoint in ``RUN.partial``; a lock
file per run (``runs/.d{d}-r{k}.lock``, ``fcntl.flock``) makes two attempts at one run wait for each
other instead of writing the same folder, and the later one then finds the run done. Training uses
the CPU threads this process would use and the evaluation its torch threads, so every number equals
the in-process sweep's.

Uncertainty: each run stores what the bootstrap resamples (``bootstrap.npz``: the image scores and
the per-case count tables of its test cases), so the summary needs no model again. Per d, the
interval of the mean over repeats resamples the test cases (the same cases for every d and repeat)
and the repeats of that d; every d is compared with the best d on the same resampled cases (a paired
difference), and d whose difference interval contains 0 are called indistinguishable from the best.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from blindspot.anomalies import KINDS, RADIUS_RANGE
from blindspot.data import DataConfig, load_training, resolve
from blindspot.errors import BlindspotError
from blindspot.evaluation import Evaluation, evaluate, make_options
from blindspot.evaluation.intervals import image_tables, load_case_data, resampled_metrics
from blindspot.evaluation.sources import image_cases, model_maps, test_images
from blindspot.execution import Execution, execution_record, gpu_resources, open_pool
from blindspot.experiments.grid import grid_fingerprint
from blindspot.metrics.bootstrap import (
    CONFIDENCE,
    N_RESAMPLES,
    check_bootstrap,
    multiplicities,
    percentile_interval,
    resample_indices,
)
from blindspot.models import create_model, list_models, model_options as accepted_options
from blindspot.models.checkpoint import load_checkpoint, load_model
from blindspot.progress import progress
from blindspot.report import markdown_table, plot_sweep, save_figure
from blindspot.results import (
    MARKER,
    check_output,
    csv_text,
    load_json,
    make_marked_folder,
    output_lock,
    provenance,
    remove_marked_folder,
    staging_state,
    write_json,
    write_text,
)
from blindspot.training import cpu_threads, make_config, train
from blindspot.training.run_folder import TRAIN, model_kwargs, training_length

__all__ = ["METRICS", "parse_dims", "run_metrics", "summarize", "sweep_intervals", "sweep_latent"]

#: The per-file mark of a finished evaluation.
EVALUATION = "evaluation.json"
#: What the bootstrap of a run's evaluation resamples (written before ``evaluation.json``).
BOOTSTRAP = "bootstrap.npz"
#: The detection metrics that get intervals and paired comparisons (where the runs have them).
DETECTION = ("image_auroc", "image_ap", "pixel_ap", "best_dice")
#: The columns of ``summary.csv`` per metric (the interval and comparison columns for the detection metrics only).
SUMMARY_COLUMNS = ("mean", "std", "low", "high", "diff", "diff_low", "diff_high", "vs_best")
#: Where each one is in the evaluation's resampled metrics.
_RESAMPLED = {"image_auroc": ("image", "auroc"), "image_ap": ("image", "ap"), "pixel_ap": ("pixel", "ap"),
              "best_dice": ("pixel", "best_dice")}
#: Metrics of each run (pixel metrics only where the test set has pixel labels), summarised per d.
METRICS = ("image_auroc", "image_ap", "pixel_ap", "best_dice", "error_normal", "error_abnormal")
LABELS = dict(zip(METRICS, ("image AUROC", "image AP", "pixel AP", "best Dice", "normal images", "abnormal images")))


def parse_dims(dims: Sequence[int | str]) -> list[int]:
    """Latent sizes as sorted distinct positive integers; a BlindspotError names the bad value."""
    parsed = []
    for value in dims:
        try:
            d = int(value)
        except (TypeError, ValueError):
            raise BlindspotError(f"`dims` must be positive integers; got {value!r}.") from None
        if d < 1 or str(d) != str(value).strip():
            raise BlindspotError(f"`dims` must be positive integers; got {value!r}.")
        parsed.append(d)
    if not parsed:
        raise BlindspotError("`dims` needs at least one latent size, e.g. 4 16 64.")
    return sorted(set(parsed))


def run_name(d: int, repeat: int) -> str:
    """The folder of run (d, repeat) under ``OUT/runs``."""
    return f"d{d}-r{repeat}"


def _trained(run: Path, steps: int | None) -> bool:
    """Whether ``run`` holds a finished training: ``last.pt`` at its final step."""
    if not (run / "last.pt").is_file():
        return False
    with _damaged_run(run):
        checkpoint = load_checkpoint(run / "last.pt")
    return checkpoint["step"] >= (steps if steps is not None else checkpoint["config"]["steps"])


def run_metrics(evaluation: Evaluation) -> dict:
    """The sweep's numbers of one evaluation: image metrics, pixel metrics (if any), mean loss per group."""
    m = evaluation.metrics
    out = {"image_auroc": m["image"]["auroc"], "image_ap": m["image"]["ap"]}
    if "pixel" in m:
        out.update(pixel_ap=m["pixel"]["ap"], best_dice=m["pixel"]["best_dice"])
    scores = np.array([row["image_score"] for row in evaluation.per_case])
    abnormal = np.array([row["anomalous"] for row in evaluation.per_case], bool)
    return {**out, "error_normal": float(scores[~abnormal].mean()), "error_abnormal": float(scores[abnormal].mean())}


def sweep_latent(
    out: str | Path,
    *,
    model: str = "bench-ae",
    dims: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128),
    repeats: int = 3,
    preset: str = "quick",
    data: DataConfig = DataConfig(),
    overrides: dict | None = None,
    model_options: dict | None = None,
    device: str | None = None,
    threads: int | None = None,
    seed: int = 0,
    bootstrap: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    overwrite: bool = False,
    execution: Execution | None = None,
) -> Path:
    """Train and evaluate ``model`` for every latent size in ``dims``, ``repeats`` times; write the summary.

    Parameters
    ----------
    out : path
        Sweep folder: ``sweep.json`` (settings), ``runs/d{d}-r{k}/`` (training run folders, each
        with its ``evaluation.json``), ``summary.md``, ``summary.csv``, ``runs.csv`` and
        ``latent_sweep.png``. Rerunning with the same settings resumes; other settings are refused
        unless ``overwrite`` (which deletes the sweep folder first).
    data : DataConfig
        Trained on its healthy train split, tested on its test split (``data.split`` must be unset).
    overrides : dict
        Preset values to override (``steps``, ``batch_size``, ``lr``, ``size``, ``seed``, ...),
        passed to :func:`blindspot.training.make_config`; run k uses seed ``seed + k``.
    threads : int or None
        CPU threads of each training (:func:`blindspot.training.train`).
    seed : int
        Seed of the synthetic test set (for sources without labels), as ``evaluate``'s, and of the
        summary's bootstrap.
    bootstrap, confidence : int, float
        Resamples (0: no intervals) and level of the summary's intervals (:func:`sweep_intervals`);
        they may change between invocations of a sweep (only the summary is recomputed).
    execution : Execution or None
        Train the runs as tasks of a Dask cluster (module docstring); the numbers do not depend on
        it, and a sweep may be resumed in another mode. ``sweep.json`` records each invocation's.
    """
    dims = parse_dims(dims)
    check_bootstrap(bootstrap, confidence)
    if not (isinstance(repeats, int) and repeats >= 1):
        raise BlindspotError(f"`repeats` must be at least 1; got {repeats}.")
    if "d" not in accepted_options(model):
        with_d = [name for name in list_models() if "d" in accepted_options(name)]
        raise BlindspotError(f"model {model!r} has no latent size d; use one of {', '.join(with_d)}.")
    if data.split is not None:
        raise BlindspotError("the sweep trains on the train split and tests on the test split of the data; do not give `split`.")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    model_options = dict(model_options or {})
    base = make_config(preset, **overrides)
    out = Path(out)
    check_output(out, inputs=[data.data], overwrite=True)  # an existing sweep folder is resumed, below
    create_model(model, **model_kwargs(base, {**model_options, "d": dims[0]}))  # bad model options fail here
    with output_lock(out, "sweep latent", flag="`out`"), open_pool(execution) as pool:
        test_config = resolve(data.with_preparation(size=base.size), default_split="test")
        test = test_images(test_config, seed=seed)  # bad test data fail here, before any folder is made
        load_training(data.with_preparation(size=base.size), hold_out=base.hold_out)  # and bad training data too
        settings = {"command": "sweep latent", "model": model, "model_options": model_options, "preset": preset,
                    "overrides": overrides, "train_config": asdict(base), "data": data.record(), "test_seed": seed,
                    "protocol": "benchmark"}
        created = _open_sweep_folder(out, settings, overwrite=overwrite)
        _record_execution(out, pool)
        write_json(out / "test_set.json", {"names": test.names, "source": test.source, "fingerprint": _fingerprint(test),
                                           "versions": provenance()})
        runs = [(d, k) for d in dims for k in range(repeats)]
        common = (model, model_options, preset, overrides, data)
        evaluations = {}
        try:
            if pool is None:
                with progress(len(runs), "latent sweep", unit="run", every=1) as bar:
                    for d, k in runs:
                        evaluations[d, k] = _run(out / "runs" / run_name(d, k), d, k, *common, test, base, device, threads)
                        bar.update(1)
            else:
                evaluations = _run_on(pool, out, runs, common, test, test_config, seed, base, device, threads)
        except BlindspotError:
            if created and not evaluations:  # nothing finished: leave no folder behind
                remove_marked_folder(out)
            raise
        write_summary(out, dims, repeats, evaluations, settings, n_test=len(test), bootstrap=bootstrap,
                      confidence=confidence, seed=seed, test_set=describe_test_set(test))
    return out


def _run_on(pool, out: Path, runs: list, common: tuple, test, test_config: DataConfig, seed: int, base, device, threads
            ) -> dict:
    """The runs not finished yet as tasks of ``pool`` (one per run, ``GPU=1`` for CUDA); every run's record."""
    fingerprint = _fingerprint(test)
    evaluations, todo = {}, []
    for d, k in runs:
        saved = _finished(out / "runs" / run_name(d, k), make_config(common[2], **{**common[3], "seed": base.seed + k}).steps,
                          fingerprint)
        if saved is not None:
            evaluations[d, k] = saved
        else:
            todo.append((d, k))
    # the CPU threads this process's training would use, so that runs train bitwise alike wherever they run
    train_threads = cpu_threads(threads)
    tasks = [(out / "runs" / run_name(d, k), d, k, *common, test_config, seed, fingerprint, base, device, train_threads)
             for d, k in todo]
    import torch

    results = pool.map(_run_task, tasks, desc="latent sweep", unit="run", total=len(todo), every=1,
                       resources=gpu_resources(device), retries=RETRIES, torch_threads=torch.get_num_threads())
    evaluations.update(zip(todo, results))
    return evaluations


#: Times a training task that failed with an error is run again (a task whose worker died is rescheduled by Dask).
RETRIES = 2
_TEST_SETS: dict = {}  # in a worker: the test sets read so far


def _run_task(run: Path, d: int, k: int, model: str, model_options: dict, preset: str, overrides: dict, data: DataConfig,
              test_config: DataConfig, seed: int, fingerprint: str, base, device, threads) -> dict:
    """Run (d, k) on a Dask worker: the test set read there (and checked to be the client's), then :func:`_run`."""
    key = (json.dumps(test_config.record(), sort_keys=True), seed)
    if key not in _TEST_SETS:
        test = test_images(test_config, seed=seed)
        if _fingerprint(test) != fingerprint:
            raise BlindspotError(f"a worker read other test images from '{test_config.data}' than this process; every "
                                 "worker must read the same data (the same paths and files).")
        _TEST_SETS.clear()
        _TEST_SETS[key] = test
    return _run(run, d, k, model, model_options, preset, overrides, data, _TEST_SETS[key], base, device, threads)


@contextmanager
def _run_lock(run: Path):
    """Hold ``runs/.{name}.lock`` (an exclusive ``flock``) while run ``run`` is trained and evaluated.

    Two attempts at one run (a task Dask started again while the first still ran, or two sweeps of
    the same folder) then take turns instead of writing the same ``RUN.partial``; the lock goes with
    the process that held it, so a killed worker never leaves it taken. Holding it, the run's own
    output lock (:func:`blindspot.results.output_lock`, which its training takes too) is taken over
    from any attempt that died. Without ``fcntl`` (Windows) only the output lock guards the run.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        with output_lock(run, "sweep latent", flag="`out`"):
            yield
        return
    run.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(run.parent / f".{run.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with output_lock(run, "sweep latent", flag="`out`", takeover=True):
            yield
    finally:
        os.close(handle)  # releases the lock


def _record_execution(out: Path, pool) -> None:
    """Add this invocation's execution (in-process, local cluster or scheduler; number of workers) to ``sweep.json``."""
    saved = load_json(out / "sweep.json")
    saved["executions"] = [*saved.get("executions", []), execution_record(pool)]
    write_json(out / "sweep.json", saved)


def _fingerprint(test) -> str:
    return grid_fingerprint(test.images, labels=None if test.labels is None else test.labels.sum(axis=(1, 2)),
                            anomalous=None if test.anomalous is None else test.anomalous.tolist())


def _finished(run: Path, steps: int | None, fingerprint: str) -> dict | None:
    """The record of run ``run`` when it is trained and evaluated on the test set ``fingerprint``, else None."""
    if _trained(run, steps) and (run / EVALUATION).is_file() and (run / BOOTSTRAP).is_file():
        with _damaged_run(run):
            saved = load_json(run / EVALUATION)
        if saved.get("test_set") == fingerprint:
            return saved
    return None


def _run(run: Path, d: int, k: int, model: str, model_options: dict, preset: str, overrides: dict, data: DataConfig,
         test, base, device, threads) -> dict:
    """Train (or resume) run (d, k) and evaluate it, unless both are done already (holding the run's lock)."""
    with _run_lock(run):
        return _train_and_evaluate(run, d, k, model, model_options, preset, overrides, data, test, base, device, threads)


def _train_and_evaluate(run: Path, d: int, k: int, model: str, model_options: dict, preset: str, overrides: dict,
                        data: DataConfig, test, base, device, threads) -> dict:
    config = make_config(preset, **{**overrides, "seed": base.seed + k})
    fingerprint = _fingerprint(test)
    saved = _finished(run, config.steps, fingerprint)
    if saved is not None:
        return saved
    trained = _trained(run, config.steps)
    if not trained:  # new, or interrupted (``run.partial`` holds its last.pt: train continues it)
        interrupted = run.with_name(run.name + ".partial") / "last.pt"
        if interrupted.is_file() and staging_state(run.resolve(), TRAIN) == "ours":
            with _damaged_run(run):
                load_checkpoint(interrupted)
        train(config, run, model_name=model, model_options={**model_options, "d": d}, data=data,
              resume=run.exists(), device=device, threads=threads)
    with _damaged_run(run):
        trained_model = load_model(run / "last.pt", device=device)
    if test.source["config"]["preparation"] != trained_model.preparation:
        raise BlindspotError(f"the model in '{run}' was trained on images prepared otherwise than the sweep's test images.")
    evaluation = evaluate(image_cases(test, model_maps(trained_model, device=device)), make_options("benchmark"), n_overlays=0)
    record = {"d": d, "repeat": k, "seed": config.seed, "checkpoint": "last.pt", "test_set": fingerprint,
              **run_metrics(evaluation), "image_scores": [row["image_score"] for row in evaluation.per_case],
              "versions": provenance()}
    evaluation.cases.save(run / BOOTSTRAP)
    write_json(run / EVALUATION, record)
    return record


@contextmanager
def _damaged_run(run: Path):
    """A file of run ``run`` that cannot be read (a truncated checkpoint, broken JSON) names the run folder to remove."""
    try:
        yield
    except BlindspotError as err:
        raise BlindspotError(f"{str(err).rstrip('.')}; remove the run folder '{run}' (and '{run}.partial' if there is one) "
                             "and run the same command again to redo that run.") from None


def _open_sweep_folder(out: Path, settings: dict, *, overwrite: bool) -> bool:
    """Create ``out`` with its ``sweep.json`` (True), or check that an existing sweep has the same settings (False)."""
    if out.exists() and overwrite:
        remove_marked_folder(out)
    if out.exists():
        if not (out / "sweep.json").is_file() or not (out / MARKER).is_file():
            raise BlindspotError(f"output folder '{out}' exists and is not a sweep folder; choose another `out`.")
        saved = load_json(out / "sweep.json")
        if saved.get("settings") != _jsonable(settings):
            changed = sorted(k for k in settings if saved.get("settings", {}).get(k) != _jsonable(settings[k]))
            raise BlindspotError(f"sweep folder '{out}' was made with other settings ({', '.join(changed)}); "
                                 "rerun with the same options to resume, or overwrite it.")
        return False
    make_marked_folder(out / "runs")
    make_marked_folder(out)
    write_json(out / "sweep.json", {"settings": settings, "versions": provenance()})
    return True


def _jsonable(value):
    """``value`` as it reads back from ``sweep.json`` (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


# --------------------------------------------------------------------------------------------
# summary


def summarize(dims: Sequence[int], repeats: int, evaluations: dict) -> list[dict]:
    """Per d: number of runs and mean and std (ddof = 1; nan for one run) of every metric the runs have."""
    names = [m for m in METRICS if m in evaluations[dims[0], 0]]
    rows = []
    for d in dims:
        runs = [evaluations[d, k] for k in range(repeats)]
        row = {"d": d, "runs": len(runs)}
        for name in names:
            values = np.array([run[name] for run in runs], float)
            row[f"{name}_mean"] = float(values.mean())
            row[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
    return rows


def sweep_intervals(out: Path, dims: Sequence[int], repeats: int, rows: list[dict], *, n_resamples: int = N_RESAMPLES,
                    confidence: float = CONFIDENCE, seed: int = 0) -> None:
    """Add to ``rows`` (of :func:`summarize`) the intervals over cases and repeats, and the paired comparison with the best d.

    Every resample draws the test cases with replacement (``numpy.random.default_rng(seed)``, the
    same cases for every d and repeat) and, for each d, its repeats with replacement
    (``numpy.random.default_rng([seed, 1])``); the metric of a d in a resample is the mean over its
    drawn repeats of each run's metric on the drawn cases (pooled pixel metrics from the runs'
    count tables). Per detection metric and d: ``{metric}_low`` / ``_high`` (the interval of that
    mean), ``_diff`` (mean minus the best d's mean), ``_diff_low`` / ``_diff_high`` (the interval of
    the paired difference) and ``_vs_best``: ``best``, ``indistinguishable`` (the interval contains 0)
    or ``lower``.
    """
    names = [m for m in DETECTION if f"{m}_mean" in rows[0]]
    data = {(d, k): load_case_data(out / "runs" / run_name(d, k) / BOOTSTRAP) for d in dims for k in range(repeats)}
    first = data[dims[0], 0]
    for key, other in data.items():
        if other.names != first.names:
            raise BlindspotError(f"run {run_name(*key)} was evaluated on other test cases than run {run_name(dims[0], 0)}.")
    weights = multiplicities(resample_indices(first.n_groups, n_resamples, seed), first.n_groups)
    draws = np.random.default_rng([seed, 1])
    resampled = {}  # (d, metric) -> (B,) mean over the drawn repeats
    for d in dims:
        per_run = []
        for k in range(repeats):
            values = resampled_metrics(data[d, k], weights, image_tables(data[d, k]))
            per_run.append([values[_RESAMPLED[m][0]][_RESAMPLED[m][1]] for m in names])
        per_run = np.asarray(per_run)  # (repeats, metrics, B)
        chosen = draws.integers(0, repeats, (n_resamples, repeats))
        for j, name in enumerate(names):
            resampled[d, name] = per_run[chosen, j, np.arange(n_resamples)[:, None]].mean(axis=1)
    for name in names:
        best = max(rows, key=lambda row: row[f"{name}_mean"])
        for row in rows:
            row[f"{name}_low"], row[f"{name}_high"] = percentile_interval(resampled[row["d"], name], confidence)
            row[f"{name}_diff"] = row[f"{name}_mean"] - best[f"{name}_mean"]
            low, high = percentile_interval(resampled[row["d"], name] - resampled[best["d"], name], confidence)
            row[f"{name}_diff_low"], row[f"{name}_diff_high"] = low, high
            row[f"{name}_vs_best"] = ("best" if row is best else "indistinguishable" if np.isnan(low) or low <= 0 <= high
                                      else "lower")


def best_d_sentence(rows: list[dict], metric: str = "image_auroc", chance: float = 0.5, *, confidence: float = CONFIDENCE,
                    n_cases: int | None = None) -> str:
    """Which d has the best mean ``metric``, with n, and which d the data cannot tell apart from it.

    Uses the paired intervals of :func:`sweep_intervals` (``{metric}_vs_best``); without them it
    says that no d was tested against the best.
    """
    best = max(rows, key=lambda row: row[f"{metric}_mean"])
    n = best["runs"]
    cases = f" on {n_cases} test images" if n_cases else ""
    interval = (f" [{best[f'{metric}_low']:.3f}, {best[f'{metric}_high']:.3f}]" if f"{metric}_low" in best else "")
    text = (f"Best mean {LABELS[metric]} at d = {best['d']} ({best[f'{metric}_mean']:.3f}{interval}, n = {n} run(s) per d"
            f"{cases})")
    if best[f"{metric}_mean"] <= chance:
        return text + f"; every d is at or below chance ({chance}), so no d detects anything."
    if f"{metric}_vs_best" not in best:
        return text + "; no intervals were computed (bootstrap 0), so no d was tested against it."
    level = f"{100 * confidence:g} %"
    spread = "" if n > 1 else " (with one run per d the intervals cover the test images, not the spread between trainings)"
    same = [row["d"] for row in rows if row[f"{metric}_vs_best"] == "indistinguishable"]
    if same:
        return text + (f"; d = {', '.join(map(str, same))} {'is' if len(same) == 1 else 'are'} indistinguishable from it (the "
                       f"{level} interval of the paired difference on the same test images contains 0){spread}, so the data "
                       "do not single out one d.")
    if len(rows) == 1:
        return text + "."
    return text + (f"; every other d is lower (the {level} intervals of the paired differences on the same test images lie "
                   f"below 0){spread}.")


def describe_test_set(test) -> str:
    """The test set in words: the synthetic set's recipe, or the labelled set's source, images and lesions."""
    n = len(test)
    volumes = len(set(test.volumes))
    origin = f"{n} images of the test split of `{test.source.get('data', '?')}` from {volumes} volume(s)"
    if test.source.get("test_set", {}).get("kind") == "synthetic":
        return (f"{origin}, as the synthetic test set (the source has no labels): its {n // 2} normal images and a copy of "
                f"each with one {'/'.join(KINDS)} anomaly, radius {RADIUS_RANGE[0]:g}–{RADIUS_RANGE[1]:g} px at 256 px")
    if test.labels is not None:
        per_slice = np.zeros((3, 3, 3), bool)
        per_slice[1] = ndimage.generate_binary_structure(2, 1)  # regions within a slice, not across slices
        lesions = ndimage.label(test.labels, structure=per_slice)[1]
        abnormal = int(test.labels.reshape(n, -1).any(axis=1).sum())
        return (f"{origin}, with their own pixel labels: {abnormal} abnormal and {n - abnormal} normal images, "
                f"{lesions} labelled lesion regions (connected regions of the slices' masks)")
    abnormal = int(np.sum(test.anomalous))
    return f"{origin}, with their own image labels: {abnormal} abnormal and {n - abnormal} normal images"


def _run_lengths(out: Path, dims: Sequence[int], repeats: int) -> str:
    """What the runs' trainings did (steps, epochs, images seen, batch), read from their ``config.json``."""
    lengths = {}
    for d in dims:
        for k in range(repeats):
            record = load_json(out / "runs" / run_name(d, k) / "config.json")
            length = record.get("length") or training_length(  # runs of earlier versions lack it
                record["resolved"]["steps"], record["config"]["batch_size"], record["training_data"]["train"]["images"])
            lengths.setdefault(length["summary"], []).append(run_name(d, k))
    if len(lengths) == 1:
        return f"every run trained {next(iter(lengths))}"
    return "the runs trained " + "; ".join(f"{', '.join(names)}: {text}" for text, names in lengths.items())


def write_summary(out: Path, dims: Sequence[int], repeats: int, evaluations: dict, settings: dict, *, n_test: int,
                  bootstrap: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0, test_set: str | None = None
                  ) -> None:
    """``summary.csv``, ``runs.csv``, ``summary.md`` and ``latent_sweep.png`` from the runs' evaluations.

    ``test_set`` describes the test images (:func:`describe_test_set`); the runs' training lengths are
    read from their folders.
    """
    rows = summarize(dims, repeats, evaluations)
    names = [m for m in METRICS if f"{m}_mean" in rows[0]]
    if bootstrap:
        sweep_intervals(out, dims, repeats, rows, n_resamples=bootstrap, confidence=confidence, seed=seed)
    columns = ["d", "runs", *(f"{m}_{part}" for m in names for part in SUMMARY_COLUMNS)]
    write_text(out / "summary.csv", csv_text([{c: row[c] for c in columns if c in row} for row in rows]))
    run_rows = [{"d": d, "repeat": k, "seed": evaluations[d, k]["seed"], **{m: evaluations[d, k][m] for m in names}}
                for d in dims for k in range(repeats)]
    write_text(out / "runs.csv", csv_text(run_rows))

    def cell(row, name, digits):
        std = row[f"{name}_std"]
        text = f"{row[f'{name}_mean']:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")
        if f"{name}_low" in row:
            text += f" [{row[f'{name}_low']:.{digits}f}, {row[f'{name}_high']:.{digits}f}]"
        return text

    def versus(row, name):
        if row[f"{name}_vs_best"] == "best":
            return "best"
        return (f"{row[f'{name}_diff']:+.3f} [{row[f'{name}_diff_low']:+.3f}, {row[f'{name}_diff_high']:+.3f}] "
                f"{row[f'{name}_vs_best']}")

    header = ["d", *(LABELS[m] if not m.startswith("error") else f"error {LABELS[m].split()[0]}" for m in names)]
    table = [[row["d"], *(cell(row, m, 5 if m.startswith("error") else 3) for m in names)] for row in rows]
    config = settings["train_config"]
    asked = f"{config['steps']} steps" if config["steps"] else f"{config['epochs']:g} epochs"
    lowest = min(rows, key=lambda row: row["error_normal_mean"])
    pixel = ("pixel AP and best Dice over all test pixels pooled; " if "pixel_ap" in names
             else "the test set has image labels only, so there are no pixel metrics; ")
    level = f"{100 * confidence:g} %"
    compared = [m for m in DETECTION if f"{m}_vs_best" in rows[0]]
    uncertainty = ""
    if compared:
        uncertainty = (
            f" In brackets: the {level} percentile bootstrap interval of the mean over repeats, resampling the {n_test} test "
            f"images (the same for every d) and the repeats of each d ({bootstrap} resamples, seed {seed}).\n\n"
            f"## Each d against the best d\n\nDifference of the mean to the best d's, with the {level} interval of the paired "
            "difference on the same resampled test images; *indistinguishable*: the interval contains 0.\n\n"
            + markdown_table(["d", *(LABELS[m] for m in compared)], [[row["d"], *(versus(row, m) for m in compared)] for row in rows]))
    write_text(out / "summary.md", (
        f"# Latent-size sweep: {settings['model']}\n\n"
        f"Preset `{settings['preset']}` ({asked}, batch {config['batch_size']}, "
        f"{config['size']} px), data `{settings['data']['data']}`, {repeats} repeat(s) per d ({_seeds(config['seed'], repeats)}); "
        f"{_run_lengths(out, dims, repeats)}; "
        "the last checkpoint of each run is evaluated with the `benchmark` protocol. Mean ± sample std over repeats.\n\n"
        f"Test set: {test_set or f'{n_test} images of the test split'} (see `test_set.json`). "
        "Anomaly map: the per-pixel loss; image score: its mean; "
        f"{pixel}error: mean per-pixel loss of the normal and of the abnormal test images.\n\n"
        f"{markdown_table(header, table)}\n\n"
        f"{best_d_sentence(rows, confidence=confidence, n_cases=n_test)} Lowest error on normal images at d = {lowest['d']}."
        f"{uncertainty}\n\n"
        "![error and detection vs d](latent_sweep.png)\n"
    ))
    save_figure(plot_sweep(rows, LABELS, confidence=confidence), out / "latent_sweep.png")


def _seeds(seed: int, repeats: int) -> str:
    return f"seed {seed}" if repeats == 1 else f"seeds {seed}–{seed + repeats - 1}"

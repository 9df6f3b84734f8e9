"""The latent-size sweep of Cai et al. (MICCAI 2024): train an AE for every latent size d, evaluate each.

Every (d, repeat k) run trains in its own folder ``OUT/runs/d{d}-r{k}`` with seed ``seed + k`` (the
benchmark's script wrote every d into one folder, so its runs overwrote each other). The sweep is
resumable at the granularity of training steps: a run whose ``last.pt`` is at the final step and
whose ``evaluation.json`` exists is skipped, a run with ``last.pt`` at the final step is only
evaluated, and any other run resumes training from its last checkpoint.

Test set (:func:`synthetic_test_set`): the normal images are held-out normal slices (embedded data:
the default test slices :data:`blindspot.data.mni152.DEFAULT_SLICES`, which training does not use;
NIfTI data: the test split's slices), resized to the model's input size; the abnormal images are the
same slices, each with one synthetic anomaly (kind, intensity, radius and centre drawn from the seed).

Evaluation (MICCAI 2024 protocol): the anomaly map is the model's per-pixel loss map (squared error
for MSE models), with no mask and no post-processing; the image score is its mean over the image.
Image level: AUROC and AP over normal (0) and abnormal (1) images. Pixel level: AP over all test
pixels pooled (normal images included) and the exact best Dice over all thresholds (an upper bound:
the threshold is chosen on the test labels). The reconstruction error of a group of images is the
mean of their image scores (their mean per-pixel loss).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from blindspot.anomalies import TEXTURES, disk_anomaly, sample_centers, texture_anomaly
from blindspot.data import DataOptions
from blindspot.errors import BlindspotError
from blindspot.experiments.grid import grid_fingerprint
from blindspot.metrics import average_precision, best_dice, roc_auc
from blindspot.report import markdown_table, save_figure
from blindspot.results import csv_text, load_json, provenance, write_json, write_text

#: Anomaly kinds of the abnormal test images, drawn uniformly per image.
KINDS = ("disk", *TEXTURES)
#: Anomaly radius range in pixels at 256 px (uniform), scaled with the images' resize factor.
RADIUS_RANGE = (10.0, 30.0)
#: The per-run file whose presence marks a finished evaluation.
EVALUATION = "evaluation.json"
#: Metrics of each run, summarised as mean ± std over repeats per d.
METRICS = ("image_auroc", "image_ap", "pixel_ap", "best_dice", "error_normal", "error_abnormal")
_LABELS = dict(zip(METRICS, ("image AUROC", "image AP", "pixel AP", "best Dice", "normal images", "abnormal images")))


@dataclass(frozen=True)
class TestSet:
    """Normal images followed by the same images with an anomaly each.

    Attributes
    ----------
    images : float32 (2N, H, W)
        ``images[:N]`` normal, ``images[N:]`` abnormal, at the model's input size, in [0, 1].
    labels : bool (2N, H, W)
        Pixel labels (all False for the normal images; disk ∩ brain for the abnormal ones).
    anomalies : dict
        Per abnormal image: ``kind``, ``intensity`` (used by disks only), ``radius``, ``center``.
    """

    images: np.ndarray
    labels: np.ndarray
    anomalies: dict

    @property
    def is_abnormal(self) -> np.ndarray:
        n = len(self.images) // 2
        return np.arange(2 * n) >= n


def split_data(data: DataOptions) -> tuple[DataOptions, DataOptions]:
    """Training data and held-out normal test data for ``data``.

    * ``mni152``: training uses its own fixed slices (:func:`blindspot.training.load_training_images`);
      the test images are the default test slices :data:`blindspot.data.mni152.DEFAULT_SLICES`,
      which training never sees.
    * a folder of volumes: training takes the protocol's first 60 % of the sorted volumes
      (``--split all`` becomes ``train``), the test images are the same slices (``--slices``/``--slice``;
      default slice 128) of the last 40 %.
    """
    if data.data == "mni152":
        return data, replace(data, axis=2, slices=None)
    if not Path(data.data).is_dir():
        raise BlindspotError(f"--data '{data.data}' must be mni152 or a folder of volumes, so that test volumes are held out.")
    if data.split == "test":
        raise BlindspotError("--split test would train on the test volumes; use --split train (or all) for a sweep.")
    return replace(data, split="train"), replace(data, split="test")


def synthetic_test_set(images: np.ndarray, *, seed: int, scale: float = 1.0) -> TestSet:
    """The test set for normal ``images`` (N, H, W): the images themselves plus one anomalous copy of each.

    Per abnormal image, from ``numpy.random.default_rng(seed)`` in this order: the kind (uniform over
    :data:`KINDS`), the intensity (uniform in [0, 1], used by the disk), the radius (uniform in
    :data:`RADIUS_RANGE` × ``scale``), the centre (uniform over the brain), then the pixel-shuffle
    permutations. Labels are disk ∩ brain.
    """
    rng = np.random.default_rng(seed)
    n = len(images)
    kinds = rng.integers(0, len(KINDS), n)
    intensities = rng.uniform(0.0, 1.0, n)
    radii = rng.uniform(*RADIUS_RANGE, n) * scale
    centers = sample_centers(images, rng)
    abnormal = np.empty_like(images)
    labels = np.zeros((2 * n, *images.shape[1:]), bool)
    for i in range(n):  # one anomaly per image (each has its own radius)
        one, center = images[i : i + 1], centers[i : i + 1]
        if KINDS[kinds[i]] == "disk":
            made = disk_anomaly(one, intensities[i], radius=radii[i], centers=center)
        else:
            made = texture_anomaly(one, KINDS[kinds[i]], radius=radii[i], centers=center, rng=rng)
        abnormal[i], labels[n + i] = made.images[0], made.labels[0]
    anomalies = {
        "kind": [KINDS[k] for k in kinds],
        "intensity": intensities,
        "radius": radii,
        "center": centers,
    }
    return TestSet(np.concatenate([images, abnormal]), labels, anomalies)


def evaluate(model, test: TestSet, *, input_range=(0.0, 1.0), batch_size: int = 64, device: str | None = None) -> dict:
    """Image- and pixel-level metrics of ``model`` on ``test`` (see the module docstring).

    The metrics use the maps as the model computes them (in its input units); the errors are
    converted to [0, 1] units (an "l1" map divided by the input range's width, an "mse" map by
    its square) so that runs with different input ranges compare.
    """
    from blindspot.training import anomaly_maps

    maps = anomaly_maps(model, test.images, input_range=tuple(input_range), batch_size=batch_size, device=device)
    scores = maps.mean(axis=(1, 2), dtype=np.float64)
    abnormal = test.is_abnormal
    width = float(input_range[1]) - float(input_range[0])
    errors = scores / (width if getattr(model, "loss", "l1") == "l1" else width**2)
    dice, threshold = best_dice(test.labels, maps)
    return {
        "image_auroc": roc_auc(abnormal, scores),
        "image_ap": average_precision(abnormal, scores),
        "pixel_ap": average_precision(test.labels, maps),
        "best_dice": dice,
        "best_dice_threshold": threshold,
        "error_normal": float(errors[~abnormal].mean()),
        "error_abnormal": float(errors[abnormal].mean()),
        "image_scores": scores,
    }


# --------------------------------------------------------------------------------------------
# the sweep


def parse_dims(dims: Sequence[int | str]) -> list[int]:
    """Latent sizes as sorted distinct positive integers; a BlindspotError names the bad value."""
    parsed = []
    for value in dims:
        try:
            d = int(value)
        except (TypeError, ValueError):
            raise BlindspotError(f"--dims must be positive integers; got {value!r}.") from None
        if d < 1 or str(d) != str(value).strip():
            raise BlindspotError(f"--dims must be positive integers; got {value!r}.")
        parsed.append(d)
    if not parsed:
        raise BlindspotError("--dims needs at least one latent size, e.g. --dims 4 16 64.")
    return sorted(set(parsed))


def run_name(d: int, repeat: int) -> str:
    """The folder of run (d, repeat) under ``OUT/runs``."""
    return f"d{d}-r{repeat}"


def _trained(run: Path, steps: int | None) -> bool:
    """Whether ``run`` holds a finished training: ``last.pt`` at its final step (``steps``, or the
    step count the run derived from its epochs)."""
    from blindspot.checkpoint import load_checkpoint

    if not (run / "last.pt").is_file():
        return False
    checkpoint = load_checkpoint(run / "last.pt")
    final = steps if steps is not None else checkpoint["config"]["steps"]
    return checkpoint["step"] >= final


def sweep_latent(
    out: str | Path,
    *,
    model: str = "bench-ae",
    dims: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128),
    repeats: int = 3,
    preset: str = "quick",
    data: DataOptions = DataOptions(),
    overrides: dict | None = None,
    model_options: dict | None = None,
    device: str | None = None,
    batch_size: int = 64,
    overwrite: bool = False,
) -> Path:
    """Train and evaluate ``model`` for every latent size in ``dims``, ``repeats`` times; write the summary.

    Parameters
    ----------
    out : path
        Sweep folder: ``sweep.json`` (settings), ``runs/d{d}-r{k}/`` (training run folders, each
        with its ``evaluation.json``), ``summary.md``, ``summary.csv``, ``runs.csv`` and
        ``latent_sweep.png``. Rerunning with the same settings resumes; other settings are refused
        unless ``overwrite`` (which deletes the folder first).
    overrides : dict
        Preset values to override (``steps``, ``batch_size``, ``lr``, ``size``, ``seed``), passed
        to :func:`blindspot.training.make_config`; run k uses seed ``seed + k``.
    batch_size : int
        Images per model call at evaluation.
    """
    from blindspot.models import list_models
    from blindspot.models import model_options as accepted_options
    from blindspot.training import make_config, train

    dims = parse_dims(dims)
    if repeats < 1:
        raise BlindspotError(f"--repeats must be at least 1; got {repeats}.")
    if "d" not in accepted_options(model):
        with_d = [name for name in list_models() if "d" in accepted_options(name)]
        raise BlindspotError(f"model {model!r} has no latent size d; use one of {', '.join(with_d)}.")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    model_options = dict(model_options or {})
    base = make_config(preset, **overrides)
    out = Path(out)
    train_options, test_options = split_data(data)
    settings = {
        "command": "sweep latent",
        "model": model,
        "model_options": model_options,
        "preset": preset,
        "overrides": overrides,
        "train_config": asdict(base),
        "data": asdict(train_options),
        "test_data": asdict(test_options),
        "radius_range": list(RADIUS_RANGE),
        "kinds": list(KINDS),
    }
    _open_sweep_folder(out, settings, overwrite=overwrite)

    from blindspot.checkpoint import load_model
    from blindspot.experiments.model_pitfalls import fit_to_model

    normal = test_options.load()
    images, scale = fit_to_model(normal.images, base.size)
    test = synthetic_test_set(images, seed=base.seed, scale=scale)
    fingerprint = grid_fingerprint(test.images, labels=test.labels.sum(axis=(1, 2)))
    write_json(out / "test_set.json", {
        "names": normal.names, "source": normal.source, "size": base.size, "scale": scale, "seed": base.seed,
        "fingerprint": fingerprint, "anomalies": test.anomalies, "versions": provenance(),
    })
    runs = [(d, k) for d in dims for k in range(repeats)]
    evaluations = {}
    for d, k in tqdm(runs, desc="latent sweep", unit="run"):
        run = out / "runs" / run_name(d, k)
        config = make_config(preset, **{**overrides, "seed": base.seed + k})
        evaluation = run / EVALUATION
        trained = _trained(run, config.steps)
        if trained and evaluation.is_file():
            saved = load_json(evaluation)
            if saved.get("test_set") == fingerprint:
                evaluations[d, k] = saved
                continue
        if not trained:  # new, or interrupted (``run.partial`` holds its last.pt: train continues it)
            train(config, run, model_name=model, model_options={**model_options, "d": d}, data=train_options,
                  resume=run.exists(), device=device)
        trained_model = load_model(run / "last.pt", device=device)
        metrics = evaluate(trained_model, test, input_range=config.input_range, batch_size=batch_size, device=device)
        evaluations[d, k] = {"d": d, "repeat": k, "seed": config.seed, "checkpoint": "last.pt",
                             "test_set": fingerprint, **metrics, "versions": provenance()}
        write_json(evaluation, evaluations[d, k])
    write_summary(out, dims, repeats, evaluations, settings)
    return out


def _open_sweep_folder(out: Path, settings: dict, *, overwrite: bool) -> None:
    """Create ``out`` with its ``sweep.json``, or check that an existing sweep has the same settings."""
    if out.exists() and overwrite:
        shutil.rmtree(out)
    if out.exists():
        if not out.is_dir():
            raise BlindspotError(f"output path '{out}' exists and is not a folder.")
        if not (out / "sweep.json").is_file():
            if any(out.iterdir()):
                raise BlindspotError(f"output folder '{out}' exists and is not a sweep folder; choose another --out.")
        else:
            saved = load_json(out / "sweep.json")
            if saved.get("settings") != _jsonable(settings):
                changed = sorted(k for k in settings if saved.get("settings", {}).get(k) != _jsonable(settings[k]))
                raise BlindspotError(
                    f"sweep folder '{out}' was made with other settings ({', '.join(changed)}); "
                    "rerun with the same options to resume, or pass --overwrite."
                )
            return
    (out / "runs").mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", {"settings": settings, "versions": provenance()})


def _jsonable(value):
    """``value`` as it reads back from ``sweep.json`` (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))


# --------------------------------------------------------------------------------------------
# summary


def summarize(dims: Sequence[int], repeats: int, evaluations: dict) -> list[dict]:
    """Per d: number of runs and mean and std (ddof = 1; nan for one run) of every metric in :data:`METRICS`."""
    rows = []
    for d in dims:
        runs = [evaluations[d, k] for k in range(repeats)]
        row = {"d": d, "runs": len(runs)}
        for name in METRICS:
            values = np.array([run[name] for run in runs], float)
            row[f"{name}_mean"] = float(values.mean())
            row[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
    return rows


def write_summary(out: Path, dims: Sequence[int], repeats: int, evaluations: dict, settings: dict) -> None:
    """``summary.csv``, ``runs.csv``, ``summary.md`` and ``latent_sweep.png`` from the runs' evaluations."""
    rows = summarize(dims, repeats, evaluations)
    write_text(out / "summary.csv", csv_text(rows))
    run_rows = [{"d": d, "repeat": k, "seed": evaluations[d, k]["seed"], **{m: evaluations[d, k][m] for m in METRICS}}
                for d in dims for k in range(repeats)]
    write_text(out / "runs.csv", csv_text(run_rows))

    def cell(row, name, digits):
        std = row[f"{name}_std"]
        return f"{row[f'{name}_mean']:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")

    header = ["d", "image AUROC", "image AP", "pixel AP", "best Dice", "error normal", "error abnormal"]
    table = [[row["d"], *(cell(row, m, 3) for m in METRICS[:4]), *(cell(row, m, 5) for m in METRICS[4:])] for row in rows]
    config = settings["train_config"]
    best = max(rows, key=lambda row: row["image_auroc_mean"])
    lowest = min(rows, key=lambda row: row["error_normal_mean"])
    write_text(out / "summary.md", (
        f"# Latent-size sweep: {settings['model']}\n\n"
        f"Preset `{settings['preset']}` ({config['steps']} steps, batch {config['batch_size']}, {config['size']} px), "
        f"data `{settings['data']['data']}`, {repeats} repeat(s) per d ({_seeds(config['seed'], repeats)}); "
        "the last checkpoint of each run is evaluated. Mean ± sample std over repeats.\n\n"
        "Test set: held-out normal slices and the same slices with one synthetic anomaly each "
        f"({', '.join(KINDS)}; radius uniform in {RADIUS_RANGE[0]:g}–{RADIUS_RANGE[1]:g} px at 256 px), see `test_set.json`. "
        "Anomaly map: the per-pixel loss map; image score: its mean; pixel AP and best Dice over all test pixels pooled; "
        "error: mean per-pixel loss of the normal and of the abnormal test images.\n\n"
        f"{markdown_table(header, table)}\n\n"
        f"Best image AUROC at d = {best['d']}; lowest error on normal images at d = {lowest['d']}.\n\n"
        "![error and detection vs d](latent_sweep.png)\n"
    ))
    save_figure(plot_sweep(rows), out / "latent_sweep.png")


def _seeds(seed: int, repeats: int) -> str:
    return f"seed {seed}" if repeats == 1 else f"seeds {seed}–{seed + repeats - 1}"


def plot_sweep(rows: list[dict]):
    """Reconstruction error vs d (normal and abnormal) and detection metrics vs d (MICCAI 2024 style)."""
    import matplotlib.pyplot as plt

    dims = [row["d"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for ax, names, ylabel in (
        (left, ("error_normal", "error_abnormal"), "mean per-pixel loss"),
        (right, ("image_auroc", "image_ap", "pixel_ap", "best_dice"), "metric"),
    ):
        for name in names:
            mean = np.array([row[f"{name}_mean"] for row in rows])
            std = np.nan_to_num(np.array([row[f"{name}_std"] for row in rows]))
            ax.errorbar(dims, mean, yerr=std, marker="o", capsize=3, label=_LABELS[name])
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_xlabel("latent size d")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    left.set_title("reconstruction error of the test images")
    right.set_title("detection")
    return fig

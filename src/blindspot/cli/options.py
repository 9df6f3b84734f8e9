"""Option groups shared by the commands: each flag has one name, type, default rule and meaning everywhere.

* :func:`data_options` — where images come from and how they are prepared (a :class:`DataConfig`);
* :func:`grid_options` — the pitfall grid (radius, intensities, σ, seed, centres);
* :func:`bootstrap_options` — resamples and level of the intervals over images;
* :func:`output_options` — the result folder;
* :func:`execution_options` — threads, device, images per model call;
* :func:`cluster_options` — where the work runs: this process, a local Dask cluster, or a Dask scheduler.
"""

from __future__ import annotations

import functools

import click

from blindspot.data import GEOMETRIES, LAYOUTS, SPLITS, DataConfig, Preparation
from blindspot.data.nifti import parse_slices
from blindspot.errors import BlindspotError
from blindspot.execution import Execution, warn_above_cores


def group(*decorators):
    """Apply click option decorators in the order written."""
    return lambda command: functools.reduce(lambda cmd, deco: deco(cmd), reversed(decorators), command)


SPLIT_HELP = ("Part of the data: all, train (healthy training images) or test [default: all for pitfalls, train for train, "
              "test for evaluate, sweep and audit].")

data_options = group(
    click.option("--data", default="mni152", show_default=True, metavar="mni152|PATH",
                 help="The embedded MNI152 template, a NIfTI file or folder (MOOD), or a data set folder (benchmark PNG "
                      "layouts, BraTS subjects, normal/abnormal folders)."),
    click.option("--layout", type=click.Choice(["auto", *LAYOUTS]), default="auto", show_default=True,
                 help="Layout of --data (and --val-data, --train-data); auto detects it."),
    click.option("--split", type=click.Choice(SPLITS), default=None, help=SPLIT_HELP),
    click.option("--modality", default="flair", show_default=True, help="BraTS modality file (flair, t1, t1ce, t2)."),
    click.option("--axis", type=click.IntRange(0, 2), default=2, show_default=True, help="Slice axis of volumes."),
    click.option("--slice", "slice_", type=click.IntRange(min=0), default=None,
                 help="One slice index per volume [default: the layout's; 128 for NIfTI, fixed axial slices for mni152]."),
    click.option("--slices", default=None, metavar="A:B", help="A half-open range of slices per volume, e.g. 120:140."),
    click.option("--normalize", type=click.FloatRange(0, 100, min_open=True), default=None, metavar="PERCENTILE",
                 help="Divide each volume (or 2-D image) by this foreground percentile and clip to [0, 1]."),
    click.option("--size", type=click.IntRange(min=1), default=None,
                 help="Prepare images at N × N (radii scale with them) [default: native; the model's for a checkpoint; "
                      "the preset's for training]."),
    click.option("--geometry", type=click.Choice(GEOMETRIES), default="pad", show_default=True,
                 help="How --size is reached: centred zero padding to a square, a centred square crop, or stretching."),
    click.option("--equalize", is_flag=True, help="Histogram-equalise each image over its foreground (256 bins)."),
    click.option("--volume-regex", default=None, metavar="REGEX", help="Volume id from each image name (group 1), for --pooling volume."),
)


def data_config(data, layout="auto", split=None, modality="flair", axis=2, slice_=None, slices=None, normalize=None,
                size=None, geometry="pad", equalize=False, volume_regex=None) -> DataConfig:
    """The :class:`DataConfig` of the data flags (``--slice`` and ``--slices`` exclude each other)."""
    if slice_ is not None and slices is not None:
        raise BlindspotError("use either --slice or --slices, not both.")
    chosen = (slice_,) if slice_ is not None else tuple(parse_slices(slices)) if slices is not None else None
    return DataConfig(data=str(data), layout=layout, split=split, modality=modality, axis=axis, slices=chosen,
                      preparation=Preparation(size=size, geometry=geometry, normalize=normalize, equalize=equalize),
                      volume_regex=volume_regex)


DATA_FLAGS = ("data", "layout", "split", "modality", "axis", "slice_", "slices", "normalize", "size", "geometry", "equalize",
              "volume_regex")


def pop_data(params: dict) -> DataConfig:
    """Take the data flags out of a command's parameters and build their :class:`DataConfig`."""
    return data_config(**{name: params.pop(name) for name in DATA_FLAGS})


grid_options = group(
    click.option("--radius", type=click.FloatRange(min=0, min_open=True), default=20, show_default=True,
                 help="Anomaly disk radius in pixels of the native images (scaled with them by --size)."),
    click.option("--n-intensities", type=click.IntRange(min=1), default=100, show_default=True,
                 help="Intensities in linspace(0, 1, n)."),
    click.option("--n-sigmas", type=click.IntRange(min=1), default=100, show_default=True,
                 help="Blur σ values in linspace(0, sigma-max, n)."),
    click.option("--sigma-max", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Largest Gaussian blur σ."),
    click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the anomaly centres (and textures)."),
    click.option("--centers", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE",
                 help="Anomaly centres to use instead of sampling them: .npy, text with two integer columns (row, column) "
                      "per image, or a results.npz."),
)

bootstrap_options = group(
    click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True, metavar="N",
                 help="Resamples of the images for the interval of every mean AP (seeded by --seed): 0 (none) or at "
                      "least 100."),
    click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True,
                 help="Level of the bootstrap intervals."),
)

output_options = group(
    click.option("--out", required=True, type=click.Path(file_okay=False), help="Result folder to create."),
    click.option("--overwrite", is_flag=True, help="Replace --out if blindspot wrote it (never another folder)."),
    click.option("--save-inputs", is_flag=True, help="Also store the prepared images, exactly as scored, in results.npz."),
)

#: Images per model call at inference unless ``--batch-size`` is given.
INFERENCE_BATCH = 64

def _warn_above_cores(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Warn when --threads exceeds this machine's cores (the threads would compete for them); --workers: ``open_pool``."""
    warn_above_cores(param.name, value)
    return value


threads_option = click.option("--threads", type=click.IntRange(min=1), default=None, callback=_warn_above_cores,
                              help="CPU threads of this process [default: all cores; one fewer when training].")
device_option = click.option("--device", default=None, metavar="cpu|cuda|cuda:N|mps",
                             help="torch device [default: CUDA, then MPS, then the CPU].")
batch_option = click.option("--batch-size", type=click.IntRange(min=1), default=None,
                            help="Images per model call [default: the preset's when training; 64 for inference].")
execution_options = group(threads_option, device_option, batch_option)

cluster_options = group(
    click.option("--scheduler", default=None, metavar="ADDRESS",
                 help="Run the work as tasks on the Dask scheduler at ADDRESS (e.g. tcp://host:8786, started with "
                      "'dask scheduler'); every worker must read the same data paths and write to --out "
                      "(docs/cluster.md)."),
    click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                 help="Run the work on a local Dask cluster of N worker processes on this machine (not --threads, which "
                      "are this process's CPU threads) [default: in this process]."),
)


def pop_execution(params: dict) -> Execution | None:
    """Take --scheduler and --workers out of a command's parameters: their :class:`Execution`, or None (in-process)."""
    scheduler, workers = params.pop("scheduler"), params.pop("workers")
    if scheduler is None and workers is None:
        return None
    return Execution(scheduler=scheduler, workers=workers)

"""Option groups shared by several commands (data source, grid, output)."""

from __future__ import annotations

import functools

import click

from blindspot.data import DataOptions, parse_slices
from blindspot.errors import BlindspotError


def data_options(command):
    """--data, --axis, --slice/--slices, --split, --normalize, --equalize."""
    decorators = [
        click.option("--data", default="mni152", show_default=True, metavar="mni152|FILE|DIR",
                     help="The embedded MNI152 template, a NIfTI file, or a folder of .nii/.nii.gz volumes (sorted)."),
        click.option("--axis", type=click.IntRange(0, 2), default=2, show_default=True, help="Slice axis of the volumes."),
        click.option("--slice", "slice_", type=click.IntRange(min=0), default=None,
                     help="One slice index per volume [default: 128 for NIfTI; central axial slices for mni152]."),
        click.option("--slices", default=None, metavar="A:B", help="A half-open range of slices per volume, e.g. 120:140."),
        click.option("--split", type=click.Choice(["all", "train", "test"]), default="all", show_default=True,
                     help="Volumes of a folder: all, or the protocol's first 60 % (train) / last 40 % (test)."),
        click.option("--normalize", type=float, default=None, metavar="PERCENTILE",
                     help="Divide each volume by this foreground percentile and clip to [0, 1] (off by default)."),
        click.option("--equalize", is_flag=True, help="Histogram-equalise each image over its foreground (256 bins)."),
    ]
    return functools.reduce(lambda cmd, deco: deco(cmd), reversed(decorators), command)


def build_data_options(data, axis, slice_, slices, split, normalize, equalize) -> DataOptions:
    """DataOptions from the parsed flags (``--slice`` and ``--slices`` are exclusive)."""
    if slice_ is not None and slices is not None:
        raise BlindspotError("use either --slice or --slices, not both.")
    chosen = (slice_,) if slice_ is not None else tuple(parse_slices(slices)) if slices is not None else None
    return DataOptions(data=data, axis=axis, slices=chosen, split=split, normalize=normalize, equalize=equalize)


def grid_options(command):
    """--radius, --n-sigmas, --sigma-max, --seed, --n-intensities."""
    decorators = [
        click.option("--radius", type=click.FloatRange(min=0, min_open=True), default=20, show_default=True, help="Anomaly disk radius in pixels."),
        click.option("--n-intensities", type=click.IntRange(min=1), default=100, show_default=True, help="Intensities in linspace(0, 1, n)."),
        click.option("--n-sigmas", type=click.IntRange(min=1), default=100, show_default=True, help="Blur σ values in linspace(0, sigma-max, n)."),
        click.option("--sigma-max", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Largest Gaussian blur σ."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the anomaly centres (and textures)."),
    ]
    return functools.reduce(lambda cmd, deco: deco(cmd), reversed(decorators), command)


def output_options(command):
    """--out, --overwrite, --save-inputs, --workers."""
    decorators = [
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Result folder to create."),
        click.option("--overwrite", is_flag=True, help="Replace --out if it exists."),
        click.option("--save-inputs", is_flag=True, help="Also store the processed images, exactly as scored, in results.npz."),
        click.option("--workers", type=click.IntRange(min=1), default=None, help="Threads over images [default: all cores]."),
    ]
    return functools.reduce(lambda cmd, deco: deco(cmd), reversed(decorators), command)

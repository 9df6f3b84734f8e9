"""``blindspot evaluate``: score anomaly maps under an explicit, exact protocol."""

from __future__ import annotations

import functools

import click

from blindspot.errors import BlindspotError


def _options(decorators):
    return lambda command: functools.reduce(lambda cmd, deco: deco(cmd), reversed(decorators), command)


_sources = _options([
    click.option("--maps", type=click.Path(file_okay=False), default=None,
                 help="Folder of anomaly maps (NIfTI or .npy), one per image or volume, from any method."),
    click.option("--labels", type=click.Path(file_okay=False), default=None,
                 help="Folder of pixel labels paired with --maps by file name without extension (binarised > 0)."),
    click.option("--masks", type=click.Path(file_okay=False), default=None, help="Optional folder of brain masks paired like --labels."),
    click.option("--images", type=click.Path(file_okay=False), default=None, help="Optional folder of the input images, for overlays."),
    click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="A model checkpoint (.pt) to compute maps on --data."),
    click.option("--baseline", type=click.Choice(["image", "zscore"]), default=None,
                 help="A training-free baseline on --data: the image itself (add --equalize for the equalised image) or the "
                      "per-pixel z-score against healthy training images."),
])

_dataset = _options([
    click.option("--data", default=None, metavar="PATH", help="Data set for --checkpoint/--baseline (layout detected, see --layout)."),
    click.option("--layout", type=click.Choice(["auto", "benchmark", "brats2021", "brats", "folder", "mood"]), default="auto",
                 show_default=True, help="Layout of --data, --val-data and --train-data."),
    click.option("--split", default=None, help="Split of --data [default: test; all for brats and mood]."),
    click.option("--modality", default="flair", show_default=True, help="BraTS modality file (flair, t1, t1ce, t2)."),
    click.option("--axis", type=click.IntRange(0, 2), default=None,
                 help="Slice axis of volumes [default: 2 for NIfTI and data sets, 0 for .npy maps]."),
    click.option("--slices", default=None, metavar="A:B", help="Half-open slice range of volumes [default: every slice with brain]."),
    click.option("--volumes", is_flag=True, help="brats layout: evaluate whole subjects as 3-D cases, read one at a time."),
    click.option("--resize", type=click.IntRange(min=1), default=None, help="Resize images (and masks) to N × N [default: a checkpoint's size]."),
    click.option("--crop", type=click.IntRange(min=1), default=None, help="Centre crop to N × N before resizing."),
    click.option("--normalize", type=float, default=None, metavar="PERCENTILE", help="Divide by this foreground percentile, clip to [0, 1]."),
    click.option("--equalize", is_flag=True, help="Histogram-equalise each image over its foreground (256 bins)."),
    click.option("--no-foreground", is_flag=True, help="Do not derive brain masks from the images (image > 0)."),
    click.option("--volume-regex", default=None, metavar="REGEX", help="Volume id from each file or image name (group 1), for --pooling volume."),
    click.option("--train-data", default=None, metavar="PATH", help="Healthy training images for --baseline zscore [default: the train split of --data]."),
])

_validation = _options([
    click.option("--val-maps", type=click.Path(file_okay=False), default=None, help="Validation maps for --threshold val-dice or fpr."),
    click.option("--val-labels", type=click.Path(file_okay=False), default=None, help="Labels of --val-maps (omit for healthy-only maps)."),
    click.option("--val-masks", type=click.Path(file_okay=False), default=None, help="Brain masks of --val-maps."),
    click.option("--val-data", default=None, metavar="PATH", help="Validation data set for --checkpoint/--baseline."),
    click.option("--val-fraction", type=float, default=None, help="Hold out this fraction of the test volumes (seeded) as validation."),
])

_protocol = _options([
    click.option("--preset", type=click.Choice(["benchmark", "brain-mri"]), default=None, help="A protocol convention; options below override it."),
    click.option("--image-score", type=click.Choice(["mean", "max", "mask-mean", "top-k"]), default=None, help="Image score of a map [default: mean]."),
    click.option("--top-percent", type=float, default=None, help="k of --image-score top-k, in percent [default: 1]."),
    click.option("--pooling", type=click.Choice(["pooled", "volume", "image"]), default=None, help="Pixel metrics pooled, or per volume / image then averaged [default: pooled]."),
    click.option("--threshold", type=click.Choice(["oracle", "val-dice", "fpr"]), default=None, help="Dice threshold choice [default: oracle]."),
    click.option("--fpr", type=float, default=None, metavar="PERCENT", help="False-positive rate for --threshold fpr, in percent [default: 5]."),
    click.option("--positive-residual/--no-positive-residual", default=None, help="Keep only positive residuals x − x̂ > 0 [default: off]."),
    click.option("--mask-erosion", type=click.IntRange(min=0), default=None, help="Multiply maps by the brain mask eroded N times (0: as is)."),
    click.option("--no-mask", is_flag=True, help="Do not multiply maps by a brain mask (overrides a preset)."),
    click.option("--median", type=click.IntRange(min=0), default=None, help="Median filter size (0: off) [default: 0]."),
    click.option("--median-dims", type=click.Choice(["2", "3"]), default=None, help="Median filter over each slice (2) or the volume (3) [default: the case's]."),
    click.option("--min-component", type=click.IntRange(min=0), default=None, help="Remove predicted components smaller than N pixels [default: 0]."),
    click.option("--accumulator", type=click.Choice(["exact", "binned"]), default=None, help="Pooled counts: exact or float32-bin histograms [default: exact]."),
    click.option("--bits", type=click.IntRange(10, 24), default=None, help="Resolution of --accumulator binned [default: 20]."),
    click.option("--stream", is_flag=True, help="Read maps one case per pass instead of keeping them in memory."),
    click.option("--seed", type=int, default=None, help="Seed of --val-fraction [default: 0]."),
])


def _spec(path, layout, split, modality, axis, slices, volumes, resize, crop, normalize, equalize, no_foreground, volume_regex):
    from blindspot.data.benchmark import Preprocessing
    from blindspot.data.nifti import parse_slices
    from blindspot.evaluation import DatasetSpec

    if path is None:
        return None
    prep = Preprocessing(crop=crop, resize=resize, normalize=normalize, equalize=equalize, foreground=not no_foreground)
    return DatasetSpec(str(path), layout=layout, split=split, modality=modality, axis=2 if axis is None else axis,
                       slices=tuple(parse_slices(slices)) if slices else None, volumes=volumes, preprocessing=prep,
                       volume_regex=volume_regex)


@click.command()
@_sources
@_dataset
@_validation
@_protocol
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Result folder to create.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--overlays", "n_overlays", type=click.IntRange(min=0), default=3, show_default=True, help="Best and worst cases drawn as overlays.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per model call (--checkpoint).")
@click.option("--device", default=None, help="torch device for --checkpoint [default: cpu].")
def evaluate(maps, labels, masks, images, checkpoint, baseline, data, layout, split, modality, axis, slices, volumes, resize,
             crop, normalize, equalize, no_foreground, volume_regex, train_data, val_maps, val_labels, val_masks, val_data,
             val_fraction, preset, image_score, top_percent, pooling, threshold, fpr, positive_residual, mask_erosion,
             no_mask, median, median_dims, min_component, accumulator, bits, stream, seed, out, overwrite, n_overlays,
             batch_size, device) -> None:
    """Evaluate anomaly maps (a folder, a checkpoint or a baseline) under an explicit, exact protocol."""
    from blindspot.evaluation import make_options, run_evaluation

    if no_mask and mask_erosion is not None:
        raise BlindspotError("use either --mask-erosion N or --no-mask, not both.")
    overrides = dict(image_score=image_score, top_percent=top_percent, pooling=pooling, threshold=threshold,
                     fpr=None if fpr is None else fpr / 100, positive_residual=positive_residual, median_size=median,
                     min_component_size=min_component, accumulator=accumulator, bits=bits, val_fraction=val_fraction, seed=seed)
    if mask_erosion is not None or no_mask:
        overrides["mask_erosion"] = mask_erosion
    if median_dims is not None:
        overrides["median_dims"] = int(median_dims)
    options = make_options(preset, **overrides)
    common = (layout, split, modality, axis, slices, volumes, resize, crop, normalize, equalize, no_foreground, volume_regex)
    folder = run_evaluation(
        out, options=options, preset=preset, maps=maps, labels=labels, masks=masks, images=images,
        val_maps=val_maps, val_labels=val_labels, val_masks=val_masks, checkpoint=checkpoint, baseline=baseline,
        data=_spec(data, *common), val_data=_spec(val_data, *common),
        train_data=_spec(train_data, layout, None, modality, axis, slices, False, resize, crop, normalize, equalize, no_foreground, None),
        axis=axis, volume_regex=volume_regex, stream=stream, batch_size=batch_size, device=device, n_overlays=n_overlays,
        overwrite=overwrite,
    )
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")

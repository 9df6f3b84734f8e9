"""``blindspot evaluate``: score anomaly maps under an explicit, exact protocol."""

from __future__ import annotations

import click

from blindspot.cli.options import (
    DATA_FLAGS,
    INFERENCE_BATCH,
    batch_option,
    cluster_options,
    data_config,
    data_options,
    device_option,
    group,
    pop_execution,
)
from blindspot.errors import BlindspotError

_sources = group(
    click.option("--maps", type=click.Path(exists=True, file_okay=False), default=None,
                 help="Folder of anomaly maps (NIfTI, .npy or images), one per image or volume, from any method."),
    click.option("--labels", type=click.Path(exists=True, file_okay=False), default=None,
                 help="Folder of pixel labels paired with --maps by file name without extension (binarised > 0)."),
    click.option("--masks", type=click.Path(exists=True, file_okay=False), default=None,
                 help="Optional folder of brain masks paired like --labels."),
    click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
                 help="Optional folder of the input images, for overlays."),
    click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="A model checkpoint (.pt) to compute maps on --data (prepared as the model was trained)."),
    click.option("--baseline", type=click.Choice(["image", "zscore"]), default=None,
                 help="A training-free baseline on --data: the image itself (add --equalize for the equalised image) or the "
                      "per-pixel z-score against healthy training images."),
    click.option("--volumes", is_flag=True, help="BraTS subjects: evaluate whole volumes as 3-D cases, read one at a time."),
)

_more_data = group(
    click.option("--train-data", default=None, metavar="PATH",
                 help="Healthy training images for --baseline zscore [default: the train split of --data]."),
    click.option("--val-maps", type=click.Path(exists=True, file_okay=False), default=None,
                 help="Validation maps for --threshold val-dice or fpr."),
    click.option("--val-labels", type=click.Path(exists=True, file_okay=False), default=None,
                 help="Labels of --val-maps (omit for healthy-only maps)."),
    click.option("--val-masks", type=click.Path(exists=True, file_okay=False), default=None, help="Brain masks of --val-maps."),
    click.option("--val-data", default=None, metavar="PATH", help="Validation data set for --checkpoint/--baseline."),
    click.option("--map-axis", type=click.IntRange(0, 2), default=None,
                 help="Slice axis of 3-D --maps [default: 2 for NIfTI, 0 for .npy]."),
    click.option("--stream", is_flag=True, help="Read --maps one case per pass instead of keeping them in memory."),
)

_protocol = group(
    click.option("--preset", type=click.Choice(["benchmark", "benchmark-compat", "brain-mri"]), default=None,
                 help="A protocol convention; the options below override it."),
    click.option("--image-score", type=click.Choice(["mean", "max", "mask-mean", "top-k"]), default=None,
                 help="Image score of a map [default: mean]."),
    click.option("--top-percent", type=click.FloatRange(0, 100, min_open=True), default=None,
                 help="k of --image-score top-k, in percent [default: 1]."),
    click.option("--pooling", type=click.Choice(["pooled", "volume", "image"]), default=None,
                 help="Pixel metrics pooled, or per volume / image then averaged [default: pooled]."),
    click.option("--threshold", type=click.Choice(["oracle", "val-dice", "fpr"]), default=None,
                 help="Dice threshold choice [default: oracle]."),
    click.option("--fpr", type=click.FloatRange(0, 100, min_open=True, max_open=True), default=None, metavar="PERCENT",
                 help="False-positive rate of --threshold fpr, in PERCENT of healthy validation pixels (5 = 5 %) [default: 5]."),
    click.option("--positive-residual/--no-positive-residual", default=None, help="Keep only positive residuals x − x̂ > 0 [default: off]."),
    click.option("--mask-erosion", type=click.IntRange(min=0), default=None, help="Multiply maps by the brain mask eroded N times (0: as is)."),
    click.option("--no-mask", is_flag=True, help="Do not multiply maps by a brain mask (overrides a preset)."),
    click.option("--median", type=click.IntRange(min=0), default=None, help="Median filter size (0: off) [default: 0]."),
    click.option("--median-dims", type=click.Choice(["2", "3"]), default=None,
                 help="Median filter over each slice (2) or the volume (3) [default: the case's]."),
    click.option("--min-component", type=click.IntRange(min=0), default=None,
                 help="Remove predicted components smaller than N pixels [default: 0]."),
    click.option("--accumulator", type=click.Choice(["exact", "binned"]), default=None,
                 help="Pooled counts: exact or float32-bin histograms [default: exact]."),
    click.option("--bits", type=click.IntRange(10, 24), default=None, help="Resolution of --accumulator binned [default: 20]."),
    click.option("--best-dice-rule", type=click.Choice(["exact", "benchmark"]), default=None,
                 help="Oracle best Dice: the exact maximum, or the benchmark's 200-threshold rule [default: exact]."),
    click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
                 help="Hold out this fraction of the test volumes (seeded) as validation (--threshold val-dice or fpr)."),
    click.option("--seed", type=click.IntRange(min=0), default=None,
                 help="Seed of --val-fraction, of the synthetic test set of data without labels and of the bootstrap "
                      "[default: 0]."),
    click.option("--bootstrap", type=click.IntRange(min=0), default=None, metavar="N",
                 help="Resamples of the test cases (volumes with --pooling volume) for a percentile interval of every "
                      "metric; 0: none [default: 1000]."),
    click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
                 help="Level of the bootstrap intervals [default: 0.95]."),
)


def _options(params: dict):
    from blindspot.evaluation import make_options

    if params["no_mask"] and params["mask_erosion"] is not None:
        raise BlindspotError("use either --mask-erosion N or --no-mask, not both.")
    names = ("image_score", "top_percent", "pooling", "threshold", "fpr", "positive_residual", "min_component_size",
             "accumulator", "bits", "best_dice_rule", "val_fraction", "seed", "median_size", "bootstrap", "confidence")
    params["min_component_size"], params["median_size"] = params["min_component"], params["median"]
    overrides = {name: params[name] for name in names}
    if params["mask_erosion"] is not None or params["no_mask"]:
        overrides["mask_erosion"] = params["mask_erosion"]
    if params["median_dims"] is not None:
        overrides["median_dims"] = int(params["median_dims"])
    return make_options(params["preset"], **overrides)


def _source(params: dict):
    from blindspot.evaluation import MapsFolder, OnData

    chosen = [flag for flag, key in (("--maps", "maps"), ("--checkpoint", "checkpoint"), ("--baseline", "baseline"))
              if params[key] is not None]
    if len(chosen) != 1:
        raise BlindspotError(f"give exactly one map source: --maps DIR, --checkpoint FILE or --baseline NAME; "
                             f"got {', '.join(chosen) or 'none'}.")
    data_given = {name: params[name] for name in DATA_FLAGS}
    if params["maps"] is not None:
        extra = [flag for flag, key in (("--data", "data"), ("--val-data", "val_data"), ("--train-data", "train_data"))
                 if params[key] not in (None, "mni152")]
        if extra or params["volumes"]:
            raise BlindspotError(f"{(extra or ['--volumes'])[0]} applies to --checkpoint and --baseline, not to --maps.")
        return MapsFolder(params["maps"], params["labels"], masks=params["masks"], images=params["images"],
                          val_maps=params["val_maps"], val_labels=params["val_labels"], val_masks=params["val_masks"],
                          axis=params["map_axis"], volume_regex=params["volume_regex"], stream=params["stream"])
    extra = [flag for flag, key in (("--labels", "labels"), ("--masks", "masks"), ("--images", "images"),
                                    ("--val-maps", "val_maps"), ("--map-axis", "map_axis"), ("--stream", "stream"))
             if params[key] not in (None, False)]
    if extra:
        raise BlindspotError(f"{extra[0]} applies to --maps, not to {chosen[0]}.")
    if params["train_data"] is not None and params["baseline"] != "zscore":
        raise BlindspotError("--train-data applies to --baseline zscore only.")
    other = lambda path: None if path is None else data_config(**{**data_given, "data": path})  # noqa: E731
    return OnData(data_config(**data_given), checkpoint=params["checkpoint"], baseline=params["baseline"],
                  val_data=other(params["val_data"]), train_data=other(params["train_data"]), volumes=params["volumes"],
                  batch_size=params["batch_size"] or INFERENCE_BATCH, device=params["device"])


@click.command()
@_sources
@data_options
@_more_data
@_protocol
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Result folder to create.")
@click.option("--overwrite", is_flag=True, help="Replace --out if blindspot wrote it (never another folder).")
@click.option("--overlays", "n_overlays", type=click.IntRange(min=0), default=3, show_default=True,
              help="Best and worst cases drawn as overlays.")
@batch_option
@device_option
@cluster_options
def evaluate(**params) -> None:
    """Evaluate anomaly maps (a folder, a checkpoint or a baseline) under an explicit, exact protocol."""
    from blindspot.evaluation import run_evaluation

    execution = pop_execution(params)
    options = _options(params)
    folder = run_evaluation(params["out"], _source(params), options, preset=params["preset"], n_overlays=params["n_overlays"],
                            overwrite=params["overwrite"], execution=execution)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")

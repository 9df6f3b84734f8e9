"""``blindspot audit``: where any model is blind, and which anomaly score closes the blind spot."""

from __future__ import annotations

import click

from blindspot.cli.options import (
    DATA_FLAGS,
    INFERENCE_BATCH,
    cluster_options,
    data_config,
    data_options,
    execution_options,
    grid_options,
    output_options,
    pop_data,
    pop_execution,
)
from blindspot.errors import BlindspotError

SCORE_NAMES = "l1,positive,negative,ssim,rarity,image,zscore"


@click.command()
@click.option("--model", default=None, metavar="FILE|package.module:function",
              help="The model: a blindspot checkpoint (.pt), a TorchScript or ONNX file, or a factory "
                   "package.module:function returning a torch.nn.Module or a callable (imported from the working "
                   "directory too).")
@click.option("--reconstructions", default=None, metavar="DIR",
              help="Instead of --model: reconstructions of the normal images, one file per image named like "
                   "'mni152_axis2_slice60.npy' (the image's name; see docs/audit.md); float arrays in the model's input "
                   "range, image files and integer arrays as images of their type (uint8 0-255). Only the normal mode "
                   "can be computed.")
@click.option("--weights", default=None, metavar="FILE",
              help="A state dict for the factory's network (loaded with weights_only=True); without it the network "
                   "keeps the weights its factory built, which the audit notes.")
@click.option("--input-range", default=None, metavar="A,B",
              help="The value range the model takes its inputs in, e.g. -1,1 [default: the checkpoint's, else 0,1].")
@click.option("--scores", default=SCORE_NAMES, show_default=True, metavar="LIST",
              help="Scoring functions to audit, comma-separated.")
@data_options
@click.option("--train-data", default=None, metavar="PATH",
              help="Healthy images for the rarity and zscore statistics, prepared like --data [default: the train split "
                   "of --data].")
@grid_options
@output_options
@execution_options
@cluster_options
def audit(**params) -> None:
    """Audit a model: AP over anomaly intensity (normal and anomalous mode), textures, sizes and every scoring function."""
    from blindspot.experiments.audit_runs import run_audit

    data_given = {name: params[name] for name in DATA_FLAGS}
    data = pop_data(params)
    params["execution"] = pop_execution(params)
    train_path = params.pop("train_data")
    train = None if train_path is None else data_config(**{**data_given, "data": train_path, "split": None})
    if params["model"] is None and params["reconstructions"] is None:
        raise BlindspotError("give the model to audit: --model FILE|package.module:function, or --reconstructions DIR.")
    params["batch_size"] = params["batch_size"] or INFERENCE_BATCH
    report = run_audit(params.pop("out"), params.pop("model"), data, train_data=train, **params)
    click.echo(f"wrote {report.parent}/ (summary: {report.parent / 'summary.md'})")
    click.echo(f"report: {report.resolve()}")

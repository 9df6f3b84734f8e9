"""``blindspot pitfalls``: the residual-pitfall experiments of MIDL 2022."""

from __future__ import annotations

import click

from blindspot.cli.options import (
    INFERENCE_BATCH,
    bootstrap_options,
    cluster_options,
    data_options,
    execution_options,
    grid_options,
    output_options,
    pop_data,
    pop_execution,
    threads_option,
)


@click.group()
def pitfalls() -> None:
    """Residual-score pitfalls (Meissen et al., MIDL 2022): intensity and texture vs. reconstruction error."""


# whole 3-D volumes (docs/volumes.md)
volumes_option = click.option(
    "--volumes", is_flag=True,
    help="Whole 3-D volumes (mni152, NIfTI, BraTS subjects): a ball of --radius voxels, the 3-D blur, AP over every "
         "voxel of each volume; --slice/--slices put the anomaly centres on those slices along --axis; --threads "
         "worker processes share the σ values.")
radius_unit_option = click.option(
    "--radius-unit", type=click.Choice(["voxel", "mm"]), default="voxel", show_default=True,
    help="With --volumes: --radius in voxels, or in millimetres from each volume's header spacing (a round ball on "
         "anisotropic voxels).")
compare_slices_option = click.option(
    "--compare-slices", is_flag=True,
    help="With --volumes: also run the 2-D experiment on each anomaly's central slice along --axis, beside the 3-D "
         "result (centres on --slice/--slices; default the protocol's slice 128, 78 for mni152).")


def _whole_volumes(params: dict, command) -> bool:
    """Take the volume flags out of ``params``; refuse those that need --volumes (and intervals' flags go along)."""
    from blindspot.errors import BlindspotError

    volumes, unit, compare = params.pop("volumes"), params.pop("radius_unit"), params.pop("compare_slices", False)
    if not volumes and unit != "voxel":
        raise BlindspotError("`radius_unit` mm applies to whole volumes: add `volumes`.")
    if not volumes and compare:
        raise BlindspotError("`compare_slices` applies to whole volumes: add `volumes`.")
    if volumes:
        params.update(radius_unit=unit)
        if command != "model":
            params.update(compare_slices=compare)
    return volumes


@pitfalls.command()
@data_options
@grid_options
@volumes_option
@radius_unit_option
@compare_slices_option
@bootstrap_options
@output_options
@threads_option
@cluster_options
def intensity(**params) -> None:
    """Experiment 1: AP of a disk anomaly over the intensity × blur-σ grid (a ball in whole volumes with --volumes)."""
    from blindspot.experiments.runs import run_intensity

    data = pop_data(params)
    params["execution"] = pop_execution(params)
    if _whole_volumes(params, "intensity"):
        from blindspot.experiments.volume_runs import run_volume_intensity as run_intensity
    folder = run_intensity(params.pop("out"), data, **params)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")


@pitfalls.command()
@data_options
@grid_options
@volumes_option
@radius_unit_option
@compare_slices_option
@bootstrap_options
@click.option("--match", type=click.Path(exists=True, file_okay=False), default=None,
              help="Experiment-1 result folder on the same images to match curves to (its centres are reused) "
                   "[default: compute the intensity grid in the same pass].")
@output_options
@threads_option
@cluster_options
def texture(**params) -> None:
    """Experiment 2: AP of pixel-shuffle, sink and source anomalies over the blur-σ grid, matched to intensities."""
    from blindspot.experiments.runs import run_texture

    data = pop_data(params)
    params["execution"] = pop_execution(params)
    if _whole_volumes(params, "texture"):
        from blindspot.experiments.volume_runs import run_volume_texture as run_texture
    folder = run_texture(params.pop("out"), data, **params)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")


@pitfalls.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
              help="A .pt checkpoint written by blindspot train (best_ap.pt, best_loss.pt or last.pt).")
@click.option("--reconstruct", type=click.Choice(["normal", "anomalous"]), default="normal", show_default=True,
              help="Reconstruct the normal image (one pass per image) or the anomalous one (one pass per image and intensity).")
@data_options
@grid_options
@volumes_option
@radius_unit_option
@bootstrap_options
@click.option("--match", type=click.Path(exists=True, file_okay=False), default=None,
              help="Experiment-1 result folder on the same prepared images to match the curve to (its centres are reused) "
                   "[default: compute the blur grid on the same images and centres].")
@output_options
@execution_options
@cluster_options
def model(**params) -> None:
    """Experiment 3: AP over the intensity grid with a trained model's reconstruction, matched to a blur σ.

    With --volumes the 2-D model reconstructs every slice of each whole volume along --axis and the
    whole volume is scored."""
    from blindspot.experiments.runs import run_model

    data = pop_data(params)
    params["execution"] = pop_execution(params)
    if _whole_volumes(params, "model"):
        from blindspot.experiments.volume_runs import run_volume_model as run_model
    params["batch_size"] = params["batch_size"] or INFERENCE_BATCH
    folder = run_model(params.pop("out"), params.pop("checkpoint"), data, **params)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")


@pitfalls.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to create.")
@click.option("--overwrite", is_flag=True, help="Replace --out if blindspot wrote it (never another folder).")
def compare(results, out, overwrite) -> None:
    """Compare experiment-3 results: curves with matched blurs, reconstruction error vs. AP, and a table."""
    from blindspot.experiments.runs import compare_models

    folder = compare_models(results, out, overwrite=overwrite)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")

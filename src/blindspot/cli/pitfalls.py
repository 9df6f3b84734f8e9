"""``blindspot pitfalls``: the residual-pitfall experiments of MIDL 2022."""

from __future__ import annotations

import click

from blindspot.cli.options import build_data_options, data_options, grid_options, output_options


@click.group()
def pitfalls() -> None:
    """Residual-score pitfalls (Meissen et al., MIDL 2022): intensity and texture vs. reconstruction error."""


@pitfalls.command()
@data_options
@grid_options
@output_options
def intensity(data, axis, slice_, slices, split, normalize, equalize, radius, n_intensities, n_sigmas,
              sigma_max, seed, out, overwrite, save_inputs, workers) -> None:
    """Experiment 1: AP of a disk anomaly over the intensity × blur-σ grid."""
    from blindspot.experiments.runs import run_intensity

    options = build_data_options(data, axis, slice_, slices, split, normalize, equalize)
    folder = run_intensity(out, options, radius=radius, n_intensities=n_intensities, n_sigmas=n_sigmas,
                           sigma_max=sigma_max, seed=seed, save_inputs=save_inputs, workers=workers, overwrite=overwrite)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")


@pitfalls.command()
@data_options
@grid_options
@click.option("--match", type=click.Path(exists=True, file_okay=False), default=None,
              help="Experiment-1 result folder on the same images to match curves to (its centres are reused) "
                   "[default: compute the intensity grid in the same pass].")
@output_options
def texture(data, axis, slice_, slices, split, normalize, equalize, radius, n_intensities, n_sigmas,
            sigma_max, seed, match, out, overwrite, save_inputs, workers) -> None:
    """Experiment 2: AP of pixel-shuffle, sink and source anomalies over the blur-σ grid, matched to intensities."""
    from blindspot.experiments.runs import run_texture

    options = build_data_options(data, axis, slice_, slices, split, normalize, equalize)
    folder = run_texture(out, options, radius=radius, n_intensities=n_intensities, n_sigmas=n_sigmas,
                         sigma_max=sigma_max, seed=seed, match=match, save_inputs=save_inputs, workers=workers,
                         overwrite=overwrite)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")

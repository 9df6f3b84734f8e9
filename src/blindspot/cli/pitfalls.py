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


@pitfalls.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False),
              help="A .pt checkpoint written by blindspot train (best_ap.pt, best_loss.pt or last.pt).")
@click.option("--reconstruct", type=click.Choice(["normal", "anomalous"]), default="normal", show_default=True,
              help="Reconstruct the normal image (one pass per image) or the anomalous one (one pass per image and intensity).")
@data_options
@click.option("--radius", type=click.FloatRange(min=0, min_open=True), default=20, show_default=True,
              help="Anomaly disk radius in pixels of the loaded images (scaled with them when they are resized to the model).")
@click.option("--n-intensities", type=click.IntRange(min=1), default=100, show_default=True, help="Intensities in linspace(0, 1, n).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the anomaly centres.")
@click.option("--match", type=click.Path(exists=True, file_okay=False), default=None,
              help="Experiment-1 result folder on the same images to match the curve to (its centres are reused) "
                   "[default: compute the blur grid on the same images and centres].")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per model call.")
@click.option("--device", default=None, help="torch device, e.g. cpu or cuda [default: CUDA, then MPS, then CPU].")
@output_options
def model(checkpoint, reconstruct, data, axis, slice_, slices, split, normalize, equalize, radius, n_intensities, seed,
          match, batch_size, device, out, overwrite, save_inputs, workers) -> None:
    """Experiment 3: AP over the intensity grid with a trained model's reconstruction, matched to a blur σ."""
    from blindspot.experiments.model_pitfalls import run_model

    options = build_data_options(data, axis, slice_, slices, split, normalize, equalize)
    folder = run_model(out, checkpoint, options, reconstruct=reconstruct, radius=radius, n_intensities=n_intensities,
                       seed=seed, match=match, save_inputs=save_inputs, batch_size=batch_size, device=device,
                       workers=workers, overwrite=overwrite)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")


@pitfalls.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to create.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def compare(results, out, overwrite) -> None:
    """Compare experiment-3 results: curves with matched blurs, reconstruction error vs. AP, and a table."""
    from blindspot.experiments.model_pitfalls import compare_models

    folder = compare_models(results, out, overwrite=overwrite)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")

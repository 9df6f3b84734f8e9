"""``blindspot compare``: paired differences, with intervals, between evaluations of the same cases."""

from __future__ import annotations

import click


@click.command()
@click.argument("evaluations", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False), metavar="EVAL_DIR...")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Result folder to create.")
@click.option("--overwrite", is_flag=True, help="Replace --out if blindspot wrote it (never another folder).")
@click.option("--bootstrap", type=click.IntRange(min=1), default=1000, show_default=True, metavar="N",
              help="Resamples of the cases (volumes with --pooling volume), shared by every evaluation.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True,
              help="Level of the intervals.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the resamples.")
def compare(evaluations, out, overwrite, bootstrap, confidence, seed) -> None:
    """Compare evaluations (blindspot evaluate folders) of the same cases: paired differences with bootstrap intervals."""
    from blindspot.evaluation.compare import compare_evaluations

    folder = compare_evaluations(evaluations, out, n_resamples=bootstrap, confidence=confidence, seed=seed, overwrite=overwrite)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")

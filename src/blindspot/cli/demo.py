"""``blindspot demo``: the main job on the embedded data."""

from __future__ import annotations

import click


@click.command()
@click.option("--out", default="demo-report", show_default=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Threads over images [default: all cores].")
def demo(out, overwrite, workers) -> None:
    """Run the pitfall experiments on the embedded MNI152 slices and write one report."""
    from blindspot.demo import run_demo

    report = run_demo(out, overwrite=overwrite, workers=workers)
    click.echo(f"report: {report.resolve()}")

"""``blindspot demo``: the main job on the embedded data."""

from __future__ import annotations

import click

from blindspot.cli.options import threads_option


@click.command()
@click.option("--out", default="demo-report", show_default=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--overwrite", is_flag=True, help="Replace --out if blindspot wrote it (never another folder).")
@threads_option
def demo(out, overwrite, threads) -> None:
    """Run the pitfall experiments on the embedded MNI152 slices, audit the trained model, and write one report."""
    from blindspot.demo import run_demo

    report = run_demo(out, overwrite=overwrite, threads=threads)
    click.echo(f"report: {report.resolve()}")
    audit_report = report.parent / "audit" / "report.html"
    if audit_report.exists():
        click.echo(f"audit report (HTML): {audit_report.resolve()}")

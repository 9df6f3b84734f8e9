"""``blindspot sweep``: train and evaluate a model over a range of one option (the latent size d)."""

from __future__ import annotations

import click

from blindspot.cli.options import cluster_options, data_options, device_option, pop_data, pop_execution, threads_option
from blindspot.cli.train import TRAINING_FLAGS, training_options


class _DimsCommand(click.Command):
    """Lets ``--dims`` take several space-separated values (``--dims 1 2 4 8``), as one option value.

    Values run up to the next option; negative numbers are kept as values so the sweep can name them.
    """

    def parse_args(self, ctx, args):
        merged, k = [], 0
        while k < len(args):
            merged.append(args[k])
            if args[k] == "--dims":
                values = []
                while k + 1 < len(args) and (not args[k + 1].startswith("-") or args[k + 1].lstrip("-").isdigit()):
                    values.append(args[k + 1])
                    k += 1
                merged.append(" ".join(values))
            k += 1
        return super().parse_args(ctx, merged)


@click.group()
def sweep() -> None:
    """Sweeps of a model option, each value trained and evaluated in its own run folder (resumable)."""


@sweep.command(cls=_DimsCommand)
@click.option("--model", default="bench-ae", show_default=True, help="A registered model with a latent size d.")
@click.option("--dims", default="1 2 4 8 16 32 64 128", show_default=True, metavar="D...",
              help="Latent sizes, space- or comma-separated.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Runs per d, with seeds seed, seed+1, ...")
@training_options
@data_options
@click.option("--test-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the synthetic test set of a source without labels (evaluate's --seed), and of the bootstrap.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True, metavar="N",
              help="Resamples of the test images and repeats for the intervals and the paired comparison with the best d "
                   "(0: none); may change when resuming.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True,
              help="Level of the intervals.")
@device_option
@threads_option
@cluster_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep folder (created, or resumed).")
@click.option("--overwrite", is_flag=True, help="Delete --out first (a sweep folder blindspot wrote) instead of resuming it.")
def latent(**params) -> None:
    """Latent-size sweep (MICCAI 2024): train every (d, repeat) on the train split, evaluate on the test split, summarise."""
    from blindspot.experiments.sweep import sweep_latent

    overrides = {key: params.pop(key) for key in TRAINING_FLAGS}
    data = pop_data({**params, "size": None})
    execution = pop_execution(params)
    folder = sweep_latent(params["out"], model=params["model"], dims=params["dims"].replace(",", " ").split(),
                          repeats=params["repeats"], preset=params["preset"], data=data, overrides=overrides,
                          device=params["device"], threads=params["threads"], seed=params["test_seed"],
                          bootstrap=params["bootstrap"], confidence=params["confidence"], overwrite=params["overwrite"],
                          execution=execution)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")

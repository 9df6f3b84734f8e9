"""``blindspot sweep``: train and evaluate a model over a range of one option (the latent size d)."""

from __future__ import annotations

import click

from blindspot.cli.options import build_data_options, data_options


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
@click.option("--repeats", type=int, default=3, show_default=True, help="Runs per d, with seeds seed, seed+1, ...")
@click.option("--preset", default="quick", show_default=True, help="Training preset: quick, pitfalls or ae4ad.")
@click.option("--steps", type=int, default=None, help="Override the preset's number of training steps.")
@click.option("--batch-size", type=int, default=None, help="Override the preset's batch size.")
@click.option("--lr", type=float, default=None, help="Override the preset's learning rate.")
@click.option("--size", type=int, default=None, help="Override the preset's image size.")
@click.option("--seed", type=int, default=None, help="Override the preset's seed (run k uses seed + k).")
@data_options
@click.option("--device", default=None, help="torch device [default: CUDA, then MPS, then CPU].")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Sweep folder (created, or resumed).")
@click.option("--overwrite", is_flag=True, help="Delete --out first instead of resuming it.")
def latent(model, dims, repeats, preset, steps, batch_size, lr, size, seed, data, axis, slice_, slices, split,
           normalize, equalize, device, out, overwrite) -> None:
    """Latent-size sweep (MICCAI 2024): train every (d, repeat), evaluate on held-out slices, summarise."""
    from blindspot.experiments.sweep import sweep_latent

    options = build_data_options(data, axis, slice_, slices, split, normalize, equalize)
    overrides = dict(steps=steps, batch_size=batch_size, lr=lr, size=size, seed=seed)
    folder = sweep_latent(out, model=model, dims=dims.replace(",", " ").split(), repeats=repeats, preset=preset,
                          data=options, overrides=overrides, device=device, overwrite=overwrite)
    click.echo(f"wrote {folder}/ (summary: {folder / 'summary.md'})")

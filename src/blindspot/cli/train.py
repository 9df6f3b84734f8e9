"""``blindspot train`` and ``blindspot list-models``."""

from __future__ import annotations

import click
from click.core import ParameterSource

from blindspot.errors import BlindspotError

#: Options that ``--resume`` accepts besides the run folder (everything else comes from the checkpoint).
_RESUME_OPTIONS = {"resume", "steps", "device", "threads", "model_name"}
_PRESETS = ("quick", "pitfalls", "ae4ad")


def parse_model_options(pairs: tuple[str, ...]) -> dict:
    """``("d=16", "loss=l1")`` -> ``{"d": 16, "loss": "l1"}``; values parse as int, then float, then str.

    >>> parse_model_options(("d=16", "kl_weight=5e-3", "loss=l1"))
    {'d': 16, 'kl_weight': 0.005, 'loss': 'l1'}
    """
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise BlindspotError(f"--option must look like KEY=VALUE (e.g. --option d=16); got '{pair}'.")
        for parse in (int, float, str):
            try:
                value = parse(text.strip())
                break
            except ValueError:
                continue
        options[key.strip()] = value
    return options


@click.command()
@click.option("--model", "model_name", default=None, metavar="NAME", help="Model to train (see `blindspot list-models`).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A model option, repeatable, e.g. --option d=16 (values parse as int, float or text).")
@click.option("--preset", type=click.Choice(_PRESETS), default="quick", show_default=True,
              help="quick (CPU-sized), pitfalls (MIDL 2022) or ae4ad (MICCAI 2024); see docs/training.md.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Total optimizer steps [preset].")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Run length in passes over the training images, instead of --steps [preset].")
@click.option("--batch-size", type=click.IntRange(min=2), default=None, help="Images per step [preset].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Learning rate [preset].")
@click.option("--size", type=click.IntRange(min=32), default=None, help="Image size in pixels, a power of two [preset].")
@click.option("--loss", type=click.Choice(["l1", "mse"]), default=None, help="Reconstruction loss [preset, else the model's].")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of the weights and of every random draw [0].")
@click.option("--val-every", type=click.IntRange(min=1), default=None, help="Validate and save checkpoints every N steps [preset].")
@click.option("--augment/--no-augment", default=None,
              help="Random augmentation of training batches [on for the embedded template, off for NIfTI folders].")
@click.option("--device", default=None, metavar="cpu|cuda|cuda:N|mps", help="[default: CUDA, then MPS, then CPU].")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads while training [one fewer than the cores, at least 1].")
@click.option("--data", default="mni152", show_default=True, metavar="mni152|FILE|DIR",
              help="The embedded MNI152 template (fixed training slices) or NIfTI volumes (5 % of them held out for validation).")
@click.option("--slices", default=None, metavar="A:B", help="Slices of each NIfTI volume [120:140].")
@click.option("--axis", type=click.IntRange(0, 2), default=2, show_default=True, help="Slice axis of NIfTI volumes.")
@click.option("--split", type=click.Choice(["all", "train", "test"]), default="train", show_default=True,
              help="Volumes of a folder: the protocol's first 60 % (train), all, or the last 40 % (test).")
@click.option("--normalize", type=float, default=None, metavar="PERCENTILE",
              help="Divide each volume by this foreground percentile and clip to [0, 1].")
@click.option("--equalize", is_flag=True, help="Histogram-equalise each training image over its foreground.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder to create.")
@click.option("--resume", type=click.Path(file_okay=False), default=None, metavar="RUN_DIR",
              help="Continue the run in RUN_DIR from its last.pt, up to --steps in total (only --steps, --device and --threads may be given).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def train(model_name, options, preset, steps, epochs, batch_size, lr, size, loss, seed, val_every, augment, device,
          threads, data, slices, axis, split, normalize, equalize, out, resume, overwrite) -> None:
    """Train a reconstruction model on normal images; writes checkpoints and metrics to --out."""
    from blindspot.data import DataOptions, parse_slices
    from blindspot.training import make_config, resume_run
    from blindspot.training import train as train_model

    context = click.get_current_context()
    given = {name for name in context.params if context.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    if resume is not None:
        extra = sorted(given - _RESUME_OPTIONS)
        if extra:
            flag = next(p.opts[0] for p in context.command.params if p.name == extra[0])
            raise BlindspotError(f"{flag} cannot be given with --resume; the run keeps its settings (only --steps, --device and --threads may change).")
        try:
            folder = resume_run(resume, steps=steps, device=device, model_name=model_name, threads=threads)
        except KeyboardInterrupt:
            click.echo(f"interrupted; continue with: blindspot train --resume {resume}", err=True)
            raise
    else:
        if model_name is None or out is None:
            raise BlindspotError("pass --model NAME and --out RUN_DIR (or --resume RUN_DIR to continue a run).")
        overrides = {key: value for key, value in (("steps", steps), ("epochs", epochs), ("batch_size", batch_size),
                                                   ("lr", lr), ("size", size), ("loss", loss), ("seed", seed),
                                                   ("val_every", val_every), ("augment", augment)) if value is not None}
        config = make_config(preset, **overrides)
        chosen = tuple(parse_slices(slices)) if slices is not None else None
        data_options = DataOptions(data=data, axis=axis, slices=chosen, split=split if data != "mni152" else "all",
                                   normalize=normalize, equalize=equalize)
        try:
            folder = train_model(config, out, model_name=model_name, model_options=parse_model_options(options),
                                 data=data_options, device=device, overwrite=overwrite, threads=threads)
        except KeyboardInterrupt:
            click.echo(f"interrupted; the progress is in {out}.partial/last.pt: continue with `blindspot train --resume {out}` "
                       "or run the same command again.", err=True)
            raise
    click.echo(f"wrote {folder}/ (checkpoints best_ap.pt, best_loss.pt, last.pt; metrics.csv)")


@click.command("list-models")
def list_models() -> None:
    """List the registered models and their options (defaults)."""
    from blindspot.models import list_models as names
    from blindspot.models import model_options

    for name in names():
        options = " ".join(f"{key}={value!r}" for key, value in model_options(name).items())
        click.echo(f"{name:<12} {options}")

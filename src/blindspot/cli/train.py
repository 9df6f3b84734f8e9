"""``blindspot train`` and ``blindspot list-models``."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from blindspot.cli.options import data_options, device_option, group, pop_data, threads_option
from blindspot.errors import BlindspotError

#: Options that ``--resume`` accepts besides the run folder (everything else comes from the checkpoint).
_RESUME_OPTIONS = {"resume", "steps", "device", "threads", "model_name"}
PRESETS = ("quick", "pitfalls", "ae4ad")


def parse_model_options(pairs: tuple[str, ...]) -> dict:
    """``("d=16", "loss=l1")`` -> ``{"d": 16, "loss": "l1"}``; values parse as int, then float, then str.

    A key given twice is refused.

    >>> parse_model_options(("d=16", "kl_weight=5e-3", "loss=l1"))
    {'d': 16, 'kl_weight': 0.005, 'loss': 'l1'}
    """
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key or not text:
            raise BlindspotError(f"--option must look like KEY=VALUE (e.g. --option d=16); got '{pair}'.")
        if key in options:
            raise BlindspotError(f"--option {key} is given twice ({options[key]!r} and {text!r}); give it once.")
        for parse in (int, float, str):
            try:
                value = parse(text)
                break
            except ValueError:
                continue
        options[key] = value
    return options


#: The training settings a flag can override (``--steps``, ...), each a TrainConfig field of that name.
training_options = group(
    click.option("--preset", type=click.Choice(PRESETS), default="quick", show_default=True,
                 help="quick (CPU-sized), pitfalls (MIDL 2022) or ae4ad (MICCAI 2024); see docs/training.md."),
    click.option("--steps", type=click.IntRange(min=1), default=None, help="Total optimizer steps [preset]."),
    click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Run length in passes over the training images, instead of --steps [preset]."),
    click.option("--batch-size", type=click.IntRange(min=2), default=None, help="Images per model call: per training step [preset]."),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Learning rate [preset]."),
    click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of the weights and of every random draw [0]."),
)
TRAINING_FLAGS = ("steps", "epochs", "batch_size", "lr", "seed", "size")


@click.command()
@click.option("--model", "model_name", default=None, metavar="NAME", help="Model to train (see `blindspot list-models`).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A model option, repeatable, e.g. --option d=16 (values parse as int, float or text).")
@training_options
@click.option("--loss", type=click.Choice(["l1", "mse"]), default=None, help="Reconstruction loss [preset, else the model's].")
@click.option("--val-every", type=click.IntRange(min=1), default=None, help="Validate and save checkpoints every N steps [preset].")
@click.option("--augment/--no-augment", default=None,
              help="Random augmentation of training batches [on for the embedded template, off otherwise].")
@data_options
@device_option
@threads_option
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder to create.")
@click.option("--resume", type=click.Path(file_okay=False), default=None, metavar="RUN_DIR",
              help="Continue the run in RUN_DIR from its last.pt, up to --steps in total (only --steps, --device and --threads may be given).")
@click.option("--overwrite", is_flag=True, help="Replace --out if blindspot wrote it (never another folder).")
def train(**params) -> None:
    """Train a reconstruction model on normal images; writes checkpoints and metrics to --out."""
    from blindspot.cli import as_flags
    from blindspot.training import NothingToDo, make_config, resume_run
    from blindspot.training import train as train_model

    context = click.get_current_context()
    given = {name for name in context.params if context.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    resume, out, model_name = params["resume"], params["out"], params["model_name"]
    if resume is not None:
        extra = sorted(given - _RESUME_OPTIONS)
        if extra:
            flag = next(p.opts[0] for p in context.command.params if p.name == extra[0])
            raise BlindspotError(f"{flag} cannot be given with --resume; the run keeps its settings "
                                 "(only --steps, --device and --threads may change).")
        try:
            folder = resume_run(resume, steps=params["steps"], device=params["device"], model_name=model_name,
                                threads=params["threads"])
        except NothingToDo as done:
            click.echo(as_flags(str(done)))
            return
        except KeyboardInterrupt:  # the one line `blindspot.cli.main` prints
            raise KeyboardInterrupt(f"interrupted; continue with: blindspot train --resume {resume}") from None
    else:
        if model_name is None or out is None:
            raise BlindspotError("pass --model NAME and --out RUN_DIR (or --resume RUN_DIR to continue a run).")
        overrides = {key: params[key] for key in (*TRAINING_FLAGS, "loss", "val_every", "augment") if params[key] is not None}
        config = make_config(params["preset"], **overrides)
        data = pop_data({**params, "size": None})
        try:
            folder = train_model(config, out, model_name=model_name, model_options=parse_model_options(params["options"]),
                                 data=data, device=params["device"], overwrite=params["overwrite"], threads=params["threads"])
        except KeyboardInterrupt:
            raise KeyboardInterrupt(_interrupted(out)) from None
    click.echo(f"wrote {folder}/ (checkpoints best_ap.pt, best_loss.pt, last.pt; metrics.csv)")


def _interrupted(out: str) -> str:
    """The line an interrupted training prints (:func:`blindspot.cli.main`): where its progress is, if any, and how to go on."""
    from blindspot.results import staging_path

    staging = staging_path(Path(out))
    if (staging_path(Path(out).expanduser()) / "last.pt").is_file():
        return (f"interrupted; the progress is in '{staging / 'last.pt'}': run the same command again (or "
                f"`blindspot train --resume {out}`) to continue.")
    return "interrupted before the first checkpoint; run the same command again to start over."


@click.command("list-models")
def list_models() -> None:
    """List the registered models and their options (defaults)."""
    from blindspot.models import list_models as names
    from blindspot.models import model_options

    for name in names():
        options = " ".join(f"{key}={value!r}" for key, value in model_options(name).items())
        click.echo(f"{name:<12} {options}")

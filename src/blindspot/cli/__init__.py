"""The ``blindspot`` command line: a thin layer, each command one call into the library.

``main(argv)`` returns the exit status instead of exiting, so tests can call it in-process. User
errors (:class:`blindspot.errors.BlindspotError`) print one line and return 2, without a traceback.
"""

from __future__ import annotations

import sys

import click

from blindspot import __version__
from blindspot.errors import BlindspotError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="blindspot")
def cli() -> None:
    """Find, measure and fix the blind spots of reconstruction-based anomaly detection."""


def _register() -> None:
    from blindspot.cli.demo import demo
    from blindspot.cli.evaluate import evaluate
    from blindspot.cli.pitfalls import pitfalls
    from blindspot.cli.sweep import sweep
    from blindspot.cli.train import list_models, train

    cli.add_command(pitfalls)
    cli.add_command(demo)
    cli.add_command(evaluate)
    cli.add_command(sweep)
    cli.add_command(train)
    cli.add_command(list_models)


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 success, 2 user error, 130 interrupted)."""
    try:
        cli.main(args=argv, prog_name="blindspot", standalone_mode=False)
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except BlindspotError as err:
        click.echo(f"error: {err}", err=True)
        return 2
    except (KeyboardInterrupt, click.Abort):
        click.echo("interrupted; run the same command again to resume.", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

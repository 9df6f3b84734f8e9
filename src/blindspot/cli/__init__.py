"""The ``blindspot`` command line: a thin layer, each command one call into the library.

``main(argv)`` returns the exit status instead of exiting, so tests can call it in-process. User
errors (:class:`blindspot.errors.BlindspotError`) print one line and return 2, without a traceback.
"""

from __future__ import annotations

import re
import sys
import warnings

import click

from blindspot import __version__
from blindspot.errors import BlindspotError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="blindspot")
def cli() -> None:
    """Find, measure and fix the blind spots of reconstruction-based anomaly detection."""


def _register() -> None:
    from blindspot.cli.audit import audit
    from blindspot.cli.compare import compare
    from blindspot.cli.demo import demo
    from blindspot.cli.evaluate import evaluate
    from blindspot.cli.pitfalls import pitfalls
    from blindspot.cli.sweep import sweep
    from blindspot.cli.train import list_models, train

    cli.add_command(pitfalls)
    cli.add_command(demo)
    cli.add_command(evaluate)
    cli.add_command(compare)
    cli.add_command(sweep)
    cli.add_command(train)
    cli.add_command(list_models)
    cli.add_command(audit)


_register()


#: Library parameters whose CLI flag is not ``--`` + the name with dashes.
FLAGS = {"median_size": "--median", "min_component_size": "--min-component", "data": "--data", "n_overlays": "--overlays"}


def as_flags(message: str) -> str:
    """A library message in CLI terms: every parameter written as `name` becomes its flag (``--name``).

    >>> as_flags("`batch_size` must be >= 1; `median_size` too")
    '--batch-size must be >= 1; --median too'
    """
    return re.sub(r"`(\w+)`", lambda m: FLAGS.get(m.group(1), "--" + m.group(1).replace("_", "-")), message)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {as_flags(str(message))}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 success, 2 user error or fault, 130 interrupted).

    Every user error and every OS fault (full disk, permissions) is one line on stderr, never a
    traceback; warnings are one line each.
    """
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="blindspot", standalone_mode=False)
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except BlindspotError as err:
        click.echo(f"error: {as_flags(str(err))}", err=True)
        return 2
    except OSError as err:
        where = f" '{err.filename}'" if err.filename else ""
        click.echo(f"error: cannot access{where} ({err.strerror or err}).", err=True)
        return 2
    except (KeyboardInterrupt, click.Abort):
        click.echo("interrupted; run the same command again to resume.", err=True)
        return 130
    finally:
        warnings.showwarning = previous
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

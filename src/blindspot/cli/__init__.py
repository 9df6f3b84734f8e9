"""The ``blindspot`` command line: a thin layer, each command one call into the library.

``main(argv)`` returns the exit status instead of exiting, so tests can call it in-process. User
errors (:class:`blindspot.errors.BlindspotError`) print one line and return 2, without a traceback.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
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


def repeated_option(argv: list[str]) -> str | None:
    """The first option of ``argv`` that takes one value and is given more than once (click keeps the last silently).

    The command's own parser reads ``argv`` (so a value that looks like a flag stays a value); options
    declared ``multiple`` and flags may repeat. None when nothing repeats or click itself will refuse ``argv``.
    """
    command, args, ctx = cli, list(argv), None
    while True:
        settings = {**command.context_settings, "resilient_parsing": True}  # as click makes it (e.g. -h for help)
        ctx = command.context_class(command, info_name=command.name, parent=ctx, **settings)
        try:
            _, rest, order = command.make_parser(ctx).parse_args(args)
        except click.UsageError:
            return None
        if not isinstance(command, click.Group):
            break
        command = command.get_command(ctx, rest[0]) if rest else None
        if command is None:
            return None
        args = rest[1:]
    seen = set()
    for param in order:
        if isinstance(param, click.Option) and not (param.multiple or param.is_flag or param.count):
            if param.name in seen:
                return max(param.opts, key=len)
            seen.add(param.name)
    return None


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def _one_line(err: click.ClickException) -> str:
    """Click's own error (a missing file, a bad value, an unknown flag) as one sentence, with where to find help."""
    message = " ".join(err.format_message().split())
    context = getattr(err, "ctx", None)
    return f"{message.rstrip('.')}; see '{context.command_path} -h'." if context is not None else message


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 success, 2 user error or fault, 130 interrupted).

    Every user error and every OS fault (full disk, permissions) is one line on stderr, never a
    traceback; warnings are one line each. SIGTERM (``kill``, a batch system ending a job) takes the
    path of Ctrl-C: what is running closes its workers, and the run can be resumed.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 (e.g. Latin-1) prints, escaped
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    in_main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        flag = repeated_option(argv)
        if flag is not None:
            raise BlindspotError(f"{flag} is given more than once; give it once (only its last value would be used).")
        cli.main(args=argv, prog_name="blindspot", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as err:  # a bare command group: its help, as usual
        err.show()
        return err.exit_code
    except click.ClickException as err:
        click.echo(f"error: {_one_line(err)}", err=True)
        return 2
    except BlindspotError as err:
        click.echo(f"error: {as_flags(str(err))}", err=True)
        return 2
    except OSError as err:
        where = f" '{err.filename}'" if err.filename else ""
        click.echo(f"error: cannot access{where} ({err.strerror or err}).", err=True)
        return 2
    except (KeyboardInterrupt, click.Abort) as err:
        cause = err.__cause__ if isinstance(err, click.Abort) else err  # click turns Ctrl-C into Abort
        said = cause.args[0] if isinstance(cause, KeyboardInterrupt) and cause.args else None  # a command's own line
        click.echo(said or "interrupted; run the same command again to resume.", err=True)
        return 130
    finally:
        warnings.showwarning = previous
        if in_main:
            signal.signal(signal.SIGTERM, before)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

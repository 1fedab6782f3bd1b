"""The `m2tune` command group: every user mistake is one line `Error: ...` and exit code 2.

Click prints a usage block before a bad option's message and exits 1 for a ClickException; this
group prints only the message, on one line, and exits 2 for both (click's own code for a usage
error). Commands raise CliError for a mistake they find themselves (a storage that does not exist,
a study that is not there). An unexpected exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__


class CliError(click.ClickException):
    """A user mistake found by a command: one line, exit code 2."""
    exit_code = 2


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


class OneLineErrors(click.Group):
    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:                  # --help, --version
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except click.UsageError as exc:                       # bad option, missing argument, ...
            click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="m2tune")
def main() -> None:
    """Tune, validate and ship Triton kernels for the M²RNN recurrence."""

"""`m2tune report`: dashboards of tuning studies in one self-contained HTML file."""
from __future__ import annotations

from pathlib import Path

import click

from .group import CliError, main
from .options import storage_option


@main.command()
@storage_option()
@click.option("--study", "studies", multiple=True, help="Study to show (repeatable) [default: all].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True, help="HTML file to write.")
def report(storage: str, studies: tuple[str, ...], out: Path) -> None:
    """Dashboards of tuning studies in one self-contained HTML file (no GPU needed).

    Per study: trial history (rejected trials in their own lane), time by parameter value, model vs
    measurement on held-out trials, the roofline of the sequential kernel, and the commonest
    failure reasons.
    """
    from ..report.page import ReportError, write_report
    from ..tuning.storage import StorageError
    try:
        path = write_report(out, storage_url=storage, studies=studies or None)
    except (ReportError, StorageError) as exc:
        raise CliError(str(exc)) from None
    click.echo(f"wrote {path}")

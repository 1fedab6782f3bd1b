"""`m2tune report`: dashboards of tuning studies and bench/training results in one self-contained HTML file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from .group import CliError, main
from .options import DEFAULT_STORAGE


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--storage", default=None, help="Optuna storage URL of the studies "
              f"[default: {DEFAULT_STORAGE} when no PATHS are given].")
@click.option("--study", "studies", multiple=True, help="Study to show (repeatable) [default: all].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True, help="HTML file to write.")
def report(paths: tuple[Path, ...], storage: Optional[str], studies: tuple[str, ...], out: Path) -> None:
    """Dashboards of tuning studies and of bench/training results in one HTML file (no GPU needed).

    PATHS: Optuna study files (SQLite), result files (m2tune bench --out JSON, training rows with
    fwd_bwd_ms, tuned-config files) and folders of them (searched recursively; files of no known
    format in a folder are skipped and listed).

    Result files make a throughput page: tokens/s per shape for forward, forward+backward and
    backward, tuned vs the template default vs the eager reference, peak extra memory beside it,
    every number labelled measured or predicted. Per study: trial history (rejected trials in
    their own lane), time by parameter value, model vs measurement on held-out trials, the
    roofline of the sequential kernel, and the commonest failure reasons.
    """
    from ..report.page import ReportError, write_report
    from ..tuning.storage import StorageError
    if storage is None and not paths:
        storage = DEFAULT_STORAGE
    try:
        path = write_report(out, storage_url=storage, paths=paths, studies=studies or None)
    except (ReportError, StorageError) as exc:
        raise CliError(str(exc)) from None
    click.echo(f"wrote {path}")

"""What `m2tune report` reads: paths (files and folders) sorted into study storages and result rows.

A file named on the command line must be an Optuna study (a SQLite file: its first bytes say so,
whatever its name) or a result file of a format results.py reads; anything else is a one-line
error that names it. A folder is searched recursively for both, as bench/results/<run>/ folders hold
them beside logs and notes: there JSON of no known format (a config list, a tolerance table) is
skipped, and the page says which files were.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .results import ResultFormatError, read_result, unknown_format

SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class Inputs:
    storages: list[str] = field(default_factory=list)       # storage URLs, one per study file
    rows: list[dict[str, Any]] = field(default_factory=list)   # results.py rows of every result file
    result_files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)         # folder files of no known format, and why


def is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def _add_file(path: Path, inputs: Inputs, named: bool) -> None:
    if is_sqlite(path):
        inputs.storages.append(f"sqlite:///{path.resolve()}")
        return
    if path.suffix.lower() != ".json":
        if named:
            raise ResultFormatError(f"{path}: neither an Optuna study (a SQLite file) nor a JSON result file")
        return
    rows = read_result(path)
    if rows is None:
        if named:
            raise ResultFormatError(unknown_format(path))
        inputs.skipped.append(unknown_format(path))
        return
    inputs.rows.extend(rows)
    inputs.result_files.append(str(path))


def collect(paths: Iterable[Path]) -> Inputs:
    inputs = Inputs()
    for path in map(Path, paths):
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                _add_file(child, inputs, named=False)
        elif path.is_file():
            _add_file(path, inputs, named=True)
        else:
            raise ResultFormatError(f"{path}: no such file or folder")
    return inputs

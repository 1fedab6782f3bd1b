"""The `m2tune` command line: one module per group of commands, registered on one click group.

    shapes, bench           bench.py        calibrate, predict   model.py
    tune, export            tune.py         show, check          profiles.py
    report                  report.py       the group, one-line errors: group.py; shared options: options.py
"""
from __future__ import annotations

from . import bench, model, profiles, report, tune  # noqa: F401  (each registers its commands)
from .group import CliError, main

__all__ = ["CliError", "main"]

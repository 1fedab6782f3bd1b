"""Where the bundled data folders are: inside the installed package, or the source tree.

The wheel installs search_spaces/ and profiles/ as m2tune.search_spaces and
m2tune.profiles; a source checkout (PYTHONPATH=.) has them at the top level.
"""
from __future__ import annotations

import importlib
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """Path of a bundled data folder: 'search_spaces' or 'profiles'."""
    try:
        # a namespace package (no __init__.py): its __path__ lists the folder
        for entry in importlib.import_module(f"m2tune.{name}").__path__:
            if Path(entry).is_dir():
                return Path(entry)
    except ModuleNotFoundError:
        pass
    path = _ROOT / name
    if path.is_dir():
        return path
    raise FileNotFoundError(f"m2tune data folder {name!r} not found in the package or at {path}")

"""Load a kernel template with one planted fault, by editing a copy of its source.

The production kernel carries no fault switches; each fault is a textual
edit that must apply exactly once, so a refactor that moves the code makes
the fault test fail loudly instead of silently testing nothing.
"""
import importlib.util
import inspect
import itertools
from pathlib import Path
from types import ModuleType

_counter = itertools.count()


def mutate(module: ModuleType, old: str, new: str, workdir: Path) -> ModuleType:
    source = inspect.getsource(module)
    found = source.count(old)
    assert found == 1, f"fault anchor found {found} times in {module.__name__}: {old!r}"
    path = workdir / f"{module.__name__.rsplit('.', 1)[-1]}_fault{next(_counter)}.py"
    path.write_text(source.replace(old, new))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mutant = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mutant)
    return mutant

"""m2tune: tuned, validated Triton kernels for the M²RNN recurrence.

Training code imports what it needs from here (`from m2tune import M2RNN, m2rnn`); everything is
loaded on first use, so `import m2tune` (and the pure-Python kernel specs under it) pulls in
neither torch nor Triton.

Layout (docs/design.md): at the top what training code uses (problem, inputs, ops, layer, runtime,
profile files); m2tune.measure (validation, timing), m2tune.model (hardware profile, performance
model), m2tune.tuning (search spaces, the study, export), m2tune.report (dashboards), m2tune.cli.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "M2RNN",
    "M2RNNState",
    "m2rnn",
    "m2rnn_reference",
    "InputError",
    "Inputs",
    "KernelConfig",
    "Problem",
    "SHAPES",
    "shape",
]

_LAZY = {
    "m2rnn": "m2tune.ops", "M2RNN": "m2tune.layer", "M2RNNState": "m2tune.layer",
    "m2rnn_reference": "m2tune.kernel_variants.m2rnn.naive",
    "InputError": "m2tune.inputs", "Inputs": "m2tune.inputs",
    "KernelConfig": "m2tune.problem", "Problem": "m2tune.problem", "SHAPES": "m2tune.problem",
    "shape": "m2tune.problem",
}


def _source_checkout_kernels() -> None:
    """Make `m2tune.kernel_variants` importable in a source checkout run with PYTHONPATH=.

    The wheel installs the repository's top-level kernel_variants/ as m2tune.kernel_variants (as it
    does search_spaces/ and profiles/); a checkout has it beside the package instead. Then the
    folder is registered under the same name, so the kernels are always `m2tune.kernel_variants.*`.
    Nothing is executed but the folder's own (empty) package file.
    """
    import sys
    name = f"{__name__}.kernel_variants"
    here = Path(__file__).resolve().parent
    folder = here.parent / "kernel_variants"
    if name in sys.modules or (here / "kernel_variants").is_dir() or not (folder / "__init__.py").is_file():
        return          # installed from a wheel (the kernels are inside the package), or already done
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    globals()["kernel_variants"] = module


_source_checkout_kernels()


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'm2tune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""m2tune: tuned, validated Triton kernels for the M²RNN recurrence."""
from __future__ import annotations

__version__ = "0.1.0"

from .inputs import InputError, Inputs
from .problem import SHAPES, KernelConfig, Problem, shape
from .reference import m2rnn_reference

__all__ = [
    "__version__",
    "M2RNN",
    "M2RNNState",
    "m2rnn",
    "InputError",
    "Inputs",
    "KernelConfig",
    "Problem",
    "SHAPES",
    "shape",
    "m2rnn_reference",
]


_LAZY = {"m2rnn": ".ops", "M2RNN": ".layer", "M2RNNState": ".layer"}


def __getattr__(name: str):
    # the op registers torch custom ops and the layer builds on it: load them on first use
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'm2tune' has no attribute {name!r}")

"""m2tune: tuned, validated Triton kernels for the M²RNN recurrence."""
from __future__ import annotations

__version__ = "0.1.0"

from .inputs import InputError, Inputs
from .problem import SHAPES, KernelConfig, Problem, shape
from .reference import m2rnn_reference

__all__ = [
    "__version__",
    "InputError",
    "Inputs",
    "KernelConfig",
    "Problem",
    "SHAPES",
    "shape",
    "m2rnn_reference",
]

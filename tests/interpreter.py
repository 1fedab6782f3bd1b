"""Marks for tests that run the Triton interpreter in a child process even on a GPU machine (the
model backend, `m2tune check --revalidate --on interpreter`)."""
from __future__ import annotations

import numpy
import pytest

# Triton 3.6's interpreter fails under numpy >= 2.4 (docs/design.md, "Machines"), as on the H200 host
needs_interpreter = pytest.mark.skipif(
    tuple(int(n) for n in numpy.__version__.split(".")[:2]) >= (2, 4),
    reason=f"Triton 3.6's interpreter needs numpy < 2.4, found {numpy.__version__}")

"""A forward template with planted process-level faults, for tests of m2tune.worker.

It is kernel_variants.m2rnn_fwd plus one parameter, FAULT, that makes a launch
misbehave the ways a real candidate can: kill its process (abort, segfault),
never return, write a wrong y, raise, or (GPU) read far outside its tensors.
Unlike tests/mutation.py (faults inside the kernel, caught by validation) these
faults are about the process, so they live in the launch wrapper.
Registered by name in the worker (TrialRequest.extra_variants).
"""
from __future__ import annotations

import ctypes
import os
import time
from typing import Any

from kernel_variants import m2rnn_fwd as fwd
from m2tune.problem import KernelConfig, Problem

NAME = "planted_fwd"
MODULE = __name__
FAULTS = ("none", "crash", "segfault", "hang", "wrong", "raise", "illegal-address")
PARAMS: dict[str, tuple[Any, ...]] = {**fwd.PARAMS, "FAULT": FAULTS}
DEFAULT = KernelConfig.of(NAME, {name: values[0] for name, values in PARAMS.items()})


def inner(config: KernelConfig) -> KernelConfig:
    """The same config for the real forward template (FAULT dropped)."""
    return KernelConfig.of(fwd.NAME, {k: v for k, v in config.params if k != "FAULT"})


def model_config(config: KernelConfig) -> KernelConfig:
    """What the performance model scores: the wrapped forward's config."""
    return inner(config)


def check(problem: Problem, config: KernelConfig, *, interpreter: bool = False) -> str | None:
    if config.variant != NAME:
        return f"config is for variant {config.variant!r}, not {NAME!r}"
    if config.get("FAULT") not in FAULTS:
        return f"FAULT={config.get('FAULT')!r} not in {list(FAULTS)}"
    return fwd.check(problem, inner(config), interpreter=interpreter)


def launch(problem: Problem, config: KernelConfig, x, y, h_T, **kw: Any):
    fault = config["FAULT"]
    if fault == "crash":
        os.abort()
    if fault == "segfault":
        ctypes.string_at(0)                      # read address 0: SIGSEGV
    if fault == "hang":
        while True:
            time.sleep(60)
    if fault == "raise":
        raise RuntimeError("planted: the launch raised")
    if fault == "illegal-address":
        # the real kernel told every sequence is 2**40 steps long: the second sequence's first
        # load lies terabytes past q, an illegal address on the GPU
        return fwd.launch(problem.with_length(2 ** 40), inner(config), x, y, h_T, **kw)
    ckpt = fwd.launch(problem, inner(config), x, y, h_T, **kw)
    if fault == "wrong":
        y.mul_(1.01)                             # 1e-2 relative error, far beyond any limit
    return ckpt

"""A forward kernel with planted process-level faults, for tests of the worker and the tuner.

It is the bundled forward (m2tune.kernel_variants.m2rnn.fwd) plus one parameter, FAULT, that makes
a launch misbehave the ways a real candidate can: kill its process (abort, segfault), never
return, write a wrong y, raise, or (GPU) read far outside its tensors. Unlike tests/mutation.py
(faults inside the kernel, caught by validation) these faults are about the process, so they live
in the launch wrapper. Registered by name in the worker (TrialRequest.extra_variants) as
(SPEC_REF, MODULE): this module is both its spec and its kernel module.
"""
from __future__ import annotations

import ctypes
import os
import time
from typing import Any, Optional

from m2tune.kernel_variants.m2rnn import fwd
from m2tune.kernel_variants.m2rnn.spec import FORWARD, ForwardSpec
from m2tune.problem import KernelConfig, Problem

NAME = "planted_fwd"
MODULE = __name__
SPEC_REF = f"{__name__}:SPEC"
FAULTS = ("none", "crash", "segfault", "hang", "wrong", "raise", "illegal-address")


def inner(config: KernelConfig) -> KernelConfig:
    """The same config for the real forward kernel (FAULT dropped)."""
    return KernelConfig.of(FORWARD.name, {k: v for k, v in config.params if k != "FAULT"})


class PlantedSpec(ForwardSpec):
    name = NAME
    PARAMS = {**FORWARD.PARAMS, "FAULT": FAULTS}

    def model_config(self, config: KernelConfig) -> KernelConfig:
        return inner(config)

    def check(self, problem: Problem, config: KernelConfig, *, interpreter: bool = False) -> Optional[str]:
        if config.variant != NAME:
            return f"config is for variant {config.variant!r}, not {NAME!r}"
        if config.get("FAULT") not in FAULTS:
            return f"FAULT={config.get('FAULT')!r} not in {list(FAULTS)}"
        return FORWARD.check(problem, inner(config), interpreter=interpreter)


SPEC = PlantedSpec()
DEFAULT = SPEC.DEFAULT


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

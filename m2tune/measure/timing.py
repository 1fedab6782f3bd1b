"""Timing of GPU work: warm-up, CUDA events per repetition, L2 flushed between
repetitions, median and spread. On the CPU (Triton interpreter) wall time only,
which says nothing about GPU speed and is labelled so by callers.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..status import spread


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int
    clock: str          # "cuda-events" or "wall"

    @property
    def spread(self) -> float:
        """(p80 - p20) / median: the relative noise of this measurement (NaN for a zero median)."""
        value = spread(self.median_ms, self.p20_ms, self.p80_ms)
        return float("nan") if value is None else value


def _summary(samples: list[float], clock: str) -> Timing:
    samples = sorted(samples)
    q = statistics.quantiles(samples, n=10, method="inclusive") if len(samples) > 1 else samples * 9
    return Timing(statistics.median(samples), q[1], q[7], len(samples), clock)


def time_cuda(fn: Callable[[], None], *, warmup: int = 3, reps: int = 20,
              flush_l2: bool = True, max_seconds: float = 20.0) -> Timing:
    """Median of `reps` CUDA-event timings of fn() after `warmup` calls.

    The L2 cache (60 MB on an H200) is overwritten before every repetition so
    the inputs come from HBM as they would in training. Stops early (with at
    least 3 samples) once max_seconds of GPU time has been spent.
    """
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda") if flush_l2 else None
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples: list[float] = []
    spent = 0.0
    for _ in range(reps):
        if flush is not None:
            flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
        spent += samples[-1] / 1e3
        if spent > max_seconds and len(samples) >= 3:
            break
    return _summary(samples, "cuda-events")


def time_wall(fn: Callable[[], None], *, warmup: int = 1, reps: int = 3) -> Timing:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return _summary(samples, "wall")

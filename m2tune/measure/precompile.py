"""Compile many configs in parallel processes before timing them one by one.

Triton compiles a kernel on its first launch and keeps the binary in its on-disk cache
(shared by every process of the machine). Compiling is CPU work (LLVM, ptxas), one or a few
seconds per config; timing is GPU work that must not overlap anything. So a batch of
configs is first launched once each by a pool of processes (spawned, never forked, so each
has its own CUDA context), which fills the cache; the timing process then loads binaries.

This is an optimisation only: a config whose precompile fails is reported and will simply
compile (or fail, and be classified) when it is timed.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from typing import Any, Callable, Optional, Sequence

from ..problem import KernelConfig, Problem

Job = tuple[Problem, KernelConfig]


def compile_problem(problem: Problem) -> Problem:
    """A short problem whose launch compiles the same kernel binary as `problem`'s.

    Triton specialises integer arguments on `== 1` and `% 16 == 0`; S (and B*S) keep both
    properties when S shrinks to 16 + S % 16. The launch then costs microseconds of GPU time,
    so compiling ahead barely disturbs a timing running at the same moment.
    """
    if problem.S <= 32 or problem.is_varlen:
        return problem
    return problem.with_length(16 + problem.S % 16)


def _compile_one(job: Job) -> dict[str, Any]:
    problem, config = job
    try:
        import torch

        from .launch import prepare
        prepared = prepare(problem, config)
        prepared.run()
        torch.cuda.synchronize()
        return {"ok": True, **prepared.info}
    except Exception as exc:  # reported, not raised: the timing pass classifies it properly
        from .launch import describe_failure
        return {"ok": False, "error": describe_failure(exc)}


def default_processes() -> int:
    return max(1, min(16, (os.cpu_count() or 2) - 1))


def precompile(jobs: Sequence[Job], *, processes: Optional[int] = None,
               progress: Optional[Callable[[int, int], None]] = None) -> list[dict[str, Any]]:
    """Launch every (problem, config) once in a process pool; one result dict per job, in order."""
    results: list[dict[str, Any]] = [{"ok": False, "error": "not compiled"} for _ in jobs]
    if not jobs:
        return results
    ctx = mp.get_context("spawn")
    done = 0
    try:
        with cf.ProcessPoolExecutor(processes or default_processes(), mp_context=ctx) as pool:
            futures = {pool.submit(_compile_one, job): i for i, job in enumerate(jobs)}
            for future in cf.as_completed(futures):
                try:
                    results[futures[future]] = future.result()
                except Exception as exc:    # the process died (e.g. an illegal address): keep going
                    results[futures[future]] = {"ok": False, "error": f"crashed: {exc}"}
                done += 1
                if progress:
                    progress(done, len(jobs))
    except cf.process.BrokenProcessPool:
        pass                                # what did not finish compiles at timing
    return results


class Precompiler:
    """A persistent pool compiling configs ahead of the trial that will time them."""

    def __init__(self, processes: Optional[int] = None) -> None:
        self._pool = cf.ProcessPoolExecutor(processes or default_processes(), mp_context=mp.get_context("spawn"))

    def submit(self, problem: Problem, config: KernelConfig) -> cf.Future:
        try:
            return self._pool.submit(_compile_one, (compile_problem(problem), config))
        except Exception as exc:            # a broken pool: compile at timing instead
            future: cf.Future = cf.Future()
            future.set_result({"ok": False, "error": f"precompile pool unavailable: {exc}"})
            return future

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

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
from typing import Any, Callable, Optional, Sequence, Union

from ..problem import KernelConfig, Problem

# (problem, config) or (problem, config, launch options for launch.prepare: forward_config,
# gradient_clipping, ckpt_every), each selecting a binary the timed or validated call will need
Job = Union[tuple[Problem, KernelConfig], tuple[Problem, KernelConfig, dict[str, Any]]]
CLIP = 1.0          # any bound: the kernels take clipping as a compile-time switch, not its value


def compile_problem(problem: Problem) -> Problem:
    """A short problem whose launch compiles the same kernel binary as `problem`'s.

    Triton specialises integer arguments on `== 1` and `% 16 == 0`; S (and B*S) keep both
    properties when S shrinks to 16 + S % 16. The launch then costs microseconds of GPU time,
    so compiling ahead barely disturbs a timing running at the same moment.
    """
    if problem.S <= 32 or problem.is_varlen:
        return problem
    return problem.with_length(16 + problem.S % 16)


def trial_jobs(problem: Problem, config: KernelConfig, *, forward_config: Optional[KernelConfig] = None,
               gradient_clipping: Optional[float] = None) -> list[Job]:
    """The launches a tuning trial of `config` at `problem` makes, each shrunk by compile_problem:
    the timed one and every length of every case of its GPU validation plan (h0, clipping,
    packed sequences and the forward's checkpoints select binaries of their own). One each."""
    from .. import variants
    from .launch import checkpoint_forward
    from .plan import plan_for
    plan = plan_for(config.variant, problem, config, interpreter=False)
    training = variants.spec(config.variant).role == "backward"
    jobs: dict[tuple, Job] = {}

    def add(p: Problem, clip: Optional[float], ckpt_every: int, forward: Optional[KernelConfig]) -> None:
        options: dict[str, Any] = dict(gradient_clipping=clip, ckpt_every=ckpt_every)
        if training:
            options["forward_config"] = forward or checkpoint_forward(config.variant, p)
        small = compile_problem(p)
        jobs.setdefault((small, clip, ckpt_every, options.get("forward_config")), (small, config, options))
    add(problem, gradient_clipping, 0, forward_config)
    validating = forward_config or (checkpoint_forward(config.variant, plan.cases[0].problem) if training else None)
    for case in plan.cases:
        for S in case.lengths:
            add(case.problem.with_length(S), CLIP if case.clip else None, case.ckpt_every, validating)
    return list(jobs.values())


def _compile_one(job: Job) -> dict[str, Any]:
    problem, config, options = job if len(job) == 3 else (*job, {})
    try:
        import torch

        from .launch import prepare
        prepared = prepare(problem, config, **options)
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

    def submit(self, problem: Problem, config: KernelConfig, **options: Any) -> list[cf.Future]:
        """Compile every binary a trial of `config` at `problem` launches (trial_jobs; options:
        its forward_config, gradient_clipping); one future per binary."""
        futures = []
        try:
            jobs = trial_jobs(problem, config, **options)
        except Exception:                   # an optimisation only: the timed launch at least
            jobs = [(compile_problem(problem), config, options)]
        for job in jobs:
            try:
                futures.append(self._pool.submit(_compile_one, job))
            except Exception as exc:        # a broken pool: compile at timing instead
                future: cf.Future = cf.Future()
                future.set_result({"ok": False, "error": f"precompile pool unavailable: {exc}"})
                futures.append(future)
        return futures

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

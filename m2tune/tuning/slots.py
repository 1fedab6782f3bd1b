"""What a study's trials run on: one evaluator per slot (a GPU of --gpus, or the CPU worker of the
model backend) and, on GPUs, the pool compiling ahead of them.

A study run alone makes its own Slots and closes them when it ends. `m2tune tune --all-buckets`
hands one Slots to every study of the run, so the worker processes (torch, Triton, a CUDA context
each) and the compile pool start once for all buckets instead of once per bucket: on the H200 a
lean-backward bucket spent 27-47 s between one study's last trial and the next one's first, and
its first trial 11-14 s (bench/results/2026-12-02-h200-buckets). A worker's kept inputs and
references (m2tune/reuse.py) are keyed by problem, so they carry over safely too.
"""
from __future__ import annotations

from typing import Any, Optional

from .backends import GpuEvaluator, ModelEvaluator


class Slots:
    """Evaluators and the precompile pool, made on first use and reused by every study that asks
    with the same settings. Not thread-safe: studies using one Slots run one after another."""

    def __init__(self) -> None:
        self._evaluators: dict[tuple, list] = {}
        self._precompiler: Optional[Any] = None

    def evaluators(self, tuner) -> list:
        """One evaluator per slot of `tuner`'s study; a replayed grid's evaluator is the study's own."""
        opts = tuner.opts
        extra = tuner._extra()
        if opts.backend != "gpu" and tuner.grid is not None:
            from .replay import ReplayEvaluator
            return [ReplayEvaluator(tuner.grid)]
        if opts.backend == "gpu":
            key: tuple = ("gpu", opts.gpus, opts.trial_timeout_s, opts.reps, tuple(sorted(extra.items())))
            if key not in self._evaluators:
                self._evaluators[key] = [GpuEvaluator(d, trial_timeout_s=opts.trial_timeout_s, reps=opts.reps,
                                                      extra_variants=extra) for d in opts.gpus]
        else:
            # the same GPU's profile, read from the same folders: the same constants
            key = ("model", tuner.hw.slug, opts.profiles, opts.trial_timeout_s, tuple(sorted(extra.items())))
            if key not in self._evaluators:
                self._evaluators[key] = [ModelEvaluator(tuner.hw, trial_timeout_s=opts.trial_timeout_s,
                                                        extra_variants=extra)]
        return self._evaluators[key]

    def precompiler(self):
        """The pool compiling configs ahead of the GPU trials (started on first use)."""
        if self._precompiler is None:
            from ..measure.precompile import Precompiler
            self._precompiler = Precompiler()
        return self._precompiler

    def close(self) -> None:
        if self._precompiler is not None:
            self._precompiler.close()
            self._precompiler = None
        for evaluators in self._evaluators.values():
            for e in evaluators:
                e.close()
        self._evaluators.clear()

    def __enter__(self) -> "Slots":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

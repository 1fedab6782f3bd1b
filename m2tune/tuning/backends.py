"""How a tuning trial is scored: measured on a GPU, or predicted by the model without one.

- `gpu`: the worker validates the candidate on the GPU (two short lengths) and times it at the
  full problem. Value: the measured median.
- `model`: the worker checks the candidate in the Triton interpreter at a small problem with the
  same head dims and head sharing (PTX tanh.approx cannot run there, so the exact tanh stands in
  for it: the rest of the template is what the interpreter can prove), then the performance model
  scores it on the full problem for the target GPU's hardware profile. Value: the prediction,
  recorded as predicted everywhere.

One evaluator per slot (a GPU, or a CPU worker): each owns one worker process.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping, Optional

from .. import status, variants
from ..model import perfmodel
from ..model.hardware import HardwareProfile
from ..problem import KernelConfig, Problem
from .trial import GPU, INTERPRET, TrialRequest, TrialResult
from .worker import Worker

NAMES = ("gpu", "model")
SMALL_B, SMALL_S, SMALL_N = 2, 16, 4


@dataclass
class Outcome:
    """A scored trial: the worker's result plus the objective value (None when it failed)."""
    result: TrialResult
    value: Optional[float]
    predicted: bool
    attrs: dict[str, Any] = field(default_factory=dict)


def validation_lengths(problem: Problem) -> tuple[int, int]:
    """On the GPU: a short length and 4x it, capped at 128/512 (the float64 reference is a Python loop)."""
    short = max(1, min(problem.S // 4, 128))
    return short, 4 * short


def small_problem(problem: Problem) -> Problem:
    """Same K, V, dtype and head sharing pattern, few heads, two short sequences: interpreter-sized.

    A head count equal to 1 stays 1, one equal to N becomes the small N; the group sizes of the
    others are kept where they divide it.
    """
    n_small = min(problem.N, SMALL_N)
    heads = {}
    for name in ("Nq", "Nk", "Nv", "Nw", "Nf"):
        count = getattr(problem, name)
        if count == problem.N:
            heads[name] = n_small
        else:
            group = problem.N // count
            heads[name] = max(1, n_small // group) if n_small % group == 0 or group > n_small else 1
    return Problem(B=min(problem.B, SMALL_B), S=min(problem.S, SMALL_S), K=problem.K, V=problem.V,
                   dtype=problem.dtype, h0=problem.h0, **heads)


def model_config(config: KernelConfig) -> KernelConfig:
    """The config the performance model scores: a kernel that wraps another (tests' planted
    faults, say) maps its configs onto the wrapped one (its spec's model_config)."""
    return variants.spec(config.variant).model_config(config)


class GpuEvaluator:
    name = "gpu"

    def __init__(self, device: int, *, trial_timeout_s: float, reps: int = 20,
                 extra_variants: Mapping[str, tuple[str, str]] = MappingProxyType({})) -> None:
        self.worker = Worker(device, GPU)
        self.device, self.trial_timeout_s, self.reps = device, trial_timeout_s, reps
        self.extra_variants = dict(extra_variants)

    def evaluate(self, variant: str, problem: Problem, config: KernelConfig, *, seed: int) -> Outcome:
        request = TrialRequest(variant, problem, config, mode=GPU, device=self.device, seed=seed,
                               lengths=validation_lengths(problem), reps=self.reps,
                               extra_variants=self.extra_variants)
        result = self.worker.run(request, self.trial_timeout_s)
        return Outcome(result, result.median_ms if result.ok else None, predicted=False)

    def close(self) -> None:
        self.worker.close()


class ModelEvaluator:
    name = "model"

    def __init__(self, hw: HardwareProfile, *, trial_timeout_s: float,
                 extra_variants: Mapping[str, tuple[str, str]] = MappingProxyType({})) -> None:
        self.worker = Worker(None, INTERPRET)
        self.hw, self.trial_timeout_s = hw, trial_timeout_s
        self.extra_variants = dict(extra_variants)

    def evaluate(self, variant: str, problem: Problem, config: KernelConfig, *, seed: int) -> Outcome:
        small = small_problem(problem)
        checked = config.with_params(TANH="exact") if config.get("TANH") == "approx" else config
        request = TrialRequest(variant, small, checked, mode=INTERPRET, device=None, seed=seed,
                               extra_variants=self.extra_variants)
        result = self.worker.run(request, self.trial_timeout_s)
        attrs = {"validated_at": small.describe()}
        if checked != config:
            attrs["validated_as"] = "TANH=exact (the interpreter cannot run PTX tanh.approx)"
        if not result.ok:
            return Outcome(result, None, predicted=True, attrs=attrs)
        try:
            pred = perfmodel.predict(problem, model_config(config), self.hw)
        except perfmodel.ModelError as exc:     # e.g. cannot be resident on the target GPU
            failed = replace(result, status=status.OUT_OF_RESOURCES, message=f"predicted: {exc}")
            return Outcome(failed, None, predicted=True, attrs=attrs)
        attrs.update(predicted_ms=pred.time_ms, bound=pred.bound, target=self.hw.slug)
        if pred.constants_from:
            attrs["model_constants_from"] = pred.constants_from
        return Outcome(result, pred.time_ms, predicted=True, attrs=attrs)

    def close(self) -> None:
        self.worker.close()

"""How a tuning trial is scored: measured on a GPU, or predicted by the model without one.

- `gpu`: the worker validates the candidate on the GPU on its validation plan (measure/plan.py:
  several chunks, h0, a binding clip, packed sequences, 512 steps) and times it at the full
  problem. Value: the measured median.
- `model`: the worker checks the candidate in the Triton interpreter on the plan's
  interpreter-sized problems (same head dims and head sharing, two heads; PTX tanh.approx cannot
  run there, so the exact tanh stands in for it: the rest of the template is what the interpreter
  can prove), then the performance model scores it on the full problem for the target GPU's
  hardware profile. Value: the prediction, recorded as predicted everywhere.

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
from .trial import GPU, INTERPRET, TrialRequest, TrialResult, interpretable
from .worker import Worker

NAMES = ("gpu", "model", "replay")       # replay: m2tune/tuning/replay.py


@dataclass
class Outcome:
    """A scored trial: the worker's result plus the objective value (None when it failed)."""
    result: TrialResult
    value: Optional[float]
    predicted: bool
    attrs: dict[str, Any] = field(default_factory=dict)


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
                               reps=self.reps, extra_variants=self.extra_variants)
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
        for name, (spec_ref, kernel_path) in self.extra_variants.items():
            variants.register(name, spec_ref, kernel_path)      # its plan is made here, before the trial

    def evaluate(self, variant: str, problem: Problem, config: KernelConfig, *, seed: int) -> Outcome:
        from ..measure.plan import plan_for
        checked, note = interpretable(config)
        request = TrialRequest(variant, problem, checked, mode=INTERPRET, device=None, seed=seed,
                               extra_variants=self.extra_variants)
        plan = plan_for(variant, problem, checked, interpreter=True)
        result = self.worker.run(request, plan.time_limit(self.trial_timeout_s))
        attrs: dict[str, Any] = {}
        if note:
            attrs["validated_as"] = note
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

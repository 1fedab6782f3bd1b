"""The roofs of a sequential kernel: what one step of the recurrence can be no faster than, per SM.

Every program of an M²RNN kernel walks all S steps, so time ≈ S × step and the question a roofline
answers is what bounds a step. Against the work one SM does per step (x: state elements it advances
per step, all waves counted) a step lasts at least

- latency: one program's dependency chain (H·W → tanh → blend), the performance model's fitted
  latency (perfmodel, constants from hardware.json), once per wave. Flat in x: a chain does not get
  shorter with less work, which is why the recurrence is latency-bound at the paper's shapes;
- sfu: the tanh of every element on the special-function units (one MUFU op for tanh.approx, two
  for the exact formula: exp2 and a reciprocal), at the SFU issue rate × the SM clock;
- fma: the product H·W on the FP32 cores (MATMUL=fma and dot_ieee: V multiply-adds per element
  per product), at the FMA issue rate × the SM clock;
- tensor: the product on the tensor cores, at the dense matmul rate hardware.json measured (bf16
  for bf16 products, else tf32): an upper bound a 16-wide tile never reaches;
- memory: the bytes the kernel moves (spec.hbm_bytes) per step over the measured HBM bandwidth.

Rates per clock are the architecture's (ISSUE_PER_CLOCK), the clock and the measured rates the
GPU's hardware profile. The work counts are the kernel spec's own throughput features, so a new
kernel brings its roofs with its spec. Nothing here touches a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .. import variants
from ..problem import KernelConfig, Problem
from . import perfmodel
from .hardware import HardwareProfile

# Results per clock per SM, by compute capability (CUDA C++ Programming Guide, "Arithmetic
# Instructions": 32-bit floating-point multiply-add; 32-bit reciprocal / exp2 / sin / cos, the
# special-function units, which also issue tanh.approx.f32 as MUFU.TANH on sm_75 and later).
ISSUE_PER_CLOCK = {
    "7.0": {"fma": 64, "sfu": 16},
    "7.5": {"fma": 64, "sfu": 16},
    "8.0": {"fma": 64, "sfu": 16},
    "8.6": {"fma": 128, "sfu": 16},
    "8.9": {"fma": 128, "sfu": 16},
    "9.0": {"fma": 128, "sfu": 16},
}
MUFU_PER_TANH = {"approx": 1, "exact": 2}
# where each product runs: Triton's ieee dot is an FMA loop, the others use the tensor cores
PRODUCT_UNIT = {"fma": "fma", "dot_ieee": "fma", "dot_tf32": "tf32", "dot_tf32x3": "tf32",
                "dot_bf16": "bf16", "dot_bf16x2": "bf16"}
ROOFS = ("latency", "sfu", "fma", "tensor", "memory")


class RoofError(ValueError):
    pass


@dataclass(frozen=True)
class StepRoofs:
    """One config's roofs, µs per step of the whole kernel, and where it sits on the x axis."""
    x: float                          # state elements advanced per step per SM (padding counted)
    waves: int
    roofs: dict[str, float]           # roof name -> µs per step (a roof that does not apply is absent)
    per_element: dict[str, float]     # the throughput roofs' µs per element per SM (the lines' slopes)

    @property
    def binding(self) -> str:
        return max(self.roofs, key=self.roofs.get)

    @property
    def bound_us(self) -> float:
        return self.roofs[self.binding]


def issue_rates(hw: HardwareProfile) -> Optional[dict[str, float]]:
    """FMA and SFU results per µs per SM on `hw`, or None when its architecture is not in the table."""
    per_clock = ISSUE_PER_CLOCK.get(hw.capability)
    if per_clock is None:
        return None
    return {unit: n * hw.sm_clock_mhz for unit, n in per_clock.items()}      # MHz: clocks per µs


def step_roofs(problem: Problem, config: KernelConfig, hw: HardwareProfile,
               resources: Optional[Mapping[str, Any]] = None) -> StepRoofs:
    """The roofs of `config` on `problem` on `hw`; `resources` (n_regs, shared) as compiled, else
    the spec's estimate sets the occupancy, as in the performance model."""
    spec = variants.spec(config.variant)
    try:
        pred = perfmodel.predict(problem, config, hw, resources)
    except perfmodel.ModelError as exc:
        raise RoofError(str(exc)) from None
    g = pred.geometry
    elems = g.resident * g.bm * g.bv                 # one wave's elements on one SM
    features = spec.throughput_features(problem, config, g)
    per_element: dict[str, float] = {}
    rates = issue_rates(hw)
    if rates:
        tanh = sum(v for k, v in features.items() if k.startswith("sm.tanh."))
        per_element["sfu"] = tanh * MUFU_PER_TANH[config["TANH"]] / rates["sfu"] / elems
    unit = PRODUCT_UNIT.get(config["MATMUL"])
    # the spec counts a product as elements × V (fma) or elements × V × passes / 16 (dots): MACs
    macs = features.get("sm.fma", 0.0) + features.get("sm.dot", 0.0) * 16
    if unit == "fma" and rates:
        # dot_ieee's passes are 1: its MACs are the FMA loop's
        per_element["fma"] = macs / rates["fma"] / elems
    elif unit in ("tf32", "bf16"):
        tflops = hw.bf16_tflops if unit == "bf16" else hw.tf32_tflops
        per_element["tensor"] = 2 * macs / (tflops * 1e6 / hw.sm_count) / elems      # flop per µs per SM
    x = g.waves * elems
    bytes_per_step = spec.hbm_bytes(problem, config) / problem.S
    per_element["memory"] = bytes_per_step / (hw.hbm_gbps * 1e3) / x                # GB/s = 1e3 bytes per µs
    roofs = {"latency": pred.latency_us * g.waves}
    roofs.update({name: slope * x for name, slope in per_element.items()})
    return StepRoofs(x, g.waves, roofs, per_element)

"""Predicted run time of an M²RNN kernel config, with the term that binds it.

The recurrence is a loop over S steps; every program walks all of them. So (docs/design.md)

    time = launch + waves × S × step,      step = max(latency, throughput)

- **latency**: one program's dependency chain per step: the matmul on the chain, tanh,
  the element-wise blend, cross-warp traffic, exposed load latency (PREFETCH), the y
  reduction and its atomics (forward), the dH chain and the gradient reductions and
  atomics (backward). A linear model in features of the config whose coefficients
  (µs) are fitted by `m2tune calibrate` to micro-benchmarks of the real templates
  with one program per SM, where nothing but the chain can bind.
- **throughput**: the per-element work of all programs resident on one SM per step
  (tanh on the special-function units, FMAs, conversions, atomics), fitted to the
  same templates with many programs per SM.
- **waves**: programs over (SMs × programs per SM), the latter limited by registers,
  shared memory and warps of the compiled kernel (estimated when not compiled).

Memory (bytes over measured bandwidth) and compute (flops over the measured matrix
rate) are reported too; for this recurrence they only bind at extreme shapes.
Everything here is a prediction and is labelled so; nothing touches a GPU. What each kernel
contributes (its layout, register estimate and per-step features) comes from its spec
(m2tune/kernel_variants/<family>/spec.py); the constants are fitted per kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .. import variants
from ..problem import KernelConfig, Problem
from .hardware import HardwareProfile


class ModelError(ValueError):
    pass


@dataclass(frozen=True)
class Geometry:
    """How a config lays a problem onto the GPU: the kernel's layout (spec.Layout) and occupancy."""
    programs: int
    threads: int                 # per program
    bm: int                      # state rows per program (BLOCK_B × BLOCK_K)
    bv: int                      # padded V
    k_blocks: int
    occupancy: int               # programs resident per SM
    occupancy_limit: str         # what limits it: registers, shared, warps, blocks
    waves: int
    resident: float              # programs per SM in a wave (≤ occupancy)
    regs: int
    regs_measured: bool

    @property
    def per_thread(self) -> float:
        """State elements each thread owns (at least 1: a thread never owns less)."""
        return max(1.0, self.bm * self.bv / self.threads)


@dataclass(frozen=True)
class Prediction:
    kernel: str
    time_ms: float
    step_us: float
    latency_us: float
    throughput_us: float
    memory_ms: float
    compute_ms: float
    bound: str                   # "latency", "throughput", "memory" or "compute"
    geometry: Geometry
    latency_terms: dict[str, float] = field(default_factory=dict)     # µs per step, by feature
    predicted: bool = True
    constants_from: Optional[str] = None   # another kernel's calibrated constants priced this one

    def as_dict(self) -> dict[str, Any]:
        g = self.geometry
        return {"kernel": self.kernel, "predicted_ms": self.time_ms, "step_us": self.step_us,
                "latency_us": self.latency_us, "throughput_us": self.throughput_us,
                "memory_ms": self.memory_ms, "compute_ms": self.compute_ms, "bound": self.bound,
                "programs": g.programs, "waves": g.waves, "occupancy": g.occupancy,
                "occupancy_limit": g.occupancy_limit, "regs": g.regs, "predicted": True,
                "constants_from": self.constants_from}


def _estimated_shared(config: KernelConfig, bm: int, bv: int) -> int:
    # dots and multi-warp reductions convert layouts through shared memory (one fp32 tile)
    return 4 * bm * bv if (config["MATMUL"] != "fma" or config["num_warps"] > 1) else 0


def geometry(problem: Problem, config: KernelConfig, hw: HardwareProfile,
             resources: Optional[Mapping[str, Any]] = None) -> Geometry:
    spec = variants.spec(config.variant)
    layout = spec.layout(problem, config)
    bm, bv, threads = layout.bm, layout.bv, layout.threads
    measured = bool(resources and resources.get("n_regs"))
    regs = int(resources["n_regs"]) if measured else spec.estimated_regs(config, layout)
    shared = int(resources.get("shared", 0)) if resources else _estimated_shared(config, bm, bv)
    # registers are allocated per warp in units of 256 (8 per thread)
    regs_alloc = max(8, -(-regs // 8) * 8) * threads
    limits = {
        "registers": hw.regs_per_sm // regs_alloc,
        "warps": hw.max_warps_per_sm // config["num_warps"],
        "blocks": hw.max_blocks_per_sm,
        "shared": hw.shared_per_sm // shared if shared else hw.max_blocks_per_sm,
    }
    limit = min(limits, key=limits.get)
    occupancy = limits[limit]
    if occupancy < 1:
        raise ModelError(f"{config.short()} cannot be resident on one SM ({limit}: "
                         f"{regs} registers x {threads} threads, {shared} B shared)")
    programs = layout.programs
    waves = -(-programs // (hw.sm_count * occupancy))
    resident = programs / (hw.sm_count * waves)
    return Geometry(programs, threads, bm, bv, layout.k_blocks, occupancy, limit, waves, resident, regs, measured)


def latency_features(problem: Problem, config: KernelConfig, g: Geometry) -> dict[str, float]:
    """The kernel's latency features (its spec), µs-per-step coefficients multiply them."""
    return variants.spec(config.variant).latency_features(problem, config, g)


def throughput_features(problem: Problem, config: KernelConfig, g: Geometry) -> dict[str, float]:
    return variants.spec(config.variant).throughput_features(problem, config, g)


def _dot(coefs: Mapping[str, float], features: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {k: coefs.get(f"{prefix}{k}", 0.0) * v for k, v in features.items()}


def predict(problem: Problem, config: KernelConfig, hw: HardwareProfile,
            resources: Optional[Mapping[str, Any]] = None) -> Prediction:
    """Predicted time of one launch of `config` on `problem` on the GPU `hw` describes."""
    try:
        spec = variants.spec(config.variant)
    except variants.UnknownVariant:
        raise ModelError(f"no performance model for variant {config.variant!r}") from None
    coefs, borrowed = hw.constants.get(config.variant), None
    if not coefs and spec.model_constants_from:
        borrowed = spec.model_constants_from
        coefs = hw.constants.get(borrowed)
    if not coefs:
        raise ModelError(f"{hw.slug}'s hardware.json has no fitted constants for {config.variant} "
                         "(run `m2tune calibrate` on that GPU)")
    g = geometry(problem, config, hw, resources)
    lat_terms = _dot(coefs, spec.latency_features(problem, config, g), "lat.")
    latency = sum(lat_terms.values())
    throughput = sum(_dot(coefs, spec.throughput_features(problem, config, g), "thr.").values())
    step = max(latency, throughput)
    kernel_ms = (coefs.get("launch_us", 0.0) + g.waves * problem.S * step) / 1e3
    memory_ms = spec.hbm_bytes(problem, config) / (hw.hbm_gbps * 1e9) * 1e3
    rate = hw.bf16_tflops if config["MATMUL"] in ("dot_bf16", "dot_bf16x2") else hw.tf32_tflops
    compute_ms = spec.flops(problem, config) / (rate * 1e12) * 1e3
    terms = {"latency": latency * g.waves * problem.S / 1e3, "throughput": throughput * g.waves * problem.S / 1e3,
             "memory": memory_ms, "compute": compute_ms}
    bound = max(terms, key=terms.get)
    return Prediction(config.variant, max(kernel_ms, memory_ms, compute_ms), step, latency, throughput,
                      memory_ms, compute_ms, bound, g, lat_terms, constants_from=borrowed)

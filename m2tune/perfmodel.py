"""Predicted run time of an M²RNN kernel config, with the term that binds it.

The recurrence is a loop over S steps; every program walks all of them. So (DESIGN.md)

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
Everything here is a prediction and is labelled so; nothing touches a GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .hardware import HardwareProfile
from .problem import KernelConfig, Problem

KINDS = {"m2rnn_fwd": "forward", "m2rnn_bwd": "backward"}
MATMULS = ("fma", "dot_ieee", "dot_tf32x3", "dot_tf32", "dot_bf16")
# tensor-core passes per product (tf32x3 splits each fp32 operand in two tf32 halves)
_PASSES = {"fma": 1, "dot_ieee": 1, "dot_tf32x3": 3, "dot_tf32": 1, "dot_bf16": 1}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


class ModelError(ValueError):
    pass


@dataclass(frozen=True)
class Geometry:
    """How a config lays a problem onto the GPU."""
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

    def as_dict(self) -> dict[str, Any]:
        g = self.geometry
        return {"kernel": self.kernel, "predicted_ms": self.time_ms, "step_us": self.step_us,
                "latency_us": self.latency_us, "throughput_us": self.throughput_us,
                "memory_ms": self.memory_ms, "compute_ms": self.compute_ms, "bound": self.bound,
                "programs": g.programs, "waves": g.waves, "occupancy": g.occupancy,
                "occupancy_limit": g.occupancy_limit, "regs": g.regs, "predicted": True}


def _bv(problem: Problem, matmul: str) -> int:
    bv = 1 << max(0, (problem.V - 1).bit_length())
    return max(bv, 16) if matmul != "fma" else bv


def _estimated_regs(kind: str, p: Mapping[str, Any], bm: int, bv: int, threads: int) -> int:
    """Registers per thread when no compiled kernel is at hand: live fp32 tiles per thread.

    Mirrors the templates' check() budgets (state, z, W, prefetched rows; the backward
    holds about three times as many tiles), plus a fixed 40 for addresses and loop state.
    """
    tiles = 2 + p["PREFETCH"] if kind == "m2rnn_fwd" else 7 + p["PREFETCH"] * (2 + p.get("STORE_Z", 0))
    live = (tiles * bm * bv + 3 * bv * bv) / threads
    if p["MATMUL"] == "fma":
        live += bm * bv * bv / threads
    return int(min(255, 40 + live))


def _estimated_shared(p: Mapping[str, Any], bm: int, bv: int) -> int:
    # dots and multi-warp reductions convert layouts through shared memory (one fp32 tile)
    return 4 * bm * bv if (p["MATMUL"] != "fma" or p["num_warps"] > 1) else 0


def geometry(problem: Problem, config: KernelConfig, hw: HardwareProfile,
             resources: Optional[Mapping[str, Any]] = None) -> Geometry:
    p = config.as_dict()
    bk, bb, w = p["BLOCK_K"], p["BLOCK_B"], p["num_warps"]
    bm, bv, threads = bk * bb, _bv(problem, p["MATMUL"]), 32 * p["num_warps"]
    k_blocks = -(-problem.K // bk)
    programs = k_blocks * -(-problem.B // bb) * problem.N
    measured = bool(resources and resources.get("n_regs"))
    regs = int(resources["n_regs"]) if measured else _estimated_regs(config.variant, p, bm, bv, threads)
    shared = int(resources.get("shared", 0)) if resources else _estimated_shared(p, bm, bv)
    # registers are allocated per warp in units of 256 (8 per thread)
    regs_alloc = max(8, -(-regs // 8) * 8) * threads
    limits = {
        "registers": hw.regs_per_sm // regs_alloc,
        "warps": hw.max_warps_per_sm // w,
        "blocks": hw.max_blocks_per_sm,
        "shared": hw.shared_per_sm // shared if shared else hw.max_blocks_per_sm,
    }
    limit = min(limits, key=limits.get)
    occupancy = limits[limit]
    if occupancy < 1:
        raise ModelError(f"{config.short()} cannot be resident on one SM ({limit}: "
                         f"{regs} registers x {threads} threads, {shared} B shared)")
    waves = -(-programs // (hw.sm_count * occupancy))
    resident = programs / (hw.sm_count * waves)
    return Geometry(programs, threads, bm, bv, k_blocks, occupancy, limit, waves, resident, regs, measured)


# ---- features: µs-per-step coefficients multiply these (names are the keys in hardware.json) ----

def _matmul_features(prefix: str, matmul: str, work: float, count: float) -> dict[str, float]:
    # work: multiply-adds per thread per product; count: products per step on this path
    f = {f"{prefix}.{matmul}": count * work * _PASSES[matmul]}
    if matmul != "fma":
        f[f"{prefix}0.{matmul}"] = count          # fixed cost of a dot: layout conversions
    return f


def latency_features(problem: Problem, config: KernelConfig, g: Geometry) -> dict[str, float]:
    p = config.as_dict()
    e = g.per_thread
    work = g.bm * g.bv * g.bv / g.threads
    f: dict[str, float] = {"base": 1.0, "warps": math.log2(p["num_warps"]),
                           "prefetch0": float(p["PREFETCH"] == 0), "prefetch2": float(p["PREFETCH"] == 2)}
    if config.variant == "m2rnn_fwd":
        f.update(_matmul_features("mm", p["MATMUL"], work, 1.0))
        f["elem"] = e
        f[f"tanh.{p['TANH']}"] = e
        # y = qᵀH: a reduction over BLOCK_K rows, then a store or (K split) an atomic add
        f["yreduce"] = math.log2(2 * p["BLOCK_K"])
        f["yatomic"] = float(g.k_blocks > 1)
        return f
    # backward: recompute (H W, tanh) + sweep (H W and tanh again unless STORE_Z, da Wᵀ, H_prevᵀ da)
    store_z = p["STORE_Z"]
    f.update(_matmul_features("mm", p["MATMUL"], work, 3.0 - store_z))
    dw = p["MATMUL"] if p["DW_MATMUL"] == "same" else p["DW_MATMUL"]
    for key, value in _matmul_features("dwmm", dw, work, 1.0).items():
        f[key] = f.get(key, 0.0) + value
    f["elem"] = e
    f[f"tanh.{p['TANH']}"] = e * (2 - store_z)
    f["storez"] = float(store_z) * e
    f["chunk"] = 1.0 / p["CKPT"]                  # per chunk: checkpoint load, barriers, prefetch restart
    f["reduce"] = math.log2(2 * p["BLOCK_K"])     # dq, dk over V; dv, df over BLOCK_K rows
    f["atomics"] = _atomics_per_thread(problem, config, g)
    return f


def _atomics_per_thread(problem: Problem, config: KernelConfig, g: Geometry) -> float:
    """fp32 atomic adds one thread issues per step, weighted by writers per address."""
    p = config.as_dict()
    total = 0.0
    for heads, width, over_rows in ((problem.Nq, g.bm, False), (problem.Nk, g.bm, False),
                                    (problem.Nv, p["BLOCK_B"] * g.bv, True), (problem.Nf, p["BLOCK_B"], True)):
        group = problem.N // heads
        copies = min(p["SLOTS"], group)
        writers = -(-group // copies) * (g.k_blocks if over_rows else 1)
        if writers > 1:
            total += width / g.threads * math.log2(2 * writers)
    return total


def throughput_features(problem: Problem, config: KernelConfig, g: Geometry) -> dict[str, float]:
    """Per-SM issue work per step: resident programs × tile elements × per-element op classes."""
    p = config.as_dict()
    elems = g.resident * g.bm * g.bv           # state elements one SM advances per step
    passes = 1 if config.variant == "m2rnn_fwd" else 3 - p["STORE_Z"]
    f = {"sm.elem": elems * passes, f"sm.tanh.{p['TANH']}": elems * (1 if passes == 1 else 2 - p["STORE_Z"])}
    if p["MATMUL"] == "fma":
        f["sm.fma"] = elems * g.bv * passes
    else:
        f["sm.dot"] = elems * g.bv * passes * _PASSES[p["MATMUL"]] / 16
    if config.variant == "m2rnn_bwd":
        f["sm.atomics"] = g.resident * g.threads * _atomics_per_thread(problem, config, g)
    return f


def _dot(coefs: Mapping[str, float], features: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {k: coefs.get(f"{prefix}{k}", 0.0) * v for k, v in features.items()}


def hbm_bytes(problem: Problem, config: KernelConfig) -> float:
    """Bytes that must cross HBM at least once: inputs, outputs, fp32 states, checkpoints.

    The states matter for short sequences: one decoding step (S=1) of a large batch moves
    h0 in and h_T out (K×V fp32 each per head) for a handful of flops, and is memory-bound.
    """
    b = DTYPE_BYTES[problem.dtype]
    T, N, K, V = problem.tokens, problem.N, problem.K, problem.V
    inputs = T * ((problem.Nq + problem.Nk) * K + problem.Nv * V + problem.Nf) * b
    y = T * N * V * b
    state = problem.B * N * K * V * 4 * (2 if problem.h0 else 1)          # (h0 read,) h_T written
    if config.variant == "m2rnn_fwd":
        return inputs + y + state
    ckpt = problem.B * N * -(-problem.S // config["CKPT"]) * K * V * 4
    return 2 * inputs + y + state + ckpt            # inputs read, their gradients written; dy; dh_T (, dh0)


def flops(problem: Problem, config: KernelConfig) -> float:
    per_step = 2 * problem.K * problem.V * problem.V + 8 * problem.K * problem.V
    return problem.tokens * problem.N * per_step * (1 if config.variant == "m2rnn_fwd" else 4)


def predict(problem: Problem, config: KernelConfig, hw: HardwareProfile,
            resources: Optional[Mapping[str, Any]] = None) -> Prediction:
    """Predicted time of one launch of `config` on `problem` on the GPU `hw` describes."""
    if config.variant not in KINDS:
        raise ModelError(f"no performance model for variant {config.variant!r}; known: {sorted(KINDS)}")
    coefs = hw.constants.get(config.variant)
    if not coefs:
        raise ModelError(f"{hw.slug}'s hardware.json has no fitted constants for {config.variant} "
                         "(run `m2tune calibrate` on that GPU)")
    g = geometry(problem, config, hw, resources)
    lat_terms = _dot(coefs, latency_features(problem, config, g), "lat.")
    latency = sum(lat_terms.values())
    throughput = sum(_dot(coefs, throughput_features(problem, config, g), "thr.").values())
    step = max(latency, throughput)
    kernel_ms = (coefs.get("launch_us", 0.0) + g.waves * problem.S * step) / 1e3
    memory_ms = hbm_bytes(problem, config) / (hw.hbm_gbps * 1e9) * 1e3
    rate = hw.tf32_tflops if config["MATMUL"] in ("fma", "dot_ieee", "dot_tf32x3", "dot_tf32") else hw.bf16_tflops
    compute_ms = flops(problem, config) / (rate * 1e12) * 1e3
    terms = {"latency": latency * g.waves * problem.S / 1e3, "throughput": throughput * g.waves * problem.S / 1e3,
             "memory": memory_ms, "compute": compute_ms}
    bound = max(terms, key=terms.get)
    return Prediction(config.variant, max(kernel_ms, memory_ms, compute_ms), step, latency, throughput,
                      memory_ms, compute_ms, bound, g, lat_terms)

"""The vocabulary every M²RNN kernel spec shares: products, padding, the launch layout, and the
KernelSpec base class (parameters, check(), defaults ladder, training rule, model features).

Plain Python, like spec.py: no Triton, no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from m2tune.problem import KernelConfig, Problem

# dot_bf16x2: H split into bf16 high and low halves, two bf16 products (16 mantissa bits of H, W in
# bf16: exact for the bf16 problems' W), about a third of tf32x3's tensor-core work.
MATMULS = ("fma", "dot_ieee", "dot_tf32x3", "dot_tf32", "dot_bf16", "dot_bf16x2")
# tensor-core passes per product
PASSES = {"fma": 1, "dot_ieee": 1, "dot_tf32x3": 3, "dot_tf32": 1, "dot_bf16": 1, "dot_bf16x2": 2}
# products the model prices as another one several times (no calibration rows of their own yet)
PRICED_AS = {"dot_bf16x2": "dot_bf16"}
# Products that round the state H to bf16 or tf32 at every step. Fine for y (the forward's
# validation passes them), but in training the forward also writes the checkpoints the backward
# recomputes from, and gradients are far more sensitive to the state than y is: at paper-7b, S=512,
# no clipping, a dot_bf16 forward put every gradient 2.5x off float64 whichever backward followed,
# while a dot_tf32x3 forward kept them within 1e-2 (bench/results/2026-11-29-h200-pairs).
ROUNDS_STATE_TO = {"dot_bf16": "bf16", "dot_tf32": "tf32"}
STATE_ROUNDING = tuple(ROUNDS_STATE_TO)
# the shortest checkpoint chunk any backward asks of the forward (tests/test_plan.py holds every
# backward spec to it): a forward's checkpoints are validated at this chunk, where they come most often
SMALLEST_CHUNK = 16
# live fp32 values per thread above which a tile would spill heavily
MAX_REGS_PER_THREAD = 255
# registers a thread needs besides its tiles: addresses, loop state, masks
BASE_REGS = 40
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def padded_v(V: int, matmul: str) -> int:
    """V padded to a power of two, and to 16 for tl.dot (its inner dimension needs at least 16)."""
    bv = next_pow2(V)
    return max(bv, 16) if matmul != "fma" else bv


@dataclass(frozen=True)
class Layout:
    """How a config lays a problem onto programs: what the launcher launches and the model prices."""
    grid: tuple[int, int, int]   # (K blocks, batch blocks, heads)
    bm: int                      # state rows per program (BLOCK_B × BLOCK_K)
    bv: int                      # padded V
    threads: int                 # per program

    @property
    def programs(self) -> int:
        return math.prod(self.grid)

    @property
    def k_blocks(self) -> int:
        return self.grid[0]


def matmul_features(prefix: str, matmul: str, work: float, count: float) -> dict[str, float]:
    # work: multiply-adds per thread per product; count: products per step on this path
    priced = PRICED_AS.get(matmul, matmul)
    f = {f"{prefix}.{priced}": count * work * PASSES[matmul]}
    if matmul != "fma":
        # fixed cost of a dot (layout conversions), once per tensor-core pass of a split product
        f[f"{prefix}0.{priced}"] = count * (PASSES[matmul] if priced != matmul else 1)
    return f


class KernelSpec:
    """What every M²RNN kernel shares; ForwardSpec and BackwardSpec add their own."""

    name: str
    role: str                        # "forward" or "backward": what the op calls it for
    PARAMS: Mapping[str, tuple[Any, ...]]   # name -> allowed values, the first one the default
    gpu_start: Mapping[str, Any]     # where a GPU starts without tuning (over DEFAULT)
    # a kernel with no calibrated constants of its own yet is priced with another's (labelled so)
    model_constants_from: Optional[str] = None
    # The state-precision contract (m2tune/measure/tolerance.py): what the template keeps in fp32
    # whatever its config. Validation's baseline is the reference that keeps these in fp32.
    KEEPS_FP32: tuple[str, ...] = ("state", "accumulators")

    def rounding(self, config: KernelConfig) -> Optional[str]:
        """"bf16" or "tf32" when the config's products round the state operand to it every step
        (declared state rounding: allowed, labelled, held to the rounded baseline), else None."""
        return ROUNDS_STATE_TO.get(config["MATMUL"])

    def validation_chunk(self, config: KernelConfig) -> int:
        """Steps per chunk the validation plan must cover several of (measure/plan.py)."""
        raise NotImplementedError

    @property
    def DEFAULT(self) -> KernelConfig:
        return KernelConfig.of(self.name, {name: values[0] for name, values in self.PARAMS.items()})

    def config(self, params: Optional[Mapping[str, Any]] = None, **kw: Any) -> KernelConfig:
        """A full config: `params` over the default."""
        return self.DEFAULT.with_params(**dict(params or {}), **kw)

    def model_config(self, config: KernelConfig) -> KernelConfig:
        """The config the performance model scores (a wrapping spec maps onto the wrapped one)."""
        return config

    # ---- geometry

    def layout(self, problem: Problem, config: KernelConfig) -> Layout:
        bk, bb = config["BLOCK_K"], config["BLOCK_B"]
        grid = (cdiv(problem.K, bk), cdiv(problem.B, bb), problem.N)
        return Layout(grid, bk * bb, padded_v(problem.V, config["MATMUL"]), 32 * config["num_warps"])

    def live_values(self, config: KernelConfig, layout: Layout) -> float:
        """Estimated fp32 values each thread keeps live: the spill guard of check() and, plus
        BASE_REGS, the model's register estimate when no compiled kernel is at hand."""
        raise NotImplementedError

    def estimated_regs(self, config: KernelConfig, layout: Layout) -> int:
        return int(min(MAX_REGS_PER_THREAD, BASE_REGS + self.live_values(config, layout)))

    def fit(self, config: KernelConfig, problem: Problem) -> KernelConfig:
        """Shrink blocks that would exceed the problem (K rows, sequences)."""
        return config.with_params(BLOCK_K=min(config["BLOCK_K"], next_pow2(problem.K)),
                                  BLOCK_B=min(config["BLOCK_B"], next_pow2(problem.B)))

    # ---- what it cannot run

    def check(self, problem: Problem, config: KernelConfig, *, interpreter: bool = False) -> Optional[str]:
        """Why `config` cannot run `problem` (None if it can), decided before compiling."""
        params = config.as_dict()
        if config.variant != self.name:
            return f"config is for variant {config.variant!r}, not {self.name!r}"
        missing = sorted(set(self.PARAMS) - set(params))
        unknown = sorted(set(params) - set(self.PARAMS))
        if missing or unknown:
            return f"parameters missing {missing} / unknown {unknown}"
        for key, value in params.items():
            if value not in self.PARAMS[key]:
                return f"{key}={value!r} not in {list(self.PARAMS[key])}"
        bk, bb, mm = params["BLOCK_K"], params["BLOCK_B"], params["MATMUL"]
        if bk > 1 and bk // 2 >= problem.K:
            return f"BLOCK_K={bk} is at least twice K={problem.K}: same work as a smaller block"
        if bb > 1 and bb // 2 >= problem.B:
            return f"BLOCK_B={bb} is at least twice the {problem.B} sequences: same work as a smaller block"
        if params["TANH"] == "approx" and interpreter:
            return "TANH=approx is PTX (tanh.approx.f32) and cannot run in the Triton interpreter"
        if problem.dtype == "float32" and mm in STATE_ROUNDING:
            return f"MATMUL={mm} rounds H below the fp32 problem's precision"
        if mm == "dot_bf16x2" and problem.dtype != "bfloat16":
            return f"MATMUL={mm} rounds W to bf16: exact only for bfloat16 problems, this is {problem.dtype}"
        return self._check_own(problem, config) or self._register_reason(config, self.layout(problem, config))

    def _check_own(self, problem: Problem, config: KernelConfig) -> Optional[str]:
        return None

    def _register_reason(self, config: KernelConfig, layout: Layout) -> Optional[str]:
        per_thread = self.live_values(config, layout)
        if per_thread > MAX_REGS_PER_THREAD:
            return (f"about {math.ceil(per_thread)} registers per thread for a {layout.bm}x{layout.bv} tile "
                    f"({config['MATMUL']}, {config['num_warps']} warps) exceeds {MAX_REGS_PER_THREAD}")
        return None

    # ---- defaults and training

    def ladder(self, *, interpreter: bool) -> list[KernelConfig]:
        """Starting configs for a problem nothing is tuned for, best first (runtime.default_choice
        takes the first that check() accepts, trying 1, 2, 4, 8 warps each)."""
        start = self.config(self.gpu_start)
        gpu = [] if interpreter else [start]                 # the GPU start uses PTX tanh
        return gpu + [self.DEFAULT, self.config(MATMUL="dot_ieee")]

    def training_reason(self, config: KernelConfig) -> Optional[str]:
        """Why `config` must not run when gradients will be taken (None if it may)."""
        return None

    def extra_bytes(self, problem: Problem, config: KernelConfig) -> int:
        """Device memory the kernel allocates beyond its inputs and outputs."""
        return 0

    # ---- the performance model's per-step features (names are keys of hardware.json constants)

    def latency_features(self, problem: Problem, config: KernelConfig, g: Any) -> dict[str, float]:
        """One program's dependency chain per step; `g` is the model's Geometry (layout + occupancy)."""
        raise NotImplementedError

    def throughput_features(self, problem: Problem, config: KernelConfig, g: Any) -> dict[str, float]:
        """Per-SM issue work per step: resident programs × tile elements × per-element op classes."""
        raise NotImplementedError

    def hbm_bytes(self, problem: Problem, config: KernelConfig) -> float:
        raise NotImplementedError

    def flops(self, problem: Problem, config: KernelConfig) -> float:
        raise NotImplementedError

    def _input_bytes(self, problem: Problem) -> tuple[float, float, float]:
        """(inputs, y, fp32 states) that cross HBM at least once."""
        b = DTYPE_BYTES[problem.dtype]
        T, N, K, V = problem.tokens, problem.N, problem.K, problem.V
        inputs = T * ((problem.Nq + problem.Nk) * K + problem.Nv * V + problem.Nf) * b
        # the states matter for short sequences: one decoding step (S=1) of a large batch moves h0
        # in and h_T out (K×V fp32 each per head) for a handful of flops, and is memory-bound
        state = problem.B * N * K * V * 4 * (2 if problem.h0 else 1)
        return inputs, T * N * V * b, state

    def _step_flops(self, problem: Problem) -> float:
        return problem.tokens * problem.N * (2 * problem.K * problem.V ** 2 + 8 * problem.K * problem.V)

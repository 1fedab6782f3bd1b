"""What each M²RNN kernel is, in plain Python: its parameters, what it cannot run, how it lays a
problem onto the GPU, what memory it needs, where a GPU starts without tuning, whether its output
may feed training, and the per-step work the performance model prices.

This file imports neither Triton nor torch (a test imports it with both blocked): the tuner's
screening, the search-space reader, the runtime lookup, `m2tune export` and the performance model
read it without compiling anything. The kernels (fwd.py, bwd.py) take their geometry from here, so
what is checked is what is launched.

One `KernelSpec` per kernel (the base class and shared vocabulary: spec_base.py), registered by
name in m2tune/variants.py. A new kernel of the family is a file with its `@triton.jit` code and
launcher plus a spec entry here.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from m2tune.kernel_variants.m2rnn.spec_base import (MATMULS, PASSES, ROUNDS_STATE_TO, SMALLEST_CHUNK,
                                                    STATE_ROUNDING, KernelSpec, Layout, cdiv, matmul_features)
from m2tune.problem import KernelConfig, Problem


class ForwardSpec(KernelSpec):
    """fwd.py: one program owns BLOCK_K state rows of BLOCK_B sequences of one head and walks time."""

    name = "m2rnn_fwd"
    role = "forward"
    PARAMS = {
        "BLOCK_K": (16, 1, 2, 4, 8, 32, 64, 128),
        "BLOCK_B": (1, 2, 4, 8),
        "PREFETCH": (1, 0, 2),
        "MATMUL": MATMULS,
        # exact: fp32 formula from exp; approx: PTX tanh.approx.f32 (GPU only)
        "TANH": ("exact", "approx"),
        "num_warps": (1, 2, 4, 8),
        "num_stages": (1, 2, 3),
    }
    # the fastest fp32-accurate forward measured on the H200 (bench/results/2026-11-29-h200-forward-tf32x3)
    gpu_start = {"MATMUL": "dot_tf32x3", "TANH": "approx", "BLOCK_K": 32, "num_warps": 1}
    # Forwards that make a backward's checkpoints when only the backward is timed or validated:
    # exact products (dot_ieee, fma) so the backward sees fp32-exact states; the first that fits.
    CHECKPOINT_CONFIGS = (
        {"MATMUL": "dot_ieee", "BLOCK_K": 16, "num_warps": 1},
        {"MATMUL": "dot_ieee", "BLOCK_K": 16, "num_warps": 4},
        {"MATMUL": "dot_ieee", "BLOCK_K": 16, "BLOCK_B": 1, "num_warps": 8},
        {"MATMUL": "fma", "BLOCK_K": 4, "num_warps": 1},
        {"MATMUL": "fma", "BLOCK_K": 1, "num_warps": 1},
    )

    KEEPS_FP32 = ("state", "checkpoints", "accumulators")

    def validation_chunk(self, config: KernelConfig) -> int:
        return SMALLEST_CHUNK

    def live_values(self, config: KernelConfig, layout: Layout) -> float:
        bm, bv, threads = layout.bm, layout.bv, layout.threads
        per_thread = (2 * bm * bv + bv * bv + 6 * bm) / threads    # state, z, W, prefetched vectors
        per_thread *= 1 + config["PREFETCH"] / 2                     # each prefetched step is held live
        if config["MATMUL"] == "fma":
            per_thread += bm * bv * bv / threads                     # [BM, BV, BV] products
        return per_thread

    def _check_own(self, problem: Problem, config: KernelConfig) -> Optional[str]:
        layout = self.layout(problem, config)
        if config["MATMUL"] != "fma" and layout.bm * layout.bv < layout.threads // 2:
            return f"tile {layout.bm}x{layout.bv} too small for tl.dot with {config['num_warps']} warps"
        return None

    def training_reason(self, config: KernelConfig) -> Optional[str]:
        if config["MATMUL"] in STATE_ROUNDING:
            return (f"MATMUL={config['MATMUL']} rounds the state that the backward's checkpoints hold "
                    "(gradients 2.5x off at S=512); not used for training")
        return None

    def checkpoint_config(self, problem: Problem, *, interpreter: bool = False) -> KernelConfig:
        """A valid forward config to make a backward's checkpoints on `problem`."""
        for params in self.CHECKPOINT_CONFIGS:
            config = self.config(params)
            if self.check(problem, config, interpreter=interpreter) is None:
                return config
        raise ValueError(f"no checkpointing forward config fits {problem.describe()}")

    def latency_features(self, problem: Problem, config: KernelConfig, g: Any) -> dict[str, float]:
        p = config.as_dict()
        e = g.per_thread
        f: dict[str, float] = {"base": 1.0, "warps": math.log2(p["num_warps"]),
                               "prefetch0": float(p["PREFETCH"] == 0), "prefetch2": float(p["PREFETCH"] == 2)}
        f.update(matmul_features("mm", p["MATMUL"], g.bm * g.bv * g.bv / g.threads, 1.0))
        f["elem"] = e
        f[f"tanh.{p['TANH']}"] = e
        # y = qᵀH: a reduction over BLOCK_K rows, then a store or (K split) an atomic add
        f["yreduce"] = math.log2(2 * p["BLOCK_K"])
        f["yatomic"] = float(g.k_blocks > 1)
        return f

    def throughput_features(self, problem: Problem, config: KernelConfig, g: Any) -> dict[str, float]:
        elems = g.resident * g.bm * g.bv           # state elements one SM advances per step
        f = {"sm.elem": elems, f"sm.tanh.{config['TANH']}": elems}
        if config["MATMUL"] == "fma":
            f["sm.fma"] = elems * g.bv
        else:
            f["sm.dot"] = elems * g.bv * PASSES[config["MATMUL"]] / 16
        return f

    def hbm_bytes(self, problem: Problem, config: KernelConfig) -> float:
        inputs, y, state = self._input_bytes(problem)
        return inputs + y + state

    def flops(self, problem: Problem, config: KernelConfig) -> float:
        return self._step_flops(problem)


class BackwardSpec(KernelSpec):
    """bwd.py: chunked recompute from the forward's checkpoints, then a reverse sweep per chunk."""

    name = "m2rnn_bwd"
    role = "backward"
    # the forward kernel whose launch(..., ckpt_every=CKPT) makes this backward's checkpoints
    checkpoints_from = "m2rnn_fwd"
    PARAMS = {
        # steps per checkpoint chunk: checkpoints cost S/CKPT states, scratch CKPT states per program
        "CKPT": (64, 16, 32, 128),
        "BLOCK_K": (16, 1, 2, 4, 8, 32, 64, 128),
        "BLOCK_B": (1, 2, 4, 8),
        "PREFETCH": (1, 0, 2),
        # every product (H W in the recompute, da Wᵀ, H_{t-1}ᵀ da) at this precision, fp32 accumulate
        "MATMUL": MATMULS,
        "TANH": ("exact", "approx"),
        # precision of dW += H_{t-1}ᵀ da alone: off the step's chain, and its rounding errors average
        # over B·S terms instead of compounding through the recurrence, so it may be cheaper
        "DW_MATMUL": ("same", "dot_tf32", "dot_bf16"),
        # 1: the recompute also stores z_t (one more scratch buffer); 0: the sweep recomputes it
        "STORE_Z": (0, 1),
        # copies of the dq/dk/dv/df accumulators that heads sharing one input head spread over
        "SLOTS": (4, 1, 2, 8, 16),
        "num_warps": (1, 2, 4, 8),
        "num_stages": (1, 2, 3),
    }
    # the fastest fp32-accurate backward measured on the H200 (bench/results/2026-11-29-h200-training-levers)
    gpu_start = {"MATMUL": "dot_tf32x3", "TANH": "approx", "BLOCK_K": 16, "num_warps": 1,
                 "DW_MATMUL": "dot_tf32"}

    KEEPS_FP32 = ("state", "checkpoints", "dH", "accumulators")

    def validation_chunk(self, config: KernelConfig) -> int:
        return config["CKPT"]

    def dw_matmul(self, config: KernelConfig) -> str:
        return config["MATMUL"] if config["DW_MATMUL"] == "same" else config["DW_MATMUL"]

    def rounding(self, config: KernelConfig) -> Optional[str]:
        """Also dW's factors rounded to bf16 or tf32 (dW alone 3-4x the bf16 baseline at S=259):
        declared, labelled and held to the rounded baseline like the state rounding."""
        state = super().rounding(config)
        dw = ROUNDS_STATE_TO.get(self.dw_matmul(config))
        return state or (f"{dw} dW factors" if dw else None)

    def live_values(self, config: KernelConfig, layout: Layout) -> float:
        bm, bv, threads = layout.bm, layout.bv, layout.threads
        # live tiles: H_t, H_{t-1}, dH, g, z, da, dy; W, Wᵀ, dW; prefetched dy, H_{t-1} (, z)
        per_thread = (7 * bm * bv + 3 * bv * bv + 8 * bm) / threads
        per_thread += config["PREFETCH"] * (2 + config["STORE_Z"]) * bm * bv / threads
        if config["MATMUL"] == "fma":
            per_thread += bm * bv * bv / threads                     # [BM, BV, BV] products
        return per_thread

    def fit(self, config: KernelConfig, problem: Problem) -> KernelConfig:
        """Also the chunk: the smallest CKPT choice that covers S, if the config's is longer."""
        fitted = super().fit(config, problem)
        choices = sorted(self.PARAMS["CKPT"])
        covering = [c for c in choices if c >= problem.S] or [choices[-1]]
        return fitted.with_params(CKPT=min(config["CKPT"], covering[0]))

    def _check_own(self, problem: Problem, config: KernelConfig) -> Optional[str]:
        bm, mm, ck = config["BLOCK_B"] * config["BLOCK_K"], config["MATMUL"], config["CKPT"]
        if ck > min(self.PARAMS["CKPT"]) and ck // 2 >= problem.S:
            return f"CKPT={ck} is at least twice S={problem.S}: same work as a smaller chunk, more scratch"
        dw_mm = self.dw_matmul(config)
        if problem.dtype == "float32" and dw_mm in STATE_ROUNDING:
            return f"DW_MATMUL={dw_mm} rounds dW's factors below the fp32 problem's precision"
        if mm != "fma" and bm < 16:
            return f"MATMUL={mm} needs BLOCK_B*BLOCK_K >= 16 (tl.dot needs 16 rows)"
        if dw_mm != "fma" and bm < 16:
            return f"DW_MATMUL={dw_mm} needs BLOCK_B*BLOCK_K >= 16 (dW = H_prevᵀ da contracts over {bm} rows)"
        if mm == "fma" and dw_mm != "fma":
            return "DW_MATMUL with a dot needs a MATMUL dot too (the fma path pads V only to a power of 2)"
        return None

    def ladder(self, *, interpreter: bool) -> list[KernelConfig]:
        """As the forward's, with the GPU start also tried with an exact dW product (which fp32
        problems need: they refuse a tf32 dW)."""
        starts = super().ladder(interpreter=interpreter)
        if interpreter:
            return starts
        return [starts[0], starts[0].with_params(DW_MATMUL="same"), *starts[1:]]

    def plan(self, problem: Problem, config: KernelConfig) -> dict[str, tuple[int, bool]]:
        """Per shared gradient (q, k, v, f): (accumulator copies R, atomics needed). See bwd.py."""
        split_k = cdiv(problem.K, config["BLOCK_K"]) > 1
        plan = {}
        for name, heads, over_rows in (("q", problem.Nq, False), ("k", problem.Nk, False),
                                       ("v", problem.Nv, True), ("f", problem.Nf, True)):
            g = problem.N // heads
            copies = min(config["SLOTS"], g)
            plan[name] = (copies, copies < g or (over_rows and split_k))
        return plan

    def extra_bytes(self, problem: Problem, config: KernelConfig) -> int:
        """Device memory the backward (and the forward's checkpoints) allocate beyond inputs and grads."""
        p = config.as_dict()
        nseq, N, K, V, T = problem.B, problem.N, problem.K, problem.V, problem.tokens
        layout = self.layout(problem, config)
        progs, bm, bv = layout.programs, layout.bm, layout.bv
        total = nseq * N * cdiv(problem.S, p["CKPT"]) * K * V * 4                  # checkpoints
        total += (1 + p["STORE_Z"]) * progs * p["CKPT"] * bm * bv * 4              # scratch
        total += progs * V * V * 4                                                  # dW partials
        width = {"q": problem.Nq * K, "k": problem.Nk * K, "v": problem.Nv * V, "f": problem.Nf}
        for name, (copies, atomic) in self.plan(problem, config).items():
            if atomic or copies > 1:
                total += copies * T * width[name] * 4
        return total

    def latency_features(self, problem: Problem, config: KernelConfig, g: Any) -> dict[str, float]:
        # recompute (H W, tanh) + sweep (H W and tanh again unless STORE_Z, da Wᵀ, H_prevᵀ da)
        p = config.as_dict()
        e = g.per_thread
        work = g.bm * g.bv * g.bv / g.threads
        store_z = p["STORE_Z"]
        f: dict[str, float] = {"base": 1.0, "warps": math.log2(p["num_warps"]),
                               "prefetch0": float(p["PREFETCH"] == 0), "prefetch2": float(p["PREFETCH"] == 2)}
        f.update(matmul_features("mm", p["MATMUL"], work, 3.0 - store_z))
        for key, value in matmul_features("dwmm", self.dw_matmul(config), work, 1.0).items():
            f[key] = f.get(key, 0.0) + value
        f["elem"] = e
        f[f"tanh.{p['TANH']}"] = e * (2 - store_z)
        f["storez"] = float(store_z) * e
        f["chunk"] = 1.0 / p["CKPT"]                  # per chunk: checkpoint load, barriers, prefetch restart
        f["reduce"] = math.log2(2 * p["BLOCK_K"])     # dq, dk over V; dv, df over BLOCK_K rows
        f["atomics"] = self.atomics_per_thread(problem, config, g)
        return f

    def atomics_per_thread(self, problem: Problem, config: KernelConfig, g: Any) -> float:
        """fp32 atomic adds one thread issues per step, weighted by writers per address."""
        total = 0.0
        for heads, width, over_rows in ((problem.Nq, g.bm, False), (problem.Nk, g.bm, False),
                                        (problem.Nv, config["BLOCK_B"] * g.bv, True),
                                        (problem.Nf, config["BLOCK_B"], True)):
            group = problem.N // heads
            copies = min(config["SLOTS"], group)
            writers = cdiv(group, copies) * (g.k_blocks if over_rows else 1)
            if writers > 1:
                total += width / g.threads * math.log2(2 * writers)
        return total

    def throughput_features(self, problem: Problem, config: KernelConfig, g: Any) -> dict[str, float]:
        elems = g.resident * g.bm * g.bv
        passes = 3 - config["STORE_Z"]
        f = {"sm.elem": elems * passes, f"sm.tanh.{config['TANH']}": elems * (2 - config["STORE_Z"])}
        if config["MATMUL"] == "fma":
            f["sm.fma"] = elems * g.bv * passes
        else:
            f["sm.dot"] = elems * g.bv * passes * PASSES[config["MATMUL"]] / 16
        f["sm.atomics"] = g.resident * g.threads * self.atomics_per_thread(problem, config, g)
        return f

    def hbm_bytes(self, problem: Problem, config: KernelConfig) -> float:
        inputs, y, state = self._input_bytes(problem)
        ckpt = problem.B * problem.N * cdiv(problem.S, config["CKPT"]) * problem.K * problem.V * 4
        return 2 * inputs + y + state + ckpt        # inputs read, their gradients written; dy; dh_T (, dh0)

    def flops(self, problem: Problem, config: KernelConfig) -> float:
        return 4 * self._step_flops(problem)


def _inline(config: KernelConfig) -> int:
    """INLINE of a lean config; a trial recorded before the parameter existed ran the block path (0)."""
    return config.get("INLINE", 0)


def _scratch_words(config: KernelConfig) -> float:
    """32-bit words per scratch element: the lean backward's SCRATCH=bf16 stores two elements a word."""
    return 0.5 if config.get("SCRATCH") == "bf16" else 1.0


class LeanBackwardSpec(BackwardSpec):
    """bwd_lean.py: as bwd.py, but one sequence per program, the per-step loop carries only the dH
    chain, and the input gradients are computed per block of BULK steps on [BULK, BLOCK_K, BV] tiles."""

    name = "m2rnn_bwd_lean"
    PARAMS = {
        "CKPT": (32, 16, 64, 128),
        # steps per block of bulk gradient work: its tiles are [BULK, BLOCK_K, BV]
        "BULK": (4, 1, 2, 8, 16),
        # at least 16 rows: the chain's tl.dot
        "BLOCK_K": (16, 32, 64, 128),
        # one sequence per program: every per-step input is a row or column vector or a scalar
        "BLOCK_B": (1,),
        # the chain's loads 0, 1 or 2 steps ahead (2: z and its factors also a step ahead)
        "PREFETCH": (2, 0, 1),
        # 1: chunk c - 1 is recomputed during chunk c's sweep, one step per chain step (two independent
        # chains in one loop hide each other's latency), into a second scratch buffer
        "OVERLAP": (0, 1),
        # 1: dq_t = H_t dy_t in the recompute and df_t in the chain step, from values already in registers;
        # the block reads back only H_{t-1} and da (five tile transfers per step instead of eight).
        # The default: faster in every pair measured on the H200, 14% at paper-7b (bench/results/
        # 2026-12-01-h200-inline), 4-15% at paper-400m and B=1 S=16384 (its retune/ studies)
        "INLINE": (1, 0),
        # the per-program scratch (H per step, da per block): bf16 halves its bytes, allowed only where the
        # products round H and da to bf16 anyway (MATMUL=dot_bf16, dW in bf16)
        "SCRATCH": ("fp32", "bf16"),
        # tensor-core products only: the block tiles' H W would not fit the fma path's registers
        "MATMUL": ("dot_ieee", "dot_tf32x3", "dot_tf32", "dot_bf16", "dot_bf16x2"),
        "TANH": ("exact", "approx"),
        "DW_MATMUL": ("same", "dot_tf32", "dot_bf16"),
        "SLOTS": (4, 1, 2, 8, 16),
        "num_warps": (1, 2, 4, 8),
        "num_stages": (1, 2, 3),
        # registers per thread the compiler may use (0: its choice, up to 255): a cap trades spills for
        # resident programs (one warp each: 128 -> 16 per SM, 168 -> 12, 255 -> 8)
        "MAXNREG": (0, 128, 168),
    }
    gpu_start = {"MATMUL": "dot_tf32x3", "TANH": "approx", "BLOCK_K": 16, "num_warps": 1,
                 "DW_MATMUL": "dot_tf32", "BULK": 4}
    # until `m2tune calibrate` has timed this kernel: bwd.py's constants for the features both have
    model_constants_from = "m2rnn_bwd"

    def rows(self, config: KernelConfig) -> int:
        """Rows of a block tile: BULK steps of the program's BLOCK_K state rows."""
        return config["BULK"] * config["BLOCK_K"]

    def live_values(self, config: KernelConfig, layout: Layout) -> float:
        bm, bv, threads = layout.bm, layout.bv, layout.threads
        # the chain: dH, g, da, z, H_{t-1} tiles (k, q rows and v, dy columns); W, Wᵀ, dW; the
        # prefetched H_{t-1} (PREFETCH >= 1) and the step prepared ahead, c and e (PREFETCH = 2)
        tiles = 5 + {0: 0, 1: 1, 2: 3}[config["PREFETCH"]] + 2 * config["OVERLAP"]   # + H and z of the recompute
        chain = (tiles * bm * bv + 3 * bv * bv + (8 + 2 * config["OVERLAP"]) * bm + 4 * bv) / threads
        # a block: H_{t-1}, v, z, g, da, dfe tiles of R rows, with dH and dW live across it
        rows = self.rows(config)
        block = ((6 - 2 * _inline(config)) * rows * bv + bm * bv + 3 * bv * bv + 6 * rows) / threads
        return max(chain, block)

    def fit(self, config: KernelConfig, problem: Problem) -> KernelConfig:
        fitted = super().fit(config, problem)
        return fitted.with_params(BULK=min(fitted["BULK"], fitted["CKPT"]))

    def _check_own(self, problem: Problem, config: KernelConfig) -> Optional[str]:
        ck, bulk = config["CKPT"], config["BULK"]
        if ck > min(self.PARAMS["CKPT"]) and ck // 2 >= problem.S:
            return f"CKPT={ck} is at least twice S={problem.S}: same work as a smaller chunk, more scratch"
        if bulk > 1 and bulk // 2 >= min(ck, problem.S):
            return (f"BULK={bulk} is at least twice the chunk's {min(ck, problem.S)} steps: same work as a "
                    "smaller block")
        dw_mm = self.dw_matmul(config)
        if problem.dtype == "float32" and dw_mm in STATE_ROUNDING:
            return f"DW_MATMUL={dw_mm} rounds dW's factors below the fp32 problem's precision"
        if config.get("SCRATCH") == "bf16" and (config["MATMUL"] != "dot_bf16" or dw_mm != "dot_bf16"):
            return (f"SCRATCH=bf16 rounds H and da, which MATMUL={config['MATMUL']} with dW in {dw_mm} keeps "
                    "more precisely (allowed with MATMUL=dot_bf16 and dW in bf16 only)")
        return None

    def extra_bytes(self, problem: Problem, config: KernelConfig) -> int:
        layout = self.layout(problem, config)
        # bwd.py's buffers with STORE_Z=0, one more H slot per program, and the block's scratch (da and,
        # without INLINE, g ⊙ (H_{t-1} - z)); with OVERLAP a second H scratch of CKPT + 1 slots
        base = super().extra_bytes(problem, config.with_params(STORE_Z=0))
        slots = 1 + (2 - _inline(config)) * config["BULK"] + config["OVERLAP"] * (config["CKPT"] + 1)
        return base + layout.programs * slots * layout.bm * layout.bv * int(4 * _scratch_words(config))

    def latency_features(self, problem: Problem, config: KernelConfig, g: Any) -> dict[str, float]:
        # the recompute (H W), the chain (H W for z, da Wᵀ), the block (H W, dW once per BULK steps)
        p = config.as_dict()
        e = g.per_thread
        work = g.bm * g.bv * g.bv / g.threads
        f: dict[str, float] = {"base": 1.0, "warps": math.log2(p["num_warps"]),
                               "prefetch0": float(p["PREFETCH"] == 0), "prefetch2": float(p["PREFETCH"] == 2)}
        f.update(matmul_features("mm", p["MATMUL"], work, 3.0))
        for key, value in matmul_features("blk", p["MATMUL"], work, 1.0 / p["BULK"]).items():
            f[key] = value * p["BULK"]             # the block's product: BULK x the rows, once
        for key, value in matmul_features("dwmm", self.dw_matmul(config), work, 1.0 / p["BULK"]).items():
            f[key] = value * p["BULK"]
        f["elem"] = e
        f[f"tanh.{p['TANH']}"] = 3 * e
        f["chunk"] = 1.0 / p["CKPT"]
        f["block"] = 1.0 / p["BULK"]              # per block: barriers, the reductions' trees
        f["atomics"] = self.atomics_per_thread(problem, config, g)
        # Tile transfers through the per-program scratch per step, elements per thread: H_t stored by the
        # recompute and read back by the chain (H_{t-1}) and the block (H_{t-1}; without INLINE H_t too, for
        # dq), da stored and read back, and without INLINE g ⊙ (H_{t-1} - z) stored and read back: 8, with
        # INLINE 5. Each is an L1TEX round trip the step waits on (what ncu named); the instruction count
        # alone drops 6% (bench/sass_stats.py) where the H200 measured 14% (bench/results/2026-12-01-h200-inline)
        # Counted in 32-bit registers moved per thread, not elements: SCRATCH=bf16 packs two elements a register
        # (every scratch buffer takes its dtype), so each transfer is half the loads, stores and shuffles. sm_90
        # SASS at paper-7b (bench/sass_stats.py, BLOCK_K=32 BULK=2 INLINE=1): 1017 -> 866 instructions per
        # step, the recompute's and chain's SHFL 75 -> 19; the H200 measured bf16 16-21% faster at every
        # config of its grid (bench/results/2026-12-02-h200-scratch)
        f["scratch"] = (8 - 3 * _inline(config)) * e * _scratch_words(config)
        # INLINE moves dq_t = H_t dy_t (a row reduction over V) into the recompute and df_t (a sum over the
        # tile) into the chain step, once per step instead of on the block's [BULK, BLOCK_K, BV] tiles
        # (bench/sass_stats.py: recompute 196 -> 274 instructions per step, block 390 -> 258)
        f["stepreduce"] = _inline(config) * math.log2(2 * p["BLOCK_K"])
        # OVERLAP has no feature: its two chains in one loop measured within 1% of one chain at paper-7b
        # (12.64 -> 12.84 ms without INLINE, 10.85 -> 10.77 with; BLOCK_K=16 likewise), so "equal" is right
        return f

    def throughput_features(self, problem: Problem, config: KernelConfig, g: Any) -> dict[str, float]:
        elems = g.resident * g.bm * g.bv
        f = {"sm.elem": elems * 3, f"sm.tanh.{config['TANH']}": elems * 3,
             "sm.dot": elems * g.bv * 4 * PASSES[config["MATMUL"]] / 16,
             "sm.atomics": g.resident * g.threads * self.atomics_per_thread(problem, config, g),
             # the scratch transfers of every resident program go through the SM's one L1TEX pipe: in bytes
             # (4 an element, 2 with SCRATCH=bf16), what that pipe moves
             "sm.scratch": elems * (8 - 3 * _inline(config)) * 4 * _scratch_words(config)}
        return f


FORWARD = ForwardSpec()
BACKWARD = BackwardSpec()
LEAN_BACKWARD = LeanBackwardSpec()
SPECS = {spec.name: spec for spec in (FORWARD, BACKWARD, LEAN_BACKWARD)}

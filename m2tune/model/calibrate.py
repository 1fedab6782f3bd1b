"""`m2tune calibrate`: measure this GPU and fit the performance model's constants.

Three kinds of measurement, each recorded with how it was made (hardware.json "method"):

1. the driver's facts (SMs, registers, shared memory, warps per SM, max SM clock);
2. HBM bandwidth (a device-to-device copy) and dense bf16 / tf32 matrix rates (torch.matmul);
3. step-time micro-benchmarks of the real templates: a seeded spread of valid configs of each
   kernel, every one run on two calibration problems at S=512:
   - "latency": one program per SM (K=64, B=BLOCK_B, N heads so that programs ≈ SMs), where
     only a program's own dependency chain can bind: it fits perfmodel's latency constants;
   - "throughput": 8 programs per SM, where the SM's issue rate for per-element work (tanh,
     FMAs, atomics) binds: it fits the throughput constants.

The calibration problems and S differ from the shapes users tune (paper-7b, …) on purpose:
the model must carry over to shapes it was not fitted on.

The fit (`fit_constants`) needs only the raw rows, so `m2tune calibrate --refit` reruns it on
the CPU from a committed hardware.json.
"""
from __future__ import annotations

import random
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from .. import variants
from ..problem import KernelConfig, Problem
from . import perfmodel
from .fitting import nnls
from .hardware import HardwareProfile

CALIBRATION_S = 512
THROUGHPUT_PROGRAMS_PER_SM = 8
Progress = Callable[[str, int, int], None]

_METHOD = {
    "hardware": "torch.cuda.get_device_properties; max SM clock from nvidia-smi --query-gpu=clocks.max.sm",
    "hbm_gbps": "median of 10 CUDA-event timings of a 1 GiB device-to-device copy (2 GiB moved)",
    "bf16_tflops": "median of 10 CUDA-event timings of an 8192^3 torch.matmul in bf16",
    "tf32_tflops": "median of 10 CUDA-event timings of an 8192^3 fp32 torch.matmul with TF32 allowed",
    "constants": (f"non-negative least squares (relative error) of perfmodel's latency features on the "
                  f"'latency' rows (one program per SM, S={CALIBRATION_S}) and its throughput features "
                  f"on the 'throughput' rows ({THROUGHPUT_PROGRAMS_PER_SM} programs per SM) where they "
                  "exceed the fitted latency by 10%; rows are median CUDA-event times of the real templates"),
}


# ---- what to run --------------------------------------------------------------------------

def calibration_problem(config: KernelConfig, V: int, regime: str, sm_count: int) -> Problem:
    """The problem a config is calibrated on: K=64, paper-like head sharing (one q/k head)."""
    K = 64
    k_blocks = -(-K // config["BLOCK_K"])
    N = max(1, round(sm_count / k_blocks))
    if regime == "throughput":
        N *= THROUGHPUT_PROGRAMS_PER_SM
    return Problem(B=config["BLOCK_B"], S=CALIBRATION_S, K=K, V=V, Nq=1, Nk=1, Nv=N, Nw=N, Nf=N,
                   dtype="bfloat16")


def _random_config(spec, rng: random.Random) -> KernelConfig:
    return spec.config({k: rng.choice(v) for k, v in spec.PARAMS.items()})


def calibration_set(variant: str, count: int, sm_count: int, seed: int = 0) -> list[tuple[str, Problem, KernelConfig]]:
    """`count` distinct valid configs of `variant`, each on its latency and throughput problem."""
    spec = variants.spec(variant)
    rng = random.Random(f"{variant}-{seed}")
    jobs: list[tuple[str, Problem, KernelConfig]] = []
    seen: set[KernelConfig] = set()
    attempts = 0
    while len(seen) < count and attempts < 200 * count:
        attempts += 1
        config = spec.DEFAULT if not seen else _random_config(spec, rng)
        if config in seen or config["num_stages"] != 1:
            continue                    # num_stages changes nothing in a sequential loop (docs/design.md)
        V = rng.choice((16, 16, 32, 64))
        pair = [(r, calibration_problem(config, V, r, sm_count)) for r in ("latency", "throughput")]
        if any(spec.check(p, config) for _, p in pair):
            continue
        seen.add(config)
        jobs += [(r, p, config) for r, p in pair]
    return jobs


# ---- measuring ----------------------------------------------------------------------------

def _median_cuda_ms(fn: Callable[[], Any], reps: int = 10) -> float:
    from ..measure.timing import time_cuda
    return time_cuda(fn, warmup=2, reps=reps, flush_l2=False).median_ms


def device_facts(device: int = 0) -> dict[str, Any]:
    import torch

    from ..gpu import slug
    props = torch.cuda.get_device_properties(device)
    clock = _nvidia_smi_max_clock(device)
    return {"name": props.name, "slug": slug(props.name), "capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count, "sm_clock_mhz": clock,
            "regs_per_sm": getattr(props, "regs_per_multiprocessor", 65536),
            "shared_per_sm": getattr(props, "shared_memory_per_multiprocessor", 233472),
            "max_warps_per_sm": getattr(props, "max_threads_per_multi_processor", 2048) // 32,
            "max_blocks_per_sm": 32}


def _nvidia_smi_max_clock(device: int) -> float:
    try:
        out = subprocess.run(["nvidia-smi", f"--id={device}", "--query-gpu=clocks.max.sm",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
        return float(out.stdout.strip().splitlines()[0])
    except Exception:       # no nvidia-smi: the model does not need the clock, it is recorded for people
        return float("nan")


def _copy_gbps(nbytes: int = 2**30) -> float:
    import torch
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * nbytes / (_median_cuda_ms(lambda: dst.copy_(src)) / 1e3) / 1e9


def measure_rates() -> dict[str, float]:
    import torch
    rates = {"hbm_gbps": _copy_gbps()}
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    rates["bf16_tflops"] = 2 * n**3 / (_median_cuda_ms(lambda: a @ a) / 1e3) / 1e12
    a = a.float()
    allow = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        rates["tf32_tflops"] = 2 * n**3 / (_median_cuda_ms(lambda: a @ a) / 1e3) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow
    return rates


def measure_steps(jobs: list[tuple[str, Problem, KernelConfig]], *, reps: int = 5,
                  progress: Optional[Progress] = None, compile_processes: Optional[int] = None) -> list[dict]:
    """Time every job (precompiled in parallel first); one raw row per job."""
    from ..measure.launch import describe_failure, time_config
    from ..measure.precompile import precompile
    precompile([(p, c) for _, p, c in jobs], processes=compile_processes,
               progress=(lambda d, n: progress("compile", d, n)) if progress else None)
    rows = []
    for i, (regime, problem, config) in enumerate(jobs):
        row = {"regime": regime, "variant": config.variant, "config": config.as_dict(),
               "problem": _problem_dict(problem)}
        try:
            timing, info = time_config(problem, config, reps=reps)
            row.update(median_ms=timing.median_ms, p20_ms=timing.p20_ms, p80_ms=timing.p80_ms, resources=info)
        except Exception as exc:
            row["error"] = describe_failure(exc)
        rows.append(row)
        if progress:
            progress("time", i + 1, len(jobs))
    return rows


def _problem_dict(p: Problem) -> dict[str, Any]:
    return {k: getattr(p, k) for k in ("B", "S", "K", "V", "Nq", "Nk", "Nv", "Nw", "Nf", "dtype")}


def row_problem(row: dict) -> Problem:
    return Problem(**row["problem"])


def row_config(row: dict) -> KernelConfig:
    return KernelConfig.of(row["variant"], row["config"])


# ---- fitting ------------------------------------------------------------------------------

def _design(rows: list[dict], hw: HardwareProfile, features: Callable) -> tuple[list[str], np.ndarray, list]:
    feats, geos = [], []
    for row in rows:
        problem, config = row_problem(row), row_config(row)
        g = perfmodel.geometry(problem, config, hw, row.get("resources"))
        feats.append(features(problem, config, g))
        geos.append(g)
    names = sorted({k for f in feats for k in f})
    X = np.array([[f.get(k, 0.0) for k in names] for f in feats])
    return names, X, geos


def _per_step_us(row: dict, g: perfmodel.Geometry) -> float:
    return row["median_ms"] * 1e3 / (g.waves * row["problem"]["S"])


def fit_constants(rows: list[dict], hw: HardwareProfile, variant: str) -> tuple[dict[str, float], dict[str, Any]]:
    """Fitted latency and throughput constants of one kernel, and how well they fit."""
    ok = [r for r in rows if r["variant"] == variant and "median_ms" in r]
    lat_rows = [r for r in ok if r["regime"] == "latency"]
    if len(lat_rows) < 8:
        raise ValueError(f"only {len(lat_rows)} latency measurements of {variant}: too few to fit")
    names, X, geos = _design(lat_rows, hw, perfmodel.latency_features)
    y = np.array([_per_step_us(r, g) for r, g in zip(lat_rows, geos)])
    coef = nnls(X / y[:, None], np.ones(len(y)))            # relative error: every config counts alike
    constants = {f"lat.{k}": float(c) for k, c in zip(names, coef) if c > 0}
    lat_fit = X @ coef
    stats = {"latency_rows": len(lat_rows),
             "latency_median_rel_error": float(np.median(np.abs(lat_fit - y) / y))}

    thr_rows = [r for r in ok if r["regime"] == "throughput"]
    probe = replace(hw, constants={variant: constants})
    bound = []
    for r in thr_rows:
        g = perfmodel.geometry(row_problem(r), row_config(r), hw, r.get("resources"))
        lat = perfmodel.predict(row_problem(r), row_config(r), probe, r.get("resources")).latency_us
        if _per_step_us(r, g) > 1.1 * lat:
            bound.append(r)
    stats["throughput_rows"] = len(thr_rows)
    stats["throughput_bound_rows"] = len(bound)
    if bound:
        tnames, TX, tgeos = _design(bound, hw, perfmodel.throughput_features)
        ty = np.array([_per_step_us(r, g) for r, g in zip(bound, tgeos)])
        tcoef = nnls(TX / ty[:, None], np.ones(len(ty)))
        constants.update({f"thr.{k}": float(c) for k, c in zip(tnames, tcoef) if c > 0})
        stats["throughput_median_rel_error"] = float(np.median(np.abs(TX @ tcoef - ty) / ty))
    return constants, stats


def fit_all(hw: HardwareProfile) -> HardwareProfile:
    constants, fit_stats = {}, {}
    for variant in sorted(hw.raw):
        rows = hw.raw[variant]
        if rows:
            constants[variant], fit_stats[variant] = fit_constants(rows, hw, variant)
    method = dict(hw.method, fit=repr(fit_stats))
    return replace(hw, constants=constants, method=method)


# ---- the command --------------------------------------------------------------------------

def default_counts(fwd_configs: int = 48, bwd_configs: int = 36) -> dict[str, int]:
    """Configs to time per kernel: every kernel the op runs, by its role."""
    per_role = {"forward": fwd_configs, "backward": bwd_configs}
    return {name: per_role[variants.spec(name).role] for role in per_role for name in variants.for_role(role)}


def calibrate(*, counts: Optional[dict[str, int]] = None, seed: int = 0, reps: int = 5,
              progress: Optional[Progress] = None) -> HardwareProfile:
    """Measure the current GPU (a few minutes) and return its fitted hardware profile.

    counts: kernel name -> configs to time (default_counts())."""
    from ..gpu import environment
    facts = device_facts()
    started = time.time()
    rates = measure_rates()
    raw = {}
    for variant, count in (counts or default_counts()).items():
        jobs = calibration_set(variant, count, facts["sm_count"], seed)
        raw[variant] = measure_steps(jobs, reps=reps, progress=progress)
    env = dict(environment(), calibrate_seconds=round(time.time() - started, 1), seed=seed)
    hw = HardwareProfile(**facts, **rates, method=dict(_METHOD), raw=raw, environment=env)
    return fit_all(hw)


def refit(path: Path) -> HardwareProfile:
    """Refit the constants of a saved profile from its own raw rows (CPU is enough)."""
    return fit_all(HardwareProfile.load(path))


def summary(hw: HardwareProfile) -> Iterable[str]:
    yield f"{hw.name} ({hw.slug}, sm_{hw.capability.replace('.', '')}): {hw.sm_count} SMs, {hw.sm_clock_mhz:.0f} MHz"
    yield f"HBM {hw.hbm_gbps:.0f} GB/s, bf16 {hw.bf16_tflops:.0f} TFLOP/s, tf32 {hw.tf32_tflops:.0f} TFLOP/s"
    for variant, c in sorted(hw.constants.items()):
        n_ok = sum(1 for r in hw.raw.get(variant, []) if "median_ms" in r)
        yield f"{variant}: {len(c)} constants from {n_ok} timed runs"
    yield f"fit: {hw.method.get('fit', '-')}"

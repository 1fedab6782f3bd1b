"""Validate and time a hand-picked grid of forward configs on one problem.

Every config is checked before compiling, validated against the float64
reference on its validation plan (measure/plan.py: several chunks, h0, packed
sequences, the GPU's long length), then timed at the problem's full length.
The eager PyTorch reference is timed on the same inputs for scale.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable, Iterable, Optional

import torch
import yaml

from .. import status, variants
from ..gpu import environment, gpu_state
from ..inputs import TORCH_DTYPES, cast, make_inputs
from ..kernel_variants.m2rnn.naive import m2rnn_reference
from ..problem import KernelConfig, Problem
from ..resources import data_dir
from .timing import Timing, time_cuda, time_wall
from .plan import plan_for, run as run_plan, unfit_reason
from .validate import variant_forward

GRIDS_FILE = "m2rnn_fwd_grids.yaml"
KERNEL = "m2rnn_fwd"          # the grids file holds forward configs


def load_grid(name: str) -> list[KernelConfig]:
    path = data_dir("search_spaces") / GRIDS_FILE
    grids = yaml.safe_load(path.read_text())["grids"]
    if name not in grids:
        raise KeyError(f"no grid {name!r} in {path}; known: {', '.join(grids)}")
    spec = variants.spec(KERNEL)
    return [spec.config(entry or {}) for entry in grids[name]]


def _timing_fields(t: Optional[Timing], steps: int) -> dict[str, Any]:
    if t is None:
        return {}
    return {**asdict(t), "spread": t.spread, "us_per_step": t.median_ms * 1e3 / steps}


def bench_forward(problem: Problem, configs: Iterable[KernelConfig], *, device: str,
                  seed: int = 0, reps: int = 20,
                  on_row: Optional[Callable[[dict], None]] = None) -> list[dict[str, Any]]:
    """One row per config: status, validation errors, timing at full length."""
    module, spec = variants.load(KERNEL), variants.spec(KERNEL)
    interp = variants.interpreting()
    dtype = TORCH_DTYPES[problem.dtype]
    x = cast(make_inputs(problem, seed=seed, device=device), dtype)
    nseq = problem.B
    lead = (1, problem.tokens) if problem.is_varlen else (problem.B, problem.S)
    y = torch.empty(*lead, problem.N, problem.V, dtype=dtype, device=device)
    h_T = torch.empty(nseq, problem.N, problem.K, problem.V, dtype=torch.float32, device=device)
    rows = []
    for i, config in enumerate(configs):
        row: dict[str, Any] = {"config": config.as_dict()}
        plan = plan_for(KERNEL, problem, config, interpreter=interp)
        reason = spec.check(problem, config, interpreter=interp) or unfit_reason(plan, config)
        if reason:
            row.update(status=status.INVALID_CONFIG, reason=reason)
        else:
            t0 = time.perf_counter()
            result = run_plan(plan, config, variant_forward(module, config), seed=seed + 1 + i, device=device)
            row.update(status=result.status, reason=result.reason(), max_error=result.max_error,
                       validate_s=time.perf_counter() - t0, validated=plan.record(),
                       errors={f"{c.name}@{c.where}": [c.e_cand, c.limit] for c in result.checks})
            if result.ok:
                def run(config=config):
                    module.launch(problem, config, x, y, h_T)
                t = time_cuda(run, reps=reps) if device != "cpu" else time_wall(run, reps=1)
                row.update(_timing_fields(t, problem.S))
                if device != "cpu":
                    row["gpu_state"] = gpu_state()
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def time_reference(problem: Problem, *, device: str, seed: int = 0, reps: int = 3) -> dict[str, Any]:
    """Eager PyTorch reference at the problem's dtype: the baseline without m2tune."""
    x = cast(make_inputs(problem, seed=seed, device=device), TORCH_DTYPES[problem.dtype])

    def run():
        with torch.no_grad():
            m2rnn_reference(x.q, x.k, x.v, x.W, x.f, x.h0, cu_seqlens=x.cu_seqlens)
    t = time_cuda(run, warmup=1, reps=reps, max_seconds=10) if device != "cpu" else time_wall(run, reps=1)
    return _timing_fields(t, problem.S)


def report(shape_name: str, problem: Problem, grid: str, rows: list[dict], reference: dict,
           command: str) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == status.OK]
    best = min(ok, key=lambda r: r["median_ms"]) if ok else None
    return {
        "kind": "m2tune.bench.forward",
        "shape": shape_name,
        "problem": asdict(problem),
        "grid": grid,
        "command": command,
        "environment": environment(),
        "backend": "interpreter" if variants.interpreting() else "cuda",
        "reference_eager": reference,
        "best": best,
        "rows": rows,
    }

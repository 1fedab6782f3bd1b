"""Where a training step through the m2rnn op spends its time at a shape (torch.profiler).

Run from the repo root on a GPU machine:  PYTHONPATH=. python3 bench/h200_op_profile.py OUTDIR [SHAPE ...]
The runtime's own choices (no config), bf16, forward + backward as bench/h200_training.py steps it.
Per shape, side by side in one process:
- step_ms: CUDA events around one step, the L2 flushed and the GPU idle before it (what every
  committed step time is); step_warm_ms: the same without the flush;
- pipelined_ms: 20 steps queued back to back, no sync or flush between them, per step: what a
  training loop whose host keeps ahead of the GPU pays. step_warm_ms - pipelined_ms is host latency
  the GPU waits for; step_ms - step_warm_ms the cold L2;
- host_fwd_ms / host_bwd_ms: host time of the op's forward call and of autograd.backward (they
  return once their kernels are queued);
- CUDA time per kernel over 5 profiled steps queued back to back, and the GPU's idle gaps between
  consecutive kernels there, the largest named by the kernels around them.
"""
import json
import os
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench.h200_training import step_fn
from m2tune import m2rnn
from m2tune.gpu import environment
from m2tune.measure.timing import time_cuda
from m2tune.problem import shape

STEPS = 5


def _pipelined_ms(step, n: int = 20) -> float:
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / n


def _host_ms(problem, leaves, reps: int = 10) -> dict:
    """Host time of the forward call and of the backward call, each median over reps."""
    dtype = leaves[0].dtype
    dy = torch.zeros(problem.B, problem.S, problem.N, problem.V, device="cuda", dtype=dtype)
    dh = torch.zeros(problem.B, problem.N, problem.K, problem.V, device="cuda")
    fwd, bwd = [], []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        y, h = m2rnn(*leaves)
        t1 = time.perf_counter()
        torch.autograd.backward((y, h), (dy, dh))
        t2 = time.perf_counter()
        fwd.append((t1 - t0) * 1e3)
        bwd.append((t2 - t1) * 1e3)
        for t in leaves:
            t.grad = None
    torch.cuda.synchronize()
    return {"host_fwd_ms": statistics.median(fwd), "host_bwd_ms": statistics.median(bwd)}


def _kernels_and_gaps(prof) -> tuple[list, dict]:
    rows = []
    for e in prof.key_averages():
        cuda_us = getattr(e, "device_time_total", 0.0) or getattr(e, "cuda_time_total", 0.0)
        if e.device_type == torch.autograd.DeviceType.CUDA and cuda_us > 0:
            rows.append({"kernel": e.key[:90], "calls_per_step": e.count / STEPS,
                         "ms_per_step": cuda_us / STEPS / 1e3})
    rows.sort(key=lambda r: -r["ms_per_step"])
    spans = sorted((e.time_range.start, e.time_range.end, e.name[:60]) for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
                   and e.time_range.end > e.time_range.start)
    # the profiled steps are queued back to back (no sync between them, one queued before the profile
    # starts): a gap is the GPU waiting for the host. Against the latest end so far, not the previous
    # kernel's: kernels of two streams may overlap
    gaps, busy_until, last = [], None, None
    for start, end, name in spans:
        if busy_until is not None and start > busy_until:
            gaps.append((start - busy_until, last, name))
        if busy_until is None or end > busy_until:
            busy_until, last = end, name
    top = sorted(gaps, reverse=True)[:8]
    return rows, {"idle_between_kernels_ms_per_step": sum(g[0] for g in gaps) / STEPS / 1e3,
                  "largest_gaps": [{"us": round(g, 1), "after": a, "before": b} for g, a, b in top]}


def profile_shape(name: str) -> dict:
    problem = shape(name)
    step, leaves = step_fn(problem, None)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    row = {"shape": name, "step_ms": time_cuda(step, reps=10).median_ms,
           "step_warm_ms": time_cuda(step, reps=10, flush_l2=False).median_ms,
           "pipelined_ms": statistics.median(_pipelined_ms(step) for _ in range(3)), **_host_ms(problem, leaves)}
    torch.cuda.synchronize()
    step()                              # queued before the profile: its first kernel does not start idle
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            step()
        torch.cuda.synchronize()
    rows, gaps = _kernels_and_gaps(prof)
    return {**row, "gpu_kernels_ms": sum(r["ms_per_step"] for r in rows), **gaps, "kernels": rows}


def main(out, names):
    results = [profile_shape(n) for n in names]
    os.makedirs(out, exist_ok=True)
    with open(f"{out}/op_profile.json", "w") as fh:
        json.dump({"environment": environment(), "shapes": results}, fh, indent=2)
    for r in results:
        print(f"\n{r['shape']}: step {r['step_ms']:.2f} ms (GPU idle before it; {r['step_warm_ms']:.2f} without the L2 "
              f"flush), pipelined {r['pipelined_ms']:.2f} ms, "
              f"GPU kernels {r['gpu_kernels_ms']:.2f} ms, idle between kernels {r['idle_between_kernels_ms_per_step']:.2f} ms; "
              f"host: forward call {r['host_fwd_ms']:.2f} ms, backward call {r['host_bwd_ms']:.2f} ms")
        for k in r["kernels"][:8]:
            print(f"  {k['ms_per_step']:8.3f} ms  x{k['calls_per_step']:<4g} {k['kernel']}")
        for g in r["largest_gaps"][:4]:
            print(f"  gap {g['us']:8.1f} us  after {g['after']}  before {g['before']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".", sys.argv[2:] or ["paper-7b"])

"""Where a training step through the m2rnn op spends GPU time at paper-7b (torch.profiler).

Run from the repo root on a GPU machine:  PYTHONPATH=. python3 bench/h200_op_profile.py OUTDIR
The runtime's own choices (no config), bf16, forward + backward as bench/h200_training.py steps it;
CUDA time per kernel over 5 profiled steps after warm-up, next to the CUDA-event time of a step.
"""
import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from bench.h200_training import step_fn
from m2tune.gpu import environment
from m2tune.problem import shape
from m2tune.measure.timing import time_cuda


def main(out):
    problem = shape("paper-7b")
    step, _ = step_fn(problem, None)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    step_ms = time_cuda(step, reps=10).median_ms
    steps = 5
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        cuda_us = getattr(e, "device_time_total", 0.0) or getattr(e, "cuda_time_total", 0.0)
        if e.device_type == torch.autograd.DeviceType.CUDA and cuda_us > 0:
            rows.append({"kernel": e.key[:90], "calls_per_step": e.count / steps, "ms_per_step": cuda_us / steps / 1e3})
    rows.sort(key=lambda r: -r["ms_per_step"])
    with open(f"{out}/op_profile.json", "w") as fh:
        json.dump({"environment": environment(), "step_ms": step_ms, "kernels": rows}, fh, indent=2)
    print(f"step (CUDA events, median of 10): {step_ms:.2f} ms; GPU kernels per step "
          f"{sum(r['ms_per_step'] for r in rows):.2f} ms")
    for r in rows[:14]:
        print(f"{r['ms_per_step']:8.3f} ms  x{r['calls_per_step']:<4g} {r['kernel']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")

"""Training (forward + backward through the m2rnn op) side by side at five shapes, and the first
step's cold start. The "Must show" run of issue 12.

Run from the repo root on a GPU machine:  PYTHONPATH=. python3 bench/h200_lean_summary.py OUT CURRENT.json
Per shape, in one process, three rows:
  current  the configs the runtime picked at the start of the lean-backward work (CURRENT.json:
           the session-start profiles' training forward and m2rnn_bwd entries, exact or nearest)
  runtime  what the runtime picks now (runtime.choose: the training forward entry and the faster
           tuned backward family)
  lean     the training forward of `runtime` with the lean backward family's own best entry
Each: gradients against float64 autograd at S=128 and 512 (bf16, no clipping: the worst error over
y, h_T and every gradient at S=512), forward+backward through the op at the full shape (CUDA events,
median of 10, L2 flushed), its peak extra memory, and the backward kernel alone.
Then the first training step at paper-7b in fresh processes with an empty Triton cache, with and
without the backward compiled ahead. Writes OUT/summary.json and prints a table.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from bench.h200_training import measure_training
from m2tune import runtime
from m2tune.gpu import environment
from m2tune.measure.launch import prepare
from m2tune.measure.precompile import compile_problem, precompile
from m2tune.measure.timing import time_cuda
from m2tune.problem import KernelConfig, Problem, shape

SHAPES = {
    "paper-7b": shape("paper-7b"),
    "paper-400m": shape("paper-400m"),
    "square-64": shape("square-64"),
    "k128-v32-b4-n32-s4096": Problem(B=4, S=4096, K=128, V=32, Nq=1, Nk=1, Nv=32, Nw=32, Nf=32),
    "k64-v16-b1-n132-s16384": Problem(B=1, S=16384, K=64, V=16, Nq=1, Nk=1, Nv=132, Nw=132, Nf=132),
}
COLD = """
import os, sys, time, json, torch
t0 = time.perf_counter()
from m2tune import ops
from m2tune.inputs import cast, make_inputs, TORCH_DTYPES
from m2tune.problem import KernelConfig, shape
if sys.argv[2] == "off":
    ops._compile_backward_ahead = lambda *a, **k: None
cfg = json.loads(sys.argv[1])
config = {r: KernelConfig.of(c["variant"], c["params"]) for r, c in cfg.items()}
p = shape("paper-7b")
x = cast(make_inputs(p, seed=0, device="cuda"), TORCH_DTYPES[p.dtype])
ins = [t.detach().requires_grad_(True) for t in (x.q, x.k, x.v, x.W, x.f)]
torch.cuda.synchronize()
t1 = time.perf_counter()
y, h = ops.m2rnn(*ins, config=config)
(y.float().sum() + h.sum()).backward()
torch.cuda.synchronize()
t2 = time.perf_counter()
y, h = ops.m2rnn(*ins, config=config)
(y.float().sum() + h.sum()).backward()
torch.cuda.synchronize()
from m2tune import compile_ahead
print(json.dumps({"import_s": t1 - t0, "first_step_s": t2 - t1, "second_step_s": time.perf_counter() - t2,
                  "compile_ahead_errors": dict(compile_ahead._errors)}))
"""


def as_config(part):
    return KernelConfig.of(part["variant"], part["params"])


def rows_for(name, problem, current):
    fwd_now = runtime.choose("forward", problem, gpu="nvidia-h200", training=True)
    bwd_now = runtime.choose("backward", problem, gpu="nvidia-h200", training=True)
    lean = runtime.lookup("m2rnn_bwd_lean", problem, gpu="nvidia-h200", training=True)
    cur = {"forward": as_config(current["forward"]), "backward": as_config(current["backward"])}
    return [("current", cur, current["backward"]["why"]),
            ("runtime", {"forward": fwd_now.config, "backward": bwd_now.config}, bwd_now.reason),
            ("lean", {"forward": fwd_now.config, "backward": lean.config}, lean.reason)]


def main(out, current_path):
    current = json.load(open(current_path))
    plan = []
    for name, problem in SHAPES.items():
        for variant, config, why in rows_for(name, problem, current[name]):
            plan.append((name, problem, variant, config, why))
    jobs = [(compile_problem(p), c[role]) for _, p, _, c, _ in plan for role in ("forward", "backward")]
    precompile(jobs)
    rows = []
    for name, problem, variant, config, why in plan:
        row = {"shape": name, "variant": variant, "problem": problem.describe(), "why": why,
               "config": {r: {"variant": c.variant, "params": c.as_dict()} for r, c in config.items()}}
        measured = measure_training(problem, config)
        row.update({k: measured.get(k) for k in ("fwd_bwd_ms", "peak_extra_mib", "valid", "reason", "error")})
        errors = measured.get("errors_S512") or {}
        row["max_grad_err"] = max(errors.values()) if errors else None
        row["errors_S512"] = errors
        try:
            prepared = prepare(problem, config["backward"])
            row["bwd_ms"] = time_cuda(prepared.run, warmup=2, reps=10).median_ms
            row["bwd_resources"] = dict(prepared.info)
        except Exception as exc:
            row["bwd_error"] = f"{type(exc).__name__}: {exc}"[:300]
        torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("config", "errors_S512")}), flush=True)
    cold = {}
    best = next(r for r in rows if r["shape"] == "paper-7b" and r["variant"] == "runtime")
    for mode in ("on", "off"):
        env = dict(os.environ, TRITON_CACHE_DIR=tempfile.mkdtemp(prefix="m2tune-cold-"))
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", COLD, json.dumps(best["config"]), mode], env=env,
                              capture_output=True, text=True, timeout=240)
        cold[mode] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else \
            {"error": done.stderr[-800:]}
        cold[mode]["process_s"] = time.perf_counter() - t0
        print("cold start, compile-ahead", mode, json.dumps(cold[mode]), flush=True)
    with open(f"{out}/summary.json", "w") as fh:
        json.dump({"environment": environment(), "rows": rows, "cold_start_paper_7b": cold}, fh, indent=2,
                  sort_keys=True)
    print(f"\n{'shape':<24} {'variant':<8} {'fwd+bwd ms':>10} {'bwd ms':>8} {'extra MiB':>9} {'max err':>8} ok")
    for r in rows:
        fb = f"{r['fwd_bwd_ms']:10.2f}" if r.get("fwd_bwd_ms") else f"{'-':>10}"
        bw = f"{r['bwd_ms']:8.2f}" if r.get("bwd_ms") else f"{'-':>8}"
        mem = f"{r['peak_extra_mib']:9.0f}" if r.get("peak_extra_mib") else f"{'-':>9}"
        err = f"{r['max_grad_err']:8.1e}" if r.get("max_grad_err") else f"{'-':>8}"
        print(f"{r['shape']:<24} {r['variant']:<8} {fb} {bw} {mem} {err} {r.get('valid')}  "
              f"{r['config']['backward']['variant']}")
    for mode, c in cold.items():
        print(f"cold start paper-7b, backward compiled ahead {mode}: first step {c.get('first_step_s', float('nan')):.2f} s")


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Time against memory at paper-7b: the training step through the op (the runtime's forward) with
the lean backward's INLINE configs at each chunk length, side by side in one process.

Run on the GPU from the repo root:  PYTHONPATH=. python3 bench/h200_inline_memory.py OUT
Per config: validation at S=128 and 512, fwd+bwd time (CUDA events, median of 10) and the step's
peak extra memory (bench/h200_training.measure_training), the backward alone, and the spec's own
extra-memory estimate beside the measured peak. Writes OUT/inline_memory.json, prints a table.
"""
import json
import sys

import torch

from bench.h200_training import measure_training
from m2tune import runtime, variants
from m2tune.gpu import environment
from m2tune.measure.launch import prepare
from m2tune.measure.precompile import compile_problem, precompile
from m2tune.measure.timing import time_cuda
from m2tune.problem import shape

LEAN = variants.spec("m2rnn_bwd_lean")
BASE = {"MATMUL": "dot_bf16", "TANH": "approx", "BLOCK_K": 32, "BULK": 2, "PREFETCH": 1, "INLINE": 1,
        "num_warps": 1}
CONFIGS = [{**BASE, "CKPT": 16}, {**BASE, "CKPT": 32}, {**BASE, "CKPT": 64},
           {**BASE, "CKPT": 64, "MATMUL": "dot_tf32", "DW_MATMUL": "dot_bf16"},
           {**BASE, "CKPT": 128}]


def main(out):
    problem = shape("paper-7b")
    fwd = runtime.choose("forward", problem, gpu="nvidia-h200", training=True).config
    configs = [LEAN.fit(LEAN.config(c), problem) for c in CONFIGS]
    precompile([(compile_problem(problem), c) for c in [fwd, *configs]])
    rows = []
    for config in configs:
        row = {"backward": config.as_dict(), "forward": fwd.as_dict(),
               "estimate_mib": LEAN.extra_bytes(problem, config) / 2 ** 20}
        measured = measure_training(problem, {"forward": fwd, "backward": config})
        row.update({k: measured.get(k) for k in ("fwd_bwd_ms", "peak_extra_mib", "valid", "reason", "error")})
        errors = measured.get("errors_S512") or {}
        row["max_grad_err"] = max(errors.values()) if errors else None
        row["bwd_ms"] = time_cuda(prepare(problem, config).run, warmup=2, reps=10).median_ms
        torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("backward", "forward")}), flush=True)
    with open(f"{out}/inline_memory.json", "w") as fh:
        json.dump({"environment": environment(), "shape": "paper-7b", "rows": rows}, fh, indent=2, sort_keys=True)
    print(f"\n{'CKPT':>4} {'MATMUL':<9} {'fwd+bwd ms':>10} {'bwd ms':>7} {'peak MiB':>8} {'est MiB':>7} ok")
    for r in rows:
        b = r["backward"]
        print(f"{b['CKPT']:4d} {b['MATMUL']:<9} {r.get('fwd_bwd_ms') or float('nan'):10.2f} {r['bwd_ms']:7.2f} "
              f"{r.get('peak_extra_mib') or float('nan'):8.0f} {r['estimate_mib']:7.0f} {r.get('valid')}")


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Heads packed per program (BLOCK_H) in the backward at paper-7b: time, memory, error.

Run from the repo root on a GPU machine:  PYTHONPATH=. python3 bench/h200_heads.py OUTDIR
1. the backward kernel alone (checkpoints made beforehand; CUDA events, median of 10, L2 flushed)
   for each config below, with the compiled registers and spills;
2. for the fastest BLOCK_H > 1 config of each precision family and its BLOCK_H = 1 baseline:
   gradients validated against float64 autograd at S=128 and 512 (bf16), forward+backward through
   the m2rnn op at paper-7b with the peak extra memory (bench/h200_training.py's method).
"""
import json
import sys

import torch

from bench.h200_training import measure_training
from kernel_variants import m2rnn_bwd
from m2tune.gpu import environment
from m2tune.measure import prepare
from m2tune.problem import shape
from m2tune.timing import time_cuda

# forward configs: the shipped paper-7b winner (bf16 products) and the fp32-accurate one
FORWARD = {
    "bf16": {"BLOCK_B": 2, "BLOCK_K": 16, "MATMUL": "dot_bf16", "PREFETCH": 1, "TANH": "approx", "num_warps": 1},
    "tf32x3": {"MATMUL": "dot_tf32x3", "TANH": "approx", "BLOCK_K": 32, "num_warps": 1},
}
FAMILY = {
    "bf16": {"MATMUL": "dot_bf16", "TANH": "approx", "CKPT": 32, "PREFETCH": 2, "SLOTS": 8},
    "tf32x3": {"MATMUL": "dot_tf32x3", "TANH": "approx", "DW_MATMUL": "dot_tf32", "CKPT": 64, "STORE_Z": 1,
               "SLOTS": 8},
}
# (family, BLOCK_B, BLOCK_K, BLOCK_H, num_warps); the first of each family is the BLOCK_H = 1 baseline
LAYOUTS = [
    ("bf16", 2, 16, 1, 1), ("bf16", 1, 16, 2, 1), ("bf16", 2, 16, 2, 2), ("bf16", 1, 16, 4, 2),
    ("bf16", 1, 16, 4, 4), ("bf16", 1, 32, 2, 2), ("bf16", 2, 16, 4, 4), ("bf16", 1, 64, 2, 4),
    ("tf32x3", 1, 16, 1, 1), ("tf32x3", 1, 16, 2, 1), ("tf32x3", 1, 16, 2, 2), ("tf32x3", 1, 16, 4, 2),
    ("tf32x3", 2, 16, 2, 2), ("tf32x3", 1, 16, 4, 4),
]


def backward_config(family, bb, bk, bh, warps):
    return {**FAMILY[family], "BLOCK_B": bb, "BLOCK_K": bk, "BLOCK_H": bh, "num_warps": warps}


def main(out):
    problem = shape("paper-7b")
    rows = []
    for family, *layout in LAYOUTS:
        params = backward_config(family, *layout)
        row = {"family": family, "layout": "BB{} BK{} BH{} w{}".format(*layout), "backward": params}
        config = m2rnn_bwd.DEFAULT.with_params(**params)
        why = m2rnn_bwd.check(problem, config)
        try:
            if why:
                raise ValueError(why)
            prepared = prepare(problem, config)
            t = time_cuda(prepared.run, reps=10)
            row.update(bwd_ms=t.median_ms, spread=t.spread, **prepared.info)
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
        print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()

    picked = []
    for family in FAMILY:
        timed = [r for r in rows if r["family"] == family and "bwd_ms" in r]
        base = timed[0] if timed and timed[0]["backward"]["BLOCK_H"] == 1 else None
        packed = sorted((r for r in timed if r["backward"]["BLOCK_H"] > 1), key=lambda r: r["bwd_ms"])
        picked += [r for r in (base, packed[0] if packed else None) if r is not None]
    for row in picked:
        config = {"forward": FORWARD[row["family"]], "backward": row["backward"]}
        row["training"] = measure_training(problem, config)
        print(json.dumps({"layout": row["layout"], **row["training"]}), flush=True)

    with open(f"{out}/heads.json", "w") as fh:
        json.dump({"environment": environment(), "problem": "paper-7b", "forward": FORWARD, "rows": rows},
                  fh, indent=2, sort_keys=True)
    print(f"\n{'family':<7} {'layout':<16} {'bwd ms':>7} regs spills | {'fwd+bwd ms':>10} {'MiB':>5} "
          f"{'max err':>8} valid")
    for r in rows:
        if "error" in r:
            print(f"{r['family']:<7} {r['layout']:<16} ERROR {r['error'][:70]}")
            continue
        line = f"{r['family']:<7} {r['layout']:<16} {r['bwd_ms']:>7.2f} {r['n_regs']:>4} {r['n_spills']:>6}"
        tr = r.get("training")
        if tr and "fwd_bwd_ms" in tr:
            line += (f" | {tr['fwd_bwd_ms']:>10.2f} {tr['peak_extra_mib']:>5.0f} "
                     f"{max(tr['errors_S512'].values()):>8.2e} {tr['valid']}")
        elif tr:
            line += f" | ERROR {tr.get('error', '')[:60]}"
        print(line)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")

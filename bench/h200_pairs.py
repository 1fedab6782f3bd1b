"""Forward and backward configs validated as the pair the op runs, at paper-7b.

Run from the repo root on a GPU machine:  PYTHONPATH=. python3 bench/h200_pairs.py OUTDIR
The tuner validates a backward config on checkpoints from an fp32-exact forward; in training the
checkpoints come from whichever forward the op runs. For each (forward, backward) pair: gradients
through the m2rnn op against float64 autograd at S=128 and 512 (bf16 inputs) without clipping and
with gradient_clipping=1.0, then forward+backward time and peak extra memory at paper-7b
(bench/h200_training.py's method). Then the backward kernel alone (checkpoints made beforehand) for a
few one-parameter changes of bwd-bf16-approx.
"""
import json
import sys

from bench.h200_training import measure_training
from m2tune import variants
from m2tune.gpu import environment
from m2tune.measure.launch import prepare
from m2tune.problem import shape
from m2tune.measure.timing import time_cuda

FORWARDS = {
    # the shipped paper-7b winner and the fp32-accurate forward (tf32x3: three tf32 passes)
    "fwd-bf16": {"BLOCK_B": 2, "BLOCK_K": 16, "MATMUL": "dot_bf16", "PREFETCH": 1, "TANH": "approx",
                 "num_warps": 1},
    "fwd-tf32x3": {"MATMUL": "dot_tf32x3", "TANH": "approx", "BLOCK_K": 32, "num_warps": 1},
}
SHIPPED_BWD = {"BLOCK_B": 2, "BLOCK_K": 16, "CKPT": 32, "DW_MATMUL": "same", "MATMUL": "dot_bf16",
               "PREFETCH": 2, "SLOTS": 8, "STORE_Z": 0, "TANH": "exact", "num_warps": 1}
BACKWARDS = {
    "bwd-bf16-shipped": SHIPPED_BWD,
    "bwd-bf16-approx": {**SHIPPED_BWD, "TANH": "approx"},
    "bwd-tf32-approx": {**SHIPPED_BWD, "MATMUL": "dot_tf32", "TANH": "approx"},
    "bwd-tf32x3": {"MATMUL": "dot_tf32x3", "TANH": "approx", "CKPT": 64, "DW_MATMUL": "dot_tf32",
                   "STORE_Z": 1, "SLOTS": 8},
}
PAIRS = [("fwd-bf16", "bwd-bf16-shipped"), ("fwd-bf16", "bwd-tf32x3"), ("fwd-tf32x3", "bwd-bf16-shipped"),
         ("fwd-tf32x3", "bwd-bf16-approx"), ("fwd-tf32x3", "bwd-tf32-approx"), ("fwd-tf32x3", "bwd-tf32x3")]

LEVERS = {"base": {}, "STORE_Z=1": {"STORE_Z": 1}, "CKPT=64": {"CKPT": 64}, "CKPT=16": {"CKPT": 16},
          "SLOTS=16": {"SLOTS": 16}, "PREFETCH=1": {"PREFETCH": 1}, "BLOCK_B=1": {"BLOCK_B": 1},
          "DW_MATMUL=dot_tf32": {"DW_MATMUL": "dot_tf32"}}


def levers(problem):
    rows = []
    for name, change in LEVERS.items():
        config = variants.spec("m2rnn_bwd").DEFAULT.with_params(**{**BACKWARDS["bwd-bf16-approx"], **change})
        prepared = prepare(problem, config)
        t = time_cuda(prepared.run, reps=10)
        rows.append({"lever": name, "bwd_ms": t.median_ms, "spread": t.spread, **prepared.info})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(out):
    problem = shape("paper-7b")
    rows = []
    for fname, bname in PAIRS:
        config = {"forward": FORWARDS[fname], "backward": BACKWARDS[bname]}
        row = {"forward": fname, "backward": bname, "config": config,
               "no_clip": measure_training(problem, config),
               "clip_1": measure_training(problem, config, clip=1.0, timed=False)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    lever_rows = levers(problem)
    with open(f"{out}/pairs.json", "w") as fh:
        json.dump({"environment": environment(), "problem": "paper-7b", "rows": rows, "levers": lever_rows},
                  fh, indent=2, sort_keys=True)
    print(f"\n{'forward':<11} {'backward':<17} {'fwd+bwd ms':>10} {'MiB':>5} {'grad err':>9} {'y err':>8} "
          f"valid | clip=1: {'grad err':>9} valid")
    for r in rows:
        a, c = r["no_clip"], r["clip_1"]
        if "error" in a or "error" in c:
            print(f"{r['forward']:<11} {r['backward']:<17} ERROR {(a.get('error') or c.get('error'))[:70]}")
            continue
        grad = max(v for k, v in a["errors_S512"].items() if k not in ("y", "h_T"))
        cgrad = max(v for k, v in c["errors_S512"].items() if k not in ("y", "h_T"))
        print(f"{r['forward']:<11} {r['backward']:<17} {a['fwd_bwd_ms']:>10.2f} {a['peak_extra_mib']:>5.0f} "
              f"{grad:>9.2e} {a['errors_S512']['y']:>8.2e} {str(a['valid']):>5} | {cgrad:>16.2e} {c['valid']}")
    print(f"\nbwd-bf16-approx alone: {'lever':<20} {'bwd ms':>7} regs spills")
    for r in lever_rows:
        print(f"{'':<22} {r['lever']:<20} {r['bwd_ms']:>7.2f} {r.get('n_regs', '?'):>4} {r.get('n_spills', '?')}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")

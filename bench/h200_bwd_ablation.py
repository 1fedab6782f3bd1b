"""Where the backward's time goes at paper-7b: time the kernel with one stage left out at a time.

Run from the repo root on a GPU machine:  PYTHONPATH=. python3 bench/h200_bwd_ablation.py OUTDIR
Each variant is the real template with a textual edit (tests/mutation.py) that removes one piece of
per-step work; its results are wrong by construction, only its time matters. The difference to the
unedited kernel is what that piece costs (an upper bound where the compiler overlaps work).
Only the backward kernel is timed (checkpoints made once beforehand, CUDA events, L2 flushed).
A second argument picks configs and variants: `CONFIG[,CONFIG...][:VARIANT,...]` (default: all).
With a second argument `profile` it only launches each unedited config twice, for ncu:
  ncu --clock-control none -k m2rnn_bwd_kernel -c 2 ... python3 bench/h200_bwd_ablation.py OUT profile
"""
import json
import sys
import tempfile
from pathlib import Path

import torch

from m2tune import variants
from m2tune.gpu import environment
from m2tune.measure.launch import prepare
from m2tune.problem import shape
from m2tune.measure.timing import time_cuda
from tests.mutation import mutate

m2rnn_bwd = variants.load("m2rnn_bwd")
BWD = variants.spec("m2rnn_bwd")
SWEEP_Z = "z = tanh(matmul(hp, w, wt, MATMUL, EMULATE_BF16_DOT) + kt[:, None] * vt, TANH_APPROX)"
RECOMPUTE_Z = "z = tanh(matmul(h, w, wt, MATMUL, EMULATE_BF16_DOT) + kt[:, None] * vt, TANH_APPROX)"
ACCUMULATE = {
    "dq": "accumulate(dq_base, q_offs, dqt, act, DQ_ATOMIC)",
    "dk": "accumulate(dk_base, k_offs, dkt, act, DK_ATOMIC)",
    "dv": "accumulate(dv_base, v_offs, dvt, v_mask, DV_ATOMIC)",
    "df": "accumulate(df_base, f_offs, dft, b_act, DF_ATOMIC)",
}
DW = "dw += _matmul_tn(hp, da, DW_MATMUL, EMULATE_BF16_DOT)"
CHAIN = "dh_new = fb * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)"

EDITS = {
    "base": [],
    "no-dq": [(ACCUMULATE["dq"], "pass")],
    "no-dk": [(ACCUMULATE["dk"], "pass")],
    "no-dv": [(ACCUMULATE["dv"], "pass")],
    "no-df": [(ACCUMULATE["df"], "pass")],
    "no-dW": [(DW, "pass")],
    "no-input-grads": [(a, "pass") for a in ACCUMULATE.values()],
    "no-offchain": [(a, "pass") for a in ACCUMULATE.values()] + [(DW, "pass")],
    "no-sweep-z": [(SWEEP_Z, "z = hp")],
    "no-recompute-z": [(RECOMPUTE_Z, "z = h + kt[:, None] * vt")],
    "no-chain-dot": [(CHAIN, "dh_new = fb * g + da")],
    # plain stores where the template adds atomically (wrong sums; what atomics cost over stores)
    "dq-dk-stored": [(ACCUMULATE["dq"], ACCUMULATE["dq"].replace("DQ_ATOMIC", "False")),
                     (ACCUMULATE["dk"], ACCUMULATE["dk"].replace("DK_ATOMIC", "False"))],
    "dv-df-stored": [(ACCUMULATE["dv"], ACCUMULATE["dv"].replace("DV_ATOMIC", "False")),
                     (ACCUMULATE["df"], ACCUMULATE["df"].replace("DF_ATOMIC", "False"))],
    "all-stored": [(a, a.replace(a.split(", ")[-1].rstrip(")"), "False")) for a in ACCUMULATE.values()],
}

# the shipped paper-7b winner (bf16 products) and the fp32-accurate lever set
CONFIGS = {
    "tuned-bf16": {"BLOCK_B": 2, "BLOCK_K": 16, "CKPT": 32, "DW_MATMUL": "same", "MATMUL": "dot_bf16",
                   "PREFETCH": 2, "SLOTS": 8, "STORE_Z": 0, "TANH": "exact", "num_stages": 1, "num_warps": 1},
    "tf32x3": {"MATMUL": "dot_tf32x3", "TANH": "approx", "CKPT": 64, "DW_MATMUL": "dot_tf32",
               "STORE_Z": 0, "SLOTS": 8},
    # the resumed study's winner (2026-11-29-h200-retune)
    "retuned-bf16": {"BLOCK_B": 2, "BLOCK_K": 16, "CKPT": 32, "DW_MATMUL": "same", "MATMUL": "dot_bf16",
                     "PREFETCH": 2, "SLOTS": 8, "STORE_Z": 0, "TANH": "approx", "num_stages": 1, "num_warps": 1},
}


def variant(name, workdir):
    module = m2rnn_bwd
    for old, new in EDITS[name]:
        module = mutate(module, old, new, workdir)
    return module


def profile():
    problem = shape("paper-7b")
    for params in CONFIGS.values():
        prepared = prepare(problem, BWD.DEFAULT.with_params(**params))
        prepared.run()
        torch.cuda.synchronize()


def main(out, pick=""):
    problem = shape("paper-7b")
    names, _, edits = pick.partition(":")
    names = names.split(",") if names else list(CONFIGS)
    edits = ["base"] + [e for e in edits.split(",") if e != "base"] if edits else list(EDITS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cname in names:
            config = BWD.DEFAULT.with_params(**CONFIGS[cname])
            for vname in edits:
                module = variant(vname, Path(tmp))
                row = {"config": cname, "variant": vname}
                try:
                    prepared = prepare(problem, config, variant_module=module)
                    t = time_cuda(prepared.run, reps=10)
                    row.update(ms=t.median_ms, spread=t.spread, **prepared.info)
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {exc}"[:300]
                rows.append(row)
                print(json.dumps(row), flush=True)
                torch.cuda.empty_cache()
    with open(f"{out}/ablation.json", "w") as fh:
        json.dump({"environment": environment(), "problem": "paper-7b",
                   "configs": {n: CONFIGS[n] for n in names}, "rows": rows},
                  fh, indent=2, sort_keys=True)
    base = {r["config"]: r.get("ms") for r in rows if r["variant"] == "base"}
    print(f"\n{'config':<13} {'variant':<15} {'ms':>7} {'saves ms':>8} regs spills")
    for r in rows:
        if "error" in r:
            print(f"{r['config']:<13} {r['variant']:<15} ERROR {r['error'][:70]}")
            continue
        print(f"{r['config']:<13} {r['variant']:<15} {r['ms']:>7.2f} {base[r['config']] - r['ms']:>8.2f} "
              f"{r.get('n_regs', '?'):>4} {r.get('n_spills', '?')}")


if __name__ == "__main__":
    if sys.argv[2:] == ["profile"]:
        profile()
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else ".", sys.argv[2] if len(sys.argv) > 2 else "")

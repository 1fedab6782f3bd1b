"""Re-derive the validation table (m2tune/measure/tolerance.py) on the GPU or in the interpreter.

Every honest product of each template, and the planted storage faults (a bf16 dH carry, bf16
checkpoints), run with h0 on and a binding clip (validate.AUTO_CLIP) at a length where compounding
shows (default: 512 steps on the GPU, 259 in the interpreter: sixteen 16-step chunks and a partial
one); per output the error against float64 and the fp32-state baseline's. On the GPU it also runs
what the interpreter cannot: PTX tanh.approx and tf32 products. Writes JSON (every check) and
prints, per config and output, the worst e_cand / e_ref and e_cand - e_ref.

    PYTHONPATH=. python bench/tolerance_table.py OUT.json [--seeds 1,2] [--length S]
    (without a GPU the Triton interpreter runs the kernels)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


import torch  # noqa: E402

GPU = torch.cuda.is_available()
if not GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")     # read when the kernels are defined, below
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from m2tune import variants  # noqa: E402
from m2tune.measure import validate  # noqa: E402
from m2tune.problem import Problem  # noqa: E402
from tests.mutation import mutate  # noqa: E402

FAULTS = {
    "m2rnn_bwd": ("dh_new = fb * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)",
                  "dh_new = (fb * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)).to(tl.bfloat16).to(tl.float32)"),
    "m2rnn_bwd_lean": ("dh = f * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)",
                       "dh = (f * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)).to(tl.bfloat16).to(tl.float32)"),
    "m2rnn_fwd": ("tl.store(ckpt_ptr + ck_offs + (t // CKPT) * K * V, h, mask=st_mask)",
                  "tl.store(ckpt_ptr + ck_offs + (t // CKPT) * K * V, h.to(tl.bfloat16).to(tl.float32), mask=st_mask)"),
}


def runs(dtype: str):
    """(label, backward kernel, backward params, fault-in) per run; fault-in None, 'fwd' or 'bwd'."""
    out = []
    exact = ["fma", "dot_ieee"] + (["dot_bf16x2"] if dtype == "bfloat16" else [])
    rounded = (["dot_bf16"] if dtype == "bfloat16" else []) + (["dot_tf32"] if GPU else [])
    for ck in (16, 64):
        for mm in exact + rounded:
            if mm == "fma" and ck != 16:
                continue                  # the slowest in the interpreter; its rounding is dot_ieee's
            out.append((f"bwd {mm} CKPT={ck}", "m2rnn_bwd", dict(MATMUL=mm, CKPT=ck), None))
            if mm != "fma":
                out.append((f"lean {mm} CKPT={ck}", "m2rnn_bwd_lean", dict(MATMUL=mm, CKPT=ck), None))
        if dtype == "bfloat16":
            out.append((f"bwd dot_ieee DW=dot_bf16 CKPT={ck}", "m2rnn_bwd",
                        dict(MATMUL="dot_ieee", DW_MATMUL="dot_bf16", CKPT=ck), None))
        if GPU:                            # PTX tanh.approx: what most shipped configs run
            out.append((f"bwd dot_ieee TANH=approx CKPT={ck}", "m2rnn_bwd",
                        dict(MATMUL="dot_ieee", TANH="approx", CKPT=ck), None))
            out.append((f"lean dot_ieee TANH=approx CKPT={ck}", "m2rnn_bwd_lean",
                        dict(MATMUL="dot_ieee", TANH="approx", CKPT=ck), None))
    for ck in (16, 64):
        out.append((f"FAULT bf16 dH carry: bwd dot_ieee CKPT={ck}", "m2rnn_bwd", dict(MATMUL="dot_ieee", CKPT=ck), "bwd"))
        out.append((f"FAULT bf16 dH carry: lean dot_ieee CKPT={ck}", "m2rnn_bwd_lean", dict(MATMUL="dot_ieee", CKPT=ck), "bwd"))
        out.append((f"FAULT bf16 checkpoints: bwd dot_ieee CKPT={ck}", "m2rnn_bwd", dict(MATMUL="dot_ieee", CKPT=ck), "fwd"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--length", type=int, default=512 if GPU else 259)
    args = ap.parse_args()
    S, device = args.length, "cuda" if GPU else "cpu"
    work = Path(tempfile.mkdtemp())
    records = []
    fwd_real = variants.load("m2rnn_fwd")
    fwd_cfg = variants.spec("m2rnn_fwd").config(MATMUL="dot_ieee", BLOCK_K=16, TANH="exact")
    fwd_fault = mutate(fwd_real, *FAULTS["m2rnn_fwd"], work)
    for dtype in args.dtypes.split(","):
        problem = Problem(B=2, S=S, K=16, V=16, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, h0=True, dtype=dtype)
        # the forward alone: every product, and the bf16-checkpoint fault, checkpoints checked
        fwd_products = (["fma", "dot_ieee"] + (["dot_bf16x2", "dot_bf16"] if dtype == "bfloat16" else [])
                        + (["dot_tf32x3", "dot_tf32"] if GPU else []))
        fwd_runs = ([(f"fwd {m}", fwd_real, m, "exact") for m in fwd_products]
                    + ([("fwd dot_ieee TANH=approx", fwd_real, "dot_ieee", "approx")] if GPU else [])
                    + [("FAULT bf16 checkpoints: fwd", fwd_fault, "dot_ieee", "exact")])
        for label, module, mm, tanh in fwd_runs:
            cfg = fwd_cfg.with_params(MATMUL=mm, TANH=tanh)
            why = variants.spec("m2rnn_fwd").check(problem, cfg, interpreter=not GPU)
            if why:                        # what the tuner and the op refuse is not in the table
                print(f"{dtype} {label}: not run: {why}", flush=True)
                continue
            rounding = variants.spec("m2rnn_fwd").rounding(cfg)
            for seed in map(int, args.seeds.split(",")):
                t = time.time()
                r = validate.validate_forward(problem, validate.variant_forward(module, cfg), seed=seed,
                                              lengths=(S,), rounding=rounding, ckpt_every=16, device=device)
                records.append(dict(label=label, dtype=dtype, seed=seed, rounding=rounding, error=r.error,
                                    seconds=time.time() - t, checks=[vars(c) for c in r.checks]))
                print(f"{dtype} {label} seed {seed}: {'ok' if r.ok else 'FAIL'} {time.time() - t:.0f}s", flush=True)
        Path(args.out).write_text(json.dumps(records, indent=1))
        for label, kernel, params, fault in runs(dtype):
            spec = variants.spec(kernel)
            cfg = spec.config(dict(dict(BLOCK_K=16, TANH="exact"), **params))
            why = spec.check(problem, cfg, interpreter=not GPU)
            if why:
                print(f"{dtype} {label}: not run: {why}", flush=True)
                continue
            bwd_module = variants.load(kernel)
            if fault == "bwd":
                bwd_module = mutate(bwd_module, *FAULTS[kernel], work)
            fmod = fwd_fault if fault == "fwd" else fwd_real
            train = validate.variant_training(fmod, fwd_cfg, bwd_module, cfg)
            rounding = spec.rounding(cfg)
            for seed in map(int, args.seeds.split(",")):
                t = time.time()
                r = validate.validate_training(problem, train, seed=seed, lengths=(S,), clip=validate.AUTO_CLIP,
                                               rounding=rounding, device=device)
                records.append(dict(label=label, dtype=dtype, seed=seed, rounding=rounding, error=r.error,
                                    notes=r.notes, seconds=time.time() - t, checks=[vars(c) for c in r.checks]))
                print(f"{dtype} {label} seed {seed}: {'ok' if r.ok else 'FAIL'} {time.time() - t:.0f}s", flush=True)
                Path(args.out).write_text(json.dumps(records, indent=1))
    print(f"\n{'dtype':<9} {'run':<48} {'output':<6} {'worst e/e_ref':>13} {'worst e-e_ref':>13}")
    by = {}
    for rec in records:
        for c in rec["checks"]:
            key = (rec["dtype"], rec["label"], c["name"])
            ratio = c["e_cand"] / c["e_ref"] if c["e_ref"] > 0 else float("inf")
            old = by.get(key, (0.0, -1.0))
            by[key] = (max(old[0], ratio), max(old[1], c["e_cand"] - c["e_ref"]))
    for (dtype, label, name), (ratio, diff) in by.items():
        print(f"{dtype:<9} {label:<48} {name:<6} {ratio:>13.2f} {diff:>13.2e}")


if __name__ == "__main__":
    main()

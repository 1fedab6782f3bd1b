"""Why the predicted m2rnn_bwd entry for k128-v16-b8-n64-s4096 failed its GPU revalidation at 512
steps: the entry as shipped, then one parameter at a time back to the exact products / tanh.
    PYTHONPATH=. python bench/results/2026-12-01-h200-tolerance/probe_k128.py
"""
from dataclasses import replace

from m2tune import variants
from m2tune.measure import validate
from m2tune.measure.launch import checkpoint_forward
from m2tune.problem import Problem

P = Problem(B=8, S=512, K=128, V=16, Nq=1, Nk=1, Nv=64, Nw=64, Nf=64, h0=True, dtype="bfloat16")
SHIPPED = dict(BLOCK_B=1, BLOCK_K=16, CKPT=16, DW_MATMUL="same", MATMUL="fma", PREFETCH=1, SLOTS=2,
               STORE_Z=1, TANH="approx", num_stages=1, num_warps=4)
spec = variants.spec("m2rnn_bwd")
for label, change in [("shipped", {}), ("TANH=exact", dict(TANH="exact")), ("MATMUL=dot_ieee", dict(MATMUL="dot_ieee")),
                      ("BLOCK_K=64", dict(BLOCK_K=64)), ("K=16 (same config)", None)]:
    p = P if change is not None else replace(P, K=16)
    cfg = spec.config({**SHIPPED, **(change or {})})
    fwd = checkpoint_forward("m2rnn_bwd", p, interpreter=False)
    train = validate.variant_training(variants.load(fwd.variant), fwd, variants.load("m2rnn_bwd"), cfg)
    r = validate.validate_training(p, train, seed=1, lengths=(512,), clip=validate.AUTO_CLIP,
                                   rounding=spec.rounding(cfg), device="cuda")
    worst = {c.name: f"{c.e_cand:.2e}/{c.limit:.2e}" for c in r.checks}
    print(f"{label:<20} {'ok' if r.ok else 'FAIL'} {worst} {r.error or ''}", flush=True)

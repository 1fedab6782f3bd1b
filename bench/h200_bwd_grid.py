"""Backward kernels side by side at one shape: the current family against the lean one.

Run from the repo root on a GPU machine:  PYTHONPATH=. python3 bench/h200_bwd_grid.py OUTDIR [SHAPE [GRID]]
GRID names a list of configs below (`first`, the default: the first lean grid; `levers`: the
tuned lean config with and without OVERLAP and register caps, and one-warp BLOCK_K=16 variants;
`inline`: every shipped lean entry with and without INLINE, and INLINE's neighbours; `scratch`:
the INLINE configs with an fp32 and a bf16 scratch; `shipped`: every backward entry of the H200's
profiles, both families).
Every config is compiled first, in parallel processes; each is then validated against float64
autograd on a small problem with the shape's head sharing (bf16, h0, clipping that binds, two
lengths, three chunks) and its backward alone timed at the full shape (checkpoints made once by an
exact forward; CUDA events, L2 flushed, median of 10), with the compiled kernel's registers,
spills and shared memory. Writes OUTDIR/bwd_grid.json and prints a table, fastest first.
"""
import json
import sys
from dataclasses import replace

import torch

from m2tune import variants
from m2tune.gpu import environment
from m2tune.measure.launch import prepare
from m2tune.measure.precompile import compile_problem, precompile
from m2tune.measure.timing import time_cuda
from m2tune.measure.validate import validate_training, variant_training
from m2tune.problem import shape

OLD = "m2rnn_bwd"
LEAN = "m2rnn_bwd_lean"
# the shipped paper-7b backward (45-trial study) and the same with one sequence per program
SHIPPED = {"BLOCK_B": 2, "BLOCK_K": 16, "CKPT": 32, "DW_MATMUL": "same", "MATMUL": "dot_bf16", "PREFETCH": 2,
           "SLOTS": 8, "STORE_Z": 0, "TANH": "approx", "num_warps": 1}
CONFIGS = [(OLD, SHIPPED), (OLD, {**SHIPPED, "BLOCK_B": 1})]
for bulk in (1, 2, 4, 8):
    for warps in (1, 2, 4):
        CONFIGS.append((LEAN, {"MATMUL": "dot_bf16", "TANH": "approx", "BULK": bulk, "num_warps": warps}))
CONFIGS += [
    (LEAN, {"MATMUL": "dot_bf16", "TANH": "approx", "BULK": 2, "CKPT": 16}),
    (LEAN, {"MATMUL": "dot_bf16", "TANH": "approx", "BULK": 2, "CKPT": 64}),
    (LEAN, {"MATMUL": "dot_bf16", "TANH": "approx", "BULK": 2, "PREFETCH": 0}),
    (LEAN, {"MATMUL": "dot_bf16", "TANH": "approx", "BULK": 2, "SLOTS": 16}),
    (LEAN, {"MATMUL": "dot_bf16", "TANH": "approx", "BULK": 4, "BLOCK_K": 32, "num_warps": 2}),
    (LEAN, {"MATMUL": "dot_tf32x3", "TANH": "approx", "BULK": 2, "DW_MATMUL": "dot_tf32"}),
    (LEAN, {"MATMUL": "dot_tf32x3", "TANH": "approx", "BULK": 4, "DW_MATMUL": "dot_tf32", "num_warps": 2}),
]

# the lean kernel tuned at paper-7b (bench/results/2026-12-01-h200-lean-ship) and its levers:
# the next chunk recomputed during the sweep (OVERLAP), register caps for more resident programs
TUNED_LEAN = {"BLOCK_K": 32, "BULK": 2, "CKPT": 32, "DW_MATMUL": "dot_bf16", "MATMUL": "dot_tf32", "PREFETCH": 1,
              "TANH": "approx", "num_warps": 1}
LEVERS = [(OLD, SHIPPED)]
for params in (TUNED_LEAN, {**TUNED_LEAN, "MATMUL": "dot_bf16", "DW_MATMUL": "same"}):
    for overlap in (0, 1):
        for regs in (0, 168):
            LEVERS.append((LEAN, {**params, "OVERLAP": overlap, "MAXNREG": regs}))
for prefetch in (0, 1):
    for overlap in (0, 1):
        for regs in (0, 128):
            LEVERS.append((LEAN, {**TUNED_LEAN, "BLOCK_K": 16, "PREFETCH": prefetch, "OVERLAP": overlap,
                                  "MAXNREG": regs}))

# INLINE (dq in the recompute, df in the chain step) against each shipped lean entry and the runtime's
# paper-7b m2rnn_bwd; INLINE frees registers of the block (BULK=4 may fit one warp now)
LONG_LEAN = {"BLOCK_K": 16, "BULK": 2, "CKPT": 32, "MATMUL": "dot_bf16", "OVERLAP": 1, "PREFETCH": 1,
             "TANH": "approx", "num_warps": 1}                       # B=1 S=16384 N=132
BF16_LEAN = {**TUNED_LEAN, "MATMUL": "dot_bf16", "DW_MATMUL": "same"}
INLINE = [(OLD, SHIPPED)]
for params in (TUNED_LEAN, {**TUNED_LEAN, "MAXNREG": 128}, BF16_LEAN, {**BF16_LEAN, "OVERLAP": 1}, LONG_LEAN,
               {**LONG_LEAN, "OVERLAP": 0}):
    for inline in (0, 1):
        INLINE.append((LEAN, {**params, "INLINE": inline}))
for change in ({"BLOCK_K": 16, "BULK": 4}, {"BULK": 1}, {"CKPT": 16}, {"CKPT": 64}, {"PREFETCH": 2}, {"PREFETCH": 0}):
    INLINE.append((LEAN, {**BF16_LEAN, "INLINE": 1, **change}))
# SCRATCH=bf16 (H and da stored in bf16) against fp32 at the INLINE entries, at three chunk lengths
INLINE_BF16 = {**BF16_LEAN, "INLINE": 1}
SCRATCH = [(OLD, SHIPPED)]
for params in (INLINE_BF16, {**INLINE_BF16, "CKPT": 16}, {**INLINE_BF16, "CKPT": 64}, {**INLINE_BF16, "OVERLAP": 1},
               {**LONG_LEAN, "INLINE": 1}, {**INLINE_BF16, "BULK": 4, "BLOCK_K": 16}):
    for scratch in ("fp32", "bf16"):
        SCRATCH.append((LEAN, {**params, "SCRATCH": scratch}))
GRIDS = {"first": CONFIGS, "levers": LEVERS, "inline": INLINE, "scratch": SCRATCH}


def shipped():
    """`shipped`: every backward entry of profiles/nvidia-h200 (each family's), measured or
    predicted, as the A/B of a kernel patch times them (bench/h200_patch_ab.sh)."""
    from pathlib import Path
    rows = []
    for kernel in (LEAN, OLD):
        path = Path(__file__).resolve().parent.parent / "profiles" / "nvidia-h200" / f"{kernel}.json"
        for entry in json.loads(path.read_text())["entries"]:
            if (kernel, entry["config"]) not in rows:
                rows.append((kernel, entry["config"]))
    return rows


def small(problem):
    """The shape's dims and head sharing, few heads, S long enough for three chunks and a part."""
    n = 8
    heads = {h: (1 if getattr(problem, h) == 1 else n) for h in ("Nq", "Nk", "Nv", "Nw", "Nf")}
    return replace(problem, B=2, S=200, h0=True, **heads)


def profile(shape_name, grid, picks):
    """Launch the picked configs of a grid (comma-separated indexes) once each at the full shape,
    for ncu:  ncu --clock-control none -k regex:m2rnn_bwd -c N ... h200_bwd_grid.py OUT SHAPE GRID 0,3"""
    problem = shape(shape_name)
    for i in map(int, picks.split(",")):
        kernel, params = GRIDS[grid][i]
        spec = variants.spec(kernel)
        config = spec.fit(spec.config(params), problem)
        print(i, config.short(), flush=True)
        prepare(problem, config, gradient_clipping=1.0).run()
        torch.cuda.synchronize()


def main(out, shape_name="paper-7b", grid="first", picks=None):
    if picks:
        return profile(shape_name, grid, picks)
    problem = shape(shape_name)
    configs = []
    for kernel, params in (shipped() if grid == "shipped" else GRIDS[grid]):
        spec = variants.spec(kernel)
        config = spec.fit(spec.config(params), problem)
        why = spec.check(problem, config)
        configs.append((config, why))
    todo = [c for c, why in configs if why is None]
    precompile([(compile_problem(problem), c) for c in todo] + [(small(problem), c) for c in todo])
    rows = []
    fwd_module = variants.load("m2rnn_fwd")
    for config, why in configs:
        row = {"kernel": config.variant, "config": config.as_dict()}
        if why:
            rows.append({**row, "status": "invalid-config", "reason": why})
            continue
        try:
            check = small(problem)
            fcfg = variants.spec("m2rnn_fwd").checkpoint_config(check)
            # held to the row the tuner holds the config to (a recompute that rounds H: measure/plan.py)
            rounding = variants.spec(config.variant).rounding(config)
            val = validate_training(check, variant_training(fwd_module, fcfg, variants.load(config.variant), config),
                                    seed=5, device="cuda", lengths=(64, 200), clip=1.0, rounding=rounding)
            row.update(valid=val.ok, max_error=val.max_error, reason=val.reason(), rounding=rounding)
            prepared = prepare(problem, config, gradient_clipping=1.0)
            t = time_cuda(prepared.run, warmup=2, reps=10)
            row.update(status="ok", bwd_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms,
                       us_per_step=t.median_ms * 1e3 / problem.S, resources=dict(prepared.info),
                       extra_mib=variants.spec(config.variant).extra_bytes(problem, config) / 2 ** 20)
        except Exception as exc:
            row.update(status="error", reason=f"{type(exc).__name__}: {exc}"[:400])
        torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    tag = shape_name.replace(",", "_").replace("=", "")
    with open(f"{out}/bwd_grid-{grid}-{tag}.json" if grid != "first" else f"{out}/bwd_grid.json", "w") as fh:
        json.dump({"environment": environment(), "shape": shape_name, "problem": problem.describe(),
                   "rows": rows}, fh, indent=2, sort_keys=True)
    default = {name: variants.spec(name).DEFAULT.as_dict() for name in (OLD, LEAN)}
    print(f"\n{shape_name}: backward alone, CUDA events (median of 10), gradient_clipping=1.0")
    print(f"{'kernel':<15} {'ms':>7} {'regs':>4} {'spill':>5} {'MiB':>5} {'max err':>8} ok  changes")
    for r in sorted(rows, key=lambda r: r.get("bwd_ms") or 1e9):
        changes = " ".join(f"{k}={v}" for k, v in sorted(r["config"].items()) if default[r["kernel"]].get(k) != v)
        if r.get("status") != "ok":
            print(f"{r['kernel']:<15} {r.get('status'):>7} {r.get('reason', '')[:60]}  {changes}")
            continue
        res = r["resources"]
        print(f"{r['kernel']:<15} {r['bwd_ms']:7.2f} {res.get('n_regs', 0):4d} {res.get('n_spills', 0):5d} "
              f"{r['extra_mib']:5.0f} {r['max_error']:8.1e} {'y' if r['valid'] else 'N'}   {changes}")


if __name__ == "__main__":
    main(*sys.argv[1:])

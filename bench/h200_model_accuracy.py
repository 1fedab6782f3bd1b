"""Measure a seeded spread of forward and backward configs on three shapes for the model check.

Run from the repo root on a GPU machine:
    PYTHONPATH=. python3 bench/h200_model_accuracy.py OUTDIR [--profile hardware.json]

Per shape (paper-7b, paper-400m, square-64; S=4096, bf16): the default config, the known-good
ones, and seeded random valid configs of m2rnn_fwd and m2rnn_bwd, compiled in parallel first,
then each timed alone (CUDA events, median of 5, L2 flushed). Timing only: correctness is the
validator's job and does not change speed. Writes OUTDIR/measurements.csv (what the CPU test
tests/test_model_accuracy.py reads) and, given a profile, prints the model's agreement.
"""
import argparse
import json
import random
import sys
import time
from pathlib import Path

from m2tune import variants
from m2tune.gpu import environment
from m2tune.model.hardware import HardwareProfile
from m2tune.measure.launch import describe_failure, time_config
from m2tune.model.modelcheck import agreement, write_csv
from m2tune.measure.precompile import precompile
from m2tune.problem import shape

SHAPES = ("paper-7b", "paper-400m", "square-64")
COUNTS = {"m2rnn_fwd": 24, "m2rnn_bwd": 14}
KNOWN_GOOD = {
    "m2rnn_fwd": [{"MATMUL": "dot_tf32x3", "TANH": "approx", "BLOCK_K": 32, "num_warps": 1},
                  {"MATMUL": "dot_bf16", "TANH": "approx", "BLOCK_K": 16, "num_warps": 1}],
    "m2rnn_bwd": [{"MATMUL": "dot_tf32x3", "TANH": "approx", "BLOCK_K": 16, "num_warps": 1, "CKPT": 64}],
}


def configs_for(variant, problem, count, rng):
    module = variants.spec(variant)
    picked = []
    for params in [{}] + KNOWN_GOOD[variant]:
        config = module.DEFAULT.with_params(**params)
        if module.check(problem, config) is None:
            picked.append(config)
    tries = 0
    while len(picked) < count and tries < 100 * count:
        tries += 1
        params = {k: rng.choice(v) for k, v in module.PARAMS.items()}
        params["num_stages"] = 1
        config = module.DEFAULT.with_params(**params)
        if config not in picked and module.check(problem, config) is None:
            picked.append(config)
    return picked


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    jobs = []
    for name in SHAPES:
        problem = shape(name)
        for variant, count in COUNTS.items():
            jobs += [(name, problem, c) for c in configs_for(variant, problem, count, rng)]
    t0 = time.time()
    compiled = precompile([(p, c) for _, p, c in jobs])
    print(f"precompiled {sum(r['ok'] for r in compiled)}/{len(jobs)} in {time.time() - t0:.0f} s", flush=True)
    rows = []
    partial = open(args.out / "measurements.partial.jsonl", "w")    # survives a killed run
    for i, (name, problem, config) in enumerate(jobs):
        row = {"shape": name, "variant": config.variant, "config": config.as_dict()}
        try:
            timing, info = time_config(problem, config, reps=5, warmup=1, max_seconds=3.0)
            row.update(median_ms=timing.median_ms, p20_ms=timing.p20_ms, p80_ms=timing.p80_ms, **info,
                       resources=info)
        except Exception as exc:
            row["error"] = describe_failure(exc)
        rows.append(row)
        partial.write(json.dumps(row, sort_keys=True) + "\n")
        partial.flush()
        print(f"[{i + 1}/{len(jobs)}] {name} {config.variant} {row.get('median_ms', row.get('error'))}",
              flush=True)
    write_csv(rows, args.out / "measurements.csv")
    meta = {"environment": environment(), "seed": args.seed, "shapes": SHAPES, "counts": COUNTS,
            "seconds": round(time.time() - t0, 1), "command": " ".join(sys.argv)}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    if args.profile:
        result = agreement(rows, HardwareProfile.load(args.profile))
        lines = [a.line() for a in result]
        (args.out / "agreement.txt").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()

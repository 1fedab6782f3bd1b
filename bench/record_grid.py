"""Record a grid for the replay backend: the valid configs of a search space at one shape, each
validated and timed on this GPU exactly as a `m2tune tune` trial is (tuning/backends.py's
GpuEvaluator: the validation plan, then the timing), appended to a CSV (model/modelcheck.py's
format: a failure's `error` is "<status>: message"). Resumable: configs already in the file are
skipped, so a grid larger than one device session is recorded over several.

    PYTHONPATH=. python3 bench/record_grid.py OUT.csv --variant m2rnn_fwd --shape paper-7b \
        [--space bench/grids/m2rnn_fwd-one-warp.yaml] [--where "BLOCK_B <= 2"] [--limit N] [--sample SEED]
        [--budget-s S]

--space: the search-space file whose grid is recorded (default: the variant's own);
--where: a further rule in the search-space language over the parameters and the problem (K, V, S, ...);
--sample: shuffle the grid with this seed before --limit (a sampled grid instead of a prefix).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from m2tune.measure.precompile import Precompiler  # noqa: E402
from m2tune.model.modelcheck import read_csv, write_csv  # noqa: E402
from m2tune.tuning.backends import GpuEvaluator  # noqa: E402
from m2tune.tuning.replay import grid_configs  # noqa: E402

LOOKAHEAD = 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--variant", default="m2rnn_fwd")
    ap.add_argument("--shape", default="paper-7b")
    ap.add_argument("--space", default=None)
    ap.add_argument("--where", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--sample", type=int, default=None)
    ap.add_argument("--budget-s", type=float, default=None)
    ap.add_argument("--timeout-s", type=float, default=180.0)
    args = ap.parse_args()
    problem, configs = grid_configs(args.variant, args.shape, args.where, args.space)
    if args.sample is not None:
        random.Random(args.sample).shuffle(configs)
    configs = configs[:args.limit]
    out = Path(args.out)
    # rows read back carry their resources as one dict: spread again for write_csv's columns
    rows = [{**r, **(r["resources"] or {})} for r in read_csv(out)] if out.exists() else []
    done = {json.dumps(r["config"], sort_keys=True) for r in rows}
    todo = [c for c in configs if json.dumps(c.as_dict(), sort_keys=True) not in done]
    print(f"{args.variant} at {args.shape}: {len(configs)} configs, {len(configs) - len(todo)} recorded, "
          f"{len(todo)} to go", flush=True)
    evaluator = GpuEvaluator(0, trial_timeout_s=args.timeout_s)
    # as a study does: every binary of the next configs compiles in a pool while one is timed
    precompiler = Precompiler()
    compiling = {i: precompiler.submit(problem, c) for i, c in enumerate(todo[:LOOKAHEAD])}
    started = time.time()
    try:
        for i, config in enumerate(todo):
            if args.budget_s and time.time() - started > args.budget_s:
                print(f"budget of {args.budget_s} s spent: {len(todo) - i} left for the next run", flush=True)
                break
            if i + LOOKAHEAD < len(todo):
                compiling[i + LOOKAHEAD] = precompiler.submit(problem, todo[i + LOOKAHEAD])
            concurrent.futures.wait(compiling.pop(i), timeout=args.timeout_s)
            # one draw for the whole grid, as in a study: the worker makes its inputs and references once
            outcome = evaluator.evaluate(args.variant, problem, config, seed=0)
            r = outcome.result
            res = r.resources or {}
            rows.append({"shape": args.shape, "variant": args.variant, "config": config.as_dict(),
                         "median_ms": r.median_ms if r.ok else None, "p20_ms": r.p20_ms, "p80_ms": r.p80_ms,
                         **{k: res.get(k, "") for k in ("n_regs", "n_spills", "shared")},
                         "error": "" if r.ok else f"{r.status}: {(r.message or '')[:300]}"})
            write_csv(rows, out)             # after every config: a killed run keeps what it measured
            print(f"[{i + 1}/{len(todo)}] {r.status:<14} {r.median_ms or 0:9.3f} ms  {config.short()}", flush=True)
    finally:
        precompiler.close()
        evaluator.close()


if __name__ == "__main__":
    main()

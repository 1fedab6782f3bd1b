"""How many trials the search needs, replayed over a recorded grid: for each sampler, with and
without model pruning, over many seeds, the trials run (those that would have spent GPU time) until
the best so far is within 3% of the grid's best. Runs on the CPU in minutes (the replay backend).

    PYTHONPATH=. python3 bench/replay_efficiency.py GRID.csv OUT.json --variant m2rnn_fwd --shape paper-7b \
        --space SPACE.yaml [--seeds 20] [--samplers tpe,random] [--within 0.03] [--target nvidia-h200]

--space: the search space the grid was recorded over (bench/record_grid.py --space), so every
proposal is a recorded config. Prints one line per (sampler, pruning) and writes every run to OUT.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from m2tune import status  # noqa: E402
from m2tune.tuning.options import TuneOptions  # noqa: E402
from m2tune.tuning.replay import load_grid  # noqa: E402
from m2tune.tuning.tune import Tuner  # noqa: E402


def trials_to_reach(trials, goal_ms: float) -> int | None:
    """Trials that spent budget, in the order they ran, up to the first within the goal (None: never)."""
    spent = 0
    for t in sorted(trials, key=lambda t: t.number):
        if not status.spends_budget(t):
            continue
        spent += 1
        if status.is_ok(t) and t.value <= goal_ms:
            return spent
    return None


def one_run(args, sampler: str, prune: bool, seed: int, size: int) -> dict:
    # shipped_starts off: the profiles' answer enqueued first would measure the profile, not the sampler
    opts = TuneOptions(variant=args.variant, shape=args.shape, backend="replay", grid=args.grid,
                       target=args.target, trials=size, sampler=sampler, seed=seed, storage=":memory:",
                       prune=prune, confirm=0, space=args.space, shipped_starts=False)
    tuner = Tuner(opts)
    started = time.time()
    tuner.run()
    trials = tuner.study.get_trials(deepcopy=False)
    return {"sampler": sampler, "prune": prune, "seed": seed,
            "trials_to_goal": trials_to_reach(trials, args.goal_ms),
            "run": sum(1 for t in trials if status.spends_budget(t)),
            "pruned": sum(1 for t in trials if status.category(t) == status.PRUNED),
            "not_recorded": sum(1 for t in trials if status.category(t) == status.NOT_RECORDED),
            "stop_reason": tuner.stop_reason, "wall_s": round(time.time() - started, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("grid")
    ap.add_argument("out")
    ap.add_argument("--variant", default="m2rnn_fwd")
    ap.add_argument("--shape", default="paper-7b")
    ap.add_argument("--space", default=None)
    ap.add_argument("--target", default="nvidia-h200")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--samplers", default="tpe,random")
    ap.add_argument("--within", type=float, default=0.03)
    args = ap.parse_args()
    grid = load_grid(args.grid, args.variant, args.shape)
    timed = sum(1 for r in grid.rows.values() if r["median_ms"] is not None)
    args.goal_ms = grid.best_ms * (1 + args.within)
    runs, lines = [], []
    for sampler in args.samplers.split(","):
        for prune in (False, True):
            mine = [one_run(args, sampler, prune, seed, len(grid.rows)) for seed in range(args.seeds)]
            runs += mine
            # a run that never got there counts as the whole grid and one more (the median stays honest)
            needed = [r["trials_to_goal"] or len(grid.rows) + 1 for r in mine]
            median = statistics.median(needed)
            lines.append({"sampler": sampler, "prune": prune, "median_trials": median,
                          "median_fraction_of_grid": median / len(grid.rows),
                          "reached": sum(r["trials_to_goal"] is not None for r in mine), "seeds": args.seeds})
            print(f"{sampler:<7} prune={'on ' if prune else 'off'}: median {median:g} trials "
                  f"({100 * median / len(grid.rows):.1f}% of {len(grid.rows)}), reached in "
                  f"{lines[-1]['reached']}/{args.seeds} seeds", flush=True)
    with open(args.out, "w") as fh:
        json.dump({"grid": args.grid, "variant": args.variant, "shape": args.shape, "space": args.space,
                   "configs": len(grid.rows), "timed": timed, "best_ms": grid.best_ms, "within": args.within,
                   "summary": lines, "runs": runs}, fh, indent=2)


if __name__ == "__main__":
    main()

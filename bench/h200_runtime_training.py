"""Training through the m2rnn op with the runtime's own choices (no config), validated.

Run from the repo root on a GPU machine:  PYTHONPATH=. python3 bench/h200_runtime_training.py OUTDIR
For paper-7b and paper-400m: what the runtime picks for a training step (profiles/ lookup), the
gradients against float64 autograd at S=128 and 512, forward+backward time and peak extra memory
(bench/h200_training.py's method). Writes OUTDIR/training.json.
"""
import json
import sys

from bench.h200_training import measure_training
from m2tune import runtime
from m2tune.gpu import environment
from m2tune.ops import choices_for
from m2tune.problem import shape


def main(out):
    rows = []
    for name in ("paper-7b", "paper-400m"):
        problem = shape(name)
        chosen = {part: c.describe() for part, c in choices_for(problem, gpu=runtime.current_gpu()).items()}
        rows.append({"shape": name, "runtime_choice": chosen, **measure_training(problem, None)})
        r = rows[-1]
        grads = [v for k, v in r.get("errors_S512", {}).items() if k not in ("y", "h_T")]
        print(name, {k: r.get(k) for k in ("fwd_bwd_ms", "peak_extra_mib", "valid", "error")},
              "max grad err", max(grads, default=None), "y err", r.get("errors_S512", {}).get("y"))
    with open(f"{out}/training.json", "w") as fh:
        json.dump({"environment": environment(), "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")

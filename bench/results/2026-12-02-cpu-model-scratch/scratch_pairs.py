"""bench/model_heldout.py's lean refit, per held-out group with SCRATCH=bf16 trials: each SCRATCH twin (two
configs equal but for SCRATCH), its measured and predicted bf16 / fp32 time, and the bf16 trials' mean rank
measured and predicted. Runs model_heldout's main (its JSON to HELDOUT.json), from the tree's root:

    PYTHONPATH=. python bench/results/2026-12-02-cpu-model-scratch/scratch_pairs.py HELDOUT.json PAIRS.json
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path.cwd() / "bench"))
import model_heldout as mh  # noqa: E402

from m2tune.model.fitting import nnls  # noqa: E402

REPORT = []
_refit = mh.lean_refit


def _ranks(values):
    return np.argsort(np.argsort(values)) + 1


def lean_refit(groups_rows, hw):
    out = _refit(groups_rows, hw)
    seen, pool = set(), []
    for _, _, rows in groups_rows:                 # the pool as lean_refit builds it
        for r in rows:
            key = (r["shape"], json.dumps(r["config"], sort_keys=True))
            if key not in seen:
                seen.add(key)
                pool.append(r)
    for label, _, rows in groups_rows:
        train = [r for r in pool if r["shape"] != rows[0]["shape"]]
        bf16 = [i for i, r in enumerate(rows) if r["config"].get("SCRATCH") == "bf16"]
        if len(train) < 10 or not bf16:
            continue
        X, y, _ = mh._lean_design(train, hw)
        coef = nnls(X / y[:, None], np.ones(len(y)))
        HX, _, steps = mh._lean_design(rows, hw)
        predicted = [float(v) * n / 1e3 for v, n in zip(HX @ coef, steps)]
        measured = [r["median_ms"] for r in rows]
        twins: dict = {}
        for i, r in enumerate(rows):
            config = dict(r["config"])
            twins.setdefault(json.dumps({**config, "SCRATCH": None}, sort_keys=True), {})[
                config.get("SCRATCH", "fp32")] = i
        pairs = [{"measured_bf16_over_fp32": measured[t["bf16"]] / measured[t["fp32"]],
                  "predicted_bf16_over_fp32": predicted[t["bf16"]] / predicted[t["fp32"]]}
                 for t in twins.values() if "fp32" in t and "bf16" in t]
        line = {"group": label, "shape": rows[0]["shape"], "configs": len(rows), "bf16_trials": len(bf16),
                "bf16_mean_rank_measured": float(np.mean(_ranks(measured)[bf16])),
                "bf16_mean_rank_predicted": float(np.mean(_ranks(predicted)[bf16])), "twins": pairs}
        REPORT.append(line)
        print("scratch", json.dumps(line), flush=True)
    return out


if __name__ == "__main__":
    mh.lean_refit = lean_refit
    mh.main(sys.argv[1])
    Path(sys.argv[2]).write_text(json.dumps(REPORT, indent=1) + "\n")

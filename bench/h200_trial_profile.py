"""Where one tuning trial spends its seconds on the GPU (validation, references, timing).

Run from the repo root on a GPU machine:  PYTHONPATH=. python3 bench/h200_trial_profile.py OUTDIR
For each kernel, the config the profile ships for paper-7b goes through the trial function a
worker runs (m2tune.tuning.trial._run_trial) in this process: once to compile, once as trials ran
before m2tune/reuse.py, then twice inside reuse.reusing() as a worker runs them now, the last under
cProfile. Printed per kernel: those wall times and the cumulative seconds of the profiled trial's
phases (references, input construction, the candidate's launches, the CUDA timing);
OUTDIR gets each profile's top functions as text and the phase table as JSON.
"""
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

from m2tune import runtime
from m2tune.gpu import current_gpu
from m2tune.problem import shape
from m2tune.reuse import reusing
from m2tune.tuning.trial import TrialRequest, _run_trial

PHASES = {   # phase -> (file suffix, function name) whose cumulative time it is
    "reference": ("naive.py", "m2rnn_reference"),
    "reference_grads": ("validate.py", "_reference_grads"),
    "state_grads": ("validate.py", "_state_grads"),
    "make_inputs": ("inputs.py", "make_inputs"),
    "validate": ("trial.py", "_validate"),
    "time": ("trial.py", "_time"),
    "time_cuda": ("timing.py", "time_cuda"),
    "prepare": ("launch.py", "prepare"),
}


def _phases(stats: pstats.Stats) -> dict:
    out = {name: 0.0 for name in PHASES}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        for name, (suffix, fn) in PHASES.items():
            if func == fn and file.endswith(suffix):
                out[name] += ct
    return {k: round(v, 3) for k, v in out.items()}


def main(out: Path, shape_name: str = "paper-7b") -> None:
    out.mkdir(parents=True, exist_ok=True)
    problem = shape(shape_name)
    rows = []
    for kernel in ("m2rnn_fwd", "m2rnn_bwd_lean", "m2rnn_bwd"):
        choice = runtime.lookup(kernel, problem, gpu=current_gpu(), training=kernel != "m2rnn_fwd")
        request = TrialRequest(kernel, problem, choice.config, seed=0)
        t0 = time.perf_counter()
        first = _run_trial(request)                 # compiles
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        plain = _run_trial(request)                 # as every trial ran before reuse.py
        plain_s = time.perf_counter() - t0
        with reusing() as memo:                     # as a worker runs them now
            _run_trial(request)
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            prof.enable()
            second = _run_trial(request)
            prof.disable()
            reused_s = time.perf_counter() - t0
        text = io.StringIO()
        stats = pstats.Stats(prof, stream=text)
        stats.sort_stats("cumulative").print_stats(40)
        (out / f"{kernel}.prof.txt").write_text(text.getvalue())
        rows.append(dict(kernel=kernel, config=choice.config.as_dict(),
                         status=[first["status"], plain["status"], second["status"]],
                         median_ms=[plain.get("median_ms"), second.get("median_ms")],
                         cold_s=round(cold, 3), plain_s=round(plain_s, 3), reused_s=round(reused_s, 3),
                         memo_mib=round(memo.bytes / 2**20), **_phases(stats)))
    (out / "trial_profile.json").write_text(json.dumps(rows, indent=1))
    keys = ["kernel", "cold_s", "plain_s", "reused_s", "memo_mib"] + list(PHASES)
    print(" ".join(f"{k:>15}" for k in keys))
    print("  statuses and medians (plain, reused):", [(r['status'], r['median_ms']) for r in rows])
    for r in rows:
        print(" ".join(f"{str(r[k]):>15}" if not isinstance(r[k], float) else f"{r[k]:>15.3f}" for k in keys))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."), *sys.argv[2:3])

"""First call and steady state of the M2RNN layer at paper-7b, each in a fresh process.

Run from the repo root on a GPU machine:  PYTHONPATH=. python3 bench/h200_runtime.py OUTDIR

Three fresh Python processes, each with an empty Triton cache (TRITON_CACHE_DIR in a new temp dir,
so every kernel compiles in the process as on a new machine), run the same training step: the
M2RNN layer (hidden 4096, N=132 heads, K=64, V=16, one shared q/k head, bf16) on x of (4, 4096,
4096), forward + backward. Modes:
  tuned     no kernel_config: the runtime looks up profiles/ (what a user gets)
  fallback  the runtime's default for an untuned GPU (runtime.GPU_DEFAULTS), given explicitly
  template  the templates' own defaults (kernel_config={"forward": {}, "backward": {}})
Per mode: seconds to import m2tune, wall seconds of the first step (compile included), the CUDA-event
median of 10 further steps, and the configs used (M2RNN.kernel_choices).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

MODES = ("tuned", "fallback", "template")


def child(mode: str, out_path: str) -> None:
    t0 = time.perf_counter()
    import torch

    import m2tune
    from m2tune import runtime
    import_s = time.perf_counter() - t0
    config = {"tuned": None, "template": {"forward": {}, "backward": {}},
              "fallback": {"forward": runtime.GPU_DEFAULTS["m2rnn_fwd"],
                           "backward": runtime.GPU_DEFAULTS["m2rnn_bwd"]}}[mode]
    torch.manual_seed(0)
    layer = m2tune.M2RNN(4096, 132, 64, 16, num_q_heads=1, num_k_heads=1, kernel_config=config,
                         device="cuda", dtype=torch.bfloat16)
    x = torch.randn(4, 4096, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dout = torch.randn_like(x)

    def step():
        out, _ = layer(x)
        out.backward(dout)

    torch.cuda.synchronize()
    t1 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    first_s = time.perf_counter() - t1
    from m2tune.measure.timing import time_cuda
    steady = time_cuda(step, warmup=1, reps=10)
    choices = {part: {"config": c.config.as_dict(), "source": c.source, "reason": c.reason,
                      "measured": c.measured}
               for part, c in layer.kernel_choices(4, 4096).items()}
    with open(out_path, "w") as fh:
        json.dump({"mode": mode, "import_s": import_s, "first_step_s": first_s,
                   "steady_ms": steady.median_ms, "steady_p20_ms": steady.p20_ms, "steady_p80_ms": steady.p80_ms,
                   "choices": choices, "gpu": torch.cuda.get_device_name()}, fh, indent=1, sort_keys=True)


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    rows = []
    for mode in MODES:
        path = os.path.join(out, f"runtime_{mode}.json")
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, TRITON_CACHE_DIR=cache)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", mode, path], env=env,
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t0
        if proc.returncode:
            print(f"{mode}: failed\n{proc.stderr[-3000:]}")
            continue
        row = json.load(open(path))
        row["process_wall_s"] = wall
        rows.append(row)
    with open(os.path.join(out, "runtime.json"), "w") as fh:
        json.dump(rows, fh, indent=1, sort_keys=True)
    print(f"\n{'mode':<9} {'import s':>8} {'first step s':>12} {'steady ms':>10}  forward / backward config source")
    for r in rows:
        src = " / ".join(f"{c['reason']}" for c in r["choices"].values())
        print(f"{r['mode']:<9} {r['import_s']:>8.2f} {r['first_step_s']:>12.2f} {r['steady_ms']:>10.2f}  {src}")


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1])

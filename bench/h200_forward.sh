#!/usr/bin/env bash
# One device call: GPU-compiled correctness tests, then the forward grid at the
# paper shapes. Run from the repo root on the GPU machine:  bash bench/h200_forward.sh
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-bench/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' | tee -a "$OUT/gpu.txt"
python3 -m pytest -q tests ${PYTEST_ARGS:-} -p no:warnings \
    2>&1 | tee "$OUT/pytest_gpu.txt" | tail -4
for s in ${SHAPES:-paper-7b paper-400m}; do
    python3 cli.py bench --shape "$s" --out "$OUT/fwd_$s.json" 2>&1 | tee "$OUT/bench_$s.txt"
done

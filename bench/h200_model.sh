#!/usr/bin/env bash
# One device call for the performance model and the backward levers. From the repo root on
# the GPU machine:  OUT=... bash bench/h200_model.sh
#   1. GPU-compiled backward tests (the new DW_MATMUL / compiled-info paths)
#   2. m2tune calibrate             -> $OUT/profiles/<gpu>/hardware.json
#   3. model accuracy measurements  -> $OUT/accuracy/measurements.csv (+ agreement.txt)
#   4. forward+backward levers      -> $OUT/training/training.json
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-bench/out}; mkdir -p "$OUT"/accuracy "$OUT"/training
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' | tee -a "$OUT/gpu.txt"
timeout 120 python3 -m pytest -q -m gpu tests/test_bwd_kernel.py -p no:warnings 2>&1 | tee "$OUT/pytest_gpu.txt" | tail -3
SECONDS=0
timeout 230 python3 cli.py calibrate --out "$OUT/profiles" 2>&1 | tr '\r' '\n' | grep -v 'cfg/s' | tee "$OUT/calibrate.txt"
echo "calibrate took ${SECONDS}s" | tee -a "$OUT/calibrate.txt"
PROFILE=$(ls "$OUT"/profiles/*/hardware.json | head -1)
timeout 220 python3 bench/h200_model_accuracy.py "$OUT/accuracy" --profile "$PROFILE" > "$OUT/accuracy/log.txt" 2>&1
tail -8 "$OUT/accuracy/log.txt"
[ -n "$SKIP_TRAINING" ] || timeout 150 python3 bench/h200_training.py "$OUT/training" 2>&1 | tee "$OUT/training/log.txt" | tail -14

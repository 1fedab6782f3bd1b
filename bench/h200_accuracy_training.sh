#!/usr/bin/env bash
# Second device call of the model session: the accuracy measurements (the first call ran out
# of its time limit at 110/114 rows before writing them) and the backward levers.
set -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-bench/out}; mkdir -p "$OUT"/accuracy "$OUT"/training
PROFILE=${PROFILE:-profiles/nvidia-h200/hardware.json}
timeout 330 python3 bench/h200_model_accuracy.py "$OUT/accuracy" --profile "$PROFILE" > "$OUT/accuracy/log.txt" 2>&1
tail -8 "$OUT/accuracy/log.txt"
timeout 240 python3 bench/h200_training.py "$OUT/training" 2>&1 | tee "$OUT/training/log.txt" | tail -14

#!/usr/bin/env bash
# One device call: resume the shipped backward studies with the new starting point (bf16 + PTX tanh,
# search_spaces/m2rnn_bwd.yaml), export, and measure what training now gets: the layer's first call
# and steady step in fresh processes (bench/h200_runtime.py) and the op's forward+backward with the
# runtime's own choices, validated against float64 (bench/h200_training.py's method).
# From the repo root on the GPU machine, Optuna wheels in .whl/:  OUT=... bash bench/h200_retune.sh
# Optional: SRC_DB (the storage to resume; default the ship run's), TRIALS_7B, TRIALS_400M, CONFIRM.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:.
OUT=${OUT:-bench/out}; mkdir -p "$OUT"
cp "${SRC_DB:-bench/results/2026-11-29-h200-ship/ship.db}" "$OUT/ship.db"
STORAGE="sqlite:///$OUT/ship.db"
run_tune() {  # shape trials limit
    SECONDS=0
    timeout "$3" python3 cli.py tune --variant m2rnn_bwd --shape "$1" --trials "$2" --confirm "${CONFIRM:-2}" \
        --storage "$STORAGE" --json > "$OUT/tune_m2rnn_bwd_$1.json" 2> "$OUT/tune.log"
    echo "tune m2rnn_bwd $1: exit $? after ${SECONDS}s"
    python3 -c "import json,sys; from m2tune.tuning.summary import table; print('\n'.join(table(json.load(open(sys.argv[1])))))" \
        "$OUT/tune_m2rnn_bwd_$1.json"
}
run_tune paper-7b "${TRIALS_7B:-40}" 220
run_tune paper-400m "${TRIALS_400M:-30}" 200
rm -f "$OUT/tune_m2rnn_bwd_paper-400m.json" "$OUT/tune.log"      # printed above; the reply holds 8 files
python3 cli.py export --storage "$STORAGE" --out profiles
cp profiles/nvidia-h200/m2rnn_bwd.json "$OUT/"
python3 cli.py check profiles
python3 cli.py show --shape paper-7b | grep -v "does not fit"
timeout 240 python3 bench/h200_runtime.py "$OUT/runtime" 2>&1 | tail -6
timeout 120 python3 bench/h200_runtime_training.py "$OUT"

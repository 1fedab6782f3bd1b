#!/usr/bin/env bash
# One device call: fresh studies of the forward (its fastest state-accurate config becomes the
# training entry) and of both backward families at each shape in SHAPES, exported into
# profiles/nvidia-h200/, checked, and what `m2tune show` then picks. From the repo root on the GPU
# machine, with the Optuna wheels in .whl/:
#   OUT=... SHAPES="paper-7b" bash bench/h200_lean_ship.sh
# Optional: FWD_TRIALS (0: no forward study), BWD_TRIALS, BWD_VARIANTS (default both families),
# STORAGE (default $OUT/lean.db; an existing one is resumed), BWD_LIMIT (seconds per backward study,
# a hard stop), BWD_BUDGET (seconds a backward study asks new trials for: its confirm stage still runs;
# default BWD_LIMIT - 150: on 2026-12-02 a budget of BWD_LIMIT - 115 still left the trials in flight,
# the confirm rounds and the export past the hard stop at paper-7b, S=16384 and k128-v32).
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:.
OUT=${OUT:-bench/out}; mkdir -p "$OUT"
[ -n "$SRC_DB" ] && cp "$SRC_DB" "$OUT/lean.db"
STORAGE=${STORAGE:-sqlite:///$OUT/lean.db}
LOG="$OUT/ship.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee -a "$LOG"
for shape in ${SHAPES:-paper-7b}; do
    SECONDS=0
    if [ "${FWD_TRIALS:-30}" != 0 ]; then
        timeout 200 python3 cli.py tune --variant m2rnn_fwd --shape "$shape" --trials "${FWD_TRIALS:-30}" --confirm 3 \
            --storage "$STORAGE" 2> "$OUT/tune.err" | tee -a "$LOG"
        echo "tune m2rnn_fwd $shape: exit $? after ${SECONDS}s" | tee -a "$LOG"
    fi
    SECONDS=0
    budget=${BWD_BUDGET:-$(( ${BWD_LIMIT:-330} - 150 ))}
    timeout "${BWD_LIMIT:-330}" python3 cli.py tune --variant "${BWD_VARIANTS:-m2rnn_bwd,m2rnn_bwd_lean}" --shape "$shape" \
        --trials "${BWD_TRIALS:-20}" --confirm "${BWD_CONFIRM:-2}" --budget-s "$budget" \
        --storage "$STORAGE" 2>> "$OUT/tune.err" | tee -a "$LOG"
    echo "tune backward $shape: exit $? after ${SECONDS}s" | tee -a "$LOG"
done
tail -c 2000 "$OUT/tune.err" | tr '\r' '\n' | grep -v "trial/s\|s/trial" | tail -5
python3 cli.py export --storage "$STORAGE" --out profiles 2>&1 | tee -a "$LOG"
cp profiles/nvidia-h200/m2rnn_*.json "$OUT/"
python3 cli.py check profiles 2>&1 | tee -a "$LOG"
for shape in ${SHAPES:-paper-7b}; do
    python3 cli.py show --shape "$shape" 2>&1 | grep -v "does not fit\|skipped" | tee -a "$LOG"
done

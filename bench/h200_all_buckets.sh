#!/usr/bin/env bash
# Issue 18: every bucket of a kernel's search space measured on the H200, over as many device calls
# as it takes. Each call resumes the studies in DB (one per bucket, `m2tune tune --all-buckets`):
# a finished study returns at once, an unfinished one gets BUDGET seconds more; the DB comes back
# under $OUT whatever happens, to be committed and carried into the next call. From the repo root,
# the Optuna wheels in .whl/:
#   OUT=... DB=bench/results/<date>-h200-buckets/buckets.db VARIANT=m2rnn_fwd TRIALS=25 BUDGET=60 \
#       LIMIT=520 bash bench/h200_all_buckets.sh
# VARIANT may list several kernels, "m2rnn_fwd,m2rnn_bwd_lean,m2rnn_bwd": their buckets in turn, one
# set of workers for all (tuning/slots.py).
set -u
: "${OUT:?}" "${DB:?}" "${VARIANT:?}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:.
cp "$DB" "$OUT/buckets.db" 2>/dev/null || true        # a first call starts an empty one
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader > "$OUT/gpu.txt"
SECONDS=0
timeout "${LIMIT:-520}" python3 cli.py tune --all-buckets --variant "$VARIANT" --trials "${TRIALS:-25}" \
    --budget-s "${BUDGET:-60}" --confirm 3 --storage "sqlite:///$OUT/buckets.db" > "$OUT/tune.txt" 2> "$OUT/tune.err"
echo "tune --all-buckets $VARIANT: exit $? after ${SECONDS}s" | tee -a "$OUT/tune.txt"
grep -E "^study|best|stopped" "$OUT/tune.txt" | tail -30
python3 cli.py export --storage "sqlite:///$OUT/buckets.db" --out "$OUT/profiles" 2>&1 | tail -3

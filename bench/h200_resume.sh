#!/usr/bin/env bash
# One device call: resume the paper-400m forward study that the ship run's time limit killed
# (its RUNNING trials are orphans of a dead process), finish it to 40 scored trials with the
# confirm stage, and export again. Needs .whl/ (Optuna) and .gpu_in/ship.db carried.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:.
OUT=${OUT:-bench/out}; mkdir -p "$OUT"
cp .gpu_in/ship.db "$OUT/ship.db"
STORAGE="sqlite:///$OUT/ship.db"
SECONDS=0
timeout 200 python3 cli.py tune --variant m2rnn_fwd --shape paper-400m --trials 40 --confirm 3 \
    --storage "$STORAGE" --json > "$OUT/resume.json" 2> "$OUT/resume.log"
echo "resume exit $? after ${SECONDS}s" | tee "$OUT/resume.txt"
python3 - "$STORAGE" <<'PY' | tee -a "$OUT/resume.txt"
import sys, collections, optuna
optuna.logging.set_verbosity(optuna.logging.ERROR)
st = optuna.load_study(study_name="m2rnn_fwd/paper-400m/nvidia-h200/gpu", storage=sys.argv[1])
c = collections.Counter((t.state.name, t.user_attrs.get("status"), bool(t.user_attrs.get("orphaned"))) for t in st.trials)
print(dict(c))
conf = st.user_attrs.get("confirm")
if conf:
    print("confirm winner", conf["winner"]["median_ms"], conf["winner"]["config"], "default", conf["default_ms"])
PY
python3 - "$OUT/resume.json" <<'PY' | tee -a "$OUT/resume.txt"
import json, sys
from m2tune.tuning.summary import table
print("\n".join(table(json.load(open(sys.argv[1])))))
PY

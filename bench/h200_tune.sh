#!/usr/bin/env bash
# One device call: a 100-trial tuning study of the forward at paper-7b on the H200, then the
# study exported as CSV. From the repo root on the GPU machine, with the Optuna wheels carried
# in .whl/ (the GPU machine has no optuna, sqlalchemy or alembic):  OUT=... bash bench/h200_tune.sh
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:.
OUT=${OUT:-bench/out}; mkdir -p "$OUT"
STORAGE=${STORAGE:-sqlite:///$OUT/study.db}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, triton, optuna; print("torch", torch.__version__, "triton", triton.__version__, "optuna", optuna.__version__)' | tee -a "$OUT/gpu.txt"
SECONDS=0
timeout ${TUNE_LIMIT:-500} python3 cli.py tune --shape paper-7b --variant m2rnn_fwd --trials ${TRIALS:-100} \
    --storage "$STORAGE" --json > "$OUT/tune.json" 2> "$OUT/tune.log"
echo "tune exit $? after ${SECONDS}s" | tee -a "$OUT/gpu.txt"
python3 - "$STORAGE" "$OUT" <<'PY'
import sys, optuna
storage, out = sys.argv[1], sys.argv[2]
for s in optuna.get_all_study_summaries(storage):
    study = optuna.load_study(study_name=s.study_name, storage=storage)
    df = study.trials_dataframe(attrs=("number", "value", "state", "datetime_start", "datetime_complete",
                                       "params", "user_attrs"))
    df.to_csv(f"{out}/trials.csv", index=False)
    print(s.study_name, len(df), "trials;", df["user_attrs_status"].value_counts().to_dict())
PY
tail -c 3000 "$OUT/tune.log" | tr '\r' '\n' | tail -3
python3 - "$OUT/tune.json" <<'PY'
import json, sys
from m2tune.tuning.summary import table
try:
    print("\n".join(table(json.load(open(sys.argv[1])))))
except Exception as exc:
    print("no summary:", exc)
PY

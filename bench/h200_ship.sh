#!/usr/bin/env bash
# One device call: tune what the shipped H200 profile needs beyond the committed paper-7b forward
# study, export every study into profiles/nvidia-h200/, check the files, and measure the layer's
# first call in fresh processes. From the repo root on the GPU machine, Optuna wheels in .whl/:
#   OUT=... bash bench/h200_ship.sh
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:.
OUT=${OUT:-bench/out}; mkdir -p "$OUT"
cp bench/results/2026-11-29-h200-tune-paper-7b/study.db "$OUT/ship.db"     # the paper-7b forward study
STORAGE="sqlite:///$OUT/ship.db"
run_tune() {  # variant shape trials confirm limit
    SECONDS=0
    timeout "$5" python3 cli.py tune --variant "$1" --shape "$2" --trials "$3" --confirm "$4" \
        --storage "$STORAGE" --json > "$OUT/tune_$1_$2.json" 2> "$OUT/tune_$1_$2.log"
    echo "tune $1 $2: exit $? after ${SECONDS}s" | tee -a "$OUT/ship.txt"
}
run_tune m2rnn_bwd paper-7b 30 2 170
run_tune m2rnn_fwd paper-400m 30 3 90
run_tune m2rnn_bwd paper-400m 20 2 150
python3 cli.py export --storage "$STORAGE" --out profiles 2>&1 | tee -a "$OUT/ship.txt"
mkdir -p "$OUT/profiles" && cp profiles/nvidia-h200/*.json "$OUT/profiles/"
python3 cli.py check profiles 2>&1 | tee -a "$OUT/ship.txt"
python3 cli.py show --shape paper-7b 2>&1 | tee -a "$OUT/ship.txt"
timeout 200 python3 bench/h200_runtime.py "$OUT/runtime" 2>&1 | tail -6 | tee -a "$OUT/ship.txt"
python3 - "$STORAGE" "$OUT" <<'PY'
import sys, optuna
storage, out = sys.argv[1], sys.argv[2]
for s in optuna.get_all_study_summaries(storage):
    study = optuna.load_study(study_name=s.study_name, storage=storage)
    df = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs"))
    df.to_csv(f"{out}/trials_{s.study_name.replace('/', '_')}.csv", index=False)
    print(s.study_name, len(df), "trials;", df["user_attrs_status"].value_counts().to_dict())
PY

#!/usr/bin/env bash
# Model-backend studies (no GPU) of the generic shape buckets of search_spaces/*.yaml for the H200:
# each candidate checked in the Triton interpreter at a small problem with the same head dims and
# sharing, then scored by the performance model with profiles/nvidia-h200/hardware.json. Exported
# entries are marked measured=false; the runtime prefers measured entries.
#   STORAGE=sqlite:///generic.db TRIALS=8 bash bench/cpu_model_generic.sh
set -o pipefail
STORAGE=${STORAGE:-sqlite:///generic.db}
TRIALS=${TRIALS:-8}
BUCKETS=$(PYTHONPATH=. python3 -c "from m2tune.tuning.space_file import load_space; print(' '.join(b.name for b in load_space('m2rnn_fwd').buckets if not b.name.startswith(('paper', 'square'))))")
for variant in m2rnn_fwd m2rnn_bwd; do
    for bucket in $BUCKETS; do
        PYTHONPATH=. python3 cli.py tune --backend model --target nvidia-h200 --variant $variant --shape $bucket \
            --trials "$TRIALS" --storage "$STORAGE" --json > /dev/null 2>&1
        echo "$variant $bucket: exit $?"
    done
done

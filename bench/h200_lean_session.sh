#!/usr/bin/env bash
# One device call: the op's GPU tests (torch.compile incl. mode="reduce-overhead", packed inputs),
# the lean family re-tuned at paper-400m, then issue 12's side-by-side summary (h200_lean_summary.py)
# with the profiles as exported. From the repo root, the Optuna wheels in .whl/:
#   OUT=... bash bench/h200_lean_session.sh
set -u
: "${OUT:?}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:.
timeout 130 python3 -m pytest -q -p no:warnings -rfE tests/test_ops.py \
    "tests/test_layer.py::test_torch_compile_fullgraph_matches_eager_aot_eager" "tests/test_layer.py::test_packed_sequences_equal_separate_runs" \
    > "$OUT/pytest_gpu_ops.txt" 2>&1
tail -4 "$OUT/pytest_gpu_ops.txt"
OUT=$OUT FWD_TRIALS=0 BWD_VARIANTS=m2rnn_bwd_lean BWD_TRIALS=16 BWD_LIMIT=180 SHAPES=paper-400m \
    bash bench/h200_lean_ship.sh > "$OUT/ship.log" 2>&1
grep -E "exit|wrote|FAIL|ok   " "$OUT/ship.log"
timeout 220 python3 bench/h200_lean_summary.py "$OUT" bench/results/2026-12-01-h200-lean-backward/current_configs.json \
    > "$OUT/summary.log" 2>&1
tail -16 "$OUT/summary.log"

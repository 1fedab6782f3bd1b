#!/usr/bin/env bash
# INLINE (dq in the recompute, df in the chain step) on the GPU, one device call per SHAPES list
# (results under $OUT):
#   1. with TESTS=1: the GPU-marked backward kernel cases (OVERLAP, INLINE, both compiled), the op's
#      and the layer's GPU tests (torch.compile incl. mode="reduce-overhead", packed inputs, inductor)
#   2. bench/h200_bwd_grid.py's grid GRID (default `inline`; `scratch`: SCRATCH fp32 against bf16) at
#      each shape: validated, then the backward alone timed
# From the repo root, the Optuna wheels in .whl/:  OUT=... TESTS=1 SHAPES="paper-7b" bash bench/h200_inline.sh
set -u
: "${OUT:?}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:.
nvidia-smi --query-gpu=name,clocks.max.sm,temperature.gpu --format=csv,noheader > "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$OUT/gpu.txt"
if [ "${TESTS:-0}" = 1 ]; then
    timeout 150 python3 -m pytest -q -p no:warnings -rfEX -m gpu tests/test_bwd_kernel.py > "$OUT/pytest_gpu_kernels.txt" 2>&1
    tail -2 "$OUT/pytest_gpu_kernels.txt"
    timeout 200 python3 -m pytest -q -p no:warnings -rfEX --show-capture=no tests/test_ops.py tests/test_layer.py \
        > "$OUT/pytest_gpu_ops_layer.txt" 2>&1
    grep -E "^(FAILED|ERROR|XPASS|XFAIL)|passed|failed" "$OUT/pytest_gpu_ops_layer.txt" | tail -8
fi
for s in ${SHAPES:-paper-7b}; do
    tag=$(echo "$s" | tr -d '=' | tr ',' '_')
    timeout "${GRID_LIMIT:-200}" python3 bench/h200_bwd_grid.py "$OUT" "$s" "${GRID:-inline}" > "$OUT/grid-$tag.log" 2>&1
    tail -21 "$OUT/grid-$tag.log"
done

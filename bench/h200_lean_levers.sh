#!/usr/bin/env bash
# The lean backward's levers at paper-7b on the GPU, in one device call (results under $OUT):
#   1. the op and layer tests compiled for the GPU (torch.compile incl. mode="reduce-overhead")
#      and the OVERLAP kernel cases -> pytest_gpu.txt
#   2. bench/h200_bwd_grid.py's `levers` grid: validated against float64, then timed -> grid.log, JSON
#   3. ncu of the tuned lean config, its OVERLAP twin and a BLOCK_K=16 register-capped one -> ncu.txt
# Run from the repo root:  OUT=... bash bench/h200_lean_levers.sh
set -u
: "${OUT:?}"
nvidia-smi --query-gpu=name,clocks.max.sm,temperature.gpu --format=csv,noheader > "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$OUT/gpu.txt"
timeout 200 python3 -m pytest -q -p no:warnings tests/test_ops.py tests/test_layer.py \
    "tests/test_bwd_kernel.py::test_gradients_match_float64_autograd" -k "not (test_bwd_kernel and not overlap)" \
    > "$OUT/pytest_gpu.txt" 2>&1
tail -3 "$OUT/pytest_gpu.txt"
timeout 280 python3 bench/h200_bwd_grid.py "$OUT" paper-7b levers > "$OUT/grid.log" 2>&1
tail -21 "$OUT/grid.log"
timeout 100 ncu --clock-control none -k regex:m2rnn_bwd -c 3 --section SpeedOfLight --section Occupancy \
    --section SchedulerStats --section WarpStateStats --section MemoryWorkloadAnalysis --section LaunchStats \
    python3 bench/h200_bwd_grid.py "$OUT" paper-7b levers 1,3,12 > "$OUT/ncu.txt" 2>&1
grep -E "m2rnn_bwd|Duration|Registers Per|Achieved Occupancy|Issued Warp|Eligible Warps|No Eligible|L1/TEX Hit|L2 Hit|Stall" "$OUT/ncu.txt" | head -40

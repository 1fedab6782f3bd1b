#!/usr/bin/env bash
# A kernel patch against the tree it applies to, in one device call: the same grid of backward
# configs (default `shipped`: every backward entry of profiles/nvidia-h200) validated and timed by
# bench/h200_bwd_grid.py in the base tree and in a copy with PATCH applied, alternately, ROUNDS
# times per shape, then one table of base / patched medians and their ratio. A config the patch does
# not touch (the other family's) is the control: its ratio says how much the two trees' runs drift.
# With TESTS=1 the GPU-marked backward kernel tests run first in the patched tree.
# From the repo root, the Optuna wheels in .whl/:
#   OUT=... PATCH=bench/results/2026-12-02-cpu-sass-chunk-rows/chunk_rows.patch SHAPES="paper-7b" bash bench/h200_patch_ab.sh
set -u
: "${OUT:?}" "${PATCH:?}"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
BASE=$(pwd)
PATCHED=/tmp/m2tune-patched
rm -rf "$PATCHED" && mkdir -p "$PATCHED" && cp -r . "$PATCHED/" && rm -rf "$PATCHED/.whl"
(cd "$PATCHED" && { patch -p1 --quiet < "$BASE/$PATCH" || git apply "$BASE/$PATCH"; }) || { echo "patch does not apply"; exit 1; }
nvidia-smi --query-gpu=name,clocks.max.sm,temperature.gpu --format=csv,noheader > "$OUT/gpu.txt"
if [ "${TESTS:-0}" = 1 ]; then
    (cd "$PATCHED" && PYTHONPATH=/tmp/site:. timeout 200 python3 -m pytest -q -p no:warnings -rfE -m gpu \
        tests/test_bwd_kernel.py) > "$OUT/pytest_gpu_kernels_patched.txt" 2>&1
    tail -2 "$OUT/pytest_gpu_kernels_patched.txt"
fi
for s in ${SHAPES:-paper-7b}; do
    tag=$(echo "$s" | tr -d '=' | tr ',' '_')
    for round in $(seq 1 "${ROUNDS:-2}"); do
        for tree in base patched; do
            dir="$OUT/$tree-$round"; mkdir -p "$dir"
            root=$BASE; [ "$tree" = patched ] && root=$PATCHED
            (cd "$root" && PYTHONPATH=/tmp/site:. timeout "${GRID_LIMIT:-200}" python3 bench/h200_bwd_grid.py "$dir" "$s" \
                "${GRID:-shipped}") > "$dir/grid-$tag.log" 2>&1
            echo "$s round $round $tree: $(grep -c '"status": "ok"' "$dir/grid-$tag.log") configs ok"
        done
    done
done
python3 - "$OUT" <<'EOF'
import glob, json, statistics, sys
out = sys.argv[1]
runs = {}
for path in sorted(glob.glob(f"{out}/*-*/bwd_grid-*.json")):
    tree = path.split("/")[-2].split("-")[0]
    data = json.load(open(path))
    for row in data["rows"]:
        key = (data["shape"], row["kernel"], json.dumps(row["config"], sort_keys=True))
        runs.setdefault(key, {}).setdefault(tree, []).append(row)
table = []
for (shape, kernel, config), trees in runs.items():
    ms = {t: statistics.median(r["bwd_ms"] for r in rows if r.get("status") == "ok" and r.get("valid"))
          if any(r.get("status") == "ok" and r.get("valid") for r in rows) else None for t, rows in trees.items()}
    table.append({"shape": shape, "kernel": kernel, "config": json.loads(config), **{f"{t}_ms": v for t, v in ms.items()},
                  "valid": {t: all(r.get("valid") for r in rows) for t, rows in trees.items()},
                  "ratio": ms["base"] / ms["patched"] if ms.get("base") and ms.get("patched") else None})
json.dump(table, open(f"{out}/patch_ab.json", "w"), indent=2, sort_keys=True)
print(f"{'shape':<28} {'kernel':<15} {'base ms':>8} {'patched':>8} {'base/patched':>12}  valid")
for r in table:
    def f(v, width=8):
        return f"{v:{width}.3f}" if v else f"{'-':>{width}}"
    print(f"{r['shape']:<28} {r['kernel']:<15} {f(r.get('base_ms'))} {f(r.get('patched_ms'))} "
          f"{f(r['ratio'], 12)}  {r['valid']}")
EOF

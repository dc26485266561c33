#!/usr/bin/env bash
# One device call does it all: the GPU tests, then the side-by-side benchmark suite.
# Usage (on the GPU machine, from the repository root): bash benchmarks/device_run.sh [pytest args]
# Everything lands under $OUT (default ./device-out): logs, the benchmark JSON/markdown/PNG.
set -uo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 FUSERAY_CACHE_DIR=$(mktemp -d)
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; } > "$OUT/machine.txt"
python3 -m pytest tests -m gpu -q -p no:cacheprovider -x "$@" 2>&1 | tail -n 60 > "$OUT/gpu-tests.log"
tail -n 3 "$OUT/gpu-tests.log"
timeout 420 python3 benchmarks/gpu.py --json "$OUT/bench.json" --png "$OUT/bench.png" \
    --markdown "$OUT/bench.md" > "$OUT/bench.log" 2>&1
tail -n 25 "$OUT/bench.log"

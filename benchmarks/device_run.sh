#!/usr/bin/env bash
# One device call does it all: the GPU tests, a host-overhead profile, then the side-by-side
# benchmark suite. Usage (on the GPU machine, from the repository root):
#   OUT=dir bash benchmarks/device_run.sh
# Everything lands under $OUT: logs, the benchmark JSON/markdown/PNG. Each part has a time
# limit (seconds: TESTS_T, BENCH_T) so that what finished comes back.
set -uo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 FUSERAY_CACHE_DIR=$(mktemp -d)
export XLA_PYTHON_CLIENT_PREALLOCATE=false
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; } > "$OUT/machine.txt"
timeout "${TESTS_T:-150}" python3 -m pytest tests/cuda -m gpu -q -p no:cacheprovider -rf \
    --tb=line > "$OUT/gpu-tests.log" 2>&1
tail -n 12 "$OUT/gpu-tests.log"
python3 - > "$OUT/profile.txt" 2>&1 <<'PY'
import cProfile, pstats, numpy as np, fuseray as fr
a, b, c = (fr.asarray(np.random.default_rng(i).standard_normal(4096, dtype=np.float32))
           for i in range(3))
f = fr.jit(lambda a, b, c: a * b + c)
for _ in range(200):
    f(a, b, c)
fr.synchronize()
cProfile.run("for _ in range(2000): f(a, b, c)", "/tmp/prof")
fr.synchronize()
pstats.Stats("/tmp/prof").sort_stats("tottime").print_stats(18)
PY
timeout "${BENCH_T:-200}" python3 benchmarks/gpu.py --repeat 10 --loop-blocks 2 \
    --frameworks fuseray,fuseray.fast,numpy,cupy,cupy.fuse,torch,torch.compile,jax.jit \
    --json "$OUT/bench.json" --png "$OUT/bench.png" --markdown "$OUT/bench.md" > "$OUT/bench.log" 2>&1
tail -n 30 "$OUT/bench.log"

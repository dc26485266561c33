#!/usr/bin/env bash
# One script for the GPU machine: the GPU tests, a host-overhead profile, then the side-by-side
# benchmark suite. Usage (from the repository root):
#   OUT=dir PARTS="tests bench" bash benchmarks/device_run.sh
#   OUT=dir PARTS=probe PROBES="rowsched hostcost" bash benchmarks/device_run.sh
# FRAMEWORKS (comma-separated) narrows the suite, e.g. to leave out NumPy's slow CPU runs;
# WORKLOADS (comma-separated) narrows it to some workloads; TESTS (test paths) narrows the tests.
# Everything lands under $OUT: logs, the benchmark JSON/markdown/PNG. Each part has a time
# limit (seconds: TESTS_T, BENCH_T, PROBE_T) so that what finished comes back. A device call is limited
# to 10 minutes: run PARTS=tests and PARTS=bench as two calls.
set -uo pipefail
OUT=${OUT:-device-out}
PARTS=${PARTS:-tests bench}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 FUSERAY_CACHE_DIR=$(mktemp -d)
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# CI compiles every planned kernel for sm_80/sm_90 without a GPU; here the tests run them
export FUSERAY_COMPILE_ALL=0
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; } > "$OUT/machine.txt"

if [[ " $PARTS " == *" tests "* ]]; then
    # shellcheck disable=SC2086
    timeout "${TESTS_T:-420}" python3 -m pytest ${TESTS:-tests/cuda} -m gpu -q -p no:cacheprovider -rfs \
        --tb=short > "$OUT/gpu-tests.log" 2>&1
    tail -n 15 "$OUT/gpu-tests.log"
fi

if [[ " $PARTS " == *" bench "* ]]; then
    # a kernel cache of its own: the tests' kernels would make the suite's first calls cache hits
    export FUSERAY_CACHE_DIR=$(mktemp -d)
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
    timeout "${BENCH_T:-540}" python3 benchmarks/gpu.py --repeat 20 --loop-blocks 4 \
        ${WORKLOADS:+--workloads "$WORKLOADS"} \
        --frameworks "${FRAMEWORKS:-fuseray,fuseray.fast,numpy,cupy,cupy.fuse,torch,torch.compile,jax.jit}" \
        --json "$OUT/bench.json" --png "$OUT/bench.png" --markdown "$OUT/bench.md" \
        > "$OUT/bench.log" 2>&1
    tail -n 40 "$OUT/bench.log"
fi

if [[ " $PARTS " == *" probe "* ]]; then
    # benchmarks/probe.py's sections (NOTES.md names the one each entry used)
    # shellcheck disable=SC2086
    timeout "${PROBE_T:-300}" python3 benchmarks/probe.py ${PROBES:-rowsched hostcost} \
        > "$OUT/probe.log" 2>&1
    tail -n 40 "$OUT/probe.log"
fi

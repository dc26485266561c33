"""Run every BENCHMARKS.md workload twice through ``fr.jit`` (compile, then a warm call), so that a
profiler can read the kernels' own times and DRAM throughput:

    ncu --clock-control none -k regex:fr_ --metrics gpu__time_duration.sum,\\
        dram__throughput.avg.pct_of_peak_sustained_elapsed python benchmarks/cuda_kernels.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads  # noqa: E402


def _bind(xp, fn, kw):
    def call(*arrays):  # a closure: jit sees only array arguments
        return fn(xp, *arrays, **kw)

    return call


def main(n: int = 1 << 26) -> None:
    import fuseray as fr

    rng = np.random.default_rng(0)
    for name, fn in workloads.WORKLOADS.items():
        kw = {"erf": fr.special.erf} if name == "black_scholes" else {}
        xs = [fr.asarray(a) for a in workloads.inputs(name, n, rng)]
        f = fr.jit(_bind(fr, fn, kw))
        for _ in range(2):
            f(*xs)
        fr.synchronize()
        print(name, "done", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 26)

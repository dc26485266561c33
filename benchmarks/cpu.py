"""CPU benchmark: NumPy, numexpr and fuseray's numba backend side by side, 10M float32.

Usage: ``python benchmarks/cpu.py OUT.json [--n N] [--runs R] [--only triad,gelu]``

For each workload (``shared/BENCHMARKS.md``: triad, gelu, black_scholes with call and put,
softmax over rows of 1024, layernorm over rows of 1024) this prints and saves: the median of
``--runs`` timed calls (after a warm-up) per framework, the ratio of fuseray to NumPy and to
numexpr, fuseray's first-call time in a fresh process with an empty kernel cache (compile), and
its first-call time in another fresh process that finds the kernels on disk (cached). Inputs are
standard normal float32 (positive where the formula needs it: Black-Scholes prices and times).
fuseray is timed as a user runs it: the inputs are fuseray arrays created beforehand, and the
timed call is a ``@fr.jit`` function call that returns computed arrays.

numexpr has no erf and no axis reductions: its Black-Scholes uses the Abramowitz-Stegun 7.1.26
erf polynomial (what numexpr users write), and its softmax/layernorm compute the row reductions
with NumPy and the elementwise parts with numexpr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workloads import ROW, R, V, black_scholes, gelu, layernorm, softmax, triad  # noqa: E402


def inputs(name: str, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    normal = lambda shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    if name == "triad":
        return [normal(n), normal(n), normal(n)]
    if name == "gelu":
        return [normal(n)]
    if name == "black_scholes":
        s = (np.abs(normal(n)) * 20 + 10).astype(np.float32)
        x = (np.abs(normal(n)) * 20 + 10).astype(np.float32)
        t = (np.abs(normal(n)) + 0.1).astype(np.float32)
        return [s, x, t]
    rows = n // ROW
    if name == "softmax":
        return [normal((rows, ROW))]
    if name == "layernorm":
        return [normal((rows, ROW)), normal(ROW)]
    raise KeyError(name)


# -- the workloads: the same definitions the GPU suite and the fusion tests use ----------------

WORKLOADS = {"triad": triad, "gelu": gelu, "black_scholes": black_scholes, "softmax": softmax,
             "layernorm": layernorm}
MIN_BYTES = {"triad": 16, "gelu": 8, "black_scholes": 20, "softmax": 8, "layernorm": 8}


def numpy_erf():
    try:
        import scipy.special

        return scipy.special.erf
    except ImportError:  # exact but slow: NumPy has no erf
        import math

        return np.frompyfunc(math.erf, 1, 1)


def numpy_fn(name):
    fn = WORKLOADS[name]
    if name == "black_scholes":
        erf = numpy_erf()

        def bs(s, x, t):
            return fn(np, s, x, t, lambda z: np.asarray(erf(z), dtype=np.float32))

        return bs
    return lambda *a: fn(np, *a)


def numexpr_fn(name):
    import numexpr as ne

    f32 = np.float32
    if name == "triad":
        return lambda a, b, c: ne.evaluate("a * b + c", {"a": a, "b": b, "c": c})
    if name == "gelu":
        expr = "0.5 * x * (1 + tanh(0.7978845608 * (x + 0.044715 * x * x * x)))"
        return lambda x: ne.evaluate(expr, {"x": x})
    if name == "black_scholes":
        # numexpr has no erf: the normal CDF from Abramowitz-Stegun 7.1.26, as its users write it
        cdf = ("where(d >= 0, 1 - h, h)", "0.5 * exp(-0.5 * d * d) * (0.254829592 * k"
               " - 0.284496736 * k ** 2 + 1.421413741 * k ** 3 - 1.453152027 * k ** 4"
               " + 1.061405429 * k ** 5)", "1 / (1 + 0.3275911 * abs(d) * 0.7071067811865476)")

        def phi(d):
            k = ne.evaluate(cdf[2], {"d": d})
            return ne.evaluate(cdf[0], {"d": d, "h": ne.evaluate(cdf[1], {"d": d, "k": k})})

        def bs(s, x, t):
            env = {"s": s, "x": x, "t": t, "R": f32(R), "V": f32(V)}
            d1 = ne.evaluate("(log(s / x) + (R + 0.5 * V * V) * t) / (V * sqrt(t))", env)
            d2 = ne.evaluate("d1 - V * sqrt(t)", {"d1": d1, "t": t, "V": f32(V)})
            env.update(c1=phi(d1), c2=phi(d2))
            call = ne.evaluate("s * c1 - x * exp(-R * t) * c2", env)
            put = ne.evaluate("x * exp(-R * t) * (1 - c2) - s * (1 - c1)", env)
            return call, put

        return bs
    if name == "softmax":  # numexpr has no axis reductions: NumPy does those
        def softmax_ne(x):
            e = ne.evaluate("exp(x - m)", {"x": x, "m": x.max(axis=1, keepdims=True)})
            return ne.evaluate("e / s", {"e": e, "s": e.sum(axis=1, keepdims=True)})

        return softmax_ne
    if name == "layernorm":
        def layernorm_ne(x, g):
            mean = x.mean(axis=1, keepdims=True)
            sq = ne.evaluate("(x - mean) ** 2", {"x": x, "mean": mean})
            env = {"x": x, "mean": mean, "var": sq.mean(axis=1, keepdims=True), "g": g}
            return ne.evaluate("(x - mean) / sqrt(var + 1e-5) * g", env)

        return layernorm_ne
    raise KeyError(name)


def fuseray_fn(name):
    import fuseray as fr

    fn = WORKLOADS[name]
    if name == "black_scholes":
        return fr.jit(lambda s, x, t: fn(fr, s, x, t, fr.special.erf))
    return fr.jit(lambda *a: fn(fr, *a))


def timed(call, args, runs: int) -> list[float]:
    call(*args)  # warm-up (compiles)
    out = []
    for _ in range(runs):
        # results of the previous run are freed before the next (cyclic garbage included), so
        # every framework allocates its outputs from recycled memory, none from fresh pages
        gc.collect()
        t0 = time.perf_counter()
        call(*args)
        out.append(time.perf_counter() - t0)
    return out


FIRST_CALL_N = 1 << 16  # small, so that first-call times measure compiling, not page faults


def first_call(name: str, cache_dir: str) -> float:
    """Seconds of the first fuseray call (trace, plan, compile or load, run) in a fresh process
    using ``cache_dir``, on ``FIRST_CALL_N`` elements."""
    env = dict(os.environ, FUSERAY_CACHE_DIR=cache_dir, FUSERAY_CPU_BACKEND="numba")
    here = os.path.dirname(os.path.abspath(__file__))
    code = f"""
import sys, time
sys.path.insert(0, {here!r})
import cpu, fuseray as fr
xs = [fr.asarray(a) for a in cpu.inputs({name!r}, {FIRST_CALL_N})]
f = cpu.fuseray_fn({name!r})
import numba
numba.njit(lambda: 0)()  # numba's own start-up is not fuseray's compile time
t = time.perf_counter()
out = f(*xs)
[o.compute() for o in (out if isinstance(out, tuple) else (out,))]
print(time.perf_counter() - t)
"""
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return float(res.stdout.strip().splitlines()[-1])


def run(names, n: int, runs: int) -> dict:
    import fuseray as fr

    try:
        import numexpr  # noqa: F401
        have_ne = True
    except ImportError:
        have_ne = False
    results = {}
    for name in names:
        arrays = inputs(name, n)
        row = {"bytes": MIN_BYTES[name] * n}
        row["numpy"] = statistics.median(timed(numpy_fn(name), arrays, runs))
        if have_ne:
            row["numexpr"] = statistics.median(timed(numexpr_fn(name), arrays, runs))
        f = fuseray_fn(name)

        def fr_call(*xs, f=f):
            out = f(*xs)
            for o in out if isinstance(out, tuple) else (out,):
                o.compute()

        row["fuseray"] = statistics.median(timed(fr_call, [fr.asarray(a) for a in arrays], runs))
        with tempfile.TemporaryDirectory() as cache:
            row["fuseray_first_call_compile"] = first_call(name, cache)
            row["fuseray_first_call_cached"] = first_call(name, cache)
        row["vs_numpy"] = row["numpy"] / row["fuseray"]
        if have_ne:
            row["vs_numexpr"] = row["numexpr"] / row["fuseray"]
        results[name] = row
        print_row(name, row, have_ne)
    return results


def print_row(name: str, row: dict, have_ne: bool) -> None:
    ms = lambda k: f"{row[k] * 1e3:9.2f}" if k in row else f"{'-':>9}"  # noqa: E731
    gbs = row["bytes"] / row["fuseray"] / 1e9
    ne_ratio = f"{row['vs_numexpr']:8.2f}x" if have_ne else f"{'-':>9}"
    print(f"{name:14s}{ms('numpy')}{ms('numexpr')}{ms('fuseray')}  {gbs:6.1f}"
          f"  {row['vs_numpy']:8.2f}x{ne_ratio}  {row['fuseray_first_call_compile']:8.2f}"
          f"  {row['fuseray_first_call_cached'] * 1e3:8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="JSON file to write")
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--only", default=",".join(WORKLOADS))
    args = ap.parse_args()
    import numba

    print(f"CPU: {os.cpu_count()} cores, numba threads {numba.get_num_threads()}, "
          f"N = {args.n:,} float32, median of {args.runs} runs (ms)")
    print(f"{'workload':14s}{'numpy':>9}{'numexpr':>9}{'fuseray':>9}  {'GB/s':>6}  "
          f"{'vs numpy':>9}{'vs ne':>9}  {'compile s':>8}  {'cached ms':>8}")
    results = run(args.only.split(","), args.n, args.runs)
    meta = {"n": args.n, "runs": args.runs, "cores": os.cpu_count(),
            "numba_threads": numba.get_num_threads(), "unit": "seconds (median)"}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()

"""Quick GPU check of the CUDA backend: bandwidth of the BENCHMARKS.md workloads vs PyTorch.

    python benchmarks/cuda_bandwidth.py [--n 67108864] [--json out.json] [--variants]

Times every workload through ``fr.jit`` and PyTorch eager with CUDA events on the legacy default
stream (which fuseray and PyTorch share by default): warm-up, then the median of 20 single calls
(so a call's Python overhead counts when it exceeds the kernel). Reports GB/s over the fewest
bytes each workload must move and % of the same run's device-to-device copy bandwidth; then the
per-call cost of a cached jit call on 4096 elements (small_triad), the first call of a new kernel
and the compiles a new size causes. ``--variants`` also times triad and sumsq under other launch
choices (``fuseray.schedule`` knobs), checking each result. For the full side-by-side suite with
every peer, see ``benchmarks/gpu.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads  # noqa: E402


def events_median(fn, repeat=20, warmup=3):
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return statistics.median(times)


def copy_bandwidth(torch, n: int) -> float:
    """Device-to-device copy of n float32 (bytes read + written per second)."""
    src = torch.empty(n, dtype=torch.float32, device="cuda").normal_()
    dst = torch.empty_like(src)
    return 2 * 4 * n / events_median(lambda: dst.copy_(src)) / 1e9


def _bind(xp, fn, kw):
    """``fn`` over arrays of ``xp`` (a closure, so that jit sees only array arguments)."""

    def call(*arrays):
        return fn(xp, *arrays, **kw)

    return call


def torch_version(name):
    """PyTorch eager forms of the workloads (torch's max/mean take ``dim``, not ``axis``)."""
    import torch

    if name == "softmax":
        return lambda m: torch.softmax(m, dim=1)
    if name == "layernorm":

        def layernorm(m, g):
            mean = m.mean(dim=1, keepdim=True)
            var = ((m - mean) ** 2).mean(dim=1, keepdim=True)
            return (m - mean) / torch.sqrt(var + 1e-5) * g

        return layernorm
    if name == "colsum":
        return lambda m, g: (m * g).sum(dim=0)
    kw = {"erf": torch.special.erf} if name == "black_scholes" else {}
    return _bind(torch, workloads.WORKLOADS[name], kw)


def time_workload(fr, name, xs, nbytes, copy_gbs, fn=None):
    if fn is None:
        kw = {"erf": fr.special.erf} if name == "black_scholes" else {}
        fn = _bind(fr, workloads.WORKLOADS[name], kw)
    jitted = fr.jit(fn)
    t0 = time.perf_counter()
    out = jitted(*xs)
    fr.synchronize()
    first = time.perf_counter() - t0
    t = events_median(lambda: jitted(*xs))
    return out, {
        "fuseray_ms": t * 1e3,
        "fuseray_GBs": nbytes / t / 1e9,
        "fuseray_pct_copy": 100 * nbytes / t / 1e9 / copy_gbs,
        "first_call_ms": first * 1e3,
    }


def variants(fr, n, copy_gbs, rng):
    """triad and sumsq under other schedules; every result is checked against NumPy."""
    from fuseray import schedule

    rows = []
    host = workloads.inputs("triad", n, rng)
    ref = host[0][::997] * host[1][::997] + host[2][::997]
    plain = [fr.asarray(a) for a in host]
    # the same data at staggered addresses: one buffer, sliced in the function 4 KiB + 256 B apart
    pad = 1024 + 64
    big = np.empty(3 * (n + pad), np.float32)
    for k, a in enumerate(host):
        big[k * (n + pad) : k * (n + pad) + n] = a
    fbig = [fr.asarray(big)]
    o1, o2 = n + pad, 2 * (n + pad)

    def staggered(b):
        return b[:n] * b[o1 : o1 + n] + b[o2 : o2 + n]

    defaults = (schedule.ELEMENTWISE_UNROLL, schedule.ELEMENTWISE_WAVES, schedule.REDUCE_UNROLL)
    for unroll, waves, inputs, label in [
        (1, 4, plain, "u1 w4"),
        (1, 10**6, plain, "u1 w-all"),
        (2, 4, plain, "u2 w4"),
        (4, 4, plain, "u4 w4"),
        (4, 10**6, plain, "u4 w-all"),
        (1, 4, fbig, "u1 w4 staggered"),
        (4, 4, fbig, "u4 w4 staggered"),
    ]:
        schedule.ELEMENTWISE_UNROLL, schedule.ELEMENTWISE_WAVES = unroll, waves
        fn = staggered if inputs is fbig else None
        out, row = time_workload(fr, "triad", inputs, 16 * n, copy_gbs, fn)
        # fused multiply-add rounds once where NumPy rounds twice: compare with a tolerance
        ok = np.allclose(fr.asnumpy(out[::997]), ref, rtol=1e-5, atol=1e-6)
        rows.append({"variant": f"triad {label}", "ok": bool(ok), **row})
        print(json.dumps(rows[-1]), flush=True)
    schedule.ELEMENTWISE_UNROLL, schedule.ELEMENTWISE_WAVES = defaults[:2]
    x = workloads.inputs("sumsq", n, rng)[0]
    fx = fr.asarray(x)
    expect = float((x.astype(np.float64) ** 2).sum())
    for unroll in (4, 8, 16):
        schedule.REDUCE_UNROLL = unroll
        out, row = time_workload(fr, "sumsq", [fx], 4 * n, copy_gbs)
        ok = abs(float(out) - expect) < 1e-4 * expect
        rows.append({"variant": f"sumsq unroll {unroll}", "ok": bool(ok), **row})
        print(json.dumps(rows[-1]), flush=True)
    schedule.REDUCE_UNROLL = defaults[2]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1 << 26)
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default="")
    ap.add_argument("--variants", action="store_true")
    args = ap.parse_args()

    import torch

    import fuseray as fr
    from fuseray.backends.cuda import driver
    from fuseray.backends.cuda.cache import default_cache

    n = args.n
    props = driver.device_props(driver.current_device())
    copy_gbs = copy_bandwidth(torch, n)
    rows = []
    names = [w for w in workloads.WORKLOADS if not args.only or w in args.only.split(",")]
    rng = np.random.default_rng(0)
    for name in names:
        host = workloads.inputs(name, n, rng)
        nbytes = workloads.MIN_BYTES_PER_ELEMENT[name] * n
        xs = [fr.asarray(a) for a in host]
        _, row = time_workload(fr, name, xs, nbytes, copy_gbs)
        ts = [torch.from_numpy(a).cuda() for a in host]
        tfn = torch_version(name)
        t_torch = events_median(lambda tfn=tfn, ts=ts: tfn(*ts))
        row = {"workload": name, **row, "torch_eager_GBs": nbytes / t_torch / 1e9}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del xs, ts, host

    # per-call overhead of a cached jit call on 4096 elements
    a, b, c = (
        fr.asarray(np.random.default_rng(i).standard_normal(4096, np.float32)) for i in range(3)
    )
    small = fr.jit(lambda a, b, c: a * b + c)
    for _ in range(200):
        small(a, b, c)
    fr.synchronize()
    calls = 3000
    t0 = time.perf_counter()
    for _ in range(calls):
        small(a, b, c)
    fr.synchronize()
    small_us = (time.perf_counter() - t0) / calls * 1e6

    # a new kernel's first call, and compiles caused by a new size
    x = fr.asarray(np.ones(1 << 20, np.float32))
    fresh = fr.jit(lambda a, b: fr.cos(a) * 0.7 - fr.exp(b) * a)
    t0 = time.perf_counter()
    fresh(x, x)
    fr.synchronize()
    new_kernel_ms = (time.perf_counter() - t0) * 1e3
    before = default_cache().stats.compiles
    y = fr.asarray(np.ones(12345, np.float32))
    fresh(y, y)
    fr.synchronize()
    new_size_compiles = default_cache().stats.compiles - before

    extra = variants(fr, n, copy_gbs, rng) if args.variants else []
    summary = {
        "gpu": props.name,
        "n": n,
        "copy_GBs": copy_gbs,
        "workloads": rows,
        "variants": extra,
        "small_triad_us_per_call": small_us,
        "new_kernel_first_call_ms": new_kernel_ms,
        "compiles_for_new_size": new_size_compiles,
        "cache": str(default_cache().stats),
    }
    print(f"\n{props.name}: copy {copy_gbs:.0f} GB/s (read+write), N = {n}")
    print(f"{'workload':<16}{'ms':>9}{'GB/s':>9}{'%copy':>7}{'torch':>9}{'1st ms':>9}")
    for r in rows:
        print(
            f"{r['workload']:<16}{r['fuseray_ms']:>9.3f}{r['fuseray_GBs']:>9.0f}"
            f"{r['fuseray_pct_copy']:>7.1f}{r['torch_eager_GBs']:>9.0f}"
            f"{r['first_call_ms']:>9.0f}"
        )
    for r in extra:
        print(
            f"{r['variant']:<24}{r['fuseray_ms']:>9.3f}{r['fuseray_GBs']:>9.0f}"
            f"{r['fuseray_pct_copy']:>7.1f}  ok={r['ok']}"
        )
    print(
        f"small_triad: {small_us:.2f} us/call; new kernel first call {new_kernel_ms:.0f} ms;"
        f" compiles for a new size: {new_size_compiles}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

"""GPU benchmark suite: fuseray side by side with NumPy, CuPy, cupy.fuse, PyTorch, torch.compile
and jax.jit on the workloads of BENCHMARKS.md, in one run on one GPU.

    python benchmarks/gpu.py --json out.json --png out.png --markdown out.md

For every workload and every installed framework it checks the result against a float64 NumPy
reference, then times it: warm-up first, then the median of ``--repeat`` timed batches, each
at least ``BATCH_SECONDS`` of calls followed by a device synchronisation (so host clocks measure
device time, and the host latency of a batch's first call is spread over many). It reports
median ms, effective GB/s (the fewest bytes the workload must move, BENCHMARKS.md), % of the same
run's device-to-device copy bandwidth, first-call ms (compile latency) and peak device memory.
Every GPU framework's per-call time on 4096 elements (small_triad). fuseray's own extras: the
compile time of a new kernel, a new process's first call with a warm disk cache, compilations
caused by a new size, and time per step of a 10,000-step lazy loop.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads  # noqa: E402

WORKLOAD_NAMES = list(workloads.WORKLOADS)


# ---------------------------------------------------------------------------------------------
# frameworks: each gives (to_device, make_fn, synchronize, peak_memory) for a workload
# ---------------------------------------------------------------------------------------------


class Framework:
    name: str
    supports: set[str] = set(WORKLOAD_NAMES)

    def to_device(self, a: np.ndarray):
        raise NotImplementedError

    def to_numpy(self, x) -> np.ndarray:
        raise NotImplementedError

    def make(self, workload: str) -> Callable:
        raise NotImplementedError

    def function(self, workload: str) -> Callable:
        """``make(workload)``, once per framework and workload, so that the table and the
        pairing time one compiled function (a second ``torch.compile`` of a function is a
        second compile, with its own choices)."""
        made = self.__dict__.setdefault("_made", {})
        if workload not in made:
            made[workload] = self.make(workload)
        return made[workload]

    def sync(self) -> None:
        pass

    def reset_peak(self) -> None:
        pass

    def peak_bytes(self) -> int | None:
        return None

    def free(self) -> None:
        pass

    def settle(self) -> None:
        """Let work the first call started in the background finish before timing."""


class NumPyFW(Framework):
    name = "numpy"

    def to_device(self, a):
        return a

    def to_numpy(self, x):
        return np.asarray(x)

    def make(self, workload):
        fn = workloads.WORKLOADS[workload]
        return lambda *a: fn(np, *a)


class CuPyFW(Framework):
    name = "cupy"

    def __init__(self):
        import cupy
        import cupyx.scipy.special

        self.cp, self.erf = cupy, cupyx.scipy.special.erf

    def to_device(self, a):
        return self.cp.asarray(a)

    def to_numpy(self, x):
        return self.cp.asnumpy(x)

    def make(self, workload):
        fn = workloads.WORKLOADS[workload]
        if workload == "black_scholes":
            return lambda *a: fn(self.cp, *a, erf=self.erf)
        return lambda *a: fn(self.cp, *a)

    def sync(self):
        self.cp.cuda.Device().synchronize()

    def reset_peak(self):
        self.cp.get_default_memory_pool().free_all_blocks()
        self._base = self.cp.get_default_memory_pool().total_bytes()

    def peak_bytes(self):
        # CuPy's pool keeps every block it allocated: its total is the high-water mark
        return self.cp.get_default_memory_pool().total_bytes()

    def free(self):
        self.cp.get_default_memory_pool().free_all_blocks()


class CuPyFuseFW(CuPyFW):
    name = "cupy.fuse"
    supports = {"triad", "chain20", "gelu", "black_scholes", "sumsq"}  # no axis reductions

    def make(self, workload):
        fn = workloads.WORKLOADS[workload]
        # cupy.fuse names the kernel after the function: a lambda's name is no C identifier
        fuse = self.cp.fuse(kernel_name=f"bench_{workload}")
        if workload == "black_scholes":
            return fuse(lambda *a: fn(self.cp, *a, erf=self.erf))
        return fuse(lambda *a: fn(self.cp, *a))


def _torch_fns():
    import torch

    def softmax(m):
        e = torch.exp(m - m.amax(dim=1, keepdim=True))
        return e / e.sum(dim=1, keepdim=True)

    def layernorm(m, g):
        mean = m.mean(dim=1, keepdim=True)
        var = ((m - mean) ** 2).mean(dim=1, keepdim=True)
        return (m - mean) / torch.sqrt(var + 1e-5) * g

    return {
        "triad": lambda a, b, c: workloads.triad(torch, a, b, c),
        "chain20": lambda y: workloads.chain20(torch, y),
        "gelu": lambda x: workloads.gelu(torch, x),
        "black_scholes": lambda s, x, t: workloads.black_scholes(torch, s, x, t, erf=torch.erf),
        "sumsq": lambda x: (x * x).sum(),
        "softmax": softmax,
        "layernorm": layernorm,
        "colsum": lambda m, g: (m * g).sum(dim=0),
    }


class TorchFW(Framework):
    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.fns = _torch_fns()

    def to_device(self, a):
        return self.torch.from_numpy(a).cuda()

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    def make(self, workload):
        return self.fns[workload]

    def sync(self):
        self.torch.cuda.synchronize()

    def reset_peak(self):
        self.torch.cuda.empty_cache()
        self.torch.cuda.reset_peak_memory_stats()

    def peak_bytes(self):
        return self.torch.cuda.max_memory_allocated()

    def free(self):
        self.torch.cuda.empty_cache()


class TorchCompileFW(TorchFW):
    name = "torch.compile"

    def make(self, workload):
        return self.torch.compile(self.fns[workload])


class JaxFW(Framework):
    name = "jax.jit"

    def __init__(self):
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        import jax
        import jax.numpy as jnp
        import jax.scipy.special

        self.jax, self.jnp, self.erf = jax, jnp, jax.scipy.special.erf
        self.device = jax.devices("gpu")[0]

    def to_device(self, a):
        return self.jax.device_put(a, self.device)

    def to_numpy(self, x):
        return np.asarray(x)

    def make(self, workload):
        fn = workloads.WORKLOADS[workload]
        if workload == "black_scholes":
            return self.jax.jit(lambda *a: fn(self.jnp, *a, erf=self.erf))
        return self.jax.jit(lambda *a: fn(self.jnp, *a))

    def sync(self):
        self.jax.effects_barrier()
        (self.jnp.zeros(1, device=self.device) + 0).block_until_ready()

    def peak_bytes(self):
        stats = self.device.memory_stats() or {}
        return stats.get("peak_bytes_in_use")


class FuserayFW(Framework):
    name = "fuseray"

    def __init__(self):
        import fuseray as fr

        self.fr = fr

    def to_device(self, a):
        return self.fr.asarray(a)

    def to_numpy(self, x):
        return self.fr.asnumpy(x)

    def make(self, workload):
        fn = workloads.WORKLOADS[workload]
        return self.fr.jit(lambda *a: fn(self.fr, *a))

    def sync(self):
        self.fr.synchronize()

    def settle(self):
        # new kernels start on a quick build (fr.config.tiered_compile); time the optimised one
        self.fr.cuda.wait_for_compiles()

    def reset_peak(self):
        if self.fr.cuda.is_available():  # peak device memory: a CUDA pool's statistic
            self.fr.cuda.reset_peak_memory()

    def peak_bytes(self):
        return self.fr.cuda.peak_memory() if self.fr.cuda.is_available() else None


class FuserayFastMathFW(FuserayFW):
    """fuseray with ``fr.config.fast_math`` (NVRTC --use_fast_math: approximate transcendentals
    and division, flush-to-zero), the trade torch.compile's and XLA's defaults make; the
    rel_error column says what it costs."""

    name = "fuseray.fast"

    def make(self, workload):
        fn = super().make(workload)
        config = self.fr.config

        def call(*args):
            before, config.fast_math = config.fast_math, True
            try:
                return fn(*args)
            finally:
                config.fast_math = before

        return call


FRAMEWORKS = {
    "fuseray": FuserayFW, "fuseray.fast": FuserayFastMathFW, "numpy": NumPyFW, "cupy": CuPyFW,
    "cupy.fuse": CuPyFuseFW,
    "torch": TorchFW, "torch.compile": TorchCompileFW, "jax.jit": JaxFW,
}


# ---------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------


def as_tuple(x):
    return x if isinstance(x, (tuple, list)) else (x,)


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    got = got.astype(np.float64)
    if not np.all(np.isfinite(got)):
        return math.inf
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


# A timed batch of device work lasts at least this long: a batch starts on an idle device, so
# the first call's host latency (launch and Python: 10-70 us per framework) is exposed once per
# batch; over 5 calls of a 65 us kernel (sumsq on an H200) that was 6% of the time measured.
BATCH_SECONDS = 4e-3


def batch_size(call: Callable, sync: Callable, least: int = 5, most: int = 500) -> int:
    """Calls per timed batch: enough for ``BATCH_SECONDS`` of work, from a timed batch of 3."""
    sync()
    start = time.perf_counter()
    for _ in range(3):
        call()
    sync()
    per_call = (time.perf_counter() - start) / 3
    return max(least, min(most, math.ceil(BATCH_SECONDS / max(per_call, 1e-9))))


def time_calls(call: Callable, sync: Callable, repeat: int, batch: int | None = None) -> float:
    """Median seconds per call over ``repeat`` batches of ``batch`` calls each (None: sized by
    ``batch_size``)."""
    if batch is None:
        batch = batch_size(call, sync)
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        for _ in range(batch):
            call()
        sync()
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def paired_ratio_quartiles(times: list, base: list) -> tuple[float, float, float]:
    """Quartiles of ``times[r] / base[r]`` over rounds r (one value: all three equal it)."""
    ratios = [t / b for t, b in zip(times, base, strict=True)]
    if len(ratios) == 1:
        return ratios[0], ratios[0], ratios[0]
    q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q1, q2, q3


def interleaved_rounds(entries: dict, rounds: int, time_one: Callable,
                       shuffle: bool = True) -> dict:
    """label -> ``time_one(label, call, sync)`` of each (call, sync) of ``entries``, once a round
    for ``rounds`` rounds; ``shuffle`` takes them in a new (seeded) order every round, so that no
    entry always runs first and entries of one round share the machine's state of that moment."""
    import random

    times: dict = {label: [] for label in entries}
    order = list(entries)
    for r in range(rounds):
        if shuffle:
            random.Random(r).shuffle(order)
        for label in order:
            times[label].append(time_one(label, *entries[label]))
    return times


def batch_sizes(entries: dict) -> dict:
    """label -> ``batch_size`` of each (call, sync) of ``entries``."""
    return {label: batch_size(call, sync) for label, (call, sync) in entries.items()}


def interleaved_batches(entries: dict, rounds: int, batches: dict | None = None) -> dict:
    """``interleaved_rounds`` of one timed batch (seconds per call) each, every entry's batch
    sized once (or given: label -> calls per batch)."""
    if batches is None:
        batches = batch_sizes(entries)
    return interleaved_rounds(
        entries, rounds, lambda label, call, sync: time_calls(call, sync, 1, batches[label]))


PAIRED_PEERS = ("torch.compile", "jax.jit")


def paired_against_best_peer(frameworks: dict, workload: str, rows: dict, host_inputs,
                             rounds: int) -> dict | None:
    """fuseray against the faster (in ``rows``) of torch.compile and jax.jit on ``workload``,
    timed in interleaved rounds with an A/A pair (fuseray against itself).

    ``speed``: quartiles over rounds of the peer's time over fuseray's (above 1: fuseray is
    faster); ``aa``: the same for fuseray's second entry, whose spread around 1 is the noise of
    this pairing. The suite's own medians are taken one framework after another, minutes apart
    on a shared machine; a 1% difference there can be drift, here it is measured side by side.
    None when fuseray or both peers are missing or wrong."""
    peers = [n for n in PAIRED_PEERS if n in frameworks and rows.get(n, {}).get("correct")]
    if not peers or not rows.get("fuseray", {}).get("correct"):
        return None
    peer = min(peers, key=lambda n: rows[n]["median_ms"])
    entries = {}
    try:
        for name in ("fuseray", peer):
            fw = frameworks[name]
            call = evaluating(fw.function(workload), [fw.to_device(a) for a in host_inputs])
            call()
            fw.sync()
            fw.settle()
            entries[name] = (call, fw.sync)
        entries["fuseray (A/A)"] = entries["fuseray"]
        batches = batch_sizes(entries)
        # each side timed alone, in the batches the rounds use, just before and after them: a
        # pairing median far from these is interleaving's effect, not the machine's drift
        alone = lambda: {name: time_calls(*entries[name], 7, batches[name]) * 1e3  # noqa: E731
                         for name in ("fuseray", peer)}
        alone_before = alone()
        times = interleaved_batches(entries, rounds, batches)
        alone_after = alone()
    finally:
        entries.clear()
        for name in ("fuseray", peer):
            frameworks[name].free()
    return {"peer": peer, "rounds": rounds,
            "speed": paired_ratio_quartiles(times[peer], times["fuseray"]),
            "aa": paired_ratio_quartiles(times["fuseray (A/A)"], times["fuseray"]),
            "median_ms": {label: statistics.median(ts) * 1e3 for label, ts in times.items()},
            "alone_ms": {"before": alone_before, "after": alone_after},
            # per round, in the order ``interleaved_rounds`` took them (random.Random(round))
            "round_ms": {label: [t * 1e3 for t in ts] for label, ts in times.items()}}


def paired_verdict(p: dict) -> str:
    """The verdict of a pairing: "ahead" or "behind" when the middle half of its per-round
    speed ratios lies above or below 1, else "tie"."""
    q1, _, q3 = p["speed"]
    return "ahead" if q1 > 1 else "behind" if q3 < 1 else "tie"


def copy_ceiling(n: int) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second) of an n-float array."""
    import torch

    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    run = lambda: dst.copy_(src)  # noqa: E731
    for _ in range(3):
        run()
    return 2 * n * 4 / time_calls(run, torch.cuda.synchronize, 20)


def bench_workload(fw: Framework, workload: str, host_inputs, reference, repeat: int) -> dict:
    fn = fw.function(workload)
    args = [fw.to_device(a) for a in host_inputs]
    fw.sync()
    fw.reset_peak()
    start = time.perf_counter()
    out = fn(*args)
    [o.compute() if hasattr(o, "compute") else o for o in as_tuple(out)]
    fw.sync()
    first = time.perf_counter() - start
    errors = [rel_error(fw.to_numpy(o), r) for o, r in zip(as_tuple(out), as_tuple(reference))]
    del out
    fw.settle()
    call = evaluating(fn, args)
    # the timed code's own results are checked too (fuseray: the optimised build, not the quick
    # one the first call ran)
    errors += [rel_error(fw.to_numpy(o), r) for o, r in zip(as_tuple(call()), as_tuple(reference))]
    numpy = fw.name == "numpy"
    t = time_calls(call, fw.sync, 3 if numpy else repeat, 1 if numpy else None)
    peak = fw.peak_bytes()
    return {"first_ms": first * 1e3, "median_ms": t * 1e3, "rel_error": max(errors),
            "peak_mb": None if peak is None else peak / 1e6}


def evaluating(fn: Callable, args) -> Callable:
    """A call of ``fn(*args)`` that also evaluates lazy results (fuseray outside ``@jit``)."""

    def call():
        res = fn(*args)
        for r in as_tuple(res):
            if hasattr(r, "compute"):
                r.compute()
        return res

    return call


def small_triad_us(fw: Framework) -> float:
    """Microseconds per cached call of triad on 4096 elements: the host's cost of a call, since
    the device's work is a few microseconds and calls are queued 1000 to a batch."""
    fn = fw.make("triad")
    args = [fw.to_device(a) for a in workloads.inputs("triad", 4096, np.random.default_rng(7))]
    call = evaluating(fn, args)
    for _ in range(20):
        call()
    return time_calls(call, fw.sync, 20, 1000) * 1e6


def fuseray_extras(n: int, loop_blocks: int = 10) -> dict:
    """Overheads and compile behaviour of fuseray itself (small_triad is measured with the
    peers, in ``main``)."""
    import fuseray as fr

    out = {}

    # a new fused kernel: a constant no earlier kernel had forces fresh source
    fresh = fr.jit(lambda a, b: fr.sin(a) * 1.2345678 + b)
    x = fr.asarray(np.ones(1 << 20, np.float32))
    start = time.perf_counter()
    fresh(x, x).compute()
    fr.synchronize()
    first = time.perf_counter() - start
    fr.cuda.wait_for_compiles()  # the optimised build, compiled in the background
    out["optimised_build_ready_ms"] = (time.perf_counter() - start) * 1e3
    warm = time_calls(lambda: fresh(x, x).compute(), fr.synchronize, 10, 1)
    out["new_kernel_compile_ms"] = (first - warm) * 1e3

    # a new size compiles nothing
    def compiles():
        stats = fr.cuda.kernel_cache_stats()
        return stats["compiles"] + stats.get("quick_compiles", 0)

    before = compiles()
    fresh(fr.asarray(np.ones(12345, np.float32)), fr.asarray(np.ones(12345, np.float32))).compute()
    out["compiles_for_new_size"] = compiles() - before

    # a new process with the disk cache warm: first call vs warm call
    code = (
        "import time, numpy as np, fuseray as fr\n"
        "x = fr.asarray(np.ones(1 << 20, np.float32))\n"
        "f = fr.jit(lambda a, b: fr.sin(a) * 1.2345678 + b)\n"
        "t = time.perf_counter(); f(x, x).compute(); fr.synchronize()\n"
        "first = time.perf_counter() - t\n"
        "ts = []\n"
        "for _ in range(10):\n"
        "    t = time.perf_counter(); f(x, x).compute(); fr.synchronize()\n"
        "    ts.append(time.perf_counter() - t)\n"
        "print(first * 1e3, sorted(ts)[5] * 1e3)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=os.environ.copy(), check=True)
    first_ms, warm_ms = map(float, res.stdout.split()[-2:])
    out["new_process_first_call_ms"] = first_ms
    out["new_process_extra_ms"] = first_ms - warm_ms

    # a 10,000-step lazy stencil loop: time per step stays flat
    u = fr.asarray(np.random.default_rng(9).standard_normal(1 << 16, dtype=np.float32))
    per_block = []
    for _ in range(loop_blocks):
        start = time.perf_counter()
        for _ in range(1000):
            u = 0.25 * fr.concatenate([u[:1], u[:-2] + u[2:], u[-1:]]) + 0.5 * u
        fr.synchronize()
        per_block.append((time.perf_counter() - start) / 1000 * 1e6)
    u.compute()
    out["lazy_loop_us_per_step_by_1000"] = per_block
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1 << 26)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--workloads", default=",".join(WORKLOAD_NAMES))
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    p.add_argument("--json", default="benchmark.json")
    p.add_argument("--png", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--no-extras", dest="extras", action="store_false",
                   help="skip fuseray's overhead/compile/lazy-loop measurements")
    p.add_argument("--loop-blocks", type=int, default=10, help="blocks of 1000 lazy-loop steps")
    p.add_argument("--paired-rounds", type=int, default=15,
                   help="rounds of fuseray against the best of torch.compile / jax.jit, "
                   "interleaved, per workload (0: none)")
    args = p.parse_args(argv)

    os.environ.setdefault("FUSERAY_CACHE_DIR", tempfile.mkdtemp(prefix="fuseray-bench-"))
    frameworks = {}
    for name in args.frameworks.split(","):
        try:
            frameworks[name] = FRAMEWORKS[name]()
        except Exception as e:  # noqa: BLE001 - a missing peer is reported, not fatal
            print(f"skipping {name}: {type(e).__name__}: {e}", file=sys.stderr)

    import torch

    gpu = torch.cuda.get_device_name()
    ceiling = copy_ceiling(args.n)
    torch.cuda.empty_cache()
    results = {"gpu": gpu, "date": time.strftime("%Y-%m-%d"), "n": args.n,
               "copy_gbps": ceiling / 1e9, "workloads": {}}
    print(f"{gpu}: copy ceiling {ceiling / 1e9:.0f} GB/s (read + write), N = {args.n}")
    rng = np.random.default_rng(0)
    for wl in args.workloads.split(","):
        host = workloads.inputs(wl, args.n, rng)
        with np.errstate(all="ignore"):
            ref = workloads.WORKLOADS[wl](np, *(a.astype(np.float64) for a in host))
        ref = tuple(np.asarray(r, dtype=np.float64) for r in as_tuple(ref))
        min_bytes = workloads.MIN_BYTES_PER_ELEMENT[wl] * args.n
        rows = {}
        for name, fw in frameworks.items():
            if wl not in fw.supports:
                rows[name] = {"unsupported": True}
                continue
            try:
                r = bench_workload(fw, wl, host, ref, args.repeat)
            except Exception as e:  # noqa: BLE001 - recorded in the table
                rows[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
                print(f"  {wl:>14} {name:>14}: ERROR {rows[name]['error']}", file=sys.stderr)
                continue
            finally:
                fw.free()  # the inputs of this run are gone: give their memory back
            r["gbps"] = min_bytes / (r["median_ms"] / 1e3) / 1e9
            r["pct_copy"] = 100 * r["gbps"] / (ceiling / 1e9)
            r["correct"] = r["rel_error"] < 1e-4
            rows[name] = r
            print(f"  {wl:>14} {name:>14}: {r['median_ms']:9.3f} ms {r['gbps']:8.0f} GB/s"
                  f" {r['pct_copy']:6.1f}% first {r['first_ms']:9.1f} ms err {r['rel_error']:.1e}")
        results["workloads"][wl] = rows
        if args.paired_rounds and "fuseray" in frameworks:
            try:
                paired = paired_against_best_peer(frameworks, wl, rows, host, args.paired_rounds)
            except Exception as e:  # noqa: BLE001 - the table stands without it
                paired = None
                print(f"  {wl:>14} paired: ERROR {type(e).__name__}: {e}"[:300], file=sys.stderr)
            if paired:
                results.setdefault("paired", {})[wl] = paired
                q1, q2, q3 = paired["speed"]
                a1, a2, a3 = paired["aa"]
                ms = ", ".join(f"{k} {v:.4f} ms" for k, v in paired["median_ms"].items())
                print(f"  {wl:>14} paired with {paired['peer']}: fuseray speed x{q2:.3f} "
                      f"[{q1:.3f}, {q3:.3f}], A/A x{a2:.3f} [{a1:.3f}, {a3:.3f}]: "
                      f"{paired_verdict(paired)} (medians: {ms})")
                for when, ms_alone in paired["alone_ms"].items():
                    print(f"  {wl:>14} alone, {when} the rounds: " + ", ".join(
                        f"{k} {v:.4f} ms" for k, v in ms_alone.items()))
        Path(args.json).write_text(json.dumps(results, indent=1))  # partial results survive
    results["small_triad_us"] = {}
    for name, fw in frameworks.items():
        if name == "numpy":
            continue
        try:
            results["small_triad_us"][name] = us = small_triad_us(fw)
            print(f"     small_triad {name:>14}: {us:7.1f} us per call")
        except Exception as e:  # noqa: BLE001 - recorded as missing
            print(f"     small_triad {name:>14}: ERROR {type(e).__name__}: {e}"[:300],
                  file=sys.stderr)
        finally:
            fw.free()
    if "fuseray" in frameworks and args.extras:
        results["fuseray_extras"] = fuseray_extras(args.n, args.loop_blocks)
        results["fuseray_extras"]["small_triad_us"] = results["small_triad_us"].get("fuseray")
        print(json.dumps(results["fuseray_extras"], indent=1))
    Path(args.json).write_text(json.dumps(results, indent=1))
    table = markdown_table(results)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.png:
        bar_chart(results, args.png)
    return results


def markdown_table(results: dict) -> str:
    names = list(next(iter(results["workloads"].values())).keys())
    lines = [f"GPU: {results['gpu']}, {results['date']}; copy ceiling "
             f"{results['copy_gbps']:.0f} GB/s; N = {results['n']}; cells: GB/s (% of copy) "
             "[first-call ms]", "",
             "| workload | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for wl, rows in results["workloads"].items():
        cells = []
        for n in names:
            r = rows.get(n, {})
            if r.get("unsupported"):
                cells.append("n/a")
            elif "error" in r:
                cells.append("error")
            else:
                mark = "" if r["correct"] else " WRONG"
                cells.append(f"{r['gbps']:.0f} ({r['pct_copy']:.0f}%) [{r['first_ms']:.0f}]{mark}")
        lines.append(f"| {wl} | " + " | ".join(cells) + " |")
    per_call = results.get("small_triad_us", {})
    if per_call:
        cells = [f"{per_call[n]:.1f} us" if n in per_call else "–" for n in names]
        lines.append("| small_triad (per call) | " + " | ".join(cells) + " |")
    paired = results.get("paired", {})
    if paired:
        rounds = next(iter(paired.values()))["rounds"]
        lines += ["", f"Paired, {rounds} interleaved rounds: fuseray's speed over the faster of "
                  "torch.compile and jax.jit (the peer's time / fuseray's, per round: median "
                  "[middle half]), and fuseray against itself (A/A: the pairing's noise)", "",
                  "| workload | peer | fuseray speed | A/A | verdict |", "|---|---|---|---|---|"]
        for wl, p in paired.items():
            (q1, q2, q3), (a1, a2, a3) = p["speed"], p["aa"]
            lines.append(f"| {wl} | {p['peer']} | x{q2:.3f} [{q1:.3f}, {q3:.3f}] | "
                         f"x{a2:.3f} [{a1:.3f}, {a3:.3f}] | {paired_verdict(p)} |")
    return "\n".join(lines)


def bar_chart(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wls = list(results["workloads"])
    names = list(next(iter(results["workloads"].values())).keys())
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(12, 5))
    for i, n in enumerate(names):
        vals = [results["workloads"][w].get(n, {}).get("pct_copy", 0) for w in wls]
        ax.bar(np.arange(len(wls)) + i * width, vals, width, label=n)
    ax.axhline(90, color="k", ls="--", lw=0.8)
    ax.set_xticks(np.arange(len(wls)) + 0.4 - width / 2, wls)
    ax.set_ylabel("% of device-to-device copy bandwidth")
    ax.set_title(f"{results['gpu']}, {results['date']}, N = {results['n']}")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

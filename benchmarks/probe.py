"""Diagnostics behind benchmarks/NOTES.md: where fuseray's GPU time goes, next to hand kernels.

Not part of the suite. Run on the GPU machine: ``python benchmarks/probe.py [sections...]``
(sections: triad softmax chain20 overhead compile; default all). Prints one line per measurement:
median milliseconds (or microseconds) and GB/s of the workload's minimum bytes.

Hand kernels are compiled with fuseray's own NVRTC path and launched with its driver layer, on
fuseray-allocated buffers (and on PyTorch-allocated ones, to separate the allocator from the
kernel), so the only difference from a fuseray launch is the kernel or the launch geometry.
"""

from __future__ import annotations

import cProfile
import pstats
import re
import statistics
import sys
import time

import numpy as np

import fuseray as fr
from fuseray import runtime
from fuseray.backends.cuda import driver, nvrtc, program, streams

N = 1 << 26
ROWS, COLS = N // 1024, 1024


def ptr(x) -> int:
    return x.__cuda_array_interface__["data"][0]


def timed(call, repeat: int = 20, batch: int = 5) -> float:
    """Median seconds per call over ``repeat`` synchronised batches."""
    for _ in range(3):
        call()
    fr.synchronize()
    times = []
    for _ in range(repeat):
        fr.synchronize()
        start = time.perf_counter()
        for _ in range(batch):
            call()
        fr.synchronize()
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times)


def report(label: str, seconds: float, nbytes: int, extra: str = "") -> None:
    print(f"{label:58s} {seconds * 1e3:9.4f} ms  {nbytes / seconds / 1e9:8.1f} GB/s{extra}",
          flush=True)


def load(source: str, name: str):
    dev = driver.current_device()
    cubin = nvrtc.compile_cubin(source, name, driver.device_props(dev).arch, ("-minimal",))
    return driver.load_function(dev, cubin, name)


def stream_handle():
    return streams.get_current_stream().handle


def launcher(func, grid, block, args, types, shared=0):
    pack = driver.arg_pack(types)
    h = stream_handle()
    return lambda: driver.launch(func, grid, block, args, pack, shared, h)


def kernel_of(node):
    plan = runtime.prepare([node])[1]
    assert len(plan.kernels) == 1, plan.kernels
    return plan.kernels[0]


HAND_TRIAD = r"""
extern "C" __global__ void __launch_bounds__(256) hand_triad(
    const float4* __restrict__ a, const float4* __restrict__ b, const float4* __restrict__ c,
    float4* __restrict__ o, int n4) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += gridDim.x * blockDim.x) {
    float4 x = a[i], y = b[i], z = c[i];
    o[i] = make_float4(x.x * y.x + z.x, x.y * y.y + z.y, x.z * y.z + z.z, x.w * y.w + z.w);
  }
}
"""


def probe_triad() -> None:
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(N, dtype=np.float32) for _ in range(3)]
    a, b, c = (fr.asarray(h) for h in host)
    nbytes = 16 * N
    f = fr.jit(lambda a, b, c: a * b + c)
    report("triad fuseray jit (batch 5)", timed(lambda: f(a, b, c)), nbytes)
    report("triad fuseray jit (batch 20)", timed(lambda: f(a, b, c), 10, 20), nbytes)
    keep = []
    report("triad fuseray jit, outputs kept alive", timed(lambda: keep.append(f(a, b, c)), 4, 5),
           nbytes)
    del keep[:]
    _, run = bound((a * b + c)._node)
    report("triad Binding.run (no jit)", timed(run), nbytes)
    name, src = program.generate(kernel_of((a * b + c)._node))
    func = load(src, name)
    out = fr.empty(N, np.float32)
    props = driver.device_props(driver.current_device())
    sms = props.multiprocessor_count
    args = [ptr(a), ptr(b), ptr(c), ptr(out), N]
    types = ["ptr"] * 4 + ["int32"]
    for grid in (N // 1024, sms * 8 * 16, sms * 8 * 4, sms * 8, sms * 4):
        report(f"triad generated kernel, preallocated out, grid {grid}",
               timed(launcher(func, grid, 256, args, types)), nbytes)
    hand = load(HAND_TRIAD, "hand_triad")
    hargs = [ptr(a), ptr(b), ptr(c), ptr(out), N // 4]
    report("triad hand float4, fuseray buffers, grid N/1024",
           timed(launcher(hand, N // 1024, 256, hargs, types)), nbytes)
    report("triad hand float4, fuseray buffers, grid sms*8*4",
           timed(launcher(hand, sms * 32, 256, hargs, types)), nbytes)
    try:
        import torch
    except ImportError:
        return
    ta, tb, tc = (torch.from_numpy(h).cuda() for h in host)
    to = torch.empty_like(ta)
    torch.cuda.synchronize()
    targs = [ta.data_ptr(), tb.data_ptr(), tc.data_ptr(), to.data_ptr(), N]
    report("triad generated kernel on torch buffers",
           timed(launcher(func, N // 1024, 256, targs, types)), nbytes)
    targs[-1] = N // 4
    report("triad hand float4 on torch buffers",
           timed(launcher(hand, N // 1024, 256, targs, types)), nbytes)
    src2 = torch.empty_like(ta)
    report("copy torch (2 x 4N bytes)", timed(lambda: src2.copy_(ta)), 8 * N)
    # the allocator alone: host cost of a 256 MB alloc/free pair
    from fuseray.backends.cuda import memory

    s = streams.get_current_stream()
    t0 = time.perf_counter()
    for _ in range(200):
        p = memory._allocate(4 * N, s)
        memory._free(p, s.device_id, s)
    fr.synchronize()
    print(f"alloc+free 256 MB host cost {(time.perf_counter() - t0) / 200 * 1e6:.1f} us")


SOFTMAX_WARP = r"""
// one warp per 1024-long row, float4 loads, the row in registers; exp recomputed (CACHE_E=0) or
// kept (CACHE_E=1) for the final pass
extern "C" __global__ void __launch_bounds__(BLOCK) NAME(
    const float* __restrict__ x, float* __restrict__ y, int R) {
  const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (row >= R) return;
  const float4* xr = reinterpret_cast<const float4*>(x + (long long)row * 1024);
  float4* yr = reinterpret_cast<float4*>(y + (long long)row * 1024);
  float4 v[8];
  #pragma unroll
  for (int k = 0; k < 8; ++k) v[k] = xr[lane + 32 * k];
  float m = __int_as_float(0xff800000);
  #pragma unroll
  for (int k = 0; k < 8; ++k) m = fmaxf(m, fmaxf(fmaxf(v[k].x, v[k].y), fmaxf(v[k].z, v[k].w)));
  #pragma unroll
  for (int o = 16; o; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float s = 0.f;
#if CACHE_E
  float4 e[8];
  #pragma unroll
  for (int k = 0; k < 8; ++k) {
    e[k] = make_float4(expf(v[k].x - m), expf(v[k].y - m), expf(v[k].z - m), expf(v[k].w - m));
    s += e[k].x + e[k].y + e[k].z + e[k].w;
  }
#else
  #pragma unroll
  for (int k = 0; k < 8; ++k)
    s += expf(v[k].x - m) + expf(v[k].y - m) + expf(v[k].z - m) + expf(v[k].w - m);
#endif
  #pragma unroll
  for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  #pragma unroll
  for (int k = 0; k < 8; ++k) {
#if CACHE_E
    yr[lane + 32 * k] = make_float4(e[k].x / s, e[k].y / s, e[k].z / s, e[k].w / s);
#else
    yr[lane + 32 * k] = make_float4(expf(v[k].x - m) / s, expf(v[k].y - m) / s,
                                    expf(v[k].z - m) / s, expf(v[k].w - m) / s);
#endif
  }
}
"""

SOFTMAX_SCALAR = r"""
// one warp per row, scalar (coalesced) loads: element lane + 32 k; x cached, exp recomputed
extern "C" __global__ void __launch_bounds__(256) softmax_scalar(
    const float* __restrict__ x, float* __restrict__ y, int R) {
  const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (row >= R) return;
  const float* xr = x + (long long)row * 1024;
  float* yr = y + (long long)row * 1024;
  float v[32];
  #pragma unroll
  for (int k = 0; k < 32; ++k) v[k] = xr[lane + 32 * k];
  float m = __int_as_float(0xff800000);
  #pragma unroll
  for (int k = 0; k < 32; ++k) m = fmaxf(m, v[k]);
  #pragma unroll
  for (int o = 16; o; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float s = 0.f;
  #pragma unroll
  for (int k = 0; k < 32; ++k) s += expf(v[k] - m);
  #pragma unroll
  for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  #pragma unroll
  for (int k = 0; k < 32; ++k) yr[lane + 32 * k] = expf(v[k] - m) / s;
}
"""


def probe_softmax() -> None:
    rng = np.random.default_rng(1)
    host = rng.standard_normal((ROWS, COLS), dtype=np.float32)
    x = fr.asarray(host)
    nbytes = 8 * N

    def softmax(m):
        e = fr.exp(m - m.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    f = fr.jit(softmax)
    report("softmax fuseray jit", timed(lambda: f(x)), nbytes)
    g = fr.asarray(rng.standard_normal(COLS, dtype=np.float32))

    def layernorm(m, g):
        mu = m.mean(1, keepdims=True)
        return (m - mu) / fr.sqrt(m.var(1, keepdims=True) + 1e-5) * g

    lf = fr.jit(layernorm)
    report("layernorm fuseray jit", timed(lambda: lf(x, g)), nbytes)
    out = fr.empty((ROWS, COLS), np.float32)
    want = np.exp(host[:64] - host[:64].max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    variants = []
    for block in (128, 256, 512):
        for cache_e in (0, 1):
            name = f"softmax_warp_b{block}_e{cache_e}"
            src = (f"#define BLOCK {block}\n#define NAME {name}\n#define CACHE_E {cache_e}\n"
                   + SOFTMAX_WARP)
            variants.append((name, src, block))
    variants.append(("softmax_scalar", SOFTMAX_SCALAR, 256))
    for name, src, block in variants:
        func = load(src, name)
        grid = -(-ROWS * 32 // block)
        call = launcher(func, grid, block, [ptr(x), ptr(out), ROWS], ["ptr", "ptr", "int32"])
        t = timed(call)
        err = float(np.abs(fr.asnumpy(out)[:64] - want).max())
        report(f"{name} (max err {err:.1e})", t, nbytes)


CHAIN_HAND = r"""
__device__ __forceinline__ float step(float y) {
  #pragma unroll
  for (int i = 0; i < 5; ++i) {
    y = y * 0.99f + 0.01f;
    y = sinf(y);
    y = fabsf(y) + 0.5f;
    y = sqrtf(y);
  }
  return y;
}
extern "C" __global__ void __launch_bounds__(256) chain_v1(
    const float* __restrict__ x, float* __restrict__ o, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    o[i] = step(x[i]);
}
extern "C" __global__ void __launch_bounds__(256) chain_v4(
    const float4* __restrict__ x, float4* __restrict__ o, int n4) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += gridDim.x * blockDim.x) {
    float4 v = x[i];
    o[i] = make_float4(step(v.x), step(v.y), step(v.z), step(v.w));
  }
}
"""


def probe_chain20() -> None:
    host = np.random.default_rng(2).standard_normal(N, dtype=np.float32)
    x = fr.asarray(host)

    import workloads

    def chain(y):
        return workloads.chain20(fr if isinstance(y, fr.ndarray) else np, y)

    f = fr.jit(chain)
    report("chain20 fuseray jit", timed(lambda: f(x)), 8 * N)
    binding, run = bound(chain(x)._node)
    report("chain20 Binding.run (no jit)", timed(run), 8 * N)
    for label, edit, opts in (
        ("vector path off", lambda s: s.replace("if (fr_aligned", "if (false && fr_aligned"), ()),
        ("--use_fast_math with -minimal", lambda s: s, ("--use_fast_math",)),
    ):
        swap_source(binding, edit, opts)
        report(f"chain20 generated, {label}", timed(run), 8 * N)
    for label, base in (("precise, no -minimal", ()), ("--use_fast_math", ("--use_fast_math",))):
        swap_source(binding, lambda s: s, base=base)
        report(f"chain20 generated, {label}", timed(run), 8 * N)
    out = fr.empty(N, np.float32).compute()
    want = np.asarray(chain(np.asarray(host[:1000], np.float64)))
    for name, count in (("chain_v1", N), ("chain_v4", N // 4), ("chain_v4 fast", N // 4)):
        dev = driver.current_device()
        opts = ("-minimal", "--use_fast_math") if "fast" in name else ("-minimal",)
        func = driver.load_function(dev, nvrtc.compile_cubin(
            CHAIN_HAND, "chain", driver.device_props(dev).arch, opts), name.split()[0])
        for grid in (-(-count // 256), 132 * 8 * 4):
            t = timed(launcher(func, grid, 256, [ptr(x), ptr(out), count], ["ptr", "ptr", "int32"]))
            err = float(np.abs(fr.asnumpy(out)[:1000] - want).max())
            report(f"{name} grid {grid} (err {err:.1e})", t, 8 * N)


def bound(node):
    """The CUDA binding of ``node``'s single kernel and a callable that runs it (allocating its
    output, as a fuseray call does, but without tracing or planning)."""
    from fuseray.backends.cuda import launch

    binding = launch.binding_for(kernel_of(node))
    dev = driver.current_device()
    stream = streams.get_current_stream()
    binding.run({}, dev, stream)
    return binding, lambda: binding.run({}, dev, stream)


def swap_source(binding, edit, options=(), base=("-minimal",), dependent=False) -> None:
    """Recompile the binding's last-used kernel from ``edit(source)`` with NVRTC options
    ``base`` + ``options``; ``dependent`` loads it as a programmatic dependent launch
    (``driver.Function.dependent``: only for a source that waits with ``griddepcontrol.wait``)."""
    st = binding.last_state
    gen = st.program.generated
    dev = driver.current_device()
    cubin = nvrtc.compile_cubin(edit(gen.source), gen.name, driver.device_props(dev).arch,
                                (*base, *options))
    func = driver.load_function(dev, cubin, gen.name, dependent)
    prog = st.program.__class__.__new__(st.program.__class__)
    prog.generated, prog.function, prog.pack = gen, func, st.program.pack
    st.program = prog


def profile_calls(call, count: int, lines: int) -> None:
    """cProfile of ``count`` calls of ``call``: the ``lines`` functions of most own time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(count):
        call()
    prof.disable()
    fr.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(lines)


def probe_overhead() -> None:
    small = [fr.asarray(np.random.default_rng(i).standard_normal(4096, dtype=np.float32))
             for i in range(3)]
    f = fr.jit(lambda a, b, c: a * b + c)
    g = fr.jit(lambda a, b, c: a * b + c)
    g(*small)
    g.lower(*small)[1].direct = False  # g takes the general path: runtime.execute
    for _ in range(3):  # interleaved: the machine's noise hits both alike
        t = timed(lambda: f(*small), 10, 2000)
        tg = timed(lambda: g(*small), 10, 2000)
        print(f"small_triad per call {t * 1e6:.2f} us (general path {tg * 1e6:.2f} us)",
              flush=True)
    cu = driver.cu
    reps = 20000
    t0 = time.perf_counter()
    for _ in range(reps):
        cu.cuCtxGetCurrent()
    print(f"cuCtxGetCurrent {(time.perf_counter() - t0) / reps * 1e6:.2f} us")
    name, src = program.generate(kernel_of((small[0] * small[1] + small[2])._node))
    func = load(src, name)
    out = fr.empty(4096, np.float32)
    args = [ptr(small[0]), ptr(small[1]), ptr(small[2]), ptr(out), 4096]
    call = launcher(func, 4, 256, args, ["ptr"] * 4 + ["int32"])
    print(f"driver.launch of a tiny kernel {timed(call, 10, 2000) * 1e6:.2f} us")
    pack = driver.arg_pack(["ptr"] * 4 + ["int32"])
    params = pack.pack(args)
    h = stream_handle()
    t0 = time.perf_counter()
    for _ in range(reps):
        cu.cuLaunchKernel(func.handle, 4, 1, 1, 256, 1, 1, 0, h, params, 0)
    fr.synchronize()
    print(f"bare cuLaunchKernel {(time.perf_counter() - t0) / reps * 1e6:.2f} us")
    t0 = time.perf_counter()
    for _ in range(reps):
        pack.pack(args)
    print(f"ArgPack.pack {(time.perf_counter() - t0) / reps * 1e6:.2f} us")
    profile_calls(lambda: f(*small), 5000, 22)


def probe_compile() -> None:
    x = fr.asarray(np.ones(1 << 20, np.float32))
    node = (fr.sin(x) * 1.2345671 + x)._node
    t0 = time.perf_counter()
    name, src = program.generate(kernel_of(node))
    t1 = time.perf_counter()
    arch = driver.device_props(driver.current_device()).arch
    for opts in ((), ("-minimal",)):
        t2 = time.perf_counter()
        cubin = nvrtc.compile_cubin(src.replace(name, name + "x" + str(len(opts))),
                                    name, arch, opts)
        t3 = time.perf_counter()
        print(f"new kernel: NVRTC {opts} {(t3 - t2) * 1e3:.1f} ms")
    t4 = time.perf_counter()
    driver.load_function(driver.current_device(), cubin, name + "x1")
    t5 = time.perf_counter()
    print(f"new kernel: plan+generate {(t1 - t0) * 1e3:.1f} ms, load {(t5 - t4) * 1e3:.1f} ms")


HAND_SUMSQ = r"""
// grid-stride float4 loads, UNROLL in flight, a block tree, one partial per block (the finish
// over gridDim.x partials is left out: it is the same in every variant)
extern "C" __global__ void __launch_bounds__(256) hand_sumsq(
    const float4* __restrict__ x, float* __restrict__ partial, int n4) {
  __shared__ float sm[8];
  float acc[UNROLL] = {};
  const int step = gridDim.x * blockDim.x;
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  for (; i + (UNROLL - 1) * step < n4; i += UNROLL * step) {
    float4 v[UNROLL];
    #pragma unroll
    for (int u = 0; u < UNROLL; ++u) v[u] = x[i + u * step];
    #pragma unroll
    for (int u = 0; u < UNROLL; ++u)
      acc[u] += v[u].x * v[u].x + v[u].y * v[u].y + v[u].z * v[u].z + v[u].w * v[u].w;
  }
  for (; i < n4; i += step) {
    float4 v = x[i];
    acc[0] += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  float a = 0.f;
  #pragma unroll
  for (int u = 0; u < UNROLL; ++u) a += acc[u];
  for (int o = 16; o; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
  if ((threadIdx.x & 31) == 0) sm[threadIdx.x >> 5] = a;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.f;
    for (int w = 0; w < 8; ++w) t += sm[w];
    partial[blockIdx.x] = t;
  }
}
"""


def relaunch(binding, **constants) -> None:
    """Set fuseray.schedule constants and forget the binding's launch states (recomputed on
    the next run with the new geometry)."""
    from fuseray import schedule

    for k, v in constants.items():
        setattr(schedule, k, v)
    binding.states.clear()
    binding.last_key = binding.last_state = None


def probe_reduce() -> None:
    from fuseray import schedule

    saved = {k: getattr(schedule, k) for k in
             ("SPLIT_BLOCKS_PER_SM", "REDUCE_ITEMS_PER_THREAD", "REDUCE_UNROLL", "REDUCE_BLOCK")}
    host = np.random.default_rng(3).standard_normal(N, dtype=np.float32)
    x = fr.asarray(host)
    f = fr.jit(lambda x: (x * x).sum())
    report("sumsq fuseray jit", timed(lambda: f(x)), 4 * N)
    binding, run = bound((x * x).sum()._node)
    report("sumsq Binding.run", timed(run), 4 * N)
    for kw in ({"SPLIT_BLOCKS_PER_SM": 4}, {"SPLIT_BLOCKS_PER_SM": 8},
               {"SPLIT_BLOCKS_PER_SM": 2, "REDUCE_ITEMS_PER_THREAD": 64},
               {"SPLIT_BLOCKS_PER_SM": 4, "REDUCE_ITEMS_PER_THREAD": 64}):
        relaunch(binding, **kw)
        report(f"sumsq {kw}", timed(run), 4 * N)
    relaunch(binding, **saved)
    run()
    swap_source(binding, lambda s: s.replace("j * a0_jl", "j"))
    report("sumsq unit stride compiled in", timed(run), 4 * N)
    part = fr.empty(132 * 64, np.float32).compute()
    for unroll in (2, 4, 8):
        func = load(f"#define UNROLL {unroll}\n" + HAND_SUMSQ, "hand_sumsq")
        for grid in (132 * 8, 132 * 16, 132 * 32):
            call = launcher(func, grid, 256, [ptr(x), ptr(part), N // 4], ["ptr", "ptr", "int32"])
            report(f"hand sumsq float4 unroll {unroll} grid {grid}", timed(call), 4 * N)
    m = fr.asarray(host.reshape(ROWS, COLS))
    g = fr.asarray(np.random.default_rng(4).standard_normal(COLS, dtype=np.float32))
    fc = fr.jit(lambda m, g: (m * g).sum(axis=0))
    report("colsum fuseray jit", timed(lambda: fc(m, g)), 4 * N)
    binding, run = bound((m * g).sum(axis=0)._node)
    for kw in ({"SPLIT_BLOCKS_PER_SM": 4}, {"SPLIT_BLOCKS_PER_SM": 8},
               {"REDUCE_BLOCK": 512}, {"REDUCE_ITEMS_PER_THREAD": 64},
               {"REDUCE_UNROLL": 8}):
        relaunch(binding, **saved)
        relaunch(binding, **kw)
        report(f"colsum {kw}", timed(run), 4 * N)
        st = binding.last_state
        print("   launch", st.launch)
    relaunch(binding, **saved)


def row_workloads():
    """The host matrix and fuseray's lazy softmax and layernorm of it."""
    host = np.random.default_rng(1).standard_normal((ROWS, COLS), dtype=np.float32)
    x = fr.asarray(host)
    g = fr.asarray(np.random.default_rng(2).standard_normal(COLS, dtype=np.float32))
    e = fr.exp(x - x.max(1, keepdims=True))
    mu = x.mean(1, keepdims=True)
    layernorm = (x - mu) / fr.sqrt(x.var(1, keepdims=True) + 1e-5) * g
    return host, e / e.sum(1, keepdims=True), layernorm


def probe_rows() -> None:
    """Variants of the generated softmax and layernorm row kernels (source edits, geometry)."""
    host, softmax, layernorm = row_workloads()
    unit = lambda s: s.replace("j * a0_jl", "j").replace("j * o0_jl", "j")  # noqa: E731
    edits = {
        "as generated": lambda s: s,
        "unit stride": unit,
        "no fr_active test": lambda s: s.replace("if (fr_active && j < L)", "if (j < L)"),
        "launch bounds 512,3": lambda s: s.replace("(512, 2)", "(512, 3)"),
        "launch bounds 512,1": lambda s: s.replace("(512, 2)", "(512, 1)"),
        "unit stride + 512,3": lambda s: unit(s).replace("(512, 2)", "(512, 3)"),
    }
    for label, node in (("softmax", softmax), ("layernorm", layernorm)):
        binding, run = bound(node._node)
        for name, edit in edits.items():
            swap_source(binding, edit)
            report(f"{label} {name}", timed(run), 8 * N)
        swap_source(binding, lambda s: s)
        for block in (128, 512):
            relaunch(binding, REDUCE_BLOCK=block)
            run()
            swap_source(binding, lambda s: s)
            report(f"{label} REDUCE_BLOCK {block} {binding.last_state.launch}", timed(run), 8 * N)
        relaunch(binding, REDUCE_BLOCK=256)


def probe_fastmath() -> None:
    """Which of fast math's parts (flush-to-zero, approximate division / square root / sin)
    moves chain20 and black_scholes."""
    import hashlib

    import workloads

    host = np.random.default_rng(2).standard_normal(N, dtype=np.float32)
    x = fr.asarray(host)
    out = fr.empty(N, np.float32).compute()
    dev = driver.current_device()
    arch = driver.device_props(dev).arch
    variants = [(), ("--use_fast_math",), ("-ftz=true",), ("-prec-sqrt=false",),
                ("-prec-div=false",), ("-ftz=true", "-prec-sqrt=false", "-prec-div=false")]
    for opts in variants:
        cubin = nvrtc.compile_cubin(CHAIN_HAND, "chain", arch, ("-minimal", *opts))
        func = driver.load_function(dev, cubin, "chain_v4")
        t = timed(launcher(func, N // 1024, 256, [ptr(x), ptr(out), N // 4],
                           ["ptr", "ptr", "int32"]))
        digest = hashlib.sha256(cubin).hexdigest()[:8]
        report(f"chain_v4 {' '.join(opts) or 'precise'} ({len(cubin)} B {digest})", t, 8 * N)
    rng = np.random.default_rng(0)
    ins = [fr.asarray(a) for a in workloads.inputs("black_scholes", N, rng)]
    call, put = workloads.WORKLOADS["black_scholes"](fr, *ins)
    from fuseray import runtime as rt
    from fuseray.backends.cuda import launch

    kernel = rt.prepare([call._node, put._node])[1].kernels[0]
    binding = launch.binding_for(kernel)
    stream = streams.get_current_stream()
    run = lambda: binding.run({}, dev, stream)  # noqa: E731
    run()
    for opts in variants:
        swap_source(binding, lambda s: s, opts)
        report(f"black_scholes {' '.join(opts) or 'precise'}", timed(run), 20 * N)


def _unfull(s: str) -> str:
    """A row kernel's cached passes without their slot tests (valid when every row fills the
    cache exactly, as 1024-long rows of one warp do)."""
    s = re.sub(r"k < fr_nk \? (.*?) : fr_zero<float>\(\);", r"\1;", s)
    return s.replace("fr_active && k < fr_nk", "fr_active")


def _frontier(s: str) -> str:
    """Softmax: keep exp(x - max) from the sum pass for the store pass instead of recomputing."""
    s = s.replace("float a0_c[32];", "float a0_c[32];\n      float t2_c[32];", 1)
    head, sep, tail = s.partition("const float t3 = FrSum<float>::final")
    head = head.replace("const float t2 = fr_exp(t1);\n", "const float t2 = fr_exp(t1);\n"
                        "        t2_c[k] = t2;\n")
    # the store pass of the cached branch only (the streaming branch follows "} else {")
    cached, sep2, rest = tail.partition("} else {")
    cached = re.sub(r"const float a0 = a0_c\[k\];\s*const float t1 = \(a0 - t0\);\s*"
                    r"const float t2 = fr_exp\(t1\);", "const float t2 = t2_c[k];", cached)
    return head + sep + cached + sep2 + rest


def launch_to_numpy(value) -> np.ndarray:
    from fuseray.backends.cuda import launch

    return launch.to_numpy(value)


def probe_rows2() -> None:
    """The generated row kernels against edits of their cached passes."""
    host, softmax, layernorm = row_workloads()
    want = np.exp(host[:64] - host[:64].max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    edits = {"as generated": lambda s: s, "no slot tests": _unfull,
             "frontier": _frontier, "frontier, no slot tests": lambda s: _unfull(_frontier(s)),
             "launch bounds 256,4": lambda s: s.replace("(512, 2)", "(256, 4)")}
    for label, node in (("softmax", softmax), ("layernorm", layernorm)):
        binding, run = bound(node._node)
        src = binding.last_state.program.generated.source
        for name, edit in edits.items():
            if name.startswith("frontier") and label != "softmax":
                continue
            if edit(src) == src and name != "as generated":
                print(f"{label} {name}: edit did not apply")
                continue
            swap_source(binding, edit)
            report(f"{label} {name}", timed(run), 8 * N)
            if label == "softmax":
                env: dict = {}
                binding.run(env, driver.current_device(), streams.get_current_stream())
                out = next(v for v in env.values())
                got = launch_to_numpy(out)[:64]
                print(f"   max err {float(np.abs(got - want).max()):.1e}")


def probe_ofc() -> None:
    """NVRTC's -Ofast-compile levels: compile time of a new kernel and each workload's speed."""
    import workloads

    x1 = fr.asarray(np.ones(1 << 20, np.float32))
    node = (fr.sin(x1) * 1.2345671 + x1)._node
    name, src = program.generate(kernel_of(node))
    arch = driver.device_props(driver.current_device()).arch
    levels = [(), ("-Ofc=min",), ("-Ofc=mid",), ("-Ofc=max",)]
    times = {lv: [] for lv in levels}
    for rep in range(7):
        for lv in levels:
            t0 = time.perf_counter()
            nvrtc.compile_cubin(src.replace(name, f"{name}r{rep}"), name, arch, ("-minimal", *lv))
            times[lv].append(time.perf_counter() - t0)
    for lv, ts in times.items():
        print(f"new kernel NVRTC -minimal {' '.join(lv) or '(default)'}: "
              f"{statistics.median(ts) * 1e3:.1f} ms")
    rng = np.random.default_rng(0)
    for wl, nbytes in (("triad", 16), ("gelu", 8), ("black_scholes", 20), ("softmax", 8),
                       ("layernorm", 8), ("sumsq", 4), ("colsum", 4), ("chain20", 8)):
        ins = [fr.asarray(a) for a in workloads.inputs(wl, N, rng)]
        res = workloads.WORKLOADS[wl](fr, *ins)
        res = res if isinstance(res, tuple) else (res,)
        kernel = runtime.prepare([r._node for r in res])[1].kernels[0]
        from fuseray.backends.cuda import launch

        binding = launch.binding_for(kernel)
        dev, stream = driver.current_device(), streams.get_current_stream()
        run = lambda b=binding, d=dev, st=stream: b.run({}, d, st)  # noqa: E731
        run()
        programs = {}
        for lv in levels[:2]:
            swap_source(binding, lambda s: s, lv)
            programs[lv] = binding.last_state.program
        results: dict = {lv: [] for lv in programs}
        for _ in range(3):  # interleaved: drift and noise hit both alike
            for lv, prog in programs.items():
                binding.last_state.program = prog
                results[lv].append(timed(run, 10))
        for lv, ts in results.items():
            report(f"{wl} -minimal {' '.join(lv) or '(default)'} (median of 3 interleaved)",
                   statistics.median(ts), nbytes * N)
        del ins, res


CHAIN_VARIANTS = r"""
#define FR_HALF 0
#include "fuseray_math.cuh"
__device__ __forceinline__ float approx_sqrt(float x) {
  float r;
  asm("sqrt.approx.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float step(float y) {
  #pragma unroll
  for (int i = 0; i < 5; ++i) {
    y = y * 0.99f + 0.01f;
    y = SIN(y);
    y = fabsf(y) + 0.5f;
    y = SQRT(y);
  }
  return y;
}
extern "C" __global__ void __launch_bounds__(256) chain_v4(
    const float4* __restrict__ x, float4* __restrict__ o, int n4) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += gridDim.x * blockDim.x) {
    float4 v = x[i];
    o[i] = make_float4(step(v.x), step(v.y), step(v.z), step(v.w));
  }
}
"""

XLA_DUMP = r"""
import os, sys
sys.path.insert(0, "benchmarks")
import numpy as np, jax, jax.numpy as jnp, workloads
f = jax.jit(lambda y: workloads.chain20(jnp, y))
f(jnp.asarray(np.ones(1 << 20, np.float32))).block_until_ready()
"""


def probe_chain20b() -> None:
    """chain20: the generated kernel (fuseray's own sin) against hand kernels with libm's sinf,
    the intrinsics and an approximate sqrt, and jax.jit side by side; XLA's dump grepped for the
    lowering of sin and sqrt."""
    import os
    import subprocess
    import tarfile

    import workloads

    host = np.random.default_rng(2).standard_normal(N, dtype=np.float32)
    x = fr.asarray(host)
    want = workloads.chain20(np, host[:4096].astype(np.float64))
    f = fr.jit(lambda y: workloads.chain20(fr, y))
    report("chain20 fuseray jit", timed(lambda: f(x)), 8 * N)
    got = fr.asnumpy(f(x))[:4096]
    print(f"   max err vs float64 {float(np.abs(got - want).max()):.2e}")
    out = fr.empty(N, np.float32).compute()
    dev = driver.current_device()
    arch = driver.device_props(dev).arch
    for sin, sqrt, opts in (("sinf", "sqrtf", ()), ("fr_sin_f32", "sqrtf", ()),
                            ("fr_sin_f32", "approx_sqrt", ()), ("sinf", "approx_sqrt", ()),
                            ("__sinf", "sqrtf", ()), ("__sinf", "approx_sqrt", ()),
                            ("sinf", "sqrtf", ("--use_fast_math",))):
        src = f"#define SIN {sin}\n#define SQRT {sqrt}\n" + CHAIN_VARIANTS
        cubin = nvrtc.compile_cubin(src, "chain", arch, ("-minimal", *opts))
        func = driver.load_function(dev, cubin, "chain_v4")
        t = timed(launcher(func, N // 1024, 256, [ptr(x), ptr(out), N // 4],
                           ["ptr", "ptr", "int32"]))
        err = float(np.abs(fr.asnumpy(out)[:4096] - want).max())
        report(f"chain_v4 {sin} {sqrt} {' '.join(opts)} ({len(cubin)} B, err {err:.1e})", t, 8 * N)
    try:
        import jax
        import jax.numpy as jnp

        jf = jax.jit(lambda y: workloads.chain20(jnp, y))
        jx = jax.device_put(host)
        jf(jx).block_until_ready()
        sync = lambda: jnp.zeros(1).block_until_ready()  # noqa: E731
        for _ in range(3):
            t_j = timed_with(lambda: jf(jx), sync)
            t_f = timed(lambda: f(x))
            report("   jax.jit chain20 (interleaved)", t_j, 8 * N)
            report("   fuseray chain20 (interleaved)", t_f, 8 * N)
        jerr = float(np.abs(np.asarray(jf(jx))[:4096] - want).max())
        print(f"   jax max err vs float64 {jerr:.2e}")
    except Exception as e:  # noqa: BLE001
        print(f"jax failed: {type(e).__name__}: {e}")
    dump = os.path.join(os.environ.get("OUT", "/tmp"), "xla")
    env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={dump} --xla_dump_hlo_as_text "
               "--xla_gpu_dump_llvmir", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    subprocess.run([sys.executable, "-c", XLA_DUMP], env=env, timeout=120)
    found = {}
    for root, _, files in os.walk(dump):
        for name in files:
            text = open(os.path.join(root, name), errors="replace").read()
            for pat in ("__nv_sinf", "__nv_sqrtf", "sqrt.approx", "sqrt.rn", "sin.approx",
                        "llvm.sqrt", "llvm.sin", "nvvm-reflect", "__nv_fast_sinf"):
                if pat in text:
                    found.setdefault(pat, []).append((name, text.count(pat)))
    for pat, where in found.items():
        print(f"   xla dump: {pat}: {where[:4]}")
    with tarfile.open(dump + ".tgz", "w:gz") as tar:
        tar.add(dump, arcname="xla")
    subprocess.run(["rm", "-rf", dump])


def timed_with(call, sync, repeat: int = 20, batch: int = 5) -> float:
    """``timed`` for a peer: ``sync`` waits for its device work."""
    from gpu import time_calls

    for _ in range(3):
        call()
    return time_calls(call, sync, repeat, batch)


def _interleave(s: str) -> str:
    """A split reduction whose blocks take interleaved tiles of the reduced range (block y reads
    tiles y, y + S, ...) instead of one contiguous chunk each."""
    s = s.replace("const fr_idx fr_j0 = (fr_idx)blockIdx.y * chunk;",
                  "const fr_idx fr_j0 = (fr_idx)blockIdx.y * fr_W;\n"
                  "  const fr_idx fr_S = (fr_idx)gridDim.y * fr_W;")
    s = s.replace("const fr_idx fr_j1 = fr_j0 + chunk < L ? fr_j0 + chunk : L;",
                  "const fr_idx fr_j1 = L;")
    s = re.sub(r"fr_j \+ \(fr_idx\)\((\d+)\) \* fr_W < fr_j1; fr_j \+= \(fr_idx\)(\d+) \* fr_W",
               r"fr_j + (fr_idx)(\1) * fr_S < fr_j1; fr_j += (fr_idx)\2 * fr_S", s)
    s = s.replace("const fr_idx j = fr_j + (fr_idx)u * fr_W;",
                  "const fr_idx j = fr_j + (fr_idx)u * fr_S;")
    return s.replace("for (; fr_j < fr_j1; fr_j += fr_W)", "for (; fr_j < fr_j1; fr_j += fr_S)")


def probe_split() -> None:
    """Split reductions: contiguous chunks per block (as generated) against interleaved tiles,
    for sumsq and colsum, at a few split counts; the hand float4 kernel for reference."""
    from fuseray import schedule

    host = np.random.default_rng(3).standard_normal(N, dtype=np.float32)
    x = fr.asarray(host)
    m = fr.asarray(host.reshape(ROWS, COLS))
    g = fr.asarray(np.random.default_rng(4).standard_normal(COLS, dtype=np.float32))
    want_s = float((host.astype(np.float64) ** 2).sum())
    saved = schedule.SPLIT_BLOCKS_PER_SM
    for label, node, nbytes in (("sumsq", (x * x).sum()._node, 4 * N),
                                ("colsum", (m * g).sum(axis=0)._node, 4 * N)):
        binding, run = bound(node)
        for blocks in (2, 4, 8):
            relaunch(binding, SPLIT_BLOCKS_PER_SM=blocks)
            run()
            for name, edit in (("chunked", lambda s: s), ("interleaved", _interleave)):
                swap_source(binding, edit)
                report(f"{label} {name} split/SM {blocks} {binding.last_state.launch.grid}",
                       timed(run), nbytes)
                if label == "sumsq":
                    env: dict = {}
                    binding.run(env, driver.current_device(), streams.get_current_stream())
                    got = float(launch_to_numpy(next(iter(env.values()))))
                    print(f"   rel err {abs(got - want_s) / want_s:.1e}")
        relaunch(binding, SPLIT_BLOCKS_PER_SM=saved)
    part = fr.empty(132 * 64, np.float32).compute()
    func = load("#define UNROLL 4\n" + HAND_SUMSQ, "hand_sumsq")
    for grid in (132 * 8, 132 * 16):
        call = launcher(func, grid, 256, [ptr(x), ptr(part), N // 4], ["ptr", "ptr", "int32"])
        report(f"hand sumsq float4 unroll 4 grid {grid}", timed(call), 4 * N)


def probe_launch() -> None:
    """The driver call itself: cuda.bindings' cuLaunchKernel against the same call through
    ctypes, and a cached small_triad call."""
    import ctypes

    small = [fr.asarray(np.random.default_rng(i).standard_normal(4096, dtype=np.float32))
             for i in range(3)]
    f = fr.jit(lambda a, b, c: a * b + c)
    for _ in range(3):
        print(f"small_triad per call {timed(lambda: f(*small), 10, 2000) * 1e6:.2f} us",
              flush=True)
    name, src = program.generate(kernel_of((small[0] * small[1] + small[2])._node))
    func = load(src, name)
    out = fr.empty(4096, np.float32).compute()
    args = [ptr(small[0]), ptr(small[1]), ptr(small[2]), ptr(out), 4096]
    pack = driver.arg_pack(["ptr"] * 4 + ["int32"])
    params = pack.pack(args)
    h = stream_handle()
    lib = ctypes.CDLL("libcuda.so.1")
    c_launch = lib.cuLaunchKernel
    u = ctypes.c_uint
    c_launch.argtypes = [ctypes.c_void_p, u, u, u, u, u, u, u, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_void_p]
    c_launch.restype = ctypes.c_int
    hf, hs = int(func.handle), int(h)
    reps = 20000
    for _ in range(3):
        fr.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            driver.cu.cuLaunchKernel(func.handle, 4, 1, 1, 256, 1, 1, 0, h, params, 0)
        t1 = time.perf_counter()
        fr.synchronize()
        t2 = time.perf_counter()
        for _ in range(reps):
            c_launch(hf, 4, 1, 1, 256, 1, 1, 0, hs, params, None)
        t3 = time.perf_counter()
        fr.synchronize()
        print(f"cuLaunchKernel: cuda.bindings {(t1 - t0) / reps * 1e6:.2f} us, "
              f"ctypes {(t3 - t2) / reps * 1e6:.2f} us", flush=True)
    assert np.allclose(fr.asnumpy(out), fr.asnumpy(small[0] * small[1] + small[2]))


SUMSQ_FACTORS = r"""
// sum of squares, one partial per block; V floats per load, U loads in flight, A accumulators,
// CHUNKED: block b takes one contiguous chunk (as fuseray's split reductions do) instead of a
// grid-stride sweep of the whole array
template <int V, int U, int A, bool CHUNKED>
__device__ __forceinline__ void sumsq_body(const float* __restrict__ x, float* __restrict__ partial,
                                           int n) {
  __shared__ float sm[32];
  float acc[A];
  #pragma unroll
  for (int a = 0; a < A; ++a) acc[a] = 0.f;
  const int nv = n / V;
  int begin, end, step;
  if (CHUNKED) {
    const int chunk = (nv + gridDim.x - 1) / gridDim.x;
    begin = blockIdx.x * chunk + threadIdx.x;
    end = min(nv, (int)(blockIdx.x + 1) * chunk);
    step = blockDim.x;
  } else {
    begin = blockIdx.x * blockDim.x + threadIdx.x;
    end = nv;
    step = gridDim.x * blockDim.x;
  }
  int i = begin;
  for (; i + (U - 1) * step < end; i += U * step) {
    float v[U][V];
    #pragma unroll
    for (int u = 0; u < U; ++u) {
      if (V == 4) {
        const float4 w = reinterpret_cast<const float4*>(x)[i + u * step];
        v[u][0] = w.x; v[u][V > 1 ? 1 : 0] = w.y; v[u][V > 2 ? 2 : 0] = w.z;
        v[u][V > 3 ? 3 : 0] = w.w;
      } else {
        v[u][0] = x[i + u * step];
      }
    }
    #pragma unroll
    for (int u = 0; u < U; ++u) {
      #pragma unroll
      for (int k = 0; k < V; ++k) acc[u % A] += v[u][k] * v[u][k];
    }
  }
  for (; i < end; i += step) {
    #pragma unroll
    for (int k = 0; k < V; ++k) acc[0] += x[i * V + k] * x[i * V + k];
  }
  float t = 0.f;
  #pragma unroll
  for (int a = 0; a < A; ++a) t += acc[a];
  for (int o = 16; o; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  if ((threadIdx.x & 31) == 0) sm[threadIdx.x >> 5] = t;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0.f;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) s += sm[w];
    partial[blockIdx.x] = s;
  }
}
#define SUMSQ(NAME, V, U, A, C)                                                                 \
  extern "C" __global__ void __launch_bounds__(512) NAME(const float* __restrict__ x,          \
                                                         float* __restrict__ p, int n) {       \
    sumsq_body<V, U, A, C>(x, p, n);                                                           \
  }
SUMSQ(s_v1_u4_a1_chunk, 1, 4, 1, true)
SUMSQ(s_v1_u4_a1_grid, 1, 4, 1, false)
SUMSQ(s_v1_u16_a1_chunk, 1, 16, 1, true)
SUMSQ(s_v1_u16_a4_chunk, 1, 16, 4, true)
SUMSQ(s_v1_u16_a4_grid, 1, 16, 4, false)
SUMSQ(s_v4_u1_a1_chunk, 4, 1, 1, true)
SUMSQ(s_v4_u4_a1_chunk, 4, 4, 1, true)
SUMSQ(s_v4_u4_a4_chunk, 4, 4, 4, true)
SUMSQ(s_v4_u4_a4_grid, 4, 4, 4, false)
SUMSQ(s_v4_u4_a1_grid, 4, 4, 1, false)
"""

SQRT_CHECK = r"""
#define FR_HALF 0
#include "fuseray_math.cuh"
extern "C" __global__ void sqrt_check(unsigned long long* bad, unsigned int* first) {
  const unsigned long long step = (unsigned long long)gridDim.x * blockDim.x;
  for (unsigned long long u = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
       u < (1ull << 32); u += step) {
    const float x = __uint_as_float((unsigned int)u);
    const float a = fr_sqrt(x), b = sqrtf(x);
    const bool same = __float_as_uint(a) == __float_as_uint(b) || (a != a && b != b);
    if (!same) {
      atomicAdd(bad, 1ull);
      atomicMin(first, (unsigned int)u);
    }
  }
}
"""


def probe_sumsq_factors() -> None:
    """Which of the hand kernel's traits (16-byte loads, loads in flight, accumulators, sweep
    order) the generated sumsq lacks."""
    from fuseray import schedule

    host = np.random.default_rng(3).standard_normal(N, dtype=np.float32)
    x = fr.asarray(host)
    want = float((host.astype(np.float64) ** 2).sum())
    binding, run = bound((x * x).sum()._node)
    report("sumsq generated", timed(run), 4 * N)
    saved = schedule.REDUCE_UNROLL
    for unroll in (8, 16):
        relaunch(binding, REDUCE_UNROLL=unroll)
        run()
        report(f"sumsq generated REDUCE_UNROLL {unroll}", timed(run), 4 * N)
        env: dict = {}
        binding.run(env, driver.current_device(), streams.get_current_stream())
        got = float(launch_to_numpy(next(iter(env.values()))))
        print(f"   rel err {abs(got - want) / want:.1e}")
    relaunch(binding, REDUCE_UNROLL=saved)
    part = fr.empty(132 * 64, np.float32).compute()
    dev = driver.current_device()
    cubin = nvrtc.compile_cubin(SUMSQ_FACTORS, "factors", driver.device_props(dev).arch,
                                ("-minimal",))
    names = re.findall(r"^SUMSQ\((\w+),", SUMSQ_FACTORS, re.M)
    for name in names:
        func = driver.load_function(dev, cubin, name)
        for block, grid in ((512, 512), (256, 132 * 8), (512, 132 * 4 * 4)):
            call = launcher(func, grid, block, [ptr(x), ptr(part), N], ["ptr", "ptr", "int32"])
            t = timed(call)
            got = float(fr.asnumpy(part)[:grid].astype(np.float64).sum())
            report(f"{name} block {block} grid {grid} (rel err {abs(got - want) / want:.0e})",
                   t, 4 * N)


def probe_sqrt() -> None:
    """fr_sqrt against sqrtf on every float (mismatches: must be 0), and chain20 with it."""
    import workloads

    dev = driver.current_device()
    func = load(SQRT_CHECK, "sqrt_check")
    bad = fr.asarray(np.zeros(1, np.uint64)).compute()
    first = fr.asarray(np.full(1, 0xFFFFFFFF, np.uint32)).compute()
    t0 = time.perf_counter()
    driver.launch(func, 132 * 16, 256, [ptr(bad), ptr(first)], ["ptr", "ptr"], 0,
                  stream_handle())
    fr.synchronize()
    print(f"fr_sqrt vs sqrtf over 2^32 floats: {int(fr.asnumpy(bad)[0])} differ "
          f"(first {int(fr.asnumpy(first)[0]):#x}), {time.perf_counter() - t0:.2f} s")
    host = np.random.default_rng(2).standard_normal(N, dtype=np.float32)
    x = fr.asarray(host)
    out = fr.empty(N, np.float32).compute()
    want = workloads.chain20(np, host[:4096].astype(np.float64))
    arch = driver.device_props(dev).arch
    for sin, sqrt in (("sinf", "sqrtf"), ("sinf", "fr_sqrt"), ("sinf", "approx_sqrt")):
        src = f"#define SIN {sin}\n#define SQRT {sqrt}\n" + CHAIN_VARIANTS
        func = driver.load_function(dev, nvrtc.compile_cubin(src, "chain", arch, ("-minimal",)),
                                    "chain_v4")
        t = timed(launcher(func, N // 1024, 256, [ptr(x), ptr(out), N // 4],
                           ["ptr", "ptr", "int32"]))
        err = float(np.abs(fr.asnumpy(out)[:4096] - want).max())
        report(f"chain_v4 {sin} {sqrt} (err {err:.1e})", t, 8 * N)
    f = fr.jit(lambda y: workloads.chain20(fr, y))
    report("chain20 fuseray jit", timed(lambda: f(x)), 8 * N)


def probe_pch() -> None:
    """NVRTC time of a new kernel with and without a precompiled header."""
    import tempfile

    x1 = fr.asarray(np.ones(1 << 20, np.float32))
    name, src = program.generate(kernel_of((fr.sin(x1) * 1.2345671 + x1)._node))
    arch = driver.device_props(driver.current_device()).arch
    pch = tempfile.mktemp(suffix=".pch")
    nvrtc.compile_cubin(src.replace(name, name + "p"), name + "p", arch,
                        ("-minimal", f"--create-pch={pch}"))
    for label, opts in (("plain", ("-minimal",)), ("use-pch", ("-minimal", f"--use-pch={pch}"))):
        ts = []
        for rep in range(5):
            t0 = time.perf_counter()
            nvrtc.compile_cubin(src.replace(name, f"{name}{label[0]}{rep}"), name, arch, opts)
            ts.append(time.perf_counter() - t0)
        print(f"new kernel NVRTC {label}: {statistics.median(ts) * 1e3:.1f} ms")



def probe_chain20c() -> None:
    """Why the generated chain20 did not follow the hand kernel to fr_sqrt's speed: the jit call,
    its binding, its own CUBIN launched by hand into a preallocated output, and that CUBIN's
    SASS (subroutine calls, convergence regions)."""
    import subprocess
    import tempfile

    import workloads
    from fuseray.backends.cuda.cache import default_cache

    host = np.random.default_rng(2).standard_normal(N, dtype=np.float32)
    x = fr.asarray(host)
    out = fr.empty(N, np.float32).compute()
    f = fr.jit(lambda y: workloads.chain20(fr, y))
    report("chain20 jit", timed(lambda: f(x)), 8 * N)
    report("chain20 jit, batches of 50", timed(lambda: f(x), 10, 50), 8 * N)
    binding, run = bound(workloads.chain20(fr, x)._node)
    report("chain20 Binding.run", timed(run), 8 * N)
    st = binding.last_state
    gen = st.program.generated
    dev = driver.current_device()
    arch = driver.device_props(dev).arch
    print("   dims", st.dims, "params", [p.kind for p in gen.params])
    cubin = default_cache().get_cubin(gen.source, gen.name, arch, program.compile_options())
    fresh = nvrtc.compile_cubin(gen.source, gen.name, arch, program.compile_options())
    print(f"   cached CUBIN {len(cubin)} B, fresh compile {len(fresh)} B, same {cubin == fresh}")
    func = driver.load_function(dev, fresh, gen.name)
    args = [ptr(x), ptr(out), N, 0.99, 0.01, 0.5]
    kinds = [p.kind for p in gen.params]
    report("chain20 generated CUBIN, preallocated out",
           timed(lambda: driver.launch(func, st.dims[:3], st.dims[3:6], args, kinds, 0,
                                       stream_handle())), 8 * N)
    src = "#define SIN sinf\n#define SQRT fr_sqrt\n" + CHAIN_VARIANTS
    hand = nvrtc.compile_cubin(src, "chain", arch, ("-minimal",))
    hf = driver.load_function(dev, hand, "chain_v4")
    report("chain_v4 sinf fr_sqrt", timed(launcher(hf, N // 1024, 256, [ptr(x), ptr(out), N // 4],
                                                   ["ptr", "ptr", "int32"])), 8 * N)
    for label, blob in (("generated", fresh), ("hand", hand)):
        path = tempfile.mktemp(suffix=".cubin")
        open(path, "wb").write(blob)
        sass = subprocess.run(["cuobjdump", "-sass", path], capture_output=True, text=True).stdout
        res = subprocess.run(["cuobjdump", "-res-usage", path], capture_output=True,
                             text=True).stdout
        counts = {op: len(re.findall(rf"\b{op}\b", sass)) for op in
                  ("CALL.REL.NOINC", "BSSY", "MUFU.RSQ", "MUFU.SIN", "LDG.E.128.CONSTANT")}
        regs = re.findall(r"REG:\d+", res)
        print(f"   SASS {label}: {counts} {regs}")
    print("   source has fr_sqrt:", "fr_sqrt" in gen.source)


MDIV = r"""
__device__ __forceinline__ float fr_mdiv(float a, float b, float y) {
  const float q = a * y;
  return fmaf(fmaf(-b, q, a), y, q);
}
"""


def _markstein(divisor: str):
    """An edit: divisions by the row value ``divisor`` become a multiply by its correctly
    rounded reciprocal and one FMA correction (Markstein), the reciprocal once per row."""

    def edit(s: str) -> str:
        s = s.replace('#include "fuseray_index.cuh"', '#include "fuseray_index.cuh"' + MDIV, 1)
        s, n = re.subn(rf"(const float {divisor} = [^;]*;)",
                       rf"\1 const float fr_y_{divisor} = __frcp_rn({divisor});", s)
        s, m = re.subn(rf"fr_divide\((\w+), {divisor}\)",
                       rf"fr_mdiv(\1, {divisor}, fr_y_{divisor})", s)
        assert n and m, (n, m)
        return s

    return edit


def _outputs(binding, dev, stream) -> list[np.ndarray]:
    from fuseray.backends.cuda import memory

    env: dict = {}
    binding.run(env, dev, stream)
    return [memory.to_host(env[o[0]]) for o in binding.outputs]


def probe_tiers() -> None:
    """Tiered compilation's questions: how fast a quick build (-Ofc=max) compiles on this host,
    whether it computes bit for bit what the full build does once FMA contraction is off
    (-fmad=false), and what -fmad=false costs the full build; plus a Markstein division by the
    row value for layernorm and softmax."""
    import workloads
    from fuseray.backends.cuda import launch

    x1 = fr.asarray(np.ones(1 << 20, np.float32))
    node = (fr.sin(x1) * 1.2345671 + x1)._node
    name, src = program.generate(kernel_of(node))
    arch = driver.device_props(driver.current_device()).arch
    builds = {"full": ("-minimal",), "full nofma": ("-minimal", "-fmad=false"),
              "quick nofma": ("-minimal", "-fmad=false", "-Ofc=max"),
              "quick": ("-minimal", "-Ofc=max")}
    times: dict = {b: [] for b in builds}
    for rep in range(5):
        for b, opts in builds.items():
            t0 = time.perf_counter()
            nvrtc.compile_cubin(src.replace(name, f"{name}t{rep}"), name, arch, opts)
            times[b].append(time.perf_counter() - t0)
    for b, ts in times.items():
        print(f"new kernel NVRTC {b}: {statistics.median(ts) * 1e3:.1f} ms "
              f"(min {min(ts) * 1e3:.1f})", flush=True)
    rng = np.random.default_rng(0)
    dev, stream = driver.current_device(), streams.get_current_stream()
    for wl, nbytes in (("triad", 16), ("gelu", 8), ("black_scholes", 20), ("softmax", 8),
                       ("layernorm", 8), ("sumsq", 4), ("colsum", 4), ("chain20", 8)):
        ins = [fr.asarray(a) for a in workloads.inputs(wl, N, rng)]
        res = workloads.WORKLOADS[wl](fr, *ins)
        res = res if isinstance(res, tuple) else (res,)
        kernel = runtime.prepare([r._node for r in res])[1].kernels[0]
        binding = launch.binding_for(kernel)
        run = lambda b=binding: b.run({}, dev, stream)  # noqa: E731
        run()
        programs, outs = {}, {}
        edits = {"softmax": "t3", "layernorm": "t5"}
        variants = dict(builds)
        if wl in edits:
            variants["full nofma markstein"] = ("-minimal", "-fmad=false")
        for label, opts in variants.items():
            edit = _markstein(edits[wl]) if "markstein" in label else (lambda s: s)
            swap_source(binding, edit, base=opts)
            programs[label] = binding.last_state.program
            outs[label] = _outputs(binding, dev, stream)
        ref = outs["full nofma"]
        for label, o in outs.items():
            diff = sum(int(np.count_nonzero(a.view(np.uint32) != b.view(np.uint32)))
                       for a, b in zip(o, ref))
            print(f"{wl} {label}: {diff} elements differ bitwise from full nofma", flush=True)
        results: dict = {lb: [] for lb in programs}
        for _ in range(3):
            for lb, prog in programs.items():
                binding.last_state.program = prog
                results[lb].append(timed(run, 10))
        for lb, ts in results.items():
            report(f"{wl} {lb} (median of 3 interleaved)", statistics.median(ts), nbytes * N)
        del ins, res


MARKSTEIN_ALL = r"""
#include "fuseray_index.cuh"
// a and d run over every significand in [1, 2) (scaling by powers of two maps every quotient of
// the safe range onto one of these): the one-step and the two-step correction against div.rn
extern "C" __global__ void markstein_all(int d0, int dn, unsigned long long* bad) {
  unsigned long long one = 0, two = 0;
  for (int di = d0 + blockIdx.x * blockDim.x + threadIdx.x; di < d0 + dn;
       di += gridDim.x * blockDim.x) {
    const float d = __int_as_float(0x3f800000 | di);
    const float y = __frcp_rn(d);
    for (int ai = 0; ai < (1 << 23); ++ai) {
      const float a = __int_as_float(0x3f800000 | ai);
      const float want = __fdiv_rn(a, d);
      const float q0 = a * y;
      const float q1 = fmaf(fmaf(-d, q0, a), y, q0);
      const float q2 = fmaf(fmaf(-d, q1, a), y, q1);
      one += q1 != want;
      two += q2 != want;
    }
  }
  atomicAdd(bad, one);
  atomicAdd(bad + 1, two);
}
"""


def probe_markstein() -> None:
    """One and two Markstein corrections of ``a * rcp(d)`` against div.rn on every pair of
    significands (NOTES.md G20)."""
    func = load(MARKSTEIN_ALL, "markstein_all")
    bad = fr.asarray(np.zeros(2, np.uint64))
    total, step, t0 = 1 << 23, 1 << 18, time.perf_counter()
    done = 0
    while done < total and time.perf_counter() - t0 < 150:
        driver.launch(func, 132 * 8, 256, [done, step, ptr(bad)], ["int32", "int32", "ptr"], 0,
                      stream_handle())
        fr.synchronize()
        done += step
    one, two = (int(v) for v in fr.asnumpy(bad))
    print(f"markstein: {done} of {total} divisors x 2^23 numerators in "
          f"{time.perf_counter() - t0:.1f} s: one correction differs from div.rn {one} times, "
          f"two corrections {two} times", flush=True)


def probe_suitecall() -> None:
    """small_triad as the suite measures it (gpu.small_triad_us), in a fresh process and again
    after the peers have been imported and run, with the garbage collector on and off, and the
    driver calls a cached call makes besides the launch (NOTES.md G18, G22)."""
    import collections
    import gc

    import gpu

    import workloads

    fw = gpu.FuserayFW()

    def measure(label: str) -> None:
        ts = [gpu.small_triad_us(fw) for _ in range(3)]
        gc.disable()
        try:
            off = [gpu.small_triad_us(fw) for _ in range(3)]
        finally:
            gc.enable()
        print(f"small_triad {label}: {statistics.median(ts):.2f} us "
              f"(gc off {statistics.median(off):.2f} us; gc counts {gc.get_count()})", flush=True)

    measure("fresh process")
    counts: collections.Counter = collections.Counter()
    cu = driver.cu
    originals = {n: getattr(cu, n) for n in dir(cu) if n.startswith("cu") and n != "cuLaunchKernel"
                 and callable(getattr(cu, n))}

    def counting(name, fn):
        def call(*a, **k):
            counts[name] += 1
            return fn(*a, **k)
        return call

    f = fw.make("triad")
    args = [fw.to_device(a) for a in workloads.inputs("triad", 4096, np.random.default_rng(7))]
    f(*args)
    fr.synchronize()
    for n, fn in originals.items():
        setattr(cu, n, counting(n, fn))
    try:
        for _ in range(1000):
            f(*args)
        fr.synchronize()
    finally:
        for n, fn in originals.items():
            setattr(cu, n, fn)
    print(f"driver calls in 1000 cached calls besides the launch: {dict(counts)}", flush=True)
    host = workloads.inputs("triad", N, np.random.default_rng(0))
    for name in ("cupy", "torch", "torch.compile", "jax.jit"):
        try:
            peer = gpu.FRAMEWORKS[name]()
            g = peer.make("triad")
            dev = [peer.to_device(a) for a in host]
            for _ in range(3):
                g(*dev)
            peer.sync()
            del dev, g
            peer.free()
        except Exception as e:  # noqa: BLE001 - a missing peer is reported
            print(f"{name}: {type(e).__name__}: {e}"[:200], flush=True)
    measure("after the peers ran triad at N")
    profile_calls(lambda: f(*args), 5000, 15)


def probe_vectors() -> None:
    """Reductions and row kernels as generated (16-byte vectors in streaming passes, G21, and
    in full rows' cached passes, G22) against the same kernels generated with single-element
    accesses: interleaved medians and bitwise agreement of the outputs."""
    import workloads
    from fuseray.backends.cuda import codegen_reduce, launch

    rng = np.random.default_rng(0)
    dev, stream = driver.current_device(), streams.get_current_stream()
    arch = driver.device_props(dev).arch
    m = rng.standard_normal((N // 1024, 1024), dtype=np.float32)
    cases = {wl: (workloads.inputs(wl, N, rng), workloads.MIN_BYTES_PER_ELEMENT[wl])
             for wl in ("sumsq", "softmax", "layernorm", "colsum")}
    cases["rowsum"] = ((m,), 4)
    for wl, (host, per) in cases.items():
        ins = [fr.asarray(a) for a in host]
        res = (ins[0].sum(axis=1) if wl == "rowsum" else workloads.WORKLOADS[wl](fr, *ins))
        kernel = kernel_of(res._node)
        binding = launch.binding_for(kernel)
        run = lambda b=binding: b.run({}, dev, stream)  # noqa: E731
        run()
        generated = binding.last_state.program
        if program.generate(kernel)[1] != generated.generated.source:
            print(f"{wl}: the binding's layouts differ from generate()'s: skipped", flush=True)
            continue
        saved = codegen_reduce._Gen.cache_lanes, codegen_reduce._Gen.stream_vector
        codegen_reduce._Gen.cache_lanes = lambda self: 0
        codegen_reduce._Gen.stream_vector = lambda self, nodes, accesses: 0
        try:
            name, source = program.generate(kernel)
        finally:
            codegen_reduce._Gen.cache_lanes, codegen_reduce._Gen.stream_vector = saved
        if source == generated.generated.source:
            print(f"{wl}: no vector path in the generated kernel", flush=True)
            continue
        cubin = nvrtc.compile_cubin(source, name, arch, program.compile_options())
        scalar = generated.__class__.__new__(generated.__class__)
        scalar.generated, scalar.pack = generated.generated, generated.pack
        scalar.function = driver.load_function(dev, cubin, name)
        programs = {"vectors": generated, "single elements": scalar}
        outs = {}
        for label, prog in programs.items():
            binding.last_state.program = prog
            outs[label] = _outputs(binding, dev, stream)
        diff = sum(int(np.count_nonzero(np.atleast_1d(a).view(np.uint8)
                                        != np.atleast_1d(b).view(np.uint8)))
                   for a, b in zip(outs["vectors"], outs["single elements"]))
        print(f"{wl}: {diff} bytes of the outputs differ (summation order)", flush=True)
        results: dict = {lb: [] for lb in programs}
        for _ in range(5):
            for lb, prog in programs.items():
                binding.last_state.program = prog
                results[lb].append(timed(run, 10))
        binding.last_state.program = generated
        for lb, ts in results.items():
            report(f"{wl} {lb} (median of 5 interleaved)", statistics.median(ts), per * N)
        del ins, res


def probe_rowsched() -> None:
    """Row kernels' geometry (NOTES.md G23): layernorm and softmax generated with each register
    cache budget (elements a thread keeps per row: 32 is one warp per 1024-long row) and each
    block size, interleaved, against torch.compile in the same run; outputs checked against
    float64 NumPy."""
    import workloads
    from fuseray import schedule
    from fuseray.backends.cuda import launch

    rng = np.random.default_rng(0)
    dev, stream = driver.current_device(), streams.get_current_stream()
    saved = schedule.ROW_CACHE_REGISTERS, schedule.ROW_BLOCK
    for wl in ("layernorm", "softmax"):
        host = workloads.inputs(wl, N, rng)
        ins = [fr.asarray(a) for a in host]
        want = workloads.WORKLOADS[wl](np, *[a.astype(np.float64) for a in host])
        runs = {}
        for regs in (32, 16, 8):
            for block in (128, 256, 512):
                schedule.ROW_CACHE_REGISTERS, schedule.ROW_BLOCK = regs, block
                try:
                    res = workloads.WORKLOADS[wl](fr, *ins)
                    binding = launch.binding_for(kernel_of(res._node))
                    binding.run({}, dev, stream)
                    fr.cuda.wait_for_compiles()
                    (out,) = _outputs(binding, dev, stream)
                finally:
                    schedule.ROW_CACHE_REGISTERS, schedule.ROW_BLOCK = saved
                err = float(np.abs(out - want).max())
                st = binding.last_state
                label = f"{wl} cache {regs} regs, block {block}: {st.dims[:6]} err {err:.1e}"
                runs[label] = (lambda b=binding: b.run({}, dev, stream), fr.synchronize)
        add_peer(runs, "torch.compile", wl, host)
        interleaved(runs, workloads.MIN_BYTES_PER_ELEMENT[wl] * N)
        del ins, runs


def add_peer(runs: dict, framework: str, workload: str, host: list) -> None:
    """Add ``framework``'s ``workload`` on copies of ``host`` to ``runs`` (label -> (call,
    sync)), warmed up; a peer that is missing or fails is reported and left out."""
    try:
        import gpu

        peer = gpu.FRAMEWORKS[framework]()
        fn, args = peer.make(workload), [peer.to_device(a) for a in host]
        fn(*args)
        peer.sync()
        runs[f"{workload} {framework}"] = (lambda: fn(*args), peer.sync)
    except Exception as e:  # noqa: BLE001 - a missing peer is reported
        print(f"{framework}: {type(e).__name__}: {e}"[:200], flush=True)


def interleaved(runs: dict, nbytes: int, rounds: int = 5, shuffle: bool = False,
                batch: int | None = 5, control: bool = False) -> dict:
    """Time every (call, sync) of ``runs`` in turn, ``rounds`` times, and report each median;
    ``shuffle`` takes them in a new random order each round (no entry always runs first);
    ``batch`` calls a timed batch (None: sized as the suite sizes them, G17).

    Each line also gives the entry's time over the first entry's *in the same round*, as the
    median and middle half of those per-round ratios: drift between rounds (clocks, heat, a
    neighbour on the host) cancels in them, which it does not in a ratio of medians.
    ``control`` times the first entry a second time under its own label (an A/A pair): how far
    its ratio is from 1 is the noise floor of this probe on this machine (G35 saw 1.9%).
    Returns label -> the per-round times."""
    from gpu import interleaved_rounds, paired_ratio_quartiles

    if control:
        first_label, first = next(iter(runs.items()))
        runs = {**runs, f"{first_label} again (A/A control)": first}
    results = interleaved_rounds(
        runs, rounds, lambda label, call, sync: timed_with(call, sync, 10, batch), shuffle)
    base = next(iter(results.values()))
    for label, ts in results.items():
        q1, q2, q3 = paired_ratio_quartiles(ts, base)
        report(f"{label} (median of {rounds} interleaved)", statistics.median(ts), nbytes,
               f"  x{q2:.3f} [{q1:.3f}, {q3:.3f}] of the first")
    return results


def probe_hostcost() -> None:
    """small_triad's host cost on this machine: the cached call with the real cuLaunchKernel and
    with a stub in its place (what is left is Python), interleaved (NOTES.md G23)."""
    small = [fr.asarray(np.random.default_rng(i).standard_normal(4096, dtype=np.float32))
             for i in range(3)]
    f = fr.jit(lambda a, b, c: a * b + c)
    call = lambda: f(*small)  # noqa: E731
    real = driver.cu.cuLaunchKernel
    stub = lambda *a: (0,)  # noqa: E731
    ts: dict = {"real launch": [], "stub launch": []}
    for _ in range(5):
        for label, fn in (("real launch", real), ("stub launch", stub)):
            driver.cu.cuLaunchKernel = fn
            try:
                ts[label].append(timed(call, 10, 2000) * 1e6)
            finally:
                driver.cu.cuLaunchKernel = real
    for label, v in ts.items():
        print(f"small_triad, {label}: {statistics.median(v):.2f} us per call "
              f"({min(v):.2f}-{max(v):.2f})", flush=True)


def probe_sinsmall() -> None:
    """chain20 with sin of a proven-small operand as one polynomial (fr_sin_small, NOTES.md G24)
    against the same kernel with sinf everywhere, interleaved, and jax.jit in the same run; each
    output's largest error against float64 NumPy."""
    import workloads
    from fuseray.backends.cuda import memory

    rng = np.random.default_rng(0)
    host = workloads.inputs("chain20", N, rng)
    want = workloads.chain20(np, host[0].astype(np.float64))
    dev, stream = driver.current_device(), streams.get_current_stream()
    runs = {}
    for label, edit in (("fr_sin_small", None), ("sinf", lambda s: s.replace("fr_sin_small(",
                                                                           "fr_sin("))):
        binding, run = bound(workloads.chain20(fr, fr.asarray(host[0]))._node)
        fr.cuda.wait_for_compiles()
        if edit is not None:
            swap_source(binding, edit, base=program.compile_options())
        env: dict = {}
        binding.run(env, dev, stream)
        out = memory.to_host(env[binding.outputs[0][0]])
        err = float(np.abs(out - want).max())
        source = binding.last_state.program.generated.source
        print(f"   {label}: max abs error {err:.2e}, fr_sin_small in source:"
              f" {'fr_sin_small(' in source}")
        runs[f"chain20 {label}"] = (run, fr.synchronize)
    add_peer(runs, "jax.jit", "chain20", host)
    interleaved(runs, 8 * N)


EMPTY_KERNEL = r"""extern "C" __global__ void empty_kernel(const float* a, const float* b,
                                                const float* c, float* o, int n) {}"""


def probe_launchfloor() -> None:
    """What a launch costs this host, by route and stream (NOTES.md G26): cuda.bindings with
    handle objects and with ints, a numba-compiled call through libcuda's function pointer, the
    legacy, per-thread and a non-blocking stream, the triad kernel and an empty one; then the
    Python speed of the host and the cached small_triad of fuseray and its peers, interleaved."""
    import ctypes

    import numba

    t0 = time.perf_counter()
    total = 0
    for i in range(10**7):
        total += i
    print(f"host speed: 10^7 Python additions {time.perf_counter() - t0:.3f} s", flush=True)
    small = [fr.asarray(np.random.default_rng(i).standard_normal(4096, dtype=np.float32))
             for i in range(3)]
    name, src = program.generate(kernel_of((small[0] * small[1] + small[2])._node))
    funcs = {"triad": load(src, name), "empty": load(EMPTY_KERNEL, "empty_kernel")}
    out = fr.empty(4096, np.float32).compute()
    args = [ptr(small[0]), ptr(small[1]), ptr(small[2]), ptr(out), 4096]
    pack = driver.arg_pack(["ptr"] * 4 + ["int32"])
    params = pack.pack(args)
    u64 = ctypes.c_uint64
    c_launch = ctypes.CDLL("libcuda.so.1").cuLaunchKernel
    c_launch.argtypes = [u64, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                         ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, u64, u64, u64]
    c_launch.restype = ctypes.c_int

    @numba.njit(cache=False)
    def nb_launch(f, grid, block, stream, p):
        return c_launch(f, grid, 1, 1, block, 1, 1, 0, stream, p, 0)

    cu = driver.cu
    made = fr.cuda.Stream(non_blocking=True)
    stream_kinds = {"legacy": 0, "per-thread": 2, "non-blocking": made.ptr}
    reps = 20000
    for kname, func in funcs.items():
        fh = int(func.handle)
        assert nb_launch(fh, 4, 256, 0, params) == 0
        for sname, sh in stream_kinds.items():
            routes = {
                "bindings objects": lambda f=func, s=sh: cu.cuLaunchKernel(
                    f.handle, 4, 1, 1, 256, 1, 1, 0, cu.CUstream(s), params, 0),
                "bindings ints": lambda f=fh, s=sh: cu.cuLaunchKernel(
                    f, 4, 1, 1, 256, 1, 1, 0, s, params, 0),
                "numba": lambda f=fh, s=sh: nb_launch(f, 4, 256, s, params),
            }
            for rname, call in routes.items():
                issue, total_t = [], []
                for _ in range(3):
                    fr.synchronize()
                    cu.cuCtxSynchronize()
                    t1 = time.perf_counter()
                    for _ in range(reps):
                        call()
                    t2 = time.perf_counter()
                    cu.cuCtxSynchronize()
                    t3 = time.perf_counter()
                    issue.append((t2 - t1) / reps * 1e6)
                    total_t.append((t3 - t1) / reps * 1e6)
                print(f"launch {kname:5s} {sname:12s} {rname:16s} issue "
                      f"{statistics.median(issue):5.2f} us, with the drain "
                      f"{statistics.median(total_t):5.2f} us", flush=True)
    cu.cuCtxSynchronize()
    assert np.allclose(fr.asnumpy(out), fr.asnumpy(small[0] * small[1] + small[2]))
    host = [fr.asnumpy(a) for a in small]
    f = fr.jit(lambda a, b, c: a * b + c)
    runs = {"small_triad fuseray": (lambda: f(*small), fr.synchronize)}
    for framework in ("cupy.fuse", "cupy", "torch"):
        add_peer(runs, framework, "triad", host)
    results: dict = {label: [] for label in runs}
    for _ in range(5):
        for label, (call, sync) in runs.items():
            results[label].append(timed_with(call, sync, 10, 2000) * 1e6)
    for label, ts in results.items():
        print(f"{label}: {statistics.median(ts):.2f} us per call ({min(ts):.2f}-{max(ts):.2f})",
              flush=True)


def probe_hostcalls() -> None:
    """Which driver calls a cached small_triad call makes on a real GPU (the fake driver of
    overhead_local.py says none besides the launch), counted over 2000 calls."""
    import collections

    from fuseray.backends.cuda import launch_index, memory

    counts: collections.Counter = collections.Counter()
    real = driver.cu

    class Counting:
        def __getattr__(self, name):
            value = getattr(real, name)
            if not (name.startswith("cu") and callable(value)) or isinstance(value, type):
                return value

            def call(*a, **k):
                counts[name] += 1
                return value(*a, **k)

            return call

    small = [fr.asarray(np.random.default_rng(i).standard_normal(4096, dtype=np.float32))
             for i in range(3)]
    f = fr.jit(lambda a, b, c: a * b + c)
    for _ in range(100):
        f(*small)
    fr.synchronize()
    modules = (driver, memory, streams, launch_index)
    for m in modules:
        m.cu = Counting()
    try:
        for _ in range(2000):
            f(*small)
    finally:
        for m in modules:
            m.cu = real
    fr.synchronize()
    print(f"driver calls per cached small_triad call: "
          f"{ {k: v / 2000 for k, v in sorted(counts.items())} }", flush=True)


def probe_splitcount() -> None:
    """sumsq's split count (NOTES.md G27): the schedule's 512 blocks of 512 threads (3 or 4 an
    SM on 132 SMs) against one full wave (528), two (1024, 1056) and four (2048), interleaved
    with torch.compile, each result checked against float64 NumPy."""
    from fuseray import schedule

    host = np.random.default_rng(3).standard_normal(N, dtype=np.float32)
    want = float((host.astype(np.float64) ** 2).sum())
    x = fr.asarray(host)
    dev, stream = driver.current_device(), streams.get_current_stream()
    saved = schedule.REDUCE_ITEMS_PER_THREAD, schedule.SPLIT_BLOCKS_PER_SM
    runs = {}
    binding, _ = bound((x * x).sum()._node)
    for items, per_sm in ((64, 2), (32, 1), (32, 2), (16, 2), (16, 4)):
        relaunch(binding, REDUCE_ITEMS_PER_THREAD=items, SPLIT_BLOCKS_PER_SM=per_sm)
        env: dict = {}
        binding.run(env, dev, stream)
        st, key = binding.last_state, binding.last_key
        got = float(launch_to_numpy(env[binding.outputs[0][0]]))
        label = f"sumsq splits {st.dims[1]} (items {items}, {per_sm}/SM)"
        print(f"   {label}: dims {st.dims[:6]}, rel err {abs(got - want) / want:.1e}", flush=True)

        def run(st=st, key=key):  # this entry's launch state, whatever ran before it
            binding.last_key, binding.last_state = key, st
            binding.launch([x._node.value], [], [None], dev, stream)

        runs[label] = (run, fr.synchronize)
    schedule.REDUCE_ITEMS_PER_THREAD, schedule.SPLIT_BLOCKS_PER_SM = saved
    add_peer(runs, "torch.compile", "sumsq", [host])
    interleaved(runs, 4 * N)


def probe_hostparts() -> None:
    """small_triad's cached call taken apart on this host (best of 5 timeit batches, ns): the
    whole call, and each piece it is made of, called alone (NOTES.md G28)."""
    import importlib
    import platform
    import timeit

    from fuseray.array import leaf_node, ndarray
    from fuseray.backends.cuda import launch, memory

    jit_module = importlib.import_module("fuseray.jit")
    print(f"python {platform.python_version()} {platform.python_implementation()},"
          f" {platform.machine()}, kernel {platform.release()}", flush=True)
    small = [fr.asarray(np.random.default_rng(i).standard_normal(4096, dtype=np.float32))
             for i in range(3)]
    f = fr.jit(lambda a, b, c: a * b + c)
    f(*small)
    key, leaves = jit_module._fast_args(small)
    inst = f._fast[key][1]
    direct = inst.direct
    value = direct(leaves)[0]
    st = streams.get_current_stream()
    real = driver.cu.cuLaunchKernel
    parts = {
        "whole call": lambda: f(*small),
        "_fast_args": lambda: jit_module._fast_args(small),
        "hash(key)": lambda: hash(key),
        "direct runner (allocate, launch, free)": lambda: direct(leaves),
        "ndarray(leaf_node(value))": lambda: ndarray(leaf_node(value)),
        "current device id": launch._current_device_id,
        "get_current_stream": lambda: streams.get_current_stream(0),
        "DeviceMemory and its free": lambda: memory.DeviceMemory(16384, st),
        "empty lambda": lambda: None,
    }
    for stubbed in (False, True):
        if stubbed:
            driver.cu.cuLaunchKernel = lambda *a: (0,)
        try:
            for label, fn in parts.items():
                if stubbed and "call" not in label and "runner" not in label:
                    continue
                n = 2000 if "call" in label or "runner" in label else 20000
                best = min(timeit.repeat(fn, number=n, repeat=5)) / n
                fr.synchronize()
                print(f"   {label}{' (launch stubbed)' if stubbed else ''}: {best * 1e9:.0f} ns",
                      flush=True)
        finally:
            driver.cu.cuLaunchKernel = real


def probe_ncu() -> None:
    """sumsq, softmax and layernorm of fuseray and torch.compile, twice each inside a profiler
    range, for Nsight Compute (NOTES.md G28): run as ``ncu --profile-from-start off
    --clock-control none --cache-control none [sections] python benchmarks/probe.py ncu``."""
    import workloads

    rng = np.random.default_rng(5)
    runs: dict = {}
    for name in ("sumsq", "softmax", "layernorm"):
        host = list(workloads.inputs(name, N, rng))
        for framework in ("fuseray", "torch.compile"):
            add_peer(runs, framework, name, host)
    fr.cuda.wait_for_compiles()
    driver.check(driver.cu.cuProfilerStart(), "cuProfilerStart")
    for label, (call, sync) in runs.items():
        for _ in range(2):
            call()
            sync()
        print(f"   profiled {label}", flush=True)
    driver.check(driver.cu.cuProfilerStop(), "cuProfilerStop")


def binding_variants(label: str, binding, variants: dict, check, dependent=()) -> dict:
    """Runs (label -> (call, sync)) of ``binding``'s kernel with its source edited by each of
    ``variants`` (name -> edit, None: as generated), each with a launch state of its own; the
    edited variants named in ``dependent`` are loaded as programmatic dependent launches.
    ``check(name, outputs, state)`` gets each variant's outputs as NumPy arrays, prints what it
    found and says whether the variant is timed."""
    dev, stream = driver.current_device(), streams.get_current_stream()
    runs = {}
    values = [b.value for b in binding.bases]
    for name, edit in variants.items():
        relaunch(binding)
        binding.run({}, dev, stream)
        if edit is not None:
            swap_source(binding, edit, ("-fmad=false",), dependent=name in dependent)
        env: dict = {}
        binding.run(env, dev, stream)
        got = [launch_to_numpy(env[o[0]]) for o in binding.outputs]
        st, key = binding.last_state, binding.last_key
        if not check(name, got, st):
            continue

        def run(st=st, key=key, outs=None):  # ``outs``: a list the outputs are put in
            binding.last_key, binding.last_state = key, st
            outs = [None] * len(binding.outputs) if outs is None else outs
            binding.launch(values, [], outs, dev, stream)

        runs[f"{label} {name}"] = (run, fr.synchronize)
    return runs


def kernel_variants(label: str, result, want: np.ndarray, variants: dict, dependent=()) -> dict:
    """Runs (label -> (call, sync)) of lazy ``result``'s single generated kernel with its source
    edited by each of ``variants`` (name -> edit, None: as generated), each with a launch state
    of its own (``dependent``: as ``binding_variants``), checked against float64 ``want`` (the
    largest relative error printed)."""
    binding, _ = bound(result._node)
    scale = max(float(np.abs(want).max()), 1e-30)

    def check(name, got, st):
        err = float(np.abs(got[0].astype(np.float64) - want).max()) / scale
        print(f"   {label} {name}: grid {st.launch.grid}, rel err {err:.1e}", flush=True)
        return True

    return binding_variants(label, binding, variants, check, dependent)


def sumsq_variants(x, want: float, variants: dict) -> dict:
    """``kernel_variants`` of sumsq on ``x``."""
    return kernel_variants("sumsq", (x * x).sum(), np.float64(want), variants)


def probe_colsumload() -> None:
    """colsum's weight, broadcast over the reduced axis, loaded once per row (layout class "0",
    as generated) against a load per element at a run-time stride of 0 (as before), next to
    torch.compile, timed as the suite times, shuffled."""
    import workloads

    host = workloads.inputs("colsum", N, np.random.default_rng(4))
    m, g = (fr.asarray(a) for a in host)
    want = (host[0].astype(np.float64) * host[1]).sum(axis=0)
    hoisted = "a1_p[a1_r]"

    def per_element(src):  # the weight's address moves with j by a stride the compiler can't see
        assert hoisted in src
        return src.replace(hoisted, "a1_p[a1_r + j * (fr_idx)(L < 0)]")

    runs = kernel_variants("colsum", (m * g).sum(axis=0), want,
                           {"generated (weight once per row)": None,
                            "weight loaded per element": per_element})
    add_peer(runs, "torch.compile", "colsum", host)
    interleaved(runs, 4 * N, rounds=9, shuffle=True, batch=None)


def add_row_sums(runs: dict, x, want: float) -> None:
    """Add sumsq's bytes reduced as 1024-long row sums (a row kernel, no split) to ``runs``,
    checked against ``want`` (printed)."""
    rows = fr.jit(lambda v: (v * v).sum(axis=1))
    m = x.reshape(ROWS, COLS)
    got = np.asarray(rows(m).get(), dtype=np.float64).sum()
    print(f"   sumsq row sums (1024): rel err {abs(got - want) / want:.1e}", flush=True)
    runs["sumsq row sums (1024)"] = (lambda: rows(m), fr.synchronize)


def probe_sumsqhints() -> None:
    """sumsq's generated kernel with other load instructions for its 16-byte loads (streaming
    ``__ldcs``, no L1 allocation, an L2 evict-first policy, a 256-byte L2 prefetch), and timed
    without its final combine (the last block's pass over the split partials; wrong result,
    timing only), interleaved with torch.compile (NOTES.md G28)."""
    host = np.random.default_rng(3).standard_normal(N, dtype=np.float32)
    want = float((host.astype(np.float64) ** 2).sum())
    x = fr.asarray(host)
    load = "a0_v[u] = fr_load_vec<4>(a0_p + a0_r + fr_v, 0);"
    outs = ' : "=f"(a0_v[u].v[0]), "=f"(a0_v[u].v[1]), "=f"(a0_v[u].v[2]), "=f"(a0_v[u].v[3])'
    asm = ('{{ const float* fr_q = a0_p + a0_r + fr_v; asm volatile("{op} {{%0,%1,%2,%3}}, [%4];"'
           + outs.replace("{", "{{").replace("}", "}}") + ' : "l"(fr_q)); }}')
    evict_first = (
        '{ const float* fr_q = a0_p + a0_r + fr_v; unsigned long long fr_pol;'
        ' asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(fr_pol));'
        ' asm volatile("ld.global.nc.L2::cache_hint.v4.f32 {%0,%1,%2,%3}, [%4], %5;"'
        + outs + ' : "l"(fr_q), "l"(fr_pol)); }')
    vloop = "        for (fr_idx fr_b = fr_j0 + (fr_idx)4 * fr_w; fr_b < fr_jv; fr_b += fr_span) {"
    combine = "fr_acc0 = FrSum<float>::combine(fr_acc0, FrSum<float>::lift(t0, j));"
    after = "        fr_j = fr_jv + fr_w;"

    def loads(new):  # the vector loop's loads replaced by ``new``
        def edit(src):
            assert load in src, "the generated vector load changed"
            return src.replace(load, new)

        return edit

    def accumulators(src):  # one accumulator per lane of the vector loop, summed after it
        assert vloop in src and combine in src and after in src
        src = src.replace(vloop, "        float fr_accs[4] = {0.f, 0.f, 0.f, 0.f};\n" + vloop)
        src = src.replace(combine, "fr_accs[fr_k] += t0;", 1)
        return src.replace(after, "        fr_acc0 += (fr_accs[0] + fr_accs[1])"
                           " + (fr_accs[2] + fr_accs[3]);\n" + after)

    variants = {  # label -> edit of the generated source (None: as generated)
        "generated": None,
        "ld.global.cs (__ldcs)": loads(asm.format(op="ld.global.cs.v4.f32")),
        "L1::no_allocate": loads(asm.format(op="ld.global.nc.L1::no_allocate.v4.f32")),
        "L2 evict-first policy": loads(evict_first),
        "L2::256B prefetch": loads(asm.format(op="ld.global.nc.L2::256B.v4.f32")),
        "no final combine (timing only)":
            lambda src: src.replace("if (!fr_last) continue;", "continue;"),
        "4 accumulators": accumulators,
        "4 accumulators, evict-first policy": lambda src: loads(evict_first)(accumulators(src)),
    }
    runs = sumsq_variants(x, want, variants)
    add_peer(runs, "torch.compile", "sumsq", [host])
    interleaved(runs, 4 * N, rounds=9, shuffle=True)


def probe_callsite() -> None:
    """small_triad's cached call through the compiled call site (``_callsite.c``) and through
    the Python path (``config.compiled_calls`` off), interleaved in shuffled order with
    cupy.fuse, torch and cupy; µs per call, median of 7 rounds (NOTES.md G30)."""
    import random

    import gpu

    import workloads
    from fuseray import config
    from fuseray.backends.cuda import launch

    host = workloads.inputs("triad", 4096, np.random.default_rng(7))
    small = [fr.asarray(h) for h in host]
    f = fr.jit(lambda a, b, c: a * b + c)
    f(*small)
    out = f(*small)
    want = host[0].astype(np.float64) * host[1] + host[2]
    err = float(np.abs(fr.asnumpy(out) - want).max())
    print(f"   compiled call site built: {launch._callsite is not None}, taken:"
          f" {f._site is not None}; max abs error against float64 NumPy {err:.1e}", flush=True)
    runs = {"fuseray compiled call": (True, lambda: f(*small), fr.synchronize),
            "fuseray Python path": (False, lambda: f(*small), fr.synchronize)}
    for name in ("cupy.fuse", "torch", "cupy"):
        try:
            peer = gpu.FRAMEWORKS[name]()
            call = gpu.evaluating(peer.make("triad"), [peer.to_device(a) for a in host])
            call()
            peer.sync()
            runs[name] = (True, call, peer.sync)
        except Exception as e:  # noqa: BLE001 - a missing peer is reported
            print(f"{name}: {type(e).__name__}: {e}"[:200], flush=True)
    results: dict = {label: [] for label in runs}
    order = list(runs.items())
    for r in range(7):
        random.Random(r).shuffle(order)
        for label, (compiled, call, sync) in order:
            config.compiled_calls = compiled
            try:
                results[label].append(timed_with(call, sync, 10, 1000) * 1e6)
            finally:
                config.compiled_calls = True
    for label, ts in results.items():
        print(f"   small_triad {label}: {statistics.median(ts):.2f} us per call"
              f" ({min(ts):.2f}-{max(ts):.2f})", flush=True)


def probe_sumsqsplit() -> None:
    """sumsq's split reduction as generated, with the product folded into the accumulation as
    one FMA (one instruction a slot instead of two, as torch.compile's), with interleaved tiles
    (block y reads 16-byte-vector spans y, y + S, ...: the blocks sweep memory together instead
    of streaming 512 regions apart), and both; next to a row reduction of the same data and
    torch.compile, timed as the suite times (batches of at least 4 ms), shuffled (NOTES.md
    G31)."""
    host = np.random.default_rng(3).standard_normal(N, dtype=np.float32)
    want = float((host.astype(np.float64) ** 2).sum())
    x = fr.asarray(host)
    combine = "fr_acc0 = FrSum<float>::combine(fr_acc0, FrSum<float>::lift(t0, j));"
    vloop = "for (fr_idx fr_b = fr_j0 + (fr_idx)4 * fr_w; fr_b < fr_jv; fr_b += fr_span) {"
    after = "        fr_j = fr_jv + fr_w;"

    def fma(src):
        assert combine in src
        return src.replace(combine, "fr_acc0 = fmaf(a0, a0, fr_acc0);")

    def tiles(src):  # whole spans only: the probe's N is a multiple of every block's span
        assert vloop in src and after in src
        src = src.replace(vloop, "for (fr_idx fr_b = (fr_idx)blockIdx.y * fr_span"
                          " + (fr_idx)4 * fr_w; fr_b < L / fr_span * fr_span;"
                          " fr_b += (fr_idx)gridDim.y * fr_span) {")
        return src.replace(after, "        fr_j = fr_j1;")

    variants = {"generated": None, "fma": fma, "tiles": tiles,
                "tiles + fma": lambda src: tiles(fma(src))}
    runs = sumsq_variants(x, want, variants)
    suite = fr.jit(lambda v: (v * v).sum())
    got = float(suite(x).get())
    print(f"   sumsq fuseray call: rel err {abs(got - want) / want:.1e}", flush=True)
    runs["sumsq fuseray call"] = (lambda: suite(x), fr.synchronize)
    add_row_sums(runs, x, want)
    add_peer(runs, "torch.compile", "sumsq", [host])
    interleaved(runs, 4 * N, rounds=9, shuffle=True, batch=None)


def no_split_end(src: str) -> str:
    """Timing only: a split reduction without its end (no partials, counter or final combine)."""
    assert "    if (gridDim.y > 1) {" in src
    return src.replace("    if (gridDim.y > 1) {", "    if (gridDim.y > 1) { continue;")


def sc_fences(src: str) -> str:
    """A split reduction's end as before G34: a fence in each writer and in the last block around
    a plain ``atomicAdd``, in place of ``fr_arrive``'s one acquire-release atomic."""
    for old, new in (("fr_ws0[(long long)blockIdx.y * R + r] = fr_acc0;\n",
                      "fr_ws0[(long long)blockIdx.y * R + r] = fr_acc0;\n__threadfence();\n"),
                     ("fr_arrive(&fr_counters[fr_rb])", "atomicAdd(&fr_counters[fr_rb], 1u)"),
                     ("if (!fr_last) continue;\n", "if (!fr_last) continue;\n__threadfence();\n")):
        assert src.count(old) == 1, old
        src = src.replace(old, new)
    return src


def probe_splitend() -> None:
    """The end of a split reduction (sumsq, colsum) with ``fr_arrive`` (as generated) against the
    fences it replaced, and without an end at all (timing only), next to torch.compile, timed as
    the suite times, shuffled (NOTES.md G34)."""
    import workloads

    host = np.random.default_rng(3).standard_normal(N, dtype=np.float32)
    want = float((host.astype(np.float64) ** 2).sum())
    x = fr.asarray(host)

    runs = sumsq_variants(x, want, {"generated": None, "SC fences (before G34)": sc_fences,
                                    "no split end (timing only)": no_split_end})
    add_peer(runs, "torch.compile", "sumsq", [host])
    interleaved(runs, 4 * N, rounds=15, shuffle=True, batch=None, control=True)
    host = workloads.inputs("colsum", N, np.random.default_rng(4))
    m, g = (fr.asarray(a) for a in host)
    want = (host[0].astype(np.float64) * host[1]).sum(axis=0)
    runs = kernel_variants("colsum", (m * g).sum(axis=0), want,
                           {"generated": None, "SC fences (before G34)": sc_fences})
    add_peer(runs, "torch.compile", "colsum", host)
    interleaved(runs, 4 * N, rounds=15, shuffle=True, batch=None)


def probe_splitgeom() -> None:
    """sumsq's split reduction with 1, 2 and 4 (generated) vector loads in flight per thread,
    with the fences before G34 (``sc_fences``),
    without the split's end (timing only), with blocks of 256 threads (twice the splits) and with
    1 and 4 blocks per multiprocessor, next to row sums over 1024-long rows, the row sums summed
    by a second kernel (what ran as fast as torch.compile on an H200 in probe sumsqsplit)
    and torch.compile, timed as the suite times, shuffled (NOTES.md G31)."""
    from fuseray import schedule

    host = np.random.default_rng(3).standard_normal(N, dtype=np.float32)
    want = float((host.astype(np.float64) ** 2).sum())
    x = fr.asarray(host)
    head, tail = "if (fr_aligned<4>(", "fr_j = fr_jv + fr_w;"

    def unroll(k):  # the vector loop's loads in flight per thread
        def edit(src):
            i, j = src.index(head), src.index(tail)
            part = src[i:j]
            for old, new in (("(fr_idx)16 * fr_W", f"(fr_idx){4 * k} * fr_W"),
                             ("a0_v[4];", f"a0_v[{k}];"), ("u < 4;", f"u < {k};")):
                assert old in part
                part = part.replace(old, new)
            return src[:i] + part + src[j:]

        return edit

    runs = sumsq_variants(x, want, {"generated": None, "1 load": unroll(1),
                                    "2 loads": unroll(2), "SC fences (before G34)": sc_fences,
                                    "no split end (timing only)": no_split_end})
    for name, value in (("REDUCE_MAX_THREADS", 256), ("SPLIT_BLOCKS_PER_SM", 1),
                        ("SPLIT_BLOCKS_PER_SM", 4)):
        saved = getattr(schedule, name)
        try:
            setattr(schedule, name, value)
            x2 = fr.asarray(host)  # a new leaf: a kernel planned with the changed constant
            runs.update(sumsq_variants(x2, want, {f"{name} {value}": None}))
        finally:
            setattr(schedule, name, saved)
    add_row_sums(runs, x, want)
    two = fr.jit(lambda v: (v * v).sum(axis=1).sum())  # row sums, then their sum
    m = x.reshape(ROWS, COLS)
    got = float(two(m).get())
    print(f"   sumsq two levels: rel err {abs(got - want) / want:.1e}", flush=True)
    runs["sumsq two levels (row sums, then their sum)"] = (lambda: two(m), fr.synchronize)
    add_peer(runs, "torch.compile", "sumsq", [host])
    interleaved(runs, 4 * N, rounds=9, shuffle=True, batch=None)


BS_HINTS = r"""
template <int N, class T, class I> FR_D fr_vec<T, N> fr_load_cs(const T* __restrict__ p, I v) {
  static_assert(N == 4, "float4 only");
  const float4 f = __ldcs(reinterpret_cast<const float4*>(p) + v);
  return fr_vec<T, N>{{f.x, f.y, f.z, f.w}};
}
template <int N, class T, class I>
FR_D void fr_store_cs(T* __restrict__ p, I v, const fr_vec<T, N>& x) {
  static_assert(N == 4, "float4 only");
  __stcs(reinterpret_cast<float4*>(p) + v, make_float4(x.v[0], x.v[1], x.v[2], x.v[3]));
}
"""


def cache_hints(loads: bool, stores: bool):
    """An elementwise kernel's vector loads and/or stores with the streaming hint (``.cs``:
    evict first; its data is used once)."""
    def edit(src: str) -> str:
        at = src.index("// One element of the space")
        src = src[:at] + BS_HINTS + src[at:]
        if loads:
            assert "fr_load_vec<4>(" in src
            src = src.replace("fr_load_vec<4>(", "fr_load_cs<4>(")
        if stores:
            assert "fr_store_vec<4>(" in src
            src = src.replace("fr_store_vec<4>(", "fr_store_cs<4>(")
        return src

    return edit


def probe_bshints() -> None:
    """black_scholes (3 loads, 2 stores an element) with streaming cache hints on its vector
    loads, stores or both, against the kernel as generated and torch.compile / jax.jit, timed
    as the suite times, shuffled; each variant's two outputs must equal the generated ones bit
    for bit (NOTES.md G35)."""
    import workloads
    from fuseray.backends.cuda import launch

    host = workloads.inputs("black_scholes", N, np.random.default_rng(0))
    ins = [fr.asarray(a) for a in host]
    call, put = workloads.WORKLOADS["black_scholes"](fr, *ins)
    binding = launch.binding_for(runtime.prepare([call._node, put._node])[1].kernels[0])
    first: list = []

    def check(name, got, st):
        first[:] = first or got
        same = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(got, first))
        print(f"   black_scholes {name}: grid {st.launch.grid}, equal to generated: {same}",
              flush=True)
        return same

    runs = binding_variants("black_scholes", binding, {
        "generated": None, "streaming stores": cache_hints(False, True),
        "streaming loads": cache_hints(True, False),
        "streaming loads and stores": cache_hints(True, True)}, check)
    for peer in ("torch.compile", "jax.jit"):
        add_peer(runs, peer, "black_scholes", list(host))
    interleaved(runs, 20 * N, rounds=15, shuffle=True, batch=None, control=True)


def probe_pairing() -> None:
    """Why the suite's paired rounds and its table disagreed (H100, 2026-12-07: sumsq's table had
    torch.compile 0.7% ahead, its pairing fuseray 8% ahead): each entry's batch size (sized as
    the pairing sizes it, three times) and its time as the table measures it, then the
    pairing's interleaved batches, for fuseray, torch.compile and a second torch.compile of the
    same function (the pairing makes its own), with dynamo's compile counters."""
    import gpu
    import torch

    import workloads

    fws = {name: gpu.FRAMEWORKS[name]() for name in ("fuseray", "torch.compile")}
    for wl in ("sumsq", "black_scholes"):
        host = workloads.inputs(wl, N, np.random.default_rng(0))
        nbytes = sum(a.nbytes for a in host) + (0 if wl == "sumsq" else 2 * host[0].nbytes)
        entries = {}
        for label, name in (("fuseray", "fuseray"), ("torch.compile", "torch.compile"),
                            ("torch.compile, second make", "torch.compile")):
            fw = fws[name]
            call = gpu.evaluating(fw.make(wl), [fw.to_device(a) for a in host])
            call()
            fw.sync()
            fw.settle()
            sizes = [gpu.batch_size(call, fw.sync) for _ in range(3)]
            report(f"{wl} {label}: table's median, batches sized {sizes}",
                   gpu.time_calls(call, fw.sync, 20), nbytes)
            entries[label] = (call, fw.sync)
        stats = {k: dict(v) for k, v in torch._dynamo.utils.counters.items() if v}
        print(f"dynamo counters: {stats}"[:600], flush=True)
        times = gpu.interleaved_batches(entries, 15)
        base = times["fuseray"]
        for label, ts in times.items():
            q1, q2, q3 = gpu.paired_ratio_quartiles(ts, base)  # its time / fuseray's
            report(f"{wl} {label}: pairing's median", statistics.median(ts), nbytes,
                   f"  fuseray's speed over it x{q2:.3f} [{q1:.3f}, {q3:.3f}]")
        entries.clear()


def trigger_dependents_first(src: str) -> str:
    """A generated kernel that lets the next grid in the stream be scheduled as soon as each of
    its blocks starts (``griddepcontrol.launch_dependents`` before its wait), rather than as
    each block exits."""
    wait = "  FR_WAIT_FOR_PRIOR_GRID();\n"
    assert src.count(wait) == 1, "every generated kernel opens with the wait"
    return src.replace(wait, '  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");\n'
                       + wait)


def probe_pdl() -> None:
    """Programmatic dependent launch (sm_90): every generated kernel opens with
    ``griddepcontrol.wait``; loaded as a dependent launch (as ``config.dependent_launch`` loads
    them) it is launched with programmatic stream serialisation, so that the next call's grid
    is scheduled while this one's last blocks (a split reduction's end, the last wave) finish.
    sumsq, colsum and triad: as generated (a plain launch), recompiled with the probe's options
    (the control for the other two), and with PDL, its trigger at block exit and at block start
    (``trigger_dependents_first``); each PDL output checked over 40 back-to-back calls; next to
    torch.compile, timed as the suite times, shuffled. (Run before the wait was generated,
    G39, the wait was the probe's own edit.)"""
    import workloads

    cases = []
    pdl = ("PDL, early trigger", "PDL, trigger at exit")
    host = np.random.default_rng(3).standard_normal(N, dtype=np.float32)
    x = fr.asarray(host)
    cases.append(("sumsq", (x * x).sum(), np.float64((host.astype(np.float64) ** 2).sum()),
                  [host], 4 * N))
    ch = workloads.inputs("colsum", N, np.random.default_rng(4))
    m, g = (fr.asarray(a) for a in ch)
    cases.append(("colsum", (m * g).sum(axis=0), (ch[0].astype(np.float64) * ch[1]).sum(axis=0),
                  ch, 4 * N))
    th = workloads.inputs("triad", N, np.random.default_rng(5))
    a, b, c = (fr.asarray(h) for h in th)
    cases.append(("triad", a * b + c, th[0].astype(np.float64) * th[1] + th[2], th, 16 * N))
    for label, result, want, peer_host, nbytes in cases:
        variants = {"generated": None, "recompiled": lambda s: s,
                    "PDL, early trigger": trigger_dependents_first,
                    "PDL, trigger at exit": lambda s: s}
        runs = kernel_variants(label, result, want, variants, dependent=pdl)
        scale = max(float(np.abs(want).max()), 1e-30)
        for name in pdl:
            full = f"{label} {name}"
            run, sync = runs[full]
            results = []
            for _ in range(40):  # each call's own output: a race would spoil some of them
                outs = [None]
                run(outs=outs)
                results.append(outs)
            sync()
            errs = [float(np.abs(launch_to_numpy(o[0]).astype(np.float64) - want).max()) / scale
                    for o in results]
            print(f"   {full}: 40 back-to-back calls, largest rel err {max(errs):.1e}"
                  f" (first {errs[0]:.1e})", flush=True)
        add_peer(runs, "torch.compile", label, peer_host)
        fr.cuda.wait_for_compiles()  # "generated" times the optimised tier's build
        interleaved(runs, nbytes, rounds=15, shuffle=True, batch=None, control=True)


SECTIONS = {"pdl": probe_pdl, "pairing": probe_pairing, "bshints": probe_bshints,
            "splitend": probe_splitend,
            "colsumload": probe_colsumload,
            "splitgeom": probe_splitgeom,
            "sumsqsplit": probe_sumsqsplit,
            "callsite": probe_callsite, "sumsqhints": probe_sumsqhints, "ncu": probe_ncu,
            "hostparts": probe_hostparts,
            "splitcount": probe_splitcount,
            "launchfloor": probe_launchfloor,
            "hostcalls": probe_hostcalls,
            "sinsmall": probe_sinsmall, "rowsched": probe_rowsched, "hostcost": probe_hostcost,
            "vectors": probe_vectors, "suitecall": probe_suitecall, "tiers": probe_tiers,
            "markstein": probe_markstein,
            "chain20c": probe_chain20c, "factors": probe_sumsq_factors, "sqrt": probe_sqrt,
            "pch": probe_pch,
            "chain20b": probe_chain20b, "split": probe_split, "launch": probe_launch,
            "rows2": probe_rows2, "ofc": probe_ofc, "fastmath": probe_fastmath,
            "rows": probe_rows, "reduce": probe_reduce,
            "overhead": probe_overhead, "compile": probe_compile, "triad": probe_triad,
            "softmax": probe_softmax, "chain20": probe_chain20}

if __name__ == "__main__":
    print(driver.device_props(driver.current_device()))
    for section in sys.argv[1:] or SECTIONS:
        t = time.perf_counter()
        try:
            SECTIONS[section]()
        except Exception as e:  # noqa: BLE001 - a diagnostic run reports and goes on
            print(f"{section} failed: {type(e).__name__}: {e}")
        print(f"-- {section} took {time.perf_counter() - t:.1f} s", flush=True)

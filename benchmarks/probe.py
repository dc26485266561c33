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


def report(label: str, seconds: float, nbytes: int) -> None:
    print(f"{label:58s} {seconds * 1e3:9.4f} ms  {nbytes / seconds / 1e9:8.1f} GB/s", flush=True)


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


def swap_source(binding, edit, options=(), base=("-minimal",)) -> None:
    """Recompile the binding's last-used kernel from ``edit(source)`` with NVRTC options
    ``base`` + ``options``."""
    st = binding.last_state
    gen = st.program.generated
    dev = driver.current_device()
    cubin = nvrtc.compile_cubin(edit(gen.source), gen.name, driver.device_props(dev).arch,
                                (*base, *options))
    func = driver.load_function(dev, cubin, gen.name)
    prog = st.program.__class__.__new__(st.program.__class__)
    prog.generated, prog.function, prog.pack = gen, func, st.program.pack
    st.program = prog


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
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5000):
        f(*small)
    prof.disable()
    fr.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(22)


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


SECTIONS = {"rows2": probe_rows2, "ofc": probe_ofc, "fastmath": probe_fastmath,
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

"""The Python overhead of a cached ``@fr.jit`` call on the CUDA path, measured without a GPU.

Not part of the suite. The small_triad benchmark (``fr.jit(lambda a, b, c: a * b + c)`` on three
4096-element float32 device arrays) is limited by the host: on an H200 a cached call took 14.9 us,
of which a bare ``cuLaunchKernel`` is 3.9 us. This script runs the real launch path (jit, the
direct runner, the binding, the memory pool, the argument packing) against a fake CUDA driver, so
that the rest, the part fuseray controls, can be measured and profiled on any machine.

What is faked (``FakeDriver``): every ``cuda.bindings.driver`` function fuseray calls. Types and
enums (``CUstream``, ``CUcontext``, ``CUresult``, ...) are the real ones, so handles cost what they
cost. ``cuLaunchKernel`` returns at once (its real cost is outside what fuseray can cut); every
other call costs about ``--call-ns`` (default 500 ns; a real cuda-bindings call costs about
0.3-1 us), busy-waiting for what its own Python does not take, so removing a driver call shows
up as it would on the device. One device, whose primary context becomes current on first use;
allocations return fresh addresses; copies and synchronisations do nothing. Kernels are
generated but not compiled (``Program`` is replaced as in ``tests/cuda/test_launch.py``'s
``fake_gpu``).

Usage::

    python benchmarks/overhead_local.py                 # time this tree's fuseray
    python benchmarks/overhead_local.py --profile       # cProfile of the cached call
    python benchmarks/overhead_local.py --compare DIR   # interleave with the fuseray under DIR
                                                        # (e.g. a ``git archive`` of a base commit)
    python benchmarks/overhead_local.py --compare python  # this tree, with and without its
                                                          # compiled call path

``--compare`` alternates worker processes (base, this tree, base, ...) so that the machine's
noise hits both alike, and reports the median of the per-round medians and their ratio.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

_SUCCESS = None  # CUresult.CUDA_SUCCESS, once the real bindings are imported
_CONTEXT_BASE = 0xC7000  # device i's primary context handle is _CONTEXT_BASE + i
_FUNCTION_BASE = 0xF00  # and its kernels' handle is _FUNCTION_BASE + i


def _succeeds(name: str):
    """A fake driver call whose only effect is its cost: it succeeds and returns nothing."""

    def call(self, *args):
        self._call(name)
        return (_SUCCESS,)

    call.__name__ = name
    return call


class FakeDriver:
    """``cuda.bindings.driver`` for ``devices`` GPUs, without a driver.

    Calls answer ``(CUresult, *values)`` tuples of the real types; ``calls`` counts them by name.
    Each thread has its own current context (none at first), and a launch is refused unless the
    function's context is current, as the real driver does.
    """

    def __init__(self, real, call_ns: int, devices: int = 1) -> None:
        global _SUCCESS
        _SUCCESS = real.CUresult.CUDA_SUCCESS
        self._real = real
        self.call_ns = 0
        self.devices = devices
        self.calls: collections.Counter = collections.Counter()  # every call but the launch
        self.launches: list = []  # (device id, stream handle) of each launch
        self.launch_attributes: list = []  # each cuLaunchKernelEx's attributes (id, value)
        self.raw_status = 0  # what raw_launch answers instead of launching, when not 0
        self.refuse_allocations = 0  # how many allocations to answer out of memory
        self._thread = threading.local()  # .current: context handle (0: none), .pushed: stack
        self.devices_of = {_CONTEXT_BASE + i: i for i in range(devices)}  # context -> device
        self.next_ptr = 0x7F0000000000
        self._ptr_lock = threading.Lock()  # threads must not be handed one address twice
        if call_ns:  # the fake's own cost counts too
            self.call_ns = max(call_ns - self._overhead_ns(), 0)

    def _overhead_ns(self) -> int:
        """What a fake call costs without waiting (the cheapest of a few batches)."""
        best = None
        for _ in range(5):
            start = time.perf_counter_ns()
            for _ in range(2000):
                self.cuCtxGetCurrent()
            spent = (time.perf_counter_ns() - start) // 2000
            best = spent if best is None else min(best, spent)
        self.calls.clear()
        return best

    def __getattr__(self, name):  # types and enums: the real ones
        return getattr(self._real, name)

    def _call(self, name: str) -> None:
        end = time.perf_counter_ns() + self.call_ns
        self.calls[name] += 1
        while time.perf_counter_ns() < end:
            pass

    # -- devices, contexts -------------------------------------------------------------------
    def cuDeviceGet(self, ordinal):
        self._call("cuDeviceGet")
        return (_SUCCESS, self._real.CUdevice(ordinal))

    def cuDevicePrimaryCtxRetain(self, dev):
        self._call("cuDevicePrimaryCtxRetain")
        return (_SUCCESS, self._real.CUcontext(_CONTEXT_BASE + int(dev)))

    @property
    def current(self) -> int:
        """The calling thread's current context handle (0: none)."""
        return getattr(self._thread, "current", 0)

    @current.setter
    def current(self, handle: int) -> None:
        self._thread.current = handle

    def _pushed(self) -> list[int]:
        if not hasattr(self._thread, "pushed"):
            self._thread.pushed = []
        return self._thread.pushed

    def cuCtxGetCurrent(self):
        self._call("cuCtxGetCurrent")
        return (_SUCCESS, self._real.CUcontext(self.current))

    def cuCtxSetCurrent(self, ctx):
        self._call("cuCtxSetCurrent")
        self.current = int(ctx)
        return (_SUCCESS,)

    def cuCtxPushCurrent(self, ctx):
        self._call("cuCtxPushCurrent")
        self._pushed().append(self.current)
        self.current = int(ctx)
        return (_SUCCESS,)

    def cuCtxPopCurrent(self):
        self._call("cuCtxPopCurrent")
        popped = self.current
        self.current = self._pushed().pop()
        return (_SUCCESS, self._real.CUcontext(popped))

    def cuCtxGetDevice(self):
        self._call("cuCtxGetDevice")
        current = self.current
        if not current:
            return (self._real.CUresult.CUDA_ERROR_INVALID_CONTEXT, None)
        return (_SUCCESS, self._real.CUdevice(self.devices_of[current]))

    def cuCtxCreate(self, params, flags, dev):
        """A context that is not the primary one (another library's), pushed current."""
        self._call("cuCtxCreate")
        handle = _CONTEXT_BASE + 0x1000 + len(self.devices_of)
        self.devices_of[handle] = int(dev)
        self._pushed().append(self.current)
        self.current = handle
        return (_SUCCESS, self._real.CUcontext(handle))

    cuCtxSynchronize = _succeeds("cuCtxSynchronize")

    # -- streams, events ----------------------------------------------------------------------
    def cuStreamCreate(self, flags):
        self._call("cuStreamCreate")
        with self._ptr_lock:
            self.next_ptr += 0x1000
            handle = self.next_ptr
        return (_SUCCESS, self._real.CUstream(handle))

    cuStreamDestroy = _succeeds("cuStreamDestroy")
    cuStreamSynchronize = _succeeds("cuStreamSynchronize")

    def cuEventCreate(self, flags):
        self._call("cuEventCreate")
        return (_SUCCESS, self._real.CUevent(1))

    cuEventRecord = _succeeds("cuEventRecord")
    cuStreamWaitEvent = _succeeds("cuStreamWaitEvent")
    cuEventDestroy = _succeeds("cuEventDestroy")

    # -- memory -------------------------------------------------------------------------------
    def cuDeviceGetDefaultMemPool(self, dev):
        self._call("cuDeviceGetDefaultMemPool")
        return (_SUCCESS, self._real.CUmemoryPool(0x9000 + int(dev)))

    def cuMemPoolGetAttribute(self, pool, attr):
        self._call("cuMemPoolGetAttribute")
        return (_SUCCESS, (1 << 64) - 1)

    cuMemPoolSetAttribute = _succeeds("cuMemPoolSetAttribute")
    cuMemPoolTrimTo = _succeeds("cuMemPoolTrimTo")

    def cuMemAllocAsync(self, size, stream):
        self._call("cuMemAllocAsync")
        if self.refuse_allocations:
            self.refuse_allocations -= 1
            return (self._real.CUresult.CUDA_ERROR_OUT_OF_MEMORY, None)
        with self._ptr_lock:
            ptr = self.next_ptr
            self.next_ptr += (int(size) + 0xFFFF) & ~0xFFFF
        return (_SUCCESS, self._real.CUdeviceptr(ptr))

    cuMemFreeAsync = _succeeds("cuMemFreeAsync")
    cuMemcpyHtoDAsync = _succeeds("cuMemcpyHtoDAsync")
    cuMemcpyDtoHAsync = _succeeds("cuMemcpyDtoHAsync")
    cuMemsetD8Async = _succeeds("cuMemsetD8Async")
    cuMemsetD32Async = _succeeds("cuMemsetD32Async")

    # -- the launch: free here, it is not the overhead this script measures -------------------
    def cuLaunchKernel(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        """Records ``(device id, stream handle)``; refused unless ``f``'s context is current."""
        device_id = int(f) - _FUNCTION_BASE
        if self.current != _CONTEXT_BASE + device_id:
            return (self._real.CUresult.CUDA_ERROR_INVALID_CONTEXT,)
        self.launches.append((device_id, int(stream)))
        return (_SUCCESS,)

    def cuLaunchKernelEx(self, config, f, params, extra):
        """``cuLaunchKernel`` from a ``CUlaunchConfig``; its attributes, as ``(id, programmatic
        stream serialisation allowed)`` pairs, are kept in ``launch_attributes``."""
        self.launch_attributes.append([
            (a.id, a.value.programmaticStreamSerializationAllowed)
            for a in config.attrs[:config.numAttrs]])
        return self.cuLaunchKernel(f, config.gridDimX, config.gridDimY, config.gridDimZ,
                                   config.blockDimX, config.blockDimY, config.blockDimZ,
                                   config.sharedMemBytes, config.hStream, params, extra)

    def cuGetProcAddress(self, symbol, version, flags):
        """``cuLaunchKernel``'s address for the compiled call path: the C module's test
        launcher, which hands each launch to ``raw_launch`` (none where the module is not
        built)."""
        self._call("cuGetProcAddress")
        try:
            from fuseray.backends.cuda import _callsite
        except ImportError:
            return (self._real.CUresult.CUDA_ERROR_NOT_FOUND, 0, None)
        found = self._real.CUdriverProcAddressQueryResult.CU_GET_PROC_ADDRESS_SUCCESS
        if symbol == b"cuLaunchKernel":
            return (_SUCCESS, _callsite.set_test_launcher(self.raw_launch), found)
        if symbol == b"cuLaunchKernelEx":  # records its attributes, then as cuLaunchKernel
            _callsite.set_test_launcher(self.raw_launch)
            return (_SUCCESS, _callsite.test_launch_ex_address(), found)
        return (self._real.CUresult.CUDA_ERROR_NOT_FOUND, 0, None)

    def raw_launch(self, f, grid, block, shared, stream, slots) -> int:
        """``cuLaunchKernel`` as the compiled call path calls it (ints, and the arguments as
        raw 8-byte values, kept in ``raw_slots``); the status as an int."""
        device_id = (f - _FUNCTION_BASE) & 0xFF  # (tests may hand in other functions of it)
        if self.raw_status:  # a test's refusal
            return self.raw_status
        if self.current != _CONTEXT_BASE + device_id:
            return int(self._real.CUresult.CUDA_ERROR_INVALID_CONTEXT)
        self.launches.append((device_id, stream))
        self.raw_function, self.raw_slots = f, slots
        return 0


def install(call_ns: int = 500, devices: int = 1, patch=setattr) -> FakeDriver:
    """Point fuseray's CUDA backend at a fresh ``FakeDriver`` with ``devices`` GPUs, and make CUDA
    the device fuseray uses. Every piece of backend state is replaced through ``patch(obj, name,
    value)`` (tests pass ``monkeypatch.setattr``, which undoes it all afterwards)."""
    from cuda.bindings import driver as real

    from fuseray import config, runtime
    from fuseray.backends import cuda
    from fuseray.backends.cuda import driver, launch, launch_index, memory, streams

    fake = FakeDriver(real, call_ns, devices)
    props = {
        i: driver.DeviceProps(
            device_id=i, name="fake H200", compute_capability=(9, 0), arch="sm_90",
            multiprocessor_count=132, l2_cache_bytes=50 << 20, max_threads_per_block=1024,
            max_threads_per_multiprocessor=2048, shared_memory_per_block=48 << 10,
            shared_memory_per_block_optin=227 << 10, warp_size=32, total_memory=141 << 30,
            memory_pools_supported=True,
        )
        for i in range(devices)
    }

    class FakeFunction:
        __slots__ = ("_configs", "_ctx_int", "_shared_limit", "dependent", "device_id", "handle",
                     "name", "ptr")

        def __init__(self, name: str, device_id: int) -> None:
            self.dependent = driver.dependent_launch(device_id)  # as Program loads it
            self._configs: dict = {}
            self.handle = real.CUfunction(_FUNCTION_BASE + device_id)
            self.ptr = _FUNCTION_BASE + device_id
            self.name = name
            self.device_id = device_id
            self._ctx_int = _CONTEXT_BASE + device_id
            self._shared_limit = 48 << 10

    class FakeProgram:  # generated, never compiled: NVRTC and the module loader are not needed
        __slots__ = ("function", "generated", "pack")

        def __init__(self, generated, device_id: int) -> None:
            self.generated = generated
            self.function = FakeFunction(generated.name, device_id)
            self.pack = driver.arg_pack([p.kind for p in generated.params])

    for module in (driver, memory, streams, launch_index):
        patch(module, "cu", fake)
    fresh = {
        driver: dict(_available=True, _device_count=devices, _props=props, _contexts={},
                     _context_ints={}, _context_devices={}, _modules={}, _functions={},
                     _launch_address=None, _launch_ex_address=None),
        memory: dict(_pools={}, _recycled={}, _filers={}, _recycled_bytes={}),
        streams: dict(_local=type(streams._local)(), _default_streams={}),
        launch_index: dict(_records={}, _pending={}),
        launch: dict(Program=FakeProgram, _programs={}, _counter_arrays={}),
        config: dict(device="cuda"),
        runtime: dict(_cuda_probe=[cuda]),
    }
    for module, values in fresh.items():
        for name, value in values.items():
            patch(module, name, value)
    return fake


def small_triad(n: int = 4096):
    """The benchmark's jitted function and its three device arrays."""
    import fuseray as fr

    small = [fr.asarray(np.random.default_rng(i).standard_normal(n, dtype=np.float32))
             for i in range(3)]
    f = fr.jit(lambda a, b, c: a * b + c)
    return f, small


def per_call(call, batch: int, repeat: int) -> list[float]:
    """Seconds per call of ``repeat`` batches of ``batch`` calls (results dropped, as the device
    benchmark drops them: freeing the previous output is part of a call's cost)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(batch):
            call()
        times.append((time.perf_counter_ns() - start) / batch * 1e-9)
    return times


def worker(args) -> dict:
    fake = install(args.call_ns)
    from fuseray.backends.cuda.memory import DeviceArray

    f, small = small_triad()
    out = f(*small)
    assert type(out._node.value) is DeviceArray and len(fake.launches) == 1
    call = lambda: f(*small)  # noqa: E731
    per_call(call, 200, 5)  # warm up
    before = fake.calls.copy()
    fake.launches.clear()
    times = per_call(call, args.batch, args.repeat)
    calls = fake.calls - before
    launches = len(fake.launches)
    # the fake launch's own cost (a real one is outside this measurement): taken off below
    real = fake._real
    if f._site is not None:  # the compiled call path launches through fake.raw_launch
        slots = tuple(range(8))
        fake_launch = lambda: fake.raw_launch(_FUNCTION_BASE, (16, 1, 1), (256, 1, 1), 0, 0, slots)  # noqa: E731,E501
    else:
        launch_args = (real.CUfunction(_FUNCTION_BASE), 16, 1, 1, 256, 1, 1, 0, real.CUstream(0),
                       0, 0)
        fake_launch = lambda: fake.cuLaunchKernel(*launch_args)  # noqa: E731
    launch_us = min(per_call(fake_launch, 5000, 5)) * 1e6
    return {
        "compiled_call": f._site is not None,
        "median_us": statistics.median(times) * 1e6 - launch_us,
        "min_us": min(times) * 1e6 - launch_us,
        "fake_launch_us": launch_us,
        "driver_calls_per_call": {k: v / launches for k, v in sorted(calls.items())},
    }


def profile(args) -> None:
    import cProfile
    import pstats

    install(args.call_ns)
    f, small = small_triad()
    f(*small)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(20000):
        f(*small)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def compare(args) -> None:
    """Alternate worker processes of the base tree and this one; print medians and the ratio."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if args.compare == "python":  # this tree with its compiled call path turned off
        trees = {"base": (here, "0"), "this": (here, "1")}
    else:
        trees = {"base": (os.path.abspath(args.compare), "1"), "this": (here, "1")}
    results: dict[str, list[float]] = {name: [] for name in trees}
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--call-ns",
               str(args.call_ns), "--batch", str(args.batch), "--repeat", str(args.repeat)]
    for r in range(args.rounds):
        for name, (tree, compiled) in trees.items():
            env = dict(os.environ, PYTHONPATH=tree, FUSERAY_COMPILED_CALLS=compiled)
            line = subprocess.run(command, env=env, check=True, capture_output=True,
                                  text=True).stdout.strip().splitlines()[-1]
            got = json.loads(line)
            results[name].append(got["median_us"])
            print(f"round {r} {name}: {got['median_us']:.2f} us/call"
                  f" (compiled call path: {got['compiled_call']})"
                  f" (driver calls per call besides the launch:"
                  f" {got['driver_calls_per_call']})", flush=True)
    base = statistics.median(results["base"])
    this = statistics.median(results["this"])
    print(f"median of round medians: base {base:.2f} us, this {this:.2f} us,"
          f" this/base {this / base:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--call-ns", type=int, default=500,
                        help="busy-wait per faked driver call other than the launch")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--compare", metavar="DIR")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        profile(args)
    elif args.compare:
        compare(args)
    elif args.worker:
        print(json.dumps(worker(args)))
    else:
        got = worker(args)
        print(f"small_triad, launch faked: {got['median_us']:.2f} us/call median"
              f" (compiled call path: {got['compiled_call']})"
              f" (min {got['min_us']:.2f}; the fake launch's {got['fake_launch_us']:.2f} us"
              f" taken off); driver calls per call besides the launch:"
              f" {got['driver_calls_per_call']}")


if __name__ == "__main__":
    main()

"""CUDA runtime layer: driver wrapper, launches, devices, streams, memory and interop.

The first section needs no GPU (lazy import, CPU fallback, parameter packing, DLPack structs).
Tests marked ``gpu`` need an NVIDIA GPU and driver and are skipped cleanly without one.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import threading
import time
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest

from fuseray.backends.cuda import dlpack, driver, memory
from fuseray.backends.cuda.cache import KernelCache
from fuseray.backends.cuda.memory import (
    DeviceArray,
    ForeignMemory,
    empty,
    from_foreign,
    to_device,
    to_host,
)
from fuseray.backends.cuda.streams import (
    Device,
    ExternalStream,
    Stream,
    as_stream,
    default_stream,
    get_current_device,
    get_current_stream,
)

REPO = Path(__file__).resolve().parents[2]
MODULES = ("nvrtc", "cache", "driver", "streams", "memory")


# DLPack import and recycling go through stream objects, which wrap cuda-bindings handles.
needs_bindings = pytest.mark.skipif(driver.cu is None, reason="needs cuda-bindings")


def run_python(script: str, **env: str) -> str:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    out = subprocess.run(
        [sys.executable, "-c", script], env=full_env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


# ============================================================================ no GPU needed


def test_importing_initialises_nothing():
    script = (
        "import json, sys, warnings\n"
        "warnings.simplefilter('error')\n"
        + "".join(f"import fuseray.backends.cuda.{m}\n" for m in MODULES)
        + "from fuseray.backends.cuda import driver, nvrtc\n"
        "print(json.dumps({'probed': driver._available is not None,\n"
        "    'contexts': len(driver._contexts),\n"
        "    'nvrtc_loaded': nvrtc.nvrtc_version.cache_info().currsize}))\n"
    )
    assert json.loads(run_python(script)) == {"probed": False, "contexts": 0, "nvrtc_loaded": 0}


def test_everything_imports_without_cuda_bindings():
    script = (
        "import sys, warnings\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'cuda' or name.startswith('cuda.'):\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
        + "".join(f"import fuseray.backends.cuda.{m}\n" for m in MODULES)
        + "from fuseray.backends.cuda import driver\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    ok = [driver.available(), driver.available(), driver.device_count()]\n"
        "try:\n"
        "    driver.device_props(0)\n"
        "except driver.CUDAUnavailableError as exc:\n"
        "    err = str(exc)\n"
        "print(ok, len(caught), 'not installed' in str(caught[0].message),\n"
        "      'not installed' in err)\n"
    )
    assert run_python(script) == "[False, False, 0] 1 True True"


def test_available_never_raises_and_warns_at_most_once():
    script = (
        "import warnings\n"
        "from fuseray.backends.cuda import driver\n"
        "warnings.simplefilter('error')\n"  # even -W error must not make the probe raise
        "a = driver.available()\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    b = driver.available()\n"
        "print(a == b, len(caught))\n"
    )
    assert run_python(script) == "True 0"
    script = (
        "import warnings\n"
        "from fuseray.backends.cuda import driver\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    ok = [driver.available() for _ in range(3)]\n"
        "cpu = [w for w in caught if w.category is driver.CUDAUnavailableWarning]\n"
        "print(len(cpu) == (0 if ok[0] else 1), 'running on the CPU' in ''.join(\n"
        "    str(w.message) for w in cpu) or ok[0])\n"
    )
    assert run_python(script) == "True True"


def read_params(address: int, codes: str) -> list:
    pointers = (ctypes.c_uint64 * len(codes)).from_address(address)
    return [
        np.frombuffer(ctypes.string_at(pointers[i], np.dtype(code).itemsize), code)[0].item()
        for i, code in enumerate(codes)
    ]


def test_arg_pack_writes_every_kind_where_the_pointers_say():
    types = ["ptr", "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64"]
    types += ["uint64", np.dtype("float16"), np.dtype(np.float32), "float64"]
    values = [0x7F0000001000, True, -5, 250, -300, 65000, -(2**31), 2**32 - 1, -(2**62)]
    values += [2**64 - 1, 0.5, np.float32(1.25), -2.5]
    pack = driver.ArgPack(types)
    address = pack.pack(values)
    codes = ["u8", "?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"]
    assert read_params(address, codes) == [
        0x7F0000001000, True, -5, 250, -300, 65000, -(2**31), 2**32 - 1, -(2**62),
        2**64 - 1, 0.5, 1.25, -2.5,
    ]  # fmt: skip
    assert pack.pack([1, False, 0, 0, 0, 0, 0, 0, 7, 0, 0.0, 0.0, 0.0]) == address  # reused
    assert read_params(address, codes)[8] == 7


def test_arg_pack_checks_values_and_types():
    with pytest.raises(TypeError, match="unsupported kernel parameter type"):
        driver.ArgPack(["ptr", np.dtype(np.complex64)])
    pack = driver.ArgPack(["int32"])
    with pytest.raises(Exception, match="argument out of range|format requires"):
        pack.pack([2**40])
    with pytest.raises(Exception, match="expected 1 items|pack_into expected"):
        pack.pack([1, 2])


def test_arg_pack_buffers_are_per_thread():
    pack = driver.arg_pack(("int64",))
    assert driver.arg_pack(("int64",)) is pack
    main = pack.pack([1])
    seen = []
    thread = threading.Thread(target=lambda: seen.append(pack.pack([2])))
    thread.start()
    thread.join()
    assert seen[0] != main
    assert read_params(main, ["i8"]) == [1]


def test_arg_pack_without_parameters_passes_null():
    assert driver.ArgPack([]).pack([]) == 0


def test_cuda_error_names_the_call_and_result():
    cu = pytest.importorskip("cuda.bindings.driver")
    err = driver.CUDAError("cuMemAllocAsync(64)", cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY)
    assert "cuMemAllocAsync(64)" in str(err) and "CUDA_ERROR_OUT_OF_MEMORY" in str(err)
    assert err.code == 2 and err.name == "CUDA_ERROR_OUT_OF_MEMORY"
    with pytest.raises(driver.CUDAError, match="cuFoo failed with CUDA_ERROR_INVALID_VALUE"):
        driver.check((cu.CUresult.CUDA_ERROR_INVALID_VALUE, None), "cuFoo")
    assert driver.check((cu.CUresult.CUDA_SUCCESS, 5), "cuBar") == 5
    assert driver.check((cu.CUresult.CUDA_SUCCESS, 5, 6), "cuBar") == (5, 6)


def fake_array(shape, strides=None, dtype=np.float32, readonly=False) -> DeviceArray:
    # A DeviceArray over a made-up address: DLPack and CAI bookkeeping never touch the memory.
    mem = ForeignMemory(owner=None, ptr=0x7F00_0000_0000, device_id=0, stream=None)
    return DeviceArray(mem.ptr, shape, strides, dtype, mem, readonly)


class DLPackOnly:
    """Exposes just the DLPack protocol of ``array`` (optionally as a pre-1.0 producer)."""

    def __init__(self, array, legacy: bool = False) -> None:
        self.array = array
        self.legacy = legacy

    def __dlpack__(self, **kwargs):
        if self.legacy and "max_version" in kwargs:
            raise TypeError("pre-1.0 producer")
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


@needs_bindings
@pytest.mark.parametrize("legacy", [False, True], ids=["versioned", "legacy"])
@pytest.mark.parametrize("dtype", memory.SUPPORTED_DTYPES, ids=str)
def test_dlpack_round_trip_without_gpu(dtype, legacy):
    itemsize = np.dtype(dtype).itemsize
    source = fake_array((3, 5), (5 * itemsize * 2, -itemsize), dtype)
    before = len(dlpack._exports)
    back = memory.from_foreign(DLPackOnly(source, legacy))
    assert (back.ptr, back.shape, back.strides, back.dtype) == (
        source.ptr, source.shape, source.strides, source.dtype,
    )  # fmt: skip
    assert len(dlpack._exports) == before + 1  # alive until the consumer lets go
    del back
    gc.collect()
    assert len(dlpack._exports) == before


def test_unconsumed_capsule_releases_its_export():
    before = len(dlpack._exports)
    for kwargs in ({}, {"max_version": (1, 0)}):
        capsule = fake_array((4,)).__dlpack__(**kwargs)
        assert len(dlpack._exports) == before + 1
        del capsule
        assert len(dlpack._exports) == before


def test_consuming_something_that_is_not_a_fresh_capsule_fails():
    with pytest.raises(BufferError, match="unconsumed DLPack capsule"):
        dlpack.consume(object())
    capsule = fake_array((3,)).__dlpack__()
    dlpack.consume(capsule)
    with pytest.raises(BufferError):  # already renamed "used_dltensor"
        dlpack.consume(capsule)


@needs_bindings
def test_dlpack_read_only_needs_a_versioned_consumer():
    ro = fake_array((2,), readonly=True)
    assert memory.from_foreign(DLPackOnly(ro)).readonly
    with pytest.raises(BufferError, match="read-only"):
        memory.from_foreign(DLPackOnly(ro, legacy=True))


def test_dlpack_export_refusals():
    arr = fake_array((2,))
    with pytest.raises(ValueError, match="ambiguous"):
        arr.__dlpack__(stream=0)
    with pytest.raises(BufferError):
        arr.__dlpack__(copy=True)
    with pytest.raises(BufferError):
        arr.__dlpack__(dl_device=(1, 0))
    assert arr.__dlpack_device__() == (2, 0)


def test_cuda_array_interface_fields():
    contiguous = fake_array((2, 3), dtype=np.float16)
    cai = contiguous.__cuda_array_interface__
    assert cai["version"] == 3 and cai["typestr"] == "<f2" and cai["strides"] is None
    assert cai["data"] == (contiguous.ptr, False) and cai["stream"] is None
    strided = fake_array((2, 3), (4, -8), readonly=True).__cuda_array_interface__
    assert strided["strides"] == (4, -8) and strided["data"][1] is True
    assert fake_array((0, 3)).__cuda_array_interface__["data"][0] == 0


@needs_bindings
def test_small_block_recycling_bookkeeping(monkeypatch):
    freed = []
    # Record the handle, not the stream object: keeping it would resurrect the dying stream.
    monkeypatch.setattr(memory, "_free", lambda ptr, dev, stream: freed.append((ptr, stream.ptr)))
    stream = ExternalStream(0x5000, device=0)
    alive = weakref.ref(stream)
    before = memory._recycled_bytes.get(0, 0)
    for ptr in (0x1000, 0x2000, 0x3000):
        memory._release(ptr, 1024, stream)
    assert memory._recycled_bytes[0] == before + 3072
    assert memory._allocate(1024, stream) == 0x3000  # last in, first out, same stream only
    assert memory._recycled_bytes[0] == before + 2048
    del stream  # recycling holds no reference; the blocks go back in the stream's order
    gc.collect()
    assert alive() is None
    assert sorted(freed) == [(0x1000, 0x5000), (0x2000, 0x5000)]
    assert memory._recycled_bytes[0] == before


@needs_bindings
def test_recycling_respects_the_byte_cap(monkeypatch):
    freed = []
    monkeypatch.setattr(memory, "_free", lambda ptr, device, stream: freed.append(ptr))
    monkeypatch.setattr(memory, "_RECYCLE_LIMIT", 4096)
    stream = ExternalStream(0x6000, device=0)
    start = memory._recycled_bytes.get(0, 0)
    monkeypatch.setitem(memory._recycled_bytes, 0, 0)
    for i in range(6):
        memory._release(0x10000 + i * 1024, 1024, stream)
    assert memory._recycled_bytes[0] == 4096 and len(freed) == 2
    big = memory._SMALL_BLOCK * 2
    memory._release(0x900000, big, stream)  # large blocks always go straight back
    assert freed[-1] == 0x900000
    del stream
    gc.collect()
    assert memory._recycled_bytes[0] == 0
    memory._recycled_bytes[0] = start


@pytest.mark.parametrize("dtype", [np.complex64, np.dtype("datetime64[s]"), np.object_, "V4"])
def test_unsupported_dtypes_are_named(dtype):
    with pytest.raises(TypeError, match=re.escape(str(np.dtype(dtype)))):
        fake_array((2,), dtype=dtype)
    with pytest.raises(TypeError, match="does not support dtype"):
        memory.to_device(np.zeros(2, dtype))


def test_span_and_contiguity():
    assert fake_array((3, 4)).is_c_contiguous
    assert fake_array((3, 1), (4, 100)).is_c_contiguous  # a unit dimension's stride is free
    reversed_rows = fake_array((3, 4), (-16, 4))
    assert not reversed_rows.is_c_contiguous
    assert reversed_rows._span() == (-32, 16)
    assert fake_array((0, 4), (16, 4)).is_c_contiguous


# ============================================================================ GPU

with warnings.catch_warnings():  # the CPU fallback notice is expected on machines without a GPU
    warnings.simplefilter("ignore", driver.CUDAUnavailableWarning)
    CUDA_AVAILABLE = driver.available()
gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(not CUDA_AVAILABLE, reason="needs an NVIDIA GPU and driver"),
]


def on_gpu(test):
    for mark in reversed(gpu):
        test = mark(test)
    return test


KERNELS = r"""
#include <cuda_fp16.h>

extern "C" __global__ void fr_test_axpb(float* out, const float* x, float a, long long n)
{
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) out[i] = a * x[i] + 1.0f;
}

extern "C" __global__ void fr_test_params(
    double* out, bool b, signed char i8, unsigned char u8, short i16, unsigned short u16, int i32,
    unsigned int u32, long long i64, unsigned long long u64, __half f16, float f32, double f64)
{
    out[0] = b; out[1] = i8; out[2] = u8; out[3] = i16; out[4] = u16; out[5] = i32;
    out[6] = u32; out[7] = (double)i64; out[8] = (double)u64; out[9] = __half2float(f16);
    out[10] = f32; out[11] = f64;
}

// Spins for `cycles` clock ticks, then fills: makes a missing stream dependency visible.
extern "C" __global__ void fr_test_sleep_fill(
    float* out, float value, long long n, long long cycles)
{
    long long start = clock64();
    while (clock64() - start < cycles) { }
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = value;
}

extern "C" __global__ void fr_test_reverse_shared(float* out, const float* x, int n)
{
    extern __shared__ float buf[];
    for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = x[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = buf[n - 1 - i];
}
"""
KERNEL_NAMES = ("fr_test_axpb", "fr_test_params", "fr_test_sleep_fill", "fr_test_reverse_shared")
AXPB = driver.ArgPack(("ptr", "ptr", "float32", "int64"))
SLEEP_FILL = driver.ArgPack(("ptr", "float32", "int64", "int64"))
SLEEP_CYCLES = 200_000_000  # about 0.1 s at 2 GHz


@pytest.fixture(scope="module")
def kernels():
    if not CUDA_AVAILABLE:
        pytest.skip("needs an NVIDIA GPU and driver")
    arch = driver.device_props(0).arch
    cubin = KernelCache(disk=False).get_cubin(KERNELS, "fr_test_kernels", arch)
    return {name: driver.load_function(0, cubin, name) for name in KERNEL_NAMES}


def sample(shape, dtype, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), shape, dtype=dt)
    return rng.standard_normal(shape).astype(dt)


def blocks(n: int, threads: int = 256) -> int:
    return (n + threads - 1) // threads


def axpb(kernels, x: DeviceArray, a: float, stream) -> DeviceArray:
    out = to_device(np.full(x.shape, np.nan, np.float32), stream=stream)  # poisoned
    x.use_on(out.stream)
    driver.launch(
        kernels["fr_test_axpb"], blocks(x.size), 256, (out.ptr, x.ptr, a, x.size), AXPB, 0,
        out.stream.handle,
    )  # fmt: skip
    return out


@on_gpu
@pytest.mark.parametrize(
    "first_call",
    ["driver.primary_context(0)", "memory.to_device([1, 2])", "streams.Stream()"],
)
def test_any_call_can_be_the_first_cuda_call(first_call):
    # Regression: primary_context once held the init lock while available() took it again.
    script = (
        f"from fuseray.backends.cuda import driver, memory, streams\n{first_call}\nprint('ok')\n"
    )
    full_env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=full_env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


@on_gpu
def test_device_props_are_sane():
    props = driver.device_props(0)
    assert props.arch == "sm_{}{}".format(*props.compute_capability)
    assert props.multiprocessor_count > 0 and props.warp_size == 32
    assert props.max_threads_per_block >= 1024 and props.l2_cache_bytes > 0
    assert props.shared_memory_per_block_optin >= props.shared_memory_per_block >= 48 * 1024
    assert props.total_memory > 1 << 30 and props.name
    assert driver.device_count() >= 1
    assert Device(0).compute_capability == props.compute_capability
    assert Device(0).arch == props.arch


@on_gpu
@pytest.mark.parametrize("kind", ["default", "blocking", "non_blocking", "current"])
def test_launch_matches_numpy(kernels, kind):
    n = 1_000_003
    host = sample(n, np.float32)
    if kind == "current":
        with Stream(non_blocking=True) as stream:
            assert get_current_stream() is stream
            out = axpb(kernels, to_device(host), 2.5, None)
            assert out.stream is stream
    else:
        stream = {
            "default": None,
            "blocking": Stream(),
            "non_blocking": Stream(non_blocking=True),
        }[kind]
        out = axpb(kernels, to_device(host, stream=stream), 2.5, stream)
    np.testing.assert_allclose(
        to_host(out), np.float32(2.5) * host + np.float32(1), rtol=1e-6, atol=1e-6
    )


@on_gpu
def test_every_parameter_kind_reaches_the_kernel(kernels):
    out = to_device(np.full(12, np.nan))
    values = (True, -7, 200, -30000, 60000, -(2**31), 2**32 - 1, -(2**50), 2**52 + 1)
    values += (np.float16(-0.5), 1.25, -2.5e300)
    types = ("ptr", "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64")
    types += ("uint64", "float16", "float32", "float64")
    driver.launch(kernels["fr_test_params"], 1, 1, (out.ptr, *values), types)
    np.testing.assert_array_equal(to_host(out), np.array([float(v) for v in values]))


@on_gpu
def test_load_function_is_cached_per_cubin_and_name(kernels):
    arch = driver.device_props(0).arch
    cubin = KernelCache(disk=False).get_cubin(KERNELS, "fr_test_kernels", arch)
    again = driver.load_function(0, cubin, "fr_test_axpb")
    assert again is kernels["fr_test_axpb"]
    assert again.max_threads_per_block >= 256 and again.num_regs > 0
    with pytest.raises(driver.CUDAError, match="fr_no_such_kernel"):
        driver.load_function(0, cubin, "fr_no_such_kernel")


@on_gpu
def test_cubin_for_another_architecture_is_refused_with_a_hint():
    major = driver.device_props(0).compute_capability[0]
    other = "sm_80" if major != 8 else "sm_90"
    cubin = KernelCache(disk=False).get_cubin(KERNELS, "fr_test_kernels", other)
    with pytest.raises(driver.CUDAError, match="must be compiled for this device"):
        driver.load_function(0, cubin, "fr_test_axpb")


@on_gpu
def test_launch_errors_name_the_kernel(kernels):
    x = to_device(np.ones(4, np.float32))
    with pytest.raises(driver.CUDAError, match=r"cuLaunchKernel\(fr_test_axpb"):
        driver.launch(kernels["fr_test_axpb"], 1, 4096, (x.ptr, x.ptr, 1.0, 4), AXPB)


@on_gpu
def test_launch_from_a_thread_without_a_context(kernels):
    host = sample(1000, np.float32)
    x = to_device(host)
    results = []

    def body():
        assert int(driver.current_context()) == 0  # a new thread starts without one
        results.append(to_host(axpb(kernels, x, -1.0, None)))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    np.testing.assert_allclose(results[0], -host + 1, rtol=1e-6, atol=1e-6)


@on_gpu
def test_fuseray_leaves_a_foreign_current_context_alone(kernels):
    cu = driver.cu
    dev = driver.device_handle(0)
    foreign = driver.check(cu.cuCtxCreate(None, 0, dev), "cuCtxCreate")  # pushed, current
    try:
        host = sample(500, np.float32)
        got = to_host(axpb(kernels, to_device(host), 3.0, None))
        np.testing.assert_allclose(got, 3 * host + 1, rtol=1e-6, atol=1e-6)
        assert int(driver.current_context()) == int(foreign)
    finally:
        driver.check(cu.cuCtxDestroy(foreign), "cuCtxDestroy")


@on_gpu
def test_device_context_manager_restores_the_previous_context():
    outcome = []

    def body():
        assert get_current_device() == Device(0)  # no context means device 0, as in CUDA
        with Device(0) as dev:
            assert dev.id == 0 and get_current_device() == dev
            assert int(driver.current_context()) == int(driver.primary_context(0))
            with Device(dev):
                assert Device() == dev
            assert int(driver.current_context()) == int(driver.primary_context(0))
        outcome.append(int(driver.current_context()))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert outcome == [0]
    assert repr(Device(0)) == "<CUDA Device 0>" and hash(Device(0)) == hash(Device(0))
    Device(0).synchronize()
    with pytest.raises(ValueError, match="does not exist"):
        Device(driver.device_count()).use()


two_gpus = pytest.mark.skipif(
    not CUDA_AVAILABLE or driver.device_count() < 2, reason="needs two GPUs"
)


@on_gpu
@two_gpus
def test_streams_and_arrays_follow_their_device():
    host = np.arange(10, dtype=np.float32)
    with Device(1):
        stream = Stream()
        x = to_device(host)
        assert get_current_device() == Device(1)
    assert stream.device_id == 1 and x.device_id == 1
    assert get_current_stream(1) is default_stream(1)
    np.testing.assert_array_equal(to_host(x), host)  # from device 0: pushed, then popped
    assert get_current_device() == Device(0)


@on_gpu
@two_gpus
def test_work_on_the_other_device_leaves_the_current_device_alone(kernels):
    with Device(0):
        host = sample(4097, np.float32)
        x1 = to_device(host, device=1)
        y1 = empty(x1.shape, np.float32, device=1)
        x1.use_on(Stream(device=1))  # the stream switch makes the new stream wait
        np.testing.assert_array_equal(to_host(x1), host)
        assert get_current_device() == Device(0) and y1.device_id == 1
        x0 = to_device(host)
        s1 = Stream(device=1)
        x0.use_on(s1)  # a device-1 stream waits for device-0 work through an event
        assert x0.stream is s1
        s1.synchronize()


@on_gpu
@two_gpus
def test_foreign_arrays_on_the_second_device():
    cp = pytest.importorskip("cupy")
    with cp.cuda.Device(1):
        theirs = cp.arange(12, dtype=cp.int32).reshape(3, 4)
    ours = from_foreign(theirs)  # the device comes from the pointer, not the current device
    assert ours.device_id == 1 and ours.__dlpack_device__() == (2, 1)
    np.testing.assert_array_equal(to_host(ours), np.arange(12, dtype=np.int32).reshape(3, 4))
    with cp.cuda.Device(1):
        back = cp.from_dlpack(ours)
        assert back.device.id == 1 and back.data.ptr == ours.ptr


class InterfaceOnly:
    """Exposes just ``__cuda_array_interface__`` (as Numba and older producers do)."""

    def __init__(self, array) -> None:
        self.array = array
        self.__cuda_array_interface__ = array.__cuda_array_interface__


@on_gpu
@two_gpus
def test_interface_only_arrays_on_the_second_device():
    cp = pytest.importorskip("cupy")
    with cp.cuda.Device(1):
        theirs = InterfaceOnly(cp.arange(6.0))
    ours = from_foreign(theirs)  # found through the pointer's owning context
    assert ours.device_id == 1
    np.testing.assert_array_equal(to_host(ours), np.arange(6.0))
    pooled = from_foreign(InterfaceOnly(to_device(np.arange(5), device=1)))
    assert pooled.device_id == 1  # stream-ordered memory has no context: found through its pool
    np.testing.assert_array_equal(to_host(pooled), np.arange(5))


@on_gpu
def test_current_stream_is_per_thread_and_nests():
    outer, inner = Stream(), Stream(non_blocking=True)
    assert get_current_stream() is default_stream()
    assert default_stream().ptr == 0 and default_stream().interop_id == 1
    seen_elsewhere = []
    with outer:
        thread = threading.Thread(target=lambda: seen_elsewhere.append(get_current_stream()))
        thread.start()
        thread.join()
        with inner:
            assert get_current_stream() is inner
        assert get_current_stream() is outer
    assert get_current_stream() is default_stream()
    assert seen_elsewhere == [default_stream()]
    assert outer.__cuda_stream__() == (0, outer.ptr) and outer.ptr > 2
    outer.synchronize()
    assert as_stream(outer) is outer and as_stream() is default_stream()
    assert as_stream(outer.ptr) == outer and as_stream(driver.cu.CUstream(outer.ptr)) == outer
    assert ExternalStream(1).ptr == 0 and ExternalStream(2).interop_id == 2
    with pytest.raises(TypeError, match="CUDA stream"):
        as_stream("stream")


@on_gpu
@pytest.mark.parametrize("library", ["torch", "cupy"])
def test_external_streams_from_other_libraries(kernels, library):
    if library == "torch":
        torch = pytest.importorskip("torch")
        theirs = torch.cuda.Stream()
        handle = theirs.cuda_stream
    else:
        cp = pytest.importorskip("cupy")
        theirs = cp.cuda.Stream(non_blocking=True)
        handle = theirs.ptr
    ours = as_stream(theirs)
    assert ours.ptr == handle and ours == ExternalStream(handle)
    assert ours.owner is theirs  # their stream outlives every array last used on ours
    host = sample(4099, np.float32)
    out = axpb(kernels, to_device(host, stream=ours), 0.5, ours)
    theirs.synchronize()
    np.testing.assert_allclose(to_host(out), 0.5 * host + 1, rtol=1e-6, atol=1e-6)


@on_gpu
@pytest.mark.parametrize("dtype", memory.SUPPORTED_DTYPES, ids=str)
def test_cupy_round_trips_without_copies(dtype):
    cp = pytest.importorskip("cupy")
    host = sample((5, 7), dtype)
    ours = to_device(host)
    via_cai = cp.asarray(ours)
    via_dlpack = cp.from_dlpack(ours)
    for theirs in (via_cai, via_dlpack):
        assert theirs.data.ptr == ours.ptr and theirs.dtype == host.dtype
        np.testing.assert_array_equal(cp.asnumpy(theirs), host)
    back = from_foreign(via_cai[:, ::2])
    assert back.ptr == ours.ptr and back.strides == (7 * host.itemsize, 2 * host.itemsize)
    np.testing.assert_array_equal(to_host(back), host[:, ::2])
    via_cai[0, 0] = via_cai[1, 1]  # writes through the shared memory
    cp.cuda.Device().synchronize()
    assert to_host(ours)[0, 0] == host[1, 1]


@on_gpu
@pytest.mark.parametrize("dtype", memory.SUPPORTED_DTYPES, ids=str)
def test_torch_round_trips_without_copies(dtype):
    torch = pytest.importorskip("torch")
    host = sample((4, 6), dtype)
    ours = to_device(host)
    try:
        via_dlpack = torch.from_dlpack(ours)
    except (TypeError, BufferError, RuntimeError) as exc:  # dtypes this torch cannot hold
        pytest.skip(f"torch cannot import {np.dtype(dtype)}: {exc}")
    assert via_dlpack.data_ptr() == ours.ptr and via_dlpack.is_cuda
    np.testing.assert_array_equal(via_dlpack.cpu().numpy(), host)
    for foreign in (via_dlpack.T, DLPackOnly(via_dlpack.T)):  # CAI path, then DLPack path
        back = from_foreign(foreign)
        assert back.ptr == ours.ptr and back.shape == (6, 4)
        np.testing.assert_array_equal(to_host(back), host.T)
    if dtype == np.float32:
        via_cai = torch.as_tensor(ours, device="cuda")
        assert via_cai.data_ptr() == ours.ptr


@on_gpu
def test_numba_round_trip_without_copies():
    numba_cuda = pytest.importorskip("numba.cuda")
    host = sample((3, 8), np.float64)
    ours = to_device(host)
    theirs = numba_cuda.as_cuda_array(ours)
    assert theirs.__cuda_array_interface__["data"][0] == ours.ptr
    np.testing.assert_array_equal(theirs.copy_to_host(), host)
    device_array = numba_cuda.to_device(host)[::-1, ::3]
    back = from_foreign(device_array)
    assert back.ptr == device_array.__cuda_array_interface__["data"][0]
    np.testing.assert_array_equal(to_host(back), host[::-1, ::3])


@on_gpu
def test_jax_round_trip_without_copies():
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    jnp = pytest.importorskip("jax.numpy")
    host = sample((6, 5), np.float32)
    ours = to_device(host)
    theirs = jnp.from_dlpack(ours)
    np.testing.assert_array_equal(np.asarray(theirs), host)
    source = jnp.asarray(host) * 2
    for foreign in (source, DLPackOnly(source)):
        back = from_foreign(foreign)
        np.testing.assert_array_equal(to_host(back), host * 2)


@on_gpu
def test_dlpack_export_orders_the_consumer_after_our_stream(kernels):
    torch = pytest.importorskip("torch")
    n = 1 << 20
    stream = Stream(non_blocking=True)  # no implicit ordering with torch's default stream
    arr = to_device(np.full(n, -1, np.float32), stream=stream)
    driver.launch(
        kernels["fr_test_sleep_fill"], 264, 256, (arr.ptr, 42.0, n, SLEEP_CYCLES), SLEEP_FILL,
        0, stream.handle,
    )  # fmt: skip
    got = torch.from_dlpack(arr).cpu().numpy()  # torch reads on its own current stream
    assert (got == 42).all()


@on_gpu
def test_cai_import_waits_for_the_producer_stream(kernels):
    cp = pytest.importorskip("cupy")
    n = 1 << 20
    theirs = cp.cuda.Stream(non_blocking=True)
    with theirs:
        data = cp.full(n, -1, cp.float32)
    driver.launch(
        kernels["fr_test_sleep_fill"], 264, 256, (data.data.ptr, 7.0, n, SLEEP_CYCLES),
        SLEEP_FILL, 0, theirs.ptr,
    )  # fmt: skip
    with theirs:  # CuPy reports its current stream in the interface
        assert data.__cuda_array_interface__["stream"] == theirs.ptr
        ours = from_foreign(data, stream=default_stream())
    assert ours.stream is default_stream()
    assert (to_host(ours) == 7).all()


@on_gpu
def test_use_on_tracks_the_last_stream():
    s1, s2 = Stream(), Stream(non_blocking=True)
    arr = empty((16,), np.int32, stream=s1)
    assert arr.stream is s1 and arr.__cuda_array_interface__["stream"] == s1.ptr
    arr.use_on(s2)
    assert arr.stream is s2 and arr.__cuda_array_interface__["stream"] == s2.ptr
    arr.use_on(default_stream())
    assert arr.__cuda_array_interface__["stream"] == 1  # legacy default stream, per CAI v3


def cupy_views(cp):
    base = cp.arange(6 * 7, dtype=cp.float64).reshape(6, 7)
    return {
        "step_and_reverse": base[::2, ::-3],
        "transpose": base.T,
        "reversed_rows": base[1:, ::-1],
        "column": base[:, 3],
        "scalar": base[2, 3],
        "empty": base[:0],
        "broadcast": cp.broadcast_to(base[0], (4, 7)),
    }


@on_gpu
@pytest.mark.parametrize(
    "name",
    ["step_and_reverse", "transpose", "reversed_rows", "column", "scalar", "empty", "broadcast"],
)
def test_to_host_of_strided_views(name):
    cp = pytest.importorskip("cupy")
    view = cupy_views(cp)[name]
    got = to_host(from_foreign(view))
    assert got.flags.c_contiguous and got.shape == view.shape
    np.testing.assert_array_equal(got, cp.asnumpy(view))


@on_gpu
def test_to_host_of_our_own_negative_stride_view():
    host = sample((4, 5), np.int16)
    base = to_device(host)
    last = base.ptr + base.nbytes - base.dtype.itemsize
    flipped = DeviceArray(last, (4, 5), (-10, -2), np.int16, base.memory)
    np.testing.assert_array_equal(to_host(flipped), host[::-1, ::-1])


@on_gpu
@pytest.mark.parametrize(
    "make",
    [
        lambda: sample((7, 9), np.float64)[::-2, 1::3],
        lambda: np.asfortranarray(sample((5, 6), np.int32)),
        lambda: sample(10, np.float32).astype(">f4"),
        lambda: np.array(3.5, np.float16),
        lambda: np.zeros((0, 4), np.uint64),
        lambda: sample((3, 3), np.bool_),
    ],
    ids=["negative-strided", "fortran", "big-endian", "0-d", "empty", "bool"],
)
def test_to_device_accepts_any_host_layout(make):
    host = make()
    arr = to_device(host)
    assert arr.is_c_contiguous and arr.shape == host.shape
    got = to_host(arr)
    assert got.dtype == host.dtype.newbyteorder("=")
    np.testing.assert_array_equal(got, host)


@on_gpu
def test_out_of_memory_is_recoverable():
    absurd = 1 << 50  # a petabyte
    with pytest.raises(memory.OutOfMemoryError) as info:
        empty(absurd, np.uint8)
    assert info.value.size == absurd and isinstance(info.value, MemoryError)
    assert "out of memory" in str(info.value)
    arr = to_device(np.arange(1 << 20, dtype=np.uint8))
    np.testing.assert_array_equal(to_host(arr), np.arange(1 << 20, dtype=np.uint8))


@on_gpu
def test_freed_memory_is_reused():
    chunk = driver.device_props(0).total_memory // 4
    for _ in range(20):  # five times the device's memory in total
        arr = empty(chunk, np.uint8)
        del arr
    Device(0).synchronize()


@on_gpu
def test_small_blocks_are_recycled_per_stream():
    first = empty(1000, np.uint8)
    ptr = first.ptr
    del first
    second = empty(900, np.uint8)  # same 512-byte size class, same (default) stream
    assert second.ptr == ptr
    del second
    other = empty(1000, np.uint8, stream=Stream())
    assert other.ptr != ptr  # filed under the default stream, not handed to another one
    assert empty(1000, np.uint8).ptr == ptr


@on_gpu
def test_recycled_bytes_are_capped():
    blocks = [empty(1 << 20, np.uint8) for _ in range(100)]
    del blocks
    assert 0 < memory._recycled_bytes[0] <= memory._RECYCLE_LIMIT


@on_gpu
def test_collected_streams_take_their_recycled_blocks_with_them():
    stream = Stream(non_blocking=True)
    alive = weakref.ref(stream)
    arr = empty(3000, np.uint8, stream=stream)
    del arr
    assert (id(stream), 3072) in memory._recycled
    filer = id(stream)
    del stream
    gc.collect()
    assert alive() is None and filer not in memory._filers
    Device(0).synchronize()


@on_gpu
def test_dynamic_shared_memory_beyond_48_kib(kernels):
    n = 20_000  # 80 KB of floats
    host = sample(n, np.float32)
    x, out = to_device(host), empty(n, np.float32)
    func = kernels["fr_test_reverse_shared"]
    driver.launch(func, 1, 512, (out.ptr, x.ptr, n), ("ptr", "ptr", "int32"), 4 * n)
    np.testing.assert_array_equal(to_host(out), host[::-1])


@on_gpu
def test_launch_adds_about_a_microsecond_to_the_driver(kernels, record_property):
    func = kernels["fr_test_axpb"]
    x = to_device(sample(4096, np.float32))
    out = empty(4096, np.float32)
    args = (out.ptr, x.ptr, 2.0, 4096)
    handle = default_stream().handle
    params = AXPB.pack(args)
    cu = driver.cu

    def ours():
        driver.launch(func, 16, 256, args, AXPB, 0, handle)

    def raw():
        cu.cuLaunchKernel(func.handle, 16, 1, 1, 256, 1, 1, 0, handle, params, 0)

    timings = {}
    for name, call in (("fuseray", ours), ("raw", raw)):
        samples = []
        for _ in range(30):
            Device(0).synchronize()
            start = time.perf_counter()
            for _ in range(100):  # stays well inside the launch queue
                call()
            samples.append((time.perf_counter() - start) / 100)
        timings[name] = sorted(samples)[len(samples) // 2] * 1e6
    Device(0).synchronize()
    record_property("launch_us", timings)
    print(f"median per launch: fuseray {timings['fuseray']:.2f} us, raw {timings['raw']:.2f} us")
    # The driver's own cost differs between machines (3.9 to 6.8 us seen on H200 hosts); what
    # fuseray controls is what it adds on top (about 1 us there).
    assert timings["fuseray"] - timings["raw"] < 2.5

"""The compiled call site (``backends/cuda/_callsite.c``) on the fake driver: a repeated ``@jit``
call takes it, packs exactly what the Python path packs, follows the current stream, context and
program, hands every call unlike its own back to the Python path, and leaves the process usable
after an error. (Results on a real GPU: ``test_runtime_gpu.py``.)"""

from __future__ import annotations

import copy
import os
import threading

import numpy as np
import pytest

import fuseray as fr
from fuseray import config
from fuseray.array import _trace_state
from fuseray.backends.cuda import driver, launch, memory

built = pytest.mark.skipif(launch._callsite is None, reason="the C call site is not built")


def test_the_call_site_is_built_where_required():
    """``pip install`` skips the extension where no C compiler is found; CI has one
    (``.ci/run`` sets FUSERAY_REQUIRE_CALLSITE), so there a missing build is a failure."""
    if os.environ.get("FUSERAY_REQUIRE_CALLSITE", "0") == "0":
        pytest.skip("FUSERAY_REQUIRE_CALLSITE is not set")
    assert launch._callsite is not None, "fuseray.backends.cuda._callsite was not built"




def arrays(n: int = 64, dtype=np.float32, count: int = 2):
    return [fr.asarray(np.arange(n, dtype=dtype) + k) for k in range(count)]


def pack_of(f, *args):
    return launch.binding_for(f.lower(*args)[1].plan.kernels[0]).last_state.program.pack


def site_packed(fake, pack) -> tuple:
    """What the last compiled launch passed, decoded as the Python path's struct would."""
    return pack._format.unpack(b"".join(v.to_bytes(8, "little") for v in fake.raw_slots))


def python_packed(pack) -> tuple:
    return pack._format.unpack_from(pack._local.buffers[0])


def warm(f, *args):
    """Trace, then repeat once: the repeat builds the call site."""
    f(*args)
    f(*args)
    assert f._site is not None
    return f._site


@built
def test_repeated_calls_pack_what_the_python_path_packs(fake_one_gpu, monkeypatch):
    f = fr.jit(lambda a, s, k: a * s + k)
    (x,) = arrays(count=1)
    warm(f, x, 2.5, 3)
    pack = pack_of(f, x, 2.5, 3)
    assert pack.types[-2:] == ("float64", "int64")
    for s, k in ((-1.25, 7), (1e300, -(2**40)), (0.1, 0)):
        monkeypatch.setattr(config, "compiled_calls", False)
        fake_one_gpu.raw_slots = None
        expected = f(x, s, k)
        assert fake_one_gpu.raw_slots is None  # the Python path packed this one
        by_python = python_packed(pack)
        monkeypatch.setattr(config, "compiled_calls", True)
        launches = len(fake_one_gpu.launches)
        out = f(x, s, k)
        assert len(fake_one_gpu.launches) == launches + 1
        got = site_packed(fake_one_gpu, pack)
        # argument 1 is the output's pointer: a new allocation each call
        assert got[1] == out._node.value.ptr
        assert got[:1] + got[2:] == by_python[:1] + by_python[2:]
        assert got[-2:] == (s, k)
        assert (out.shape, out.dtype) == (expected.shape, expected.dtype) == ((64,), np.float32)
    assert f.trace_count == 1


@built
def test_every_call_unlike_the_sites_takes_the_python_path(fake_one_gpu, monkeypatch):
    f = fr.jit(lambda a, b: a * b + 1)
    x, y = arrays()
    site = warm(f, x, y)
    assert site((x, y)) is not None  # the site answers its own kind of call
    (w,) = arrays(128, count=1)
    unlike = [
        (x,),  # arity
        (x, y, y),
        (x, y + 1),  # a lazy argument
        (x, w[::2]),  # a view
        (x, fr.asarray(np.ones(1, np.float32))),  # another shape
        (x, fr.asarray(np.ones(64, np.float64))),  # another dtype
        (x, np.ones(64, np.float32)),  # a NumPy array
        (x, 2.0),  # a scalar where an array was
    ]
    for args in unlike:
        assert site(args) is None
    launches = len(fake_one_gpu.launches)
    for args in unlike[2:]:
        out = f(*args)  # the Python path runs each
        assert out.shape == np.broadcast_shapes(*(getattr(a, "shape", ()) for a in args))
    assert len(fake_one_gpu.launches) > launches
    for name, value in (("fast_math", True), ("compiled_calls", False), ("device", "cpu")):
        with monkeypatch.context() as m:
            m.setattr(config, name, value)
            assert site((x, y)) is None
    _trace_state.trace = object()  # inside another function's trace: record, do not run
    try:
        assert site((x, y)) is None
    finally:
        del _trace_state.trace
    assert site((x, y)) is not None


@built
def test_a_call_of_another_shape_switches_sites(fake_one_gpu):
    f = fr.jit(lambda a, b: a + b)
    small, large = arrays(64), arrays(1000)
    first = warm(f, *small)
    second = warm(f, *large)
    assert first is not second
    f(*small)  # the Python path finds the first site again, and makes it the one tried first
    assert f._site is first and f.trace_count == 1


@built
def test_inputs_are_ordered_on_the_current_stream(fake_one_gpu):
    f = fr.jit(lambda a, b: a * b)
    x, y = arrays()
    warm(f, x, y)
    waits = fake_one_gpu.calls["cuStreamWaitEvent"]
    with fr.cuda.Stream() as s:
        out = f(x, y)
        assert fake_one_gpu.launches[-1] == (0, s.ptr) and fake_one_gpu.raw_slots is not None
        assert out._node.value.stream is s and x._node.value.stream is s
        assert fake_one_gpu.calls["cuStreamWaitEvent"] == waits + 2
        f(x, y)
        assert fake_one_gpu.calls["cuStreamWaitEvent"] == waits + 2  # already ordered there
    f(x, y)
    assert fake_one_gpu.launches[-1] == (0, 0)


@built
def test_captured_arrays_are_passed(fake_one_gpu):
    c = fr.asarray(np.full(64, 3.0, np.float32))
    f = fr.jit(lambda a: a * c)
    (x,) = arrays(count=1)
    warm(f, x)
    f(x)
    pointers = set(fake_one_gpu.raw_slots[:3])
    assert {x._node.value.ptr, c._node.value.ptr} <= pointers


@built
def test_a_refused_launch_takes_the_python_launch(fake_one_gpu):
    """Another library's context current: the driver refuses the site's launch, and the Python
    launch runs it on fuseray's context, leaving the thread's own as it was."""
    f = fr.jit(lambda a, b: a - b)
    x, y = arrays()
    warm(f, x, y)
    cu = driver.cu
    foreign = driver.check(cu.cuCtxCreate(None, 0, driver.device_handle(0)), "cuCtxCreate")
    launches = len(fake_one_gpu.launches)
    out = f(x, y)
    assert len(fake_one_gpu.launches) == launches + 1 and out.shape == (64,)
    assert fake_one_gpu.current == int(foreign)


@built
def test_errors_propagate_and_leave_the_site_usable(fake_one_gpu, monkeypatch):
    f = fr.jit(lambda a, k: a + k)
    (x,) = arrays(dtype=np.int64, count=1)
    warm(f, x, 1)
    for compiled in (False, True):  # both paths raise NumPy's conversion error
        monkeypatch.setattr(config, "compiled_calls", compiled)
        with pytest.raises(OverflowError):
            f(x, 2**70)
    cu = fake_one_gpu

    def refuse(*args):
        return (driver.cu._real.CUresult.CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,)

    with monkeypatch.context() as m:  # the driver refuses both launches: CUDAError, named
        m.setattr(type(cu), "cuLaunchKernel", lambda self, *args: refuse())
        m.setattr(cu, "raw_status", 701)  # CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
        with pytest.raises(driver.CUDAError, match="cuLaunchKernel"):
            f(x, 5)
    launches = len(cu.launches)
    assert f(x, 5).shape == (64,) and len(cu.launches) == launches + 1
    assert f._site is not None and f.trace_count == 1


@built
def test_a_replaced_program_function_is_launched(fake_one_gpu):
    """Tiered compilation swaps a program's function for the optimised build: the site reads it
    on every call."""
    f = fr.jit(lambda a, b: a / b)
    x, y = arrays()
    warm(f, x, y)
    program = launch.binding_for(f.lower(x, y)[1].plan.kernels[0]).last_state.program
    upgraded = copy.copy(program.function)
    upgraded.ptr += 0x100  # the same device's next function
    program.function = upgraded
    f(x, y)
    assert fake_one_gpu.raw_function == upgraded.ptr


@built
def test_outputs_are_recycled(fake_one_gpu):
    f = fr.jit(lambda a, b: a + b)
    x, y = arrays()
    warm(f, x, y)
    allocations = fake_one_gpu.calls["cuMemAllocAsync"]
    for _ in range(100):
        f(x, y)
    assert fake_one_gpu.calls["cuMemAllocAsync"] <= allocations + 1
    assert memory._recycled_bytes[0] > 0


@built
def test_several_outputs_take_the_python_path(fake_one_gpu):
    f = fr.jit(lambda a: (a + 1, a * 2))
    (x,) = arrays(count=1)
    f(x)
    first, second = f(x)
    assert f._site is None and first.shape == second.shape == (64,)
    assert [site for _, _, site in f._fast.values()] == [False]


@built
def test_calls_from_several_threads(fake_one_gpu):
    """Each new thread has no context current: its launches go through the Python launch."""
    f = fr.jit(lambda a, b: a * b - a)
    x, y = arrays()
    warm(f, x, y)
    launches = len(fake_one_gpu.launches)
    shapes = []

    def body():
        for _ in range(50):
            shapes.append(f(x, y).shape)

    threads = [threading.Thread(target=body) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert shapes == [(64,)] * 200 and len(fake_one_gpu.launches) == launches + 200


@built
def test_the_site_checks_what_it_is_built_from():
    Site = launch._callsite.Site
    with pytest.raises(ValueError, match="one code per kernel argument"):
        Site((), (), (((), np.dtype(np.float32), (), 0),), (), (), b"QQ", None,
             (1, 1, 1, 1, 1, 1, 0), 0, (None,) * 9 + (1, 0))
    with pytest.raises(ValueError, match="no launch address"):
        Site((), (), (((), np.dtype(np.float32), (), 0),), (), (), b"Q", None,
             (1, 1, 1, 1, 1, 1, 0), 0, (None,) * 9 + (0, 0))
    with pytest.raises(RuntimeError, match="not initialised"):
        Site.__new__(Site)(())


def test_unfiled_blocks_cannot_be_taken_by_an_allocation_already_under_way(fake_one_gpu):
    """An allocation looks up its file before it takes the pool's lock. If another thread
    frees that file meanwhile (an out-of-memory retry, a stream collected), the file it holds
    must be empty, or the block would be both freed and handed out."""
    from fuseray.backends.cuda import streams

    stream = streams.get_current_stream(0)
    blocks = [memory.DeviceMemory(4096, stream) for _ in range(3)]
    ptrs = {b.ptr for b in blocks}
    blocks.clear()
    filed = memory._recycled[(id(stream), 4096)]  # what the allocation found
    assert set(filed) == ptrs
    frees = fake_one_gpu.calls["cuMemFreeAsync"]
    memory._unfile(id(stream), stream)  # the other thread
    assert fake_one_gpu.calls["cuMemFreeAsync"] == frees + 3
    assert filed == [] and memory._recycled_bytes[0] == 0
    assert memory.DeviceMemory(4096, stream).ptr not in ptrs  # a new block from the driver


def test_a_release_nested_by_garbage_collection_loses_nothing(fake_one_gpu, monkeypatch):
    """A collection inside _release (its lock is re-entrant) runs another DeviceMemory's
    __del__ for the same stream and size: both blocks are filed and counted, whatever step of
    the first release the collection starts at."""
    import gc

    from fuseray.backends.cuda import streams

    stream = streams.get_current_stream(0)

    class Cycle:  # collected only by the garbage collector
        pass

    inconsistent = 0
    for threshold in range(1, 6):
        for _ in range(10):
            for name in ("_recycled", "_filers", "_recycled_bytes"):
                monkeypatch.setattr(memory, name, {})
            gc.collect()
            c = Cycle()
            c.c, c.m = c, memory.DeviceMemory(4096, stream)
            del c
            second = memory.DeviceMemory(4096, stream)
            old = gc.get_threshold()
            gc.set_threshold(threshold)  # a collection at (nearly) every allocation
            try:
                del second
            finally:
                gc.set_threshold(*old)
            gc.collect()
            filed = sum(len(ptrs) for ptrs in memory._recycled.values())
            inconsistent += filed != 2 or memory._recycled_bytes.get(0) != 2 * 4096
    assert inconsistent == 0

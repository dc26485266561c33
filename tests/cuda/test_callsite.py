"""The compiled call site (``backends/cuda/_callsite.c``) on the fake driver: a repeated ``@jit``
call takes it, packs exactly what the Python path packs, follows the current stream, context and
program, hands every call unlike its own back to the Python path, and leaves the process usable
after an error. (Results on a real GPU: ``test_runtime_gpu.py``.)"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import threading
import weakref

import numpy as np
import pytest

import fuseray as fr
from fuseray import config
from fuseray.array import _trace_state, ndarray
from fuseray.backends.cuda import driver, launch, memory, streams
from fuseray.graph import Buffer, Node

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
    launch._bind_callsite()
    Site = launch._callsite.Site

    def env(address):
        return (None, {}, None, None, None, 0, address)

    with pytest.raises(ValueError, match="one code per kernel argument"):
        Site((), (), (((), np.dtype(np.float32), (), 0),), (), (), b"QQ", None,
             (1, 1, 1, 1, 1, 1, 0), 0, env(1))
    with pytest.raises(ValueError, match="no launch address"):
        Site((), (), (((), np.dtype(np.float32), (), 0),), (), (), b"Q", None,
             (1, 1, 1, 1, 1, 1, 0), 0, env(0))
    with pytest.raises(ValueError, match="env takes"):
        Site((), (), (((), np.dtype(np.float32), (), 0),), (), (), b"Q", None,
             (1, 1, 1, 1, 1, 1, 0), 0, env(1)[:-1])
    with pytest.raises(RuntimeError, match="not initialised"):
        Site.__new__(Site)(())
    site = Site((), (), (((), np.dtype(np.float32), (), 0),), (), (), b"Q", None,
                (1, 1, 1, 1, 1, 1, 0), 0, env(1))
    with pytest.raises(ValueError, match="initialised once"):
        site.__init__((), (), (((), np.dtype(np.float32), (), 0),), (), (), b"Q", None,
                      (1, 1, 1, 1, 1, 1, 0), 0, env(1))


def test_unfiled_blocks_cannot_be_taken_by_an_allocation_already_under_way(fake_one_gpu):
    """An allocation looks up its file before it takes the pool's lock. If another thread
    frees that file meanwhile (an out-of-memory retry, a stream collected), the file it holds
    must be empty, or the block would be both freed and handed out."""
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


@pytest.mark.parametrize("delete", ["python", "c"])
def test_a_release_nested_by_garbage_collection_loses_nothing(fake_one_gpu, monkeypatch, delete):
    """A collection inside _release (its lock is re-entrant) runs another DeviceMemory's
    __del__ for the same stream and size: both blocks are filed and counted, whatever step of
    the first release the collection starts at; with the Python __del__ and the C one."""
    monkeypatch.setattr(memory.DeviceMemory, "__del__", del_of(delete))
    stream = streams.get_current_stream(0)

    class Cycle:  # collected only by the garbage collector
        pass

    inconsistent = 0
    gc.collect()
    gc.freeze()  # the heap so far out of every collection: the hundred below stay quick
    try:
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
    finally:
        gc.unfreeze()
    assert inconsistent == 0


# ---------------------------------------------------------------------------------------------
# the result's objects and the pool, made and kept in C
# ---------------------------------------------------------------------------------------------


def del_of(which: str):
    """DeviceMemory's Python ``__del__``, or the C one that ``bind`` returns."""
    if which == "python":
        return memory._python_del
    if launch._callsite is None:
        pytest.skip("the C call site is not built")
    launch._bind_callsite()
    return launch._callsite.bind(ndarray, Node, Buffer, memory.DeviceArray, memory.DeviceMemory,
                                 vars(memory))


def objects_of(out) -> list:
    """The five objects behind a call's result: ndarray, Node, Buffer, DeviceArray, DeviceMemory."""
    node = out._node
    buffer = node.arg[0]
    return [out, node, buffer, buffer.value, buffer.value.memory]


def slots_of(obj) -> list[str]:
    return [name for name in type(obj).__slots__ if name != "__weakref__"]


def check_pool(kept: list) -> None:
    """No block filed twice or filed while a kept result holds it; no two results share a block;
    the pool's byte count is the sum of its files."""
    filed = [ptr for ptrs in memory._recycled.values() for ptr in ptrs]
    live = [out._node.value.ptr for out in kept]
    assert len(set(filed)) == len(filed)
    assert len(set(live)) == len(live)
    assert not set(live) & set(filed)
    assert memory._recycled_bytes.get(0, 0) == sum(
        size * len(ptrs) for (_, size), ptrs in memory._recycled.items())


@built
def test_the_result_is_made_as_the_python_path_makes_it(fake_one_gpu, monkeypatch):
    """Slot for slot, the site's five result objects are the Python path's: the same types and
    values but for what is new per call (pointers, serials, the objects themselves)."""
    f = fr.jit(lambda a, b: a * b + 1)
    x, y = arrays(1000)
    warm(f, x, y)
    fake_one_gpu.raw_slots = None
    by_site = f(x, y)
    assert fake_one_gpu.raw_slots is not None  # the site launched it
    with monkeypatch.context() as m:
        m.setattr(config, "compiled_calls", False)
        by_python = f(x, y)
    per_call = {"_node", "arg", "_hash", "value", "serial", "memory", "ptr"}
    for ours, theirs in zip(objects_of(by_site), objects_of(by_python)):
        assert type(ours) is type(theirs)
        assert gc.is_tracked(ours) == gc.is_tracked(theirs)
        assert weakref.ref(ours)() is ours
        for name in slots_of(ours):
            a, b = getattr(ours, name), getattr(theirs, name)
            if name not in per_call:
                assert type(a) is type(b) and a == b, name
    out, node, buffer, value, mem = objects_of(by_site)
    assert node.arg == (buffer, value.shape) and node.shape == value.shape == (1000,)
    assert hash(node) == node._hash == buffer.serial == by_python._node.arg[0].serial - 1
    assert node.key == f"buffer-{buffer.serial:x}" and node.op == "buffer"
    assert value.ptr == mem.ptr != by_python._node.value.ptr
    assert mem.size == memory.block_size(4000) == 4096
    assert mem.stream is by_python._node.value.stream
    assert mem.device_id == 0 and value.is_c_contiguous
    assert (out + 1).shape == (1000,)  # it joins a larger graph as any leaf does


@built
def test_bind_takes_only_the_classes_it_knows(fake_one_gpu):
    launch._bind_callsite()
    bind = launch._callsite.bind
    real = [ndarray, Node, Buffer, memory.DeviceArray, memory.DeviceMemory]

    class Extra:  # a slot C does not know: it would be left unset
        __slots__ = ("device_id", "ptr", "size", "stream", "owner", "__weakref__")

    class Missing:  # no __weakref__
        __slots__ = ("device_id", "ptr", "size", "stream")

    class Derived(memory.DeviceMemory):
        __slots__ = ()

    class Same:  # the right slots, but another class than the one bound
        __slots__ = ("device_id", "ptr", "size", "stream", "__weakref__")

    for cls in (Extra, Missing, Derived):
        with pytest.raises(TypeError, match="exactly the __slots__"):
            bind(*real[:4], cls, vars(memory))
    with pytest.raises(ValueError, match="other classes were bound"):
        bind(*real[:4], Same, vars(memory))
    with pytest.raises(TypeError):
        bind(*real[:4])
    assert callable(bind(*real, vars(memory)))  # the same classes again: fine


@built
def test_the_pool_stays_consistent_across_both_paths_and_streams(fake_one_gpu, monkeypatch):
    """400 calls, each through the site or the Python path at random, on the default stream or
    another, with some results kept and dropped later: the pool's invariants hold after each."""
    f = fr.jit(lambda a, b: a + b)
    x, y = arrays()
    warm(f, x, y)
    rng = np.random.default_rng(0)
    other = fr.cuda.Stream()
    kept: list = []
    by_site = 0
    for _ in range(400):
        compiled = bool(rng.random() < 0.6)
        monkeypatch.setattr(config, "compiled_calls", compiled)
        fake_one_gpu.raw_slots = None
        with other if rng.random() < 0.3 else contextlib.nullcontext():
            out = f(x, y)
        by_site += fake_one_gpu.raw_slots is not None
        assert (fake_one_gpu.raw_slots is not None) == compiled
        if rng.random() < 0.25:
            kept.append(out)
        if kept and rng.random() < 0.15:
            kept.pop(int(rng.integers(len(kept))))
        del out
        check_pool(kept)
    assert 200 < by_site < 300 and len(memory._recycled) == 2  # a file per stream
    kept.clear()
    check_pool(kept)


def pool_state(ptr: int) -> tuple:
    """The pool's files (size, length, whether ``ptr`` is filed), bytes and filers' sizes."""
    files = sorted((size, len(ptrs), ptr in ptrs) for (_, size), ptrs in memory._recycled.items())
    return files, dict(memory._recycled_bytes), [sorted(v[1]) for v in memory._filers.values()]


@built
@pytest.mark.parametrize("case", ["first of its size", "filed", "pool full", "large", "empty"])
def test_the_c_del_does_what_the_python_del_does(fake_one_gpu, monkeypatch, case):
    stream = streams.get_current_stream(0)
    size = {"large": memory._SMALL_BLOCK * 2, "empty": 0}.get(case, 4096)
    seen = []
    for which in ("python", "c"):
        monkeypatch.setattr(memory.DeviceMemory, "__del__", del_of(which))
        for name in ("_recycled", "_filers", "_recycled_bytes"):
            monkeypatch.setattr(memory, name, {})
        monkeypatch.setattr(memory, "_RECYCLE_LIMIT", 2 * size if case == "pool full" else 64 << 20)
        others = [memory.DeviceMemory(size, stream) for _ in range(3)]
        block = memory.DeviceMemory(size, stream)
        if case in ("filed", "pool full"):
            del others[:2]  # a file with two blocks (for "pool full", all the room there is)
        frees = fake_one_gpu.calls["cuMemFreeAsync"]
        ptr = block.ptr
        del block
        seen.append((pool_state(ptr), fake_one_gpu.calls["cuMemFreeAsync"] - frees))
        others.clear()
    assert seen[0] == seen[1]
    (files, _, _), freed = seen[0]
    assert freed == (case in ("pool full", "large"))
    assert any(filed for _, _, filed in files) == (case in ("first of its size", "filed"))


@built
def test_an_allocation_out_of_memory_leaves_the_site_usable(fake_one_gpu):
    f = fr.jit(lambda a, b: a * b)
    x, y = arrays()
    warm(f, x, y)
    kept = []
    while memory._recycled.get((id(streams.get_current_stream(0)), 512)):
        kept.append(f(x, y))  # no filed block left: the next output comes from the driver
    # refused three times: the quick try, the one under the device's context, the retry after
    # trimming the pool
    fake_one_gpu.refuse_allocations = 3
    fake_one_gpu.raw_slots = None
    with pytest.raises(memory.OutOfMemoryError):
        f(x, y)
    assert fake_one_gpu.raw_slots is None and fake_one_gpu.calls["cuMemPoolTrimTo"] == 1
    out = f(x, y)
    assert fake_one_gpu.raw_slots is not None and out.shape == (64,)
    kept.append(out)
    check_pool(kept)


@built
def test_a_build_that_does_not_know_the_classes_leaves_calls_in_python(fake_one_gpu, monkeypatch):
    """A stale build (classes changed, extension not rebuilt) must not break @jit: bind's refusal
    becomes one warning, and every call takes the Python path."""

    def refuse(*args):
        raise TypeError("bind: <class 'X'> is not a plain class with exactly the __slots__")

    monkeypatch.setattr(launch, "_callsite_classes", None)
    monkeypatch.setattr(launch._callsite, "bind", refuse)
    f = fr.jit(lambda a, b: a * b)
    x, y = arrays()
    f(x, y)
    with pytest.warns(RuntimeWarning, match="run in Python"):
        out = f(x, y)
    assert f._site is None and out.shape == (64,)
    fake_one_gpu.raw_slots = None
    assert f(x, y).shape == (64,) and fake_one_gpu.raw_slots is None


def _other_pythons() -> list[str]:
    """Other CPython 3 interpreters on this machine (pyenv's, or on PATH), one per version."""
    import glob
    import shutil
    import subprocess
    import sys

    found = {}
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
    candidates += [p for m in range(9, 16) if (p := shutil.which(f"python3.{m}"))]
    for exe in candidates:
        try:
            out = subprocess.run([exe, "-c", "import sys, sysconfig; print(sys.version_info[:2]"
                                  " >= (3, 10), sys.version_info[:2], sysconfig.get_paths()"
                                  "['include'])"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        parts = out.stdout.split(" ", 1)
        if out.returncode or parts[0] != "True":
            continue
        version, include = parts[1].strip().rsplit(") ", 1)
        if version != str(sys.version_info[:2]) and os.path.exists(f"{include}/Python.h"):
            found.setdefault(version, exe)
    return list(found.values())


def test_bind_takes_the_classes_on_every_python_here(tmp_path):
    """The slots' layout differs between Python versions (3.12 manages ``__weakref__`` itself):
    compile the call site for every other CPython on this machine and bind classes with the
    real classes' slots there. (The device runs 3.12; CI's suite runs one version.)"""
    import shutil
    import subprocess
    from pathlib import Path

    pythons = _other_pythons()
    if not pythons or shutil.which("gcc") is None:
        pytest.skip("no other CPython with headers, or no gcc")
    source = Path(launch.__file__).with_name("_callsite.c")
    classes = {"ndarray": ndarray, "Node": Node, "Buffer": Buffer,
               "DeviceArray": memory.DeviceArray, "DeviceMemory": memory.DeviceMemory}
    script = "import itertools, sys\nsys.path.insert(0, sys.argv[1])\nimport _callsite\n"
    for name, cls in classes.items():
        script += f"class {name}:\n    __slots__ = {cls.__slots__!r}\n"
    script += (
        "Buffer._serials = itertools.count()\n"
        "DeviceMemory.__del__ = _callsite.bind(ndarray, Node, Buffer, DeviceArray, DeviceMemory,"
        " {})\n"
        "m = DeviceMemory()\nm.ptr, m.size, m.stream, m.device_id = 0, 0, None, 0\n"
        "del m  # the C __del__: nothing allocated, nothing to do\n"
        "print('bound')\n")
    for exe in pythons:
        out_dir = tmp_path / Path(exe).parts[-3]
        out_dir.mkdir()
        info = subprocess.run([exe, "-c", "import sysconfig; print(sysconfig.get_paths()"
                               "['include'], sysconfig.get_config_var('EXT_SUFFIX'))"],
                              capture_output=True, text=True, check=True).stdout.split()
        built_so = out_dir / f"_callsite{info[1]}"
        subprocess.run(["gcc", "-O1", "-fPIC", "-shared", f"-I{info[0]}", str(source), "-o",
                        str(built_so)], check=True, capture_output=True)
        run = subprocess.run([exe, "-c", script, str(out_dir)], capture_output=True, text=True)
        assert run.returncode == 0 and run.stdout.strip() == "bound", (exe, run.stderr)


@built
def test_threads_and_collections_keep_the_pool_consistent(fake_one_gpu, monkeypatch):
    """Four threads call through the site with a thread switch every microsecond and a
    collection at nearly every allocation, some outputs dying inside collections (held by
    cycles): afterwards no block is filed twice or while live, and the count is the files'."""
    import sys

    f = fr.jit(lambda a, b, k: a * b + k)
    x, y = arrays()
    warm(f, x, y, 1.0)

    class Cycle:
        def __init__(self, out) -> None:
            self.me, self.out = self, out

    kept_all: list = []
    errors: list = []

    def body() -> None:
        kept: list = []
        try:
            for _ in range(300):
                Cycle(f(x, y, 1.0))
                kept.append(f(x, y, 2.0))
                if len(kept) > 4:
                    kept.pop(0)
        except Exception as e:  # reported below: a thread's exception would be lost
            errors.append(repr(e))
        kept_all.extend(kept)

    switch, threshold = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(5)
    try:
        threads = [threading.Thread(target=body) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
        gc.set_threshold(*threshold)
    gc.collect()
    assert errors == [] and len(kept_all) == 16
    check_pool(kept_all)


@built
def test_dependent_kernels_launch_through_cuLaunchKernelEx(fake_one_gpu, monkeypatch):
    """With ``config.dependent_launch`` on an sm_90 GPU, the site launches as the Python path
    does: ``cuLaunchKernelEx`` with programmatic stream serialisation allowed, the same
    function, grid, stream and arguments."""
    monkeypatch.setattr(config, "dependent_launch", True)
    pss = int(driver.cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION)
    f = fr.jit(lambda a, s: a * s + 1)
    (x,) = arrays(count=1)
    warm(f, x, 2.0)
    kernel = f.lower(x, 2.0)[1].plan.kernels[0]
    assert launch.binding_for(kernel).last_state.program.function.dependent
    pack = pack_of(f, x, 2.0)
    monkeypatch.setattr(config, "compiled_calls", False)
    f(x, 3.0)
    by_python = python_packed(pack)
    monkeypatch.setattr(config, "compiled_calls", True)
    launches = len(fake_one_gpu.launches)
    with fr.cuda.Stream() as s:
        out = f(x, 3.0)
        assert fake_one_gpu.launches[-1] == (0, s.ptr)
    assert len(fake_one_gpu.launches) == launches + 1
    assert launch._callsite.last_test_attributes() == [(pss, 1)]
    got = site_packed(fake_one_gpu, pack)
    assert got[1] == out._node.value.ptr and got[:1] + got[2:] == by_python[:1] + by_python[2:]
    assert fake_one_gpu.launch_attributes[-1] == [(pss, 1)]  # the Python path's own launch

"""The CUDA launch path without a GPU: a faked driver records each launch, so these tests check
argument binding (count, order, packing types), output allocation, skipped empty launches, the
split-reduction workspace, and that prepared state is reused across calls and sizes.

``fake_cuda`` (conftest.py) goes one level lower: the whole backend (jit, memory pool, streams,
contexts) runs on ``benchmarks/overhead_local.py``'s fake driver, so cached ``@jit`` calls can be
checked to launch on the current device and stream."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fuseray as fr
import workloads  # benchmarks/, on the path through conftest.py
from fuseray import config, runtime
from fuseray.array import node_of
from fuseray.backends.cuda import driver, launch
from fuseray.backends.cuda.memory import DeviceArray


class FakeMemory:
    def __init__(self, size):
        self.size, self.device_id, self.stream = size, 0, None
        self.ptr = 0x10000 + FakeMemory.next
        FakeMemory.next += (size + 255) // 256 * 256 + 256


FakeMemory.next = 0


class FakeStream:
    ptr = 0
    handle = 0
    device_id = 0


class FakeProps:
    arch = "sm_90"
    multiprocessor_count = 132
    max_threads_per_multiprocessor = 2048


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(config, "device", "cpu")
    launches = []

    class FakeProgram:
        def __init__(self, gen, device_id):
            self.generated = gen
            self.function = gen.name
            self.pack = driver.ArgPack([p.kind for p in gen.params])

    def fake_empty(shape, dtype, stream, strides=None, nbytes=None):
        mem = FakeMemory(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        return DeviceArray(mem.ptr, shape, None, dtype, mem)

    def as_device(value, stream):
        mem = FakeMemory(value.nbytes)
        mem.host = value
        return DeviceArray(mem.ptr, value.shape, value.strides, value.dtype, mem)

    def fake_launch(func, grid, block, args, pack, shared, stream):
        pack.pack(args)  # struct packing checks every argument's count and type
        launches.append((func, grid, block, list(args), shared))

    monkeypatch.setattr(launch, "Program", FakeProgram)
    monkeypatch.setattr(launch, "_programs", {})
    monkeypatch.setattr(launch, "_empty", fake_empty)
    monkeypatch.setattr(launch, "_as_device_array", as_device)
    monkeypatch.setattr(launch, "_counters", lambda device_id, stream: 0xC0C0)
    monkeypatch.setattr(driver, "launch", fake_launch)
    monkeypatch.setattr(
        driver,
        "launch_prepared",
        lambda func, dims, args, pack, stream: fake_launch(
            func, dims[:2], dims[3:5], args, pack, dims[6], stream
        ),
    )
    monkeypatch.setattr(driver, "device_props", lambda device_id: FakeProps)
    monkeypatch.setattr(DeviceArray, "use_on", lambda self, stream: None)
    return launches


def run_fake(*arrays):
    _, plan = runtime.prepare([node_of(a) for a in arrays])
    env: dict = {}
    for kernel in plan.kernels:
        launch.binding_for(kernel).run(env, 0, FakeStream())
    return plan, env


@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
def test_workloads_bind_every_argument(fake_gpu, name):
    rng = np.random.default_rng(0)
    ins = [fr.asarray(a) for a in workloads.inputs(name, 1 << 20, rng)]
    kw = {"erf": fr.special.erf} if name == "black_scholes" else {}
    out = workloads.WORKLOADS[name](fr, *ins, **kw)
    outs = out if isinstance(out, tuple) else (out,)
    plan, env = run_fake(*outs)
    assert len(fake_gpu) == len(plan.kernels)
    for kernel in plan.kernels:
        for store in kernel.stores:
            arr = env[store.target]
            assert arr.shape == store.target.shape and arr.dtype == store.target.dtype
    func, grid, block, args, shared = fake_gpu[-1]
    assert grid[0] >= 1 and block[0] * block[1] <= 512
    if name == "sumsq":  # one row of 2**20: split over blocks, with a workspace and counters
        assert grid[1] > 1 and 0xC0C0 in args


def test_new_sizes_share_one_program_and_calls_reuse_state(fake_gpu):
    for n in (1000, 5000, 123457):
        x = fr.asarray(np.ones(n, np.float32))
        run_fake(x * 2 + x)
    assert len(launch._programs) == 1  # one source for every size
    assert [call[3][2] for call in fake_gpu] == [1000, 5000, 123457]  # n follows the pointers
    x = fr.asarray(np.ones(64, np.float32))
    _, plan = runtime.prepare([node_of(x * 3)])
    binding = launch.binding_for(plan.kernels[0])
    for _ in range(3):
        binding.run({}, 0, FakeStream())
    assert len(binding.states) == 1 and binding.last_state is not None


def test_fast_math_switched_between_calls_selects_its_own_program(fake_gpu, monkeypatch):
    """Regression: a binding's prepared state holds its compiled program, and the state was
    selected by device and strides alone, so fr.config.fast_math turned on after a first call
    kept running the precise kernel (the suite's fast-math chain20 matched the precise one)."""
    from fuseray.backends.cuda import program

    made = []
    monkeypatch.setattr(launch, "Program", lambda gen, device_id: made.append(
        program.compile_options()) or type("P", (), {
            "generated": gen, "function": (gen.name, program.compile_options()),
            "pack": driver.ArgPack([p.kind for p in gen.params])})())
    x = fr.asarray(np.ones(256, np.float32))
    _, plan = runtime.prepare([node_of(fr.sin(x) * 3)])
    binding = launch.binding_for(plan.kernels[0])
    for fast in (False, True, False, True):
        monkeypatch.setattr(config, "fast_math", fast)
        binding.run({}, 0, FakeStream())
        assert fake_gpu[-1][0][1] == program.compile_options()
    assert made == [("-minimal", "-fmad=false"), ("--use_fast_math",)]  # each once, reused
    assert fake_gpu[0][0] != fake_gpu[1][0] and fake_gpu[0][0] == fake_gpu[2][0]


def test_empty_outputs_allocate_without_launching(fake_gpu):
    x = fr.asarray(np.zeros((0, 4), np.float32))
    plan, env = run_fake(x + 1, x.sum(axis=1))
    assert fake_gpu == []
    assert {v.shape for v in env.values()} == {(0, 4), (0,)}


def test_region_stores_fill_one_target(fake_gpu):
    x = fr.asarray(np.ones((3, 4), np.float32))
    plan, env = run_fake(fr.concatenate([x, x * 2], axis=0))
    targets = {s.target for k in plan.kernels for s in k.stores}
    assert len(targets) == 1 and len(fake_gpu) == 2
    (target,) = targets
    base = env[target].ptr
    assert fake_gpu[0][3][1] == base and fake_gpu[1][3][1] == base + 12 * 4


def test_jit_parameters_are_packed(fake_gpu):
    from fuseray.graph import Node

    p = Node.make("param", (), ("s", None), dtype=np.float32)
    x = fr.asarray(np.ones(8, np.float32))
    y = fr.ndarray(Node.make("multiply", (node_of(x), Node.make("expand", (p,), (8,)))))
    _, plan = runtime.prepare([node_of(y)])
    env = {p: np.asarray(2.5, np.float32)}
    launch.binding_for(plan.kernels[0]).run(env, 0, FakeStream())
    assert fake_gpu[0][3][-1] == env[p]


def test_direct_runner_goes_from_leaves_to_one_launch(fake_gpu, monkeypatch):
    """launch.direct: a cached one-kernel @jit call launches straight from its leaf values;
    plans it does not cover, and leaves that are not device arrays, take the general path."""
    from fuseray.backends.cuda import streams

    monkeypatch.setattr(launch, "_current_device_id", lambda: 0)
    monkeypatch.setattr(streams, "get_current_stream", lambda device_id=None: FakeStream())
    xs = [fr.asarray(np.full(16, k + 1.0, np.float32)) for k in range(3)]
    leaves = [node_of(x) for x in xs]
    roots, plan = runtime.prepare([node_of(xs[0] * xs[1] + xs[2])])
    call = launch.direct(plan, roots, leaves)
    values = [launch._as_device_array(leaf.value, FakeStream()) for leaf in leaves]
    (out,) = call(values)
    assert out.shape == (16,) and len(fake_gpu) == 1
    args = fake_gpu[0][3]
    assert args[:4] == [*(v.ptr for v in values), out.ptr] and args[4] == 16
    assert call([leaf.value for leaf in leaves]) is None  # host arrays: the general path
    assert len(fake_gpu) == 1
    roots, plan = runtime.prepare([node_of(fr.concatenate([xs[0], xs[1] * 2]))])
    assert len(plan.kernels) == 2 and launch.direct(plan, roots, leaves) is None  # two pieces


def triad_on_device(device_id: int = 0):
    with fr.cuda.Device(device_id):
        return [fr.asarray(np.full(64, k + 1.0, np.float32)) for k in range(3)]


def test_cached_call_launches_on_the_current_stream(fake_cuda):
    f = fr.jit(lambda a, b, c: a * b + c)
    xs = triad_on_device(0)
    f(*xs)
    assert fake_cuda.launches[-1] == (0, 0)  # the legacy default stream
    f(*xs)  # the first repeat builds the compiled call site (cuGetProcAddress, once a process)
    calls = sum(fake_cuda.calls.values())
    f(*xs)
    # with one GPU, a cached call asks the driver nothing but the launch (the current device is
    # that GPU); with two, the current context
    assert sum(fake_cuda.calls.values()) == calls + (driver.device_count() > 1)
    waits = fake_cuda.calls["cuStreamWaitEvent"]
    with fr.cuda.Stream() as s:
        out = f(*xs)
    assert fake_cuda.launches[-1] == (0, s.ptr) and out._node.value.stream is s
    assert fake_cuda.calls["cuStreamWaitEvent"] == waits + 3  # after the inputs' last use
    f(*xs)
    assert fake_cuda.launches[-1] == (0, 0)
    foreign = fr.cuda.ExternalStream(0xABC000, 0)
    foreign.use()
    f(*xs)
    assert fake_cuda.launches[-1] == (0, 0xABC000)
    assert len(fake_cuda.launches) == 6 and f.trace_count == 1


def test_cached_call_follows_the_current_device(fake_cuda):
    if driver.device_count() < 2:
        pytest.skip("needs two (fake) GPUs")
    f = fr.jit(lambda a, b, c: a * b + c)
    on0, on1 = triad_on_device(0), triad_on_device(1)
    f(*on0)
    with fr.cuda.Device(1):
        out = f(*on1)  # the same cached instance, now on device 1
        assert fake_cuda.launches[-1] == (1, 0) and out.device == fr.cuda.Device(1)
        with pytest.raises(ValueError, match="lives on CUDA device 0"):
            f(*on0)
        with fr.cuda.Stream() as s:
            f(*on1)
        assert fake_cuda.launches[-1] == (1, s.ptr)
    f(*on0)
    assert fake_cuda.launches[-1] == (0, 0) and f.trace_count == 1


def test_cached_call_without_fuserays_context_current(fake_cuda):
    """A thread with no context, and one with another library's context of the device: the
    launch runs on the primary context, and the thread's own context is left as it was."""
    f = fr.jit(lambda a, b, c: a * b + c)
    xs = triad_on_device(0)
    f(*xs)
    seen = []

    def body():
        seen.append(fake_cuda.current)
        f(*xs)
        seen.append(fake_cuda.launches[-1])

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [0, (0, 0)]
    cu = driver.cu
    foreign = driver.check(cu.cuCtxCreate(None, 0, driver.device_handle(0)), "cuCtxCreate")
    f(*xs)
    assert fake_cuda.launches[-1] == (0, 0) and fake_cuda.current == int(foreign)


def test_cached_call_packs_scalar_arguments_in_the_parameters_dtype(fake_cuda):
    f = fr.jit(lambda a, s, k: a * s + k)
    (x,) = triad_on_device(0)[:1]
    for s, k in ((2.5, 3), (-1.25, 7)):
        out = f(x, s, k)
        binding = launch.binding_for(f.lower(x, s, k)[1].plan.kernels[0])
        pack = binding.last_state.program.pack
        packed = pack._format.unpack_from(pack._local.buffers[0])
        assert packed[-2:] == (s, k) and pack.types[-2:] == ("float64", "int64")
    assert out.dtype == np.float32 and f.trace_count == 1 and len(fake_cuda.launches) == 2


def test_generated_kernels_are_dependent_launches_on_sm90_only(fake_one_gpu, monkeypatch):
    """On compute capability 9.0 a generated kernel (which waits for the grid ahead of it) is
    launched with cuLaunchKernelEx and programmatic stream serialisation; with
    ``config.dependent_launch`` off when it is loaded, or on an 8.x GPU, with cuLaunchKernel."""
    import dataclasses

    monkeypatch.setattr(config, "dependent_launch", True)
    x = fr.asarray(np.arange(64, dtype=np.float32))
    pss = driver.cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
    launched = len(fake_one_gpu.launches)
    (x * 2 + 1).compute()
    (x * x).sum().compute()  # a reduction, through its own launch path
    assert len(fake_one_gpu.launches) == launched + 2
    assert fake_one_gpu.launch_attributes == [[(pss, 1)], [(pss, 1)]]
    with fr.cuda.Stream() as s:  # a second stream: its own launch configuration
        (x * 2 + 1).compute()
    assert fake_one_gpu.launches[-1] == (0, s.ptr) and len(fake_one_gpu.launch_attributes) == 3
    monkeypatch.setattr(config, "dependent_launch", False)
    fr.sin(x).compute()  # a new kernel, loaded with the setting off
    monkeypatch.setattr(config, "dependent_launch", True)
    props = driver._props[0]
    monkeypatch.setitem(driver._props, 0, dataclasses.replace(
        props, compute_capability=(8, 0), arch="sm_80"))
    fr.cos(x).compute()  # a new kernel on an sm_80 GPU
    assert len(fake_one_gpu.launches) == launched + 5
    assert len(fake_one_gpu.launch_attributes) == 3

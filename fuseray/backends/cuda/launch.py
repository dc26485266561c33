"""The CUDA backend's ``run(plan, env)``: bind a kernel to one call's arrays, compile it once,
allocate its outputs, launch it on the current stream.

Stage: backend (CUDA), the last step of the pipeline. The launch path is short, as Triton's:

1. find the kernel's ``Binding`` (built once per kernel object: the structural model);
2. read each access's array; when the arrays' strides are those of the last call, reuse the
   prepared ``_State`` (the compiled function, the launch geometry, and every argument that does
   not change between calls, packed in signature order); otherwise derive the layouts, generate
   the source, and fetch the CUBIN through the ``KernelCache`` (memory, disk, then NVRTC);
3. allocate outputs (stream-ordered), fill pointers and jit parameters, launch.

A repeated ``@jit`` call of a one-kernel plan can skip steps 1-2: ``direct``'s ``site`` builds a
compiled call site (``_callsite.c``, where it is built) for one exact call description, which
checks a call against it and does step 3 in C, or hands the call back to this path.

Invariants:
- Every key that selects compiled code is built in ``Binding._prepare`` from the layout classes and
  the index width; sizes never are, so a new size reuses the CUBIN (it only re-derives the state).
- Work is ordered on ``get_current_stream()``: every input is declared used there first
  (``DeviceArray.use_on``), so arrays last used on another stream are waited for.
- The current device and stream are looked up on every launch, never cached: any library may
  switch the thread's context, and ``with stream:`` the stream, between two calls. The lookup is
  one driver call (none when one GPU is visible) and a dictionary read.
- Split reductions use a per-(device, stream) array of completion counters that every kernel
  leaves zeroed; launches on one stream run in order, so they never share a counter at once.
- Nothing here holds a kernel (or the arrays its nodes reference) alive: bindings are looked up
  by kernel name and held through weak references.
"""

from __future__ import annotations

import math
import threading
import warnings

import numpy as np

from ... import config, dtypes
from ...fusion import Kernel, Plan
from ...schedule import MAX_COUNTERS, Launch, elementwise_launch, reduce_launch
from ...views import c_strides
from . import driver, launch_index, memory, streams, tiers
from .cache import default_cache
from .codegen import Generated
from .memory import DeviceArray, DeviceMemory
from .model import KernelModel, access_views, build_model, layout_for, store_layout
from .nvrtc import CompileError
from .program import compile_options, variant

try:  # the C call site for cached @jit calls (setup.py builds it where a compiler is found)
    from . import _callsite
except ImportError:
    _callsite = None

# ---------------------------------------------------------------------------------------------
# compiled programs
# ---------------------------------------------------------------------------------------------


class Program:
    """A generated kernel loaded on one device, with its prebuilt argument layout.

    A kernel no cache level holds starts on a quick build (``quick`` is True) while
    ``tiers`` compiles the optimised one, which then replaces ``function``. Every generated
    kernel waits for the grid ahead of it (``FR_WAIT_FOR_PRIOR_GRID``), so both builds are
    loaded as dependent launches where the device and ``config.dependent_launch`` allow.
    """

    __slots__ = ("function", "generated", "pack", "quick")

    def __init__(self, generated: Generated, device_id: int):
        arch = driver.device_props(device_id).arch
        options = compile_options()
        source, name = generated.source, generated.name
        cache = default_cache()
        dependent = driver.dependent_launch(device_id)
        self.generated = generated
        self.pack = driver.arg_pack([p.kind for p in generated.params])
        self.quick = False
        cubin = cache.find(source, name, arch, options)
        if cubin is None and tiers.enabled(options):
            try:
                quick = cache.compile_quick(source, name, arch, options, tiers.QUICK_OPTIONS)
            except CompileError:
                quick = None  # the optimised build below reports what NVRTC says
            if quick is not None:
                self.function = driver.load_function(device_id, quick, name, dependent)
                self.quick = True
                tiers.schedule_upgrade(self, device_id, arch, options)
                return
        if cubin is None:
            cubin = cache.get_cubin(source, name, arch, options)
        self.function = driver.load_function(device_id, cubin, name, dependent)


_programs: dict[tuple[str, int], Program] = {}
_programs_lock = threading.Lock()


def program_for(generated: Generated, device_id: int) -> Program:
    key = (generated.source, device_id, compile_options())  # fr.config.fast_math may change
    prog = _programs.get(key)
    if prog is None:
        prog = Program(generated, device_id)
        with _programs_lock:
            prog = _programs.setdefault(key, prog)
    return prog


# ---------------------------------------------------------------------------------------------
# per-kernel bindings
# ---------------------------------------------------------------------------------------------


class _State:
    """Everything about one (kernel, strides, device) that a launch reuses."""

    __slots__ = (
        "shifts",
        "program",
        "launch",
        "middle",
        "ws_bytes",
        "skip",
        "split",
        "splits",
        "dims",
    )

    def __init__(
        self, program: Program, offsets, launch: Launch, middle, ws_bytes: int, skip: bool,
        split: bool,
    ):
        self.program = program
        # (argument index, byte offset) of the inputs whose first element is not at their
        # pointer (views into a buffer); most calls have none
        self.shifts = tuple((i, off) for i, off in enumerate(offsets) if off)
        self.launch = launch
        self.middle = middle
        self.ws_bytes = ws_bytes
        self.skip = skip
        self.split = split  # a splittable reduction: takes a workspace and counters (or zeros)
        self.splits = launch.splits
        # cuLaunchKernel's grid, block and shared-memory arguments, ready to splat
        self.dims = (launch.grid[0], launch.grid[1], 1, launch.block[0], launch.block[1], 1,
                     launch.shared)


def state_key(device_id: int, strides: list) -> tuple:
    """What selects a binding's prepared state: the device, the fast-math flag and each input's
    strides (the kernel's layouts and launch follow from them)."""
    return (device_id, config.fast_math, *strides)


class Binding:
    """A kernel's structure plus the states of the calls seen so far."""

    def __init__(self, kernel: Kernel):
        self.model: KernelModel = build_model(kernel)
        m = self.model
        self.memory_accesses = [a for a in m.accesses if a.in_memory]
        self.bases = [a.base for a in self.memory_accesses]
        self.itemsizes = [a.dtype.itemsize for a in self.memory_accesses]
        # constants and parameters read through masked views: layouts fixed by the kernel
        self.scalar_layouts = {
            a.index: layout_for(m, a, access_views(a, None)) for a in m.accesses if not a.in_memory
        }
        self.outputs = [
            (
                o.store.target,
                o.store.region,
                o.dtype,
                c_strides_bytes(o.store.target.shape, o.dtype.itemsize),
                math.prod(o.store.target.shape) * o.dtype.itemsize,
            )
            for o in m.outputs
        ]
        self.store_layouts = [store_layout(m, o) for o in m.outputs]
        self.const_values = tuple(c.arg[0] for c in m.consts)
        self.params = list(m.params)
        rows = math.prod(m.kernel.rows) if m.is_reduce else math.prod(m.space)
        self.empty = rows == 0  # nothing to compute: outputs are allocated, nothing compiled
        self.bounds = m.bounds
        self.states: dict[tuple, _State] = {}
        # the last call's state_key and state: a state holds its compiled program, so
        # fr.config.fast_math switched between calls selects another state
        self.last_key: tuple | None = None
        self.last_state: _State | None = None

    def run(self, env: dict, device_id: int, stream) -> None:
        if self.empty:
            for target, region, dtype, strides, nbytes in self.outputs:
                if region is None or env.get(target) is None:
                    env[target] = _empty(target.shape, dtype, stream, strides, nbytes)
            return
        values = []
        for base in self.bases:
            v = env.get(base)
            if v is None:
                v = base.value
            if type(v) is not DeviceArray:
                v = _as_device_array(v, stream)
            values.append(v)
        # a region store writes into its target's buffer, made by an earlier piece or here
        outs = [None if o[1] is None else env.get(o[0]) for o in self.outputs]
        self.launch(values, [env[p] for p in self.params], outs, device_id, stream)
        for o, out in zip(self.outputs, outs):
            env[o[0]] = out

    def launch(self, values: list, params: list, outs: list, device_id: int, stream) -> None:
        """Run the kernel on ``values`` (device arrays, in ``bases`` order) and ``params`` (in
        ``self.params`` order); ``outs`` holds each output's buffer or None, and None entries are
        allocated here."""
        # One pass over the inputs checks their device, orders them on the stream, and reads
        # their pointers and the strides that select the prepared state.
        args, strides = [], []
        for v in values:
            memory = v.memory
            if memory.device_id != device_id:
                raise ValueError(
                    f"an input lives on CUDA device {memory.device_id}, but the"
                    f" current device is {device_id}"
                )
            if memory.stream is not stream:  # use_on's own first test, without the call
                v.use_on(stream)
            args.append(v.ptr)
            strides.append(v.strides)
        key = state_key(device_id, strides)
        if key == self.last_key:
            st = self.last_state
        else:
            st = self._state(key, values, device_id)
        for i, shift in st.shifts:
            args[i] += shift
        for k, (target, region, dtype, strides, nbytes) in enumerate(self.outputs):
            out = outs[k]
            if out is None:
                out = outs[k] = _empty(target.shape, dtype, stream, strides, nbytes)
            args.append(out.ptr if region is None else out.ptr + region.offset * dtype.itemsize)
        if st.skip:
            return
        if self.bounds:  # takes or a scatter: they report bad indices to the device
            args.append(launch_index.bounds_record(device_id, stream))
            if self.model.scatter is not None:
                tail = [*st.middle, *params]
                positions = self.model.space[0]
                launch_index.run_scatter(st.program, st.launch, args, tail, positions, stream)
                return
        workspace = None
        if st.split:
            if st.splits > 1:
                workspace = _empty((st.ws_bytes,), np.uint8, stream)
                args.append(workspace.ptr)
                args.append(_counters(device_id, stream))
            else:
                args.append(0)
                args.append(0)
        args += st.middle
        args += params
        program = st.program
        driver.launch_prepared(program.function, st.dims, args, program.pack, stream.handle)
        del workspace  # its stream-ordered free follows the kernel on the same stream

    def _state(self, key: tuple, values: list[DeviceArray], device_id: int) -> _State:
        """The prepared state for ``key`` (``state_key``), made on first use; it becomes the
        one the next call compares against first."""
        st = self.states.get(key)
        if st is None:
            st = self._prepare(values, device_id)
            if len(self.states) > 64:
                self.states.clear()
            self.states[key] = st
        self.last_key, self.last_state = key, st
        return st

    def _prepare(self, values: list[DeviceArray], device_id: int) -> _State:
        m = self.model
        mem = {
            a.index: layout_for(m, a, access_views(a, v))
            for a, v in zip(self.memory_accesses, values)
        }
        layouts = [
            mem[a.index] if a.in_memory else self.scalar_layouts[a.index] for a in m.accesses
        ]
        gen = variant(m, layouts, self.store_layouts)
        program = program_for(gen, device_id)
        props = driver.device_props(device_id)
        threads_per_sm = props.max_threads_per_multiprocessor
        space = m.space
        n = math.prod(space)
        if m.is_reduce:
            rows = math.prod(m.kernel.rows)
            length = math.prod(space[d] for d in m.axes)
            launch = reduce_launch(
                gen.schedule,
                rows,
                length,
                max(gen.acc_bytes, 1),
                gen.splittable,
                props.multiprocessor_count,
                threads_per_sm,
            )
            sizes = {"R": rows, "L": length, "chunk": launch.chunk, "nrb": launch.row_blocks}
            skip = rows == 0
            ws = 0
            if launch.splits > 1:
                ws = sum(-(-launch.splits * rows * b // 16) * 16 for b in gen.ws_acc_bytes)
        else:
            work = m.launch_elements(n)  # a scatter's passes may cover more than its space
            launch = elementwise_launch(
                gen.schedule, work, props.multiprocessor_count, threads_per_sm
            )
            sizes = {"n": n, **m.sizes}
            skip = n == 0
            ws = 0
        store_ints = [lay.ints for lay in self.store_layouts]
        middle = []
        for p in gen.params:
            src = p.source
            kind = src[0]
            if kind == "size":
                middle.append(sizes[src[1]])
            elif kind == "space":
                middle.append(space[src[1]])
            elif kind == "ints":
                items = layouts if src[1] == "a" else store_ints
                lay = items[src[2]]
                middle.append((lay.ints if src[1] == "a" else lay)[src[3]])
            elif kind == "const":
                middle.append(self.const_values[src[1]])
        offsets = tuple(
            mem[a.index].offset * size for a, size in zip(self.memory_accesses, self.itemsizes)
        )
        split = m.is_reduce and gen.splittable
        return _State(program, offsets, launch, tuple(middle), ws, skip, split)


def binding_for(kernel: Kernel) -> Binding:
    """The binding of ``kernel``, kept on the kernel itself: it lives exactly as long as the
    plan. (A registry keyed by name held every binding, and through it every kernel and the
    device arrays its nodes reference, and its lookup scanned them all: a lazy loop that flushed
    11,000 kernels spent 0.9 ms per lookup on the H200, and leaked their memory.)"""
    b = kernel.__dict__.get("_cuda_binding")
    if b is None:
        b = Binding(kernel)
        # Kernel is a frozen dataclass: this is backend state next to it, not one of its fields
        object.__setattr__(kernel, "_cuda_binding", b)
    return b


# ---------------------------------------------------------------------------------------------
# the backend API
# ---------------------------------------------------------------------------------------------


def _current_device_id() -> int:
    """The current device (``cudaGetDevice``'s rule). Asked on every launch: any library may
    switch the thread's context between two calls."""
    if driver._device_count == 1:
        # One visible GPU is the current device whatever context the thread has (none, or
        # another library's), so no driver call is needed. A launch the driver then refuses for
        # want of fuseray's context is retried under ContextScope (driver.launch_prepared).
        return 0
    status, ctx = driver.cu.cuCtxGetCurrent()
    if not status:
        device_id = driver._context_devices.get(int(ctx))
        if device_id is not None:  # a primary context fuseray has retained: the common case
            return device_id
    return driver.current_device()


def run(plan: Plan, env: dict) -> None:
    """Execute ``plan`` on the current device and stream; put every stored value into ``env``
    (as ``DeviceArray``\\ s)."""
    device_id = _current_device_id()
    stream = streams.get_current_stream(device_id)
    bindings = plan.backend_state.get("cuda")
    if bindings is None:
        bindings = plan.backend_state["cuda"] = [binding_for(k) for k in plan.kernels]
    for binding in bindings:
        binding.run(env, device_id, stream)


def direct(plan: Plan, roots: list, placeholders: list):
    """A runner for a one-kernel plan called again and again by ``@jit``: ``call(leaves)``
    launches the kernel straight from the call's leaf values (one per placeholder) and returns
    the roots' device arrays, without the env dict, the backend dispatch and the plan walk of
    ``run``. ``call`` returns None (the caller takes the general path) when a leaf is not a
    device array; this returns None for plans it does not cover (several kernels, region stores,
    bounds-checked takes and scatters, roots that are not stores of the kernel)."""
    if len(plan.kernels) != 1:
        return None
    b = binding_for(plan.kernels[0])
    if b.empty or b.model.bounds or any(o[1] is not None for o in b.outputs):
        return None
    targets = [o[0] for o in b.outputs]
    if any(r not in targets for r in roots):
        return None
    slot = {p: i for i, p in enumerate(placeholders) if p is not None}
    if any(p not in slot for p in b.params):
        return None
    sources = [(slot.get(base), base) for base in b.bases]  # no slot: a captured array
    # scalars become NumPy scalars of the parameter's dtype (NumPy's conversion and overflow
    # rules), which the argument packing takes as they are
    param_sources = [(slot[p], p.dtype.type) for p in b.params]
    picks = [targets.index(r) for r in roots]
    if picks == list(range(len(targets))):
        picks = None  # the roots are the outputs, in order: return them as they are
    n_out = len(b.outputs)
    # the usual case: the kernel reads exactly the call's leaves, in order
    reads_leaves = [i for i, _ in sources] == list(range(len(placeholders)))

    def call(leaves: list):
        if reads_leaves:
            values = leaves
            for v in values:
                if type(v) is not DeviceArray:
                    return None
        else:
            values = []
            for i, base in sources:
                v = base.value if i is None else leaves[i]
                if type(v) is not DeviceArray:
                    return None
                values.append(v)
        device_id = _current_device_id()
        params = [convert(leaves[i]) for i, convert in param_sources] if param_sources else []
        outs = [None] * n_out
        b.launch(values, params, outs, device_id, streams.get_current_stream(device_id))
        return outs if picks is None else [outs[k] for k in picks]

    def site(args: tuple, leaves: list, root: int):
        """The compiled call site (``_callsite.Site``) for calls like ``args`` (plain positional
        arguments: fuseray arrays and Python scalars), whose leaves ``leaves`` were just run
        through ``call``. It returns root ``root``'s array as a new fuseray array, and takes no
        call made while a trace is recording. None where it does not apply: not built, turned
        off, several GPUs, a split reduction's workspace, a state not prepared yet."""
        if _callsite is None or not config.compiled_calls or driver._device_count != 1:
            return None
        address = driver.launch_address()
        if not address or len(args) != len(leaves):
            return None
        bound = _bind_callsite()
        if not bound:
            return None
        ndarray, trace_state = bound
        specs = []
        for a, v in zip(args, leaves):
            if type(a) is ndarray and type(v) is DeviceArray:
                specs.append((v.shape, v.dtype, v.strides))
            elif type(a) in (int, float, bool) and a is v:
                specs.append(type(a))
            else:
                return None
        inputs, strides = [], []
        for i, base in sources:
            v = base.value if i is None else leaves[i]
            if type(v) is not DeviceArray:
                return None
            inputs.append(v if i is None else i)
            strides.append(v.strides)
        st = b.states.get(state_key(0, strides))
        if st is None or st.skip or (st.split and st.splits > 1):
            return None
        function = st.program.function
        if not isinstance(getattr(function, "ptr", None), int) or (
            st.dims[6] > function._shared_limit
        ):
            return None
        if function.dependent:  # the same launch as the Python path's (driver._launch)
            ex = driver.launch_ex_address()
            if not ex:
                return None
            address = _callsite.dependent_launcher(ex)
        shift = dict(st.shifts)
        outputs = tuple((target.shape, dtype, out_strides, memory.block_size(nbytes))
                        for target, _, dtype, out_strides, nbytes in b.outputs)
        tail = ((0, 0) if st.split else ()) + tuple(st.middle)
        pack, dims = st.program.pack, st.dims

        def fallback(function, args, stream):
            driver.launch(function, dims[:3], dims[3:6], args, pack, dims[6], stream.handle)

        env = (streams.get_current_stream, vars(config), config.fast_math, trace_state, fallback,
               0, address)
        return _callsite.Site(
            tuple(specs), tuple((src, shift.get(k, 0)) for k, src in enumerate(inputs)),
            outputs, tail, tuple(param_sources), pack.codes, st.program, dims,
            root if picks is None else picks[root], env,
        )

    call.site = site
    return call


_callsite_classes: tuple | bool | None = None
_site_lock = threading.Lock()


def _bind_callsite() -> tuple | bool:
    """Hand the C call site the classes whose objects it reads and makes (the front end's
    ndarray, Node and Buffer, and this backend's DeviceArray and DeviceMemory) and the memory
    pool's namespace, once; install its C ``DeviceMemory.__del__``. Returns (ndarray, the trace
    state) for ``site``, or False where the build does not know the classes (a warning says
    so). Imported here, not at the top: the front end imports this backend."""
    global _callsite_classes
    if _callsite_classes is None:
        from ...array import _trace_state, ndarray
        from ...graph import Buffer, Node

        with _site_lock:
            if _callsite_classes is None:
                try:
                    DeviceMemory.__del__ = _callsite.bind(
                        ndarray, Node, Buffer, DeviceArray, DeviceMemory, vars(memory))
                    _callsite_classes = (ndarray, _trace_state)
                except (TypeError, ValueError) as e:  # a build older than the classes
                    warnings.warn(f"fuseray: cached @jit calls run in Python, not through the "
                                  f"C call site: {e}", RuntimeWarning, stacklevel=2)
                    _callsite_classes = False
    return _callsite_classes


def c_strides_bytes(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    return tuple(s * itemsize for s in c_strides(shape))


def _empty(shape: tuple[int, ...], dtype, stream, strides=None, nbytes=None) -> DeviceArray:
    """A C-contiguous device array allocated on ``stream``. The hot path passes what a binding
    precomputed (a shape tuple, an ``np.dtype``, byte strides and size) and skips normalising."""
    if strides is None:
        dtype = np.dtype(dtype)
        shape = tuple(shape)
        strides = c_strides_bytes(shape, dtype.itemsize)
        nbytes = math.prod(shape) * dtype.itemsize
    mem = DeviceMemory(nbytes, stream)
    return DeviceArray._wrap(mem.ptr, shape, strides, dtype, mem)


_counter_arrays: dict[tuple[int, int], DeviceArray] = {}
_counter_lock = threading.Lock()


def _counters(device_id: int, stream) -> int:
    """Address of this stream's zeroed completion counters for split reductions."""
    key = (device_id, stream.ptr)
    arr = _counter_arrays.get(key)
    if arr is None:
        with _counter_lock:
            arr = _counter_arrays.get(key)
            if arr is None:
                arr = _empty((MAX_COUNTERS,), np.uint32, stream)
                with driver.ContextScope(device_id):
                    driver.check(
                        driver.cu.cuMemsetD32Async(arr.ptr, 0, MAX_COUNTERS, stream.handle),
                        "cuMemsetD32Async",
                    )
                _counter_arrays[key] = arr
    return arr.ptr


def _as_device_array(value, stream) -> DeviceArray:
    """A buffer value as a device array: NumPy data is copied over, foreign arrays wrapped."""
    if isinstance(value, DeviceArray):
        return value
    if isinstance(value, np.ndarray):
        return memory.to_device(value, stream)
    return memory.from_foreign(value, stream)


def _is_foreign_cuda(obj) -> bool:
    if hasattr(obj, "__cuda_array_interface__"):
        return True
    dev = getattr(obj, "__dlpack_device__", None)
    if dev is None or isinstance(obj, np.ndarray):
        return False
    try:
        return int(dev()[0]) in (2, 13)
    except (TypeError, ValueError, IndexError):
        return False


def place(obj, dtype) -> DeviceArray:
    """A value for a new leaf on the current device (``cupy.asarray``).

    NumPy data (and lists, scalars) are copied to the device; CUDA arrays of other libraries
    (``__cuda_array_interface__`` or DLPack) are used in place, and only converted by a kernel when
    ``dtype`` is given and differs.
    """
    device_id = driver.current_device()
    stream = streams.get_current_stream(device_id)
    if isinstance(obj, DeviceArray) or _is_foreign_cuda(obj):
        arr = obj if isinstance(obj, DeviceArray) else memory.from_foreign(obj, stream)
        dtypes.as_dtype(arr.dtype)
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            return cast_on_device(arr, np.dtype(dtype))
        return arr
    host = np.asarray(obj, dtype=dtype)
    canonical = dtypes.as_dtype(host.dtype)  # TypeError naming unsupported dtypes
    if host.dtype != canonical:
        host = host.astype(canonical)
    return memory.to_device(host, stream, device_id)


def cast_on_device(arr: DeviceArray, dtype: np.dtype) -> DeviceArray:
    """``arr.astype(dtype)`` as one fused kernel (C casting rules, as NumPy's)."""
    from ...array import leaf_node
    from ...fusion import plan as make_plan
    from ...graph import Node

    leaf = leaf_node(arr)
    node = Node.make("cast", (leaf,), None, dtype=dtypes.as_dtype(dtype))
    env: dict = {}
    run(make_plan([node]), env)
    return env[node]


def to_numpy(value) -> np.ndarray:
    """A NumPy copy of a device array (``cupy.asnumpy``); a synchronisation point, so it raises
    the IndexError a kernel recorded."""
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True)
    out = memory.to_host(value)
    stream = value.stream or streams.get_current_stream(value.device_id)
    launch_index.check_bounds(value.device_id, stream)
    return out


def foreign_to_numpy(obj) -> np.ndarray:
    """A NumPy copy of another library's CUDA array."""
    return memory.to_host(memory.from_foreign(obj))


def current_device() -> streams.Device:
    """The current CUDA device (``cupy.cuda.Device()``)."""
    return streams.get_current_device()


def synchronize() -> None:
    """Wait for the work queued on the current device's current stream."""
    streams.get_current_stream(driver.current_device()).synchronize()

"""Thin, checked wrapper over the CUDA driver API (cuda-bindings): init, devices, contexts,
modules and the kernel launch hot path.

Stage: backend, the bottom of the CUDA stack. ``streams.py`` and ``memory.py`` build on it; the
code generator calls ``load_function`` once per compiled kernel and ``launch`` on every call.

Invariants:

* Importing this module initialises nothing and never fails, even without cuda-bindings or a
  driver. ``available()`` is the single probe: it runs ``cuInit`` once, caches the answer and, on
  failure, warns once that fuseray runs on the CPU.
* Every driver call goes through ``check`` (or, on the launch path, an inline status test), so no
  CUresult is ever dropped.
* fuseray uses each device's *primary* context, the one the CUDA runtime, PyTorch, CuPy and JAX
  share. ``ContextScope(device)`` makes it current for the duration of one operation and restores
  what the thread had before, so fuseray never changes another library's current device.
* Launch parameters live in per-thread buffers laid out once per kernel signature (``ArgPack``):
  a launch writes the values with one ``struct.pack_into`` and hands the driver the address of a
  prebuilt ``void*[]``. Measured packing costs (7 arguments, CPU only): ``pack_into`` 0.21 us, a
  NumPy structured-array store 0.21 us, cuda-bindings' ``(values, types)`` form 0.37 us (13.5;
  slower in 13.3), fresh ctypes structures 1.9 us; a lock around a shared buffer would add 0.14
  us, the thread-local lookup adds 0.03 us. On an H200 host (cuda-bindings 13.3) a bare
  ``cuLaunchKernel`` took 3.9-4.4 us, ``launch`` with an ``ArgPack`` 0.9 us more, and the
  ``(values, types)`` form 6.2 us; calling libcuda through ctypes was slower still (4.9 us).
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ... import config

try:
    from cuda.bindings import driver as cu
except ImportError:  # fuseray still runs on the CPU; available() explains why CUDA is off
    cu = None

__all__ = [
    "ArgPack",
    "CUDAError",
    "CUDAUnavailableError",
    "CUDAUnavailableWarning",
    "ContextScope",
    "DeviceProps",
    "Function",
    "arg_pack",
    "available",
    "check",
    "current_context",
    "current_device",
    "device_count",
    "device_props",
    "is_current",
    "launch",
    "load_function",
    "primary_context",
    "set_current_device",
]

_DEFAULT_SHARED_LIMIT = 48 * 1024  # dynamic shared memory allowed without an opt-in attribute


class CUDAError(RuntimeError):
    """A CUDA driver call returned an error. ``code`` is the CUresult as an int."""

    def __init__(self, call: str, result: object, hint: str = "") -> None:
        self.call = call
        self.code = int(result)
        self.name = _error_name(result)
        message = f"{call} failed with {self.name} ({self.code}): {_error_string(result)}"
        super().__init__(f"{message}. {hint}" if hint else message)


class CUDAUnavailableError(RuntimeError):
    """A CUDA operation was requested but no usable driver and GPU were found."""


class CUDAUnavailableWarning(RuntimeWarning):
    """Emitted once per process when fuseray falls back to the CPU."""


def _error_name(result: object) -> str:
    name = getattr(result, "name", None)
    if name is None and cu is not None:
        try:
            name = cu.CUresult(int(result)).name
        except ValueError:
            name = None
    return name or f"CUresult {int(result)}"


def _error_string(result: object) -> str:
    # cuGetErrorString needs a loaded driver; an error code came from one, but stay defensive so
    # that building an error message can never raise a second, confusing error.
    try:
        status, text = cu.cuGetErrorString(result)
    except (RuntimeError, OSError):
        return "no description"
    return text.decode() if status == 0 and text else "no description"


def check(result: tuple, call: str):
    """Raise ``CUDAError`` unless a cuda-bindings ``(status, *values)`` tuple succeeded.

    Returns None, the single value, or the tuple of values.
    """
    status = result[0]
    if status:
        raise CUDAError(call, status)
    if len(result) == 1:
        return None
    return result[1] if len(result) == 2 else result[1:]


# ----------------------------------------------------------------------------- initialisation

_init_lock = threading.Lock()
_available: bool | None = None
_unavailable_reason = ""
_device_count = 0


def _probe() -> tuple[bool, str]:
    if cu is None:
        return False, "cuda-bindings is not installed"
    try:
        (status,) = cu.cuInit(0)
    except (RuntimeError, OSError) as exc:  # no libcuda: cuda-pathfinder's loader error
        return False, f"the CUDA driver library could not be loaded ({exc})"
    if status:
        return False, f"cuInit failed with {_error_name(status)}"
    status, count = cu.cuDeviceGetCount()
    if status or count == 0:
        return False, "no CUDA device is visible"
    global _device_count
    _device_count = int(count)
    return True, ""


def available() -> bool:
    """Whether a CUDA driver and at least one GPU can be used. Never raises.

    The first call initialises the driver; later calls return the cached answer.
    """
    global _available, _unavailable_reason
    if _available is None:
        with _init_lock:
            if _available is None:
                ok, reason = _probe()
                _unavailable_reason = reason
                _available = ok
                if not ok:
                    try:
                        warnings.warn(
                            f"fuseray: CUDA is not available ({reason}); running on the CPU.",
                            CUDAUnavailableWarning,
                            stacklevel=2,
                        )
                    except Warning:  # -W error must not turn this probe into a crash
                        pass
    return _available


def _require() -> None:
    if not available():
        raise CUDAUnavailableError(f"CUDA is not available: {_unavailable_reason}")


def device_count() -> int:
    """Number of visible CUDA devices (0 when CUDA is unavailable)."""
    return _device_count if available() else 0


def device_handle(device_id: int):
    _require()
    if not 0 <= device_id < _device_count:
        raise ValueError(f"CUDA device {device_id} does not exist ({_device_count} visible)")
    return check(cu.cuDeviceGet(device_id), "cuDeviceGet")


# ----------------------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class DeviceProps:
    """The device facts the code generator and scheduler need."""

    device_id: int
    name: str
    compute_capability: tuple[int, int]
    arch: str  # NVRTC target for this device's own machine code, e.g. "sm_90"
    multiprocessor_count: int
    l2_cache_bytes: int
    max_threads_per_block: int
    max_threads_per_multiprocessor: int
    shared_memory_per_block: int
    shared_memory_per_block_optin: int
    warp_size: int
    total_memory: int
    memory_pools_supported: bool


_props: dict[int, DeviceProps] = {}


def device_props(device_id: int) -> DeviceProps:
    """Properties of device ``device_id`` (cached)."""
    props = _props.get(device_id)
    if props is not None:
        return props
    dev = device_handle(device_id)
    attr = cu.CUdevice_attribute

    def get(name: str) -> int:
        return int(check(cu.cuDeviceGetAttribute(getattr(attr, name), dev), "cuDeviceGetAttribute"))

    raw_name = check(cu.cuDeviceGetName(256, dev), "cuDeviceGetName")
    major = get("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR")
    minor = get("CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR")
    props = DeviceProps(
        device_id=device_id,
        name=raw_name.split(b"\0", 1)[0].decode(),
        compute_capability=(major, minor),
        arch=f"sm_{major}{minor}",
        multiprocessor_count=get("CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT"),
        l2_cache_bytes=get("CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE"),
        max_threads_per_block=get("CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK"),
        max_threads_per_multiprocessor=get("CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR"),
        shared_memory_per_block=get("CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK"),
        shared_memory_per_block_optin=get("CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN"),
        warp_size=get("CU_DEVICE_ATTRIBUTE_WARP_SIZE"),
        total_memory=int(check(cu.cuDeviceTotalMem(dev), "cuDeviceTotalMem")),
        memory_pools_supported=bool(get("CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED")),
    )
    _props[device_id] = props
    return props


# ----------------------------------------------------------------------------- contexts

# Its own lock, never held while probing: primary_context may be the first CUDA call a process
# makes, and available() takes _init_lock.
_context_lock = threading.Lock()
_contexts: dict[int, object] = {}  # device id -> retained primary CUcontext
_context_ints: dict[int, int] = {}  # device id -> int(handle), for cheap comparisons
_context_devices: dict[int, int] = {}  # int(handle) -> device id: the launch path's lookup


def primary_context(device_id: int):
    """The retained primary context of ``device_id``.

    Retained once per process and never released: the runtime and other libraries share it, and
    releasing it while their memory lives would tear it down under them.
    """
    ctx = _contexts.get(device_id)
    if ctx is None:
        dev = device_handle(device_id)
        with _context_lock:
            ctx = _contexts.get(device_id)
            if ctx is None:
                ctx = check(cu.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
                _context_ints[device_id] = int(ctx)
                _context_devices[int(ctx)] = device_id
                _contexts[device_id] = ctx
    return ctx


def current_context():
    """The calling thread's current ``CUcontext`` (a NULL handle when there is none)."""
    _require()
    return check(cu.cuCtxGetCurrent(), "cuCtxGetCurrent")


def current_device() -> int:
    """Device of the calling thread's current context; 0 when none is current.

    This is the CUDA runtime's ``cudaGetDevice`` rule, so fuseray and other libraries agree on
    which device is current.
    """
    if int(current_context()) == 0:
        return 0
    return int(check(cu.cuCtxGetDevice(), "cuCtxGetDevice"))


def set_current_device(device_id: int) -> None:
    """Make ``device_id``'s primary context current on this thread (``cudaSetDevice``)."""
    check(cu.cuCtxSetCurrent(primary_context(device_id)), "cuCtxSetCurrent")


def is_current(device_id: int) -> bool:
    """Whether ``device_id``'s primary context is current on this thread (one driver call).

    The hot paths test this and fall back to ``ContextScope`` only when it is False.
    """
    status, current = cu.cuCtxGetCurrent()
    return not status and int(current) == _context_ints.get(device_id)


class ContextScope:
    """``with ContextScope(device_id):`` runs the block with that device's primary context current.

    Costs one ``cuCtxGetCurrent`` when it already is. Otherwise the context is pushed and popped,
    leaving the thread's current device as it was, except for a thread with no context at all and
    device 0: that context is simply set, which is what the runtime would do on its first call
    anyway, so the observable current device is unchanged and later operations skip the push.
    """

    __slots__ = ("_ctx", "_device_id", "_pushed")

    def __init__(self, device_id: int) -> None:
        self._device_id = device_id
        self._ctx = primary_context(device_id)
        self._pushed = False

    def __enter__(self) -> ContextScope:
        current = int(check(cu.cuCtxGetCurrent(), "cuCtxGetCurrent"))
        if current == _context_ints[self._device_id]:
            return self
        if current == 0 and self._device_id == 0:
            check(cu.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")
        else:
            check(cu.cuCtxPushCurrent(self._ctx), "cuCtxPushCurrent")
            self._pushed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pushed:
            self._pushed = False
            check(cu.cuCtxPopCurrent(), "cuCtxPopCurrent")


# ----------------------------------------------------------------------------- modules


class Function:
    """A loaded kernel: the CUfunction plus what the launch path and schedulers need.

    ``handle`` is the raw ``CUfunction``. ``num_regs`` and ``max_threads_per_block`` come from the
    compiled code and bound the block size this kernel can be launched with. ``dependent``: the
    kernel begins with ``griddepcontrol.wait`` (``FR_WAIT_FOR_PRIOR_GRID``) and is launched with
    programmatic stream serialisation, so that its grid may start while the grid ahead of it
    in the stream finishes (``dependent_launch``).
    """

    __slots__ = (
        "_configs",
        "_ctx_int",
        "_shared_limit",
        "dependent",
        "device_id",
        "handle",
        "max_threads_per_block",
        "name",
        "num_regs",
        "ptr",
    )

    def __init__(self, handle, name: str, device_id: int, dependent: bool = False) -> None:
        self.handle = handle
        self.ptr = int(handle)  # the CUfunction as an int, for the compiled call path
        self.name = name
        self.device_id = device_id
        self.dependent = dependent
        self._configs: dict = {}  # a dependent launch's CUlaunchConfig by dimensions and stream
        self._ctx_int = _context_ints[device_id]
        self._shared_limit = _DEFAULT_SHARED_LIMIT
        attr = cu.CUfunction_attribute
        self.num_regs = int(
            check(
                cu.cuFuncGetAttribute(attr.CU_FUNC_ATTRIBUTE_NUM_REGS, handle), "cuFuncGetAttribute"
            )
        )
        self.max_threads_per_block = int(
            check(
                cu.cuFuncGetAttribute(attr.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, handle),
                "cuFuncGetAttribute",
            )
        )

    def _allow_shared(self, nbytes: int) -> None:
        # Above 48 KiB, dynamic shared memory must be opted into per function.
        with ContextScope(self.device_id):
            check(
                cu.cuFuncSetAttribute(
                    self.handle,
                    cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    nbytes,
                ),
                f"cuFuncSetAttribute({self.name}, max dynamic shared = {nbytes})",
            )
        self._shared_limit = nbytes

    def __repr__(self) -> str:
        return f"<Function {self.name} on device {self.device_id}, {self.num_regs} registers>"


_load_lock = threading.Lock()
_modules: dict[tuple[int, bytes], object] = {}
_functions: dict[tuple[int, bytes, str, bool], Function] = {}


def dependent_launch(device_id: int) -> bool:
    """Whether a generated kernel loaded now on ``device_id`` is launched as a programmatic
    dependent launch (``Function.dependent``): ``config.dependent_launch`` on a GPU of compute
    capability 9.0 or later (``griddepcontrol`` is sm_90's)."""
    return config.dependent_launch and device_props(device_id).compute_capability >= (9, 0)


def load_function(device_id: int, cubin: bytes, name: str, dependent: bool = False) -> Function:
    """Load ``cubin`` on ``device_id`` and return its ``extern "C"`` kernel ``name``; see
    ``Function`` for ``dependent`` (only for a kernel that waits with ``griddepcontrol.wait``).

    Cached per (device, sha256 of the CUBIN, name, dependent); modules stay loaded for the
    process lifetime.
    """
    digest = hashlib.sha256(cubin).digest()
    key = (device_id, digest, name, dependent)
    func = _functions.get(key)
    if func is not None:
        return func
    with _load_lock, ContextScope(device_id):
        func = _functions.get(key)
        if func is not None:
            return func
        module = _modules.get((device_id, digest))
        if module is None:
            status, module = cu.cuModuleLoadData(cubin)
            if status:
                arch = device_props(device_id).arch
                raise CUDAError(
                    "cuModuleLoadData",
                    status,
                    hint=f"The CUBIN must be compiled for this device's architecture ({arch}).",
                )
            _modules[(device_id, digest)] = module
        handle = check(
            cu.cuModuleGetFunction(module, name.encode()), f"cuModuleGetFunction({name})"
        )
        func = _functions[key] = Function(handle, name, device_id, dependent)
    return func


# ----------------------------------------------------------------------------- launching

# Parameter kinds a kernel may take, as struct codes. "ptr" is a device address.
_ARG_CODES = {
    "ptr": "Q",
    "bool": "?",
    "int8": "b",
    "uint8": "B",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float16": "e",
    "float32": "f",
    "float64": "d",
}
_SLOT = 8  # one 8-byte-aligned slot per parameter: every supported kind fits


class ArgPack:
    """Parameter layout for one kernel signature, with per-thread packing buffers.

    ``types`` lists each parameter's kind: ``"ptr"`` for a device address (pass an int) or a
    NumPy dtype name / ``np.dtype`` of a scalar (bool, int8..uint64, float16..float64). Build one
    per compiled kernel and reuse it; ``pack`` is the per-call work.
    """

    __slots__ = ("_format", "_local", "codes", "types")

    def __init__(self, types: Sequence[str | np.dtype]) -> None:
        names = []
        codes = []
        for t in types:
            name = t if isinstance(t, str) else np.dtype(t).name
            code = _ARG_CODES.get(name)
            if code is None:
                raise TypeError(f"unsupported kernel parameter type {t!r}")
            names.append(name)
            codes.append(code + "x" * (_SLOT - struct.calcsize("<" + code)))
        self.types = tuple(names)
        self.codes = "".join(c[0] for c in codes).encode()  # one struct code per parameter
        self._format = struct.Struct("<" + "".join(codes))
        self._local = threading.local()

    def _new_buffers(self) -> tuple[np.ndarray, int, np.ndarray]:
        n = len(self.types)
        values = np.zeros(max(n, 1) * _SLOT, dtype=np.uint8)
        base = values.ctypes.data
        pointers = np.array([base + _SLOT * i for i in range(n)] or [0], dtype=np.uint64)
        # The driver takes NULL for a kernel without parameters.
        address = pointers.ctypes.data if n else 0
        # Keep both arrays alive with the thread: the driver reads through raw addresses.
        self._local.buffers = buffers = (values, address, pointers)
        return buffers

    def pack(self, args: Sequence) -> int:
        """Write ``args`` into this thread's buffer; return the ``void**`` for cuLaunchKernel.

        The buffer is reused by the thread's next ``pack``: the driver copies parameters during
        ``cuLaunchKernel``, so the address is valid until then.
        """
        try:
            values, address, _ = self._local.buffers
        except AttributeError:
            values, address, _ = self._new_buffers()
        self._format.pack_into(values, 0, *args)
        return address

    def __repr__(self) -> str:
        return f"ArgPack({list(self.types)})"


_packs: dict[tuple, ArgPack] = {}


def arg_pack(types: Sequence[str | np.dtype]) -> ArgPack:
    """The shared ``ArgPack`` for a signature (cached)."""
    key = tuple(types)
    pack = _packs.get(key)
    if pack is None:
        pack = _packs.setdefault(key, ArgPack(key))
    return pack


def launch(
    func: Function,
    grid: int | tuple[int, ...],
    block: int | tuple[int, ...],
    args: Sequence,
    arg_types: ArgPack | Sequence[str | np.dtype],
    shared_mem: int = 0,
    stream=None,
) -> None:
    """Launch ``func`` asynchronously on ``stream``.

    ``grid`` and ``block`` are ints or 1- to 3-tuples. ``args`` holds one value per parameter:
    ints for ``"ptr"`` (device addresses) and Python or NumPy scalars otherwise. ``arg_types`` is a
    prebuilt ``ArgPack`` (the fast path) or a sequence of parameter kinds. ``stream`` is a
    ``CUstream``, an int handle, or None/0 for the legacy default stream. The function's context
    is made current for the call if it is not already.
    """
    pack = arg_types if type(arg_types) is ArgPack else arg_pack(arg_types)
    params = pack.pack(args)
    gx, gy, gz = (grid, 1, 1) if type(grid) is int else (*grid, 1, 1)[:3]
    bx, by, bz = (block, 1, 1) if type(block) is int else (*block, 1, 1)[:3]
    if shared_mem > func._shared_limit:
        func._allow_shared(shared_mem)
    dims = (gx, gy, gz, bx, by, bz, shared_mem)
    status, current = cu.cuCtxGetCurrent()
    if not status and int(current) == func._ctx_int:
        status = _launch(func, dims, stream, params)
    else:
        with ContextScope(func.device_id):
            status = _launch(func, dims, stream, params)
    if status:
        what = "cuLaunchKernelEx" if func.dependent else "cuLaunchKernel"
        raise CUDAError(f"{what}({func.name}, grid={grid}, block={block})", status)


def _launch(func: Function, dims: tuple[int, ...], stream, params: int):
    """One driver launch of ``func``; returns the driver's status."""
    if not func.dependent:
        return cu.cuLaunchKernel(func.handle, *dims, stream, params, 0)[0]
    key = (dims, 0 if stream is None else int(stream))
    cfg = func._configs.get(key)
    if cfg is None:
        cfg = cu.CUlaunchConfig()
        (cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ, cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ,
         cfg.sharedMemBytes) = dims
        cfg.hStream = stream
        attribute = cu.CUlaunchAttribute()
        attribute.id = cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        attribute.value.programmaticStreamSerializationAllowed = 1
        cfg.attrs, cfg.numAttrs = [attribute], 1
        if len(func._configs) >= 64:  # a few dimensions and streams a kernel; bounded anyway
            func._configs.clear()
        func._configs[key] = cfg
    return cu.cuLaunchKernelEx(cfg, func.handle, params, 0)[0]


_launch_address: int | None = None
_launch_ex_address: int | None = None


def _proc_address(symbol: bytes) -> int:
    """The driver's ``symbol`` for the compiled call path, or 0 where there is none. The legacy
    or per-thread default stream variant, as cuda.bindings chooses
    (``CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM``), so a stream handle of 0 means the same to
    both paths."""
    if not available():
        return 0
    flags = cu.CUdriverProcAddress_flags
    ptds = os.environ.get("CUDA_PYTHON_CUDA_PER_THREAD_DEFAULT_STREAM", "0")
    flag = (flags.CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
            if ptds.strip() not in ("", "0") else flags.CU_GET_PROC_ADDRESS_LEGACY_STREAM)
    try:
        status, pfn, found = cu.cuGetProcAddress(symbol, 12000, flag)
    except Exception:  # an older binding or a stand-in driver without it
        return 0
    if status or not int(pfn) or (
        found is not None
        and found != cu.CUdriverProcAddressQueryResult.CU_GET_PROC_ADDRESS_SUCCESS
    ):
        return 0
    return int(pfn)


def launch_address() -> int:
    """The address of the driver's ``cuLaunchKernel`` for the compiled call path (0: none)."""
    global _launch_address
    if _launch_address is None:
        _launch_address = _proc_address(b"cuLaunchKernel")
    return _launch_address


def launch_ex_address() -> int:
    """The address of the driver's ``cuLaunchKernelEx`` for the compiled call path's dependent
    launches (0: none)."""
    global _launch_ex_address
    if _launch_ex_address is None:
        _launch_ex_address = _proc_address(b"cuLaunchKernelEx")
    return _launch_ex_address


def launch_prepared(
    func: Function, dims: tuple[int, ...], args: Sequence, pack: ArgPack, stream
) -> None:
    """``launch`` for a cached call: ``dims`` is ``(gx, gy, gz, bx, by, bz, shared_mem)``.

    One driver call when ``func``'s context is current and its shared-memory limit suffices
    (about 1 us less than ``launch``, which first asks the driver for the current context);
    otherwise, or if the driver refuses, ``launch`` makes the context current, raises the limit,
    and raises ``CUDAError`` naming what failed.
    """
    # ArgPack.pack, inlined: one Python call less on every cached launch
    try:
        values, params, _ = pack._local.buffers
    except AttributeError:
        values, params, _ = pack._new_buffers()
    pack._format.pack_into(values, 0, *args)
    if dims[6] <= func._shared_limit:
        if not func.dependent:  # _launch's plain case, inlined: this is every cached launch
            (status,) = cu.cuLaunchKernel(func.handle, *dims, stream, params, 0)
        else:
            status = _launch(func, dims, stream, params)
        if not status:
            return
    launch(func, dims[:3], dims[3:6], args, pack, dims[6], stream)

"""Device memory and the materialised GPU array value, with zero-copy interop.

Stage: backend, above ``driver.py`` and ``streams.py``. The code generator allocates outputs with
``empty``, moves NumPy data with ``to_device``/``to_host``, and wraps other libraries' arrays with
``from_foreign``; users hand ``DeviceArray`` to CuPy, PyTorch, JAX or Numba through
``__cuda_array_interface__`` and ``__dlpack__``.

Invariants:

* Allocation is stream-ordered (``cuMemAllocAsync`` from the device's default pool). Each
  allocation records its *last-use stream*; it is freed with ``cuMemFreeAsync`` on that stream, so
  the free is ordered after every kernel that used it. Blocks up to 1 MiB are instead recycled
  to later allocations on the same stream (up to 64 MiB per device), which keeps a small cached
  call clear of two driver round trips.
* ``DeviceArray.use_on(stream)`` must be called before enqueuing work that touches an array on a
  stream. When the stream changes it makes the new stream wait for the old one, so "ordered after
  the last-use stream" implies "ordered after every earlier use".
* Out of memory: collect garbage, free recycled blocks, synchronise the device, trim the pool,
  retry once, then raise ``OutOfMemoryError``; nothing is left in a broken state.
* Nothing is freed during interpreter shutdown: process exit releases device memory, and calling
  the driver from a half-finalised interpreter is not safe.
* Strides are in bytes (NumPy's convention) everywhere except inside DLPack structs (elements).
* Only ``SUPPORTED_DTYPES`` cross this boundary; anything else raises ``TypeError``.
"""

from __future__ import annotations

import gc
import math
import sys
import threading
import weakref
from collections.abc import Sequence

import numpy as np

from fuseray.backends.cuda import dlpack, driver, streams
from fuseray.backends.cuda.driver import ContextScope, CUDAError, check, cu
from fuseray.backends.cuda.streams import (
    BaseStream,
    Device,
    ExternalStream,
    as_stream,
    stream_wait,
)

__all__ = [
    "SUPPORTED_DTYPES",
    "DeviceArray",
    "DeviceMemory",
    "ForeignMemory",
    "OutOfMemoryError",
    "empty",
    "from_foreign",
    "to_device",
    "to_host",
]

SUPPORTED_DTYPES = tuple(dlpack.DTYPE_CODES)


class OutOfMemoryError(MemoryError):
    """A device allocation failed even after freeing cached and garbage memory."""

    def __init__(self, size: int, device_id: int) -> None:
        self.size = size
        self.device_id = device_id
        super().__init__(f"out of memory on CUDA device {device_id} allocating {size:,} bytes")


def _supported(dtype: object) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in dlpack.DTYPE_CODES:
        raise TypeError(f"fuseray's CUDA backend does not support dtype {dt} ({dt.str})")
    return dt


def _is_c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    if 0 in shape:
        return True
    expected = itemsize
    for extent, stride in zip(reversed(shape), reversed(strides), strict=True):
        if extent != 1 and stride != expected:
            return False
        expected *= extent
    return True


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    if len(shape) == 1:
        return (itemsize,)
    strides = []
    step = itemsize
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


# ----------------------------------------------------------------------------- allocation

_UINT64_MAX = (1 << 64) - 1
_pools: dict[int, object] = {}


def _pool(device_id: int):
    pool = _pools.get(device_id)
    if pool is not None:
        return pool
    if not driver.device_props(device_id).memory_pools_supported:
        raise RuntimeError(
            f"CUDA device {device_id} does not support stream-ordered allocation (memory pools)"
        )
    pool = check(
        cu.cuDeviceGetDefaultMemPool(driver.device_handle(device_id)), "cuDeviceGetDefaultMemPool"
    )
    attr = cu.CUmemPool_attribute.CU_MEMPOOL_ATTR_RELEASE_THRESHOLD
    threshold = check(cu.cuMemPoolGetAttribute(pool, attr), "cuMemPoolGetAttribute")
    if int(threshold) == 0:
        # With the driver's default threshold of 0 every synchronisation hands freed memory back
        # to the OS and the next allocation pays for a fresh mapping. Keep it cached, as CuPy's and
        # PyTorch's pools do; a user-chosen threshold is left alone, and OOM trims the pool.
        value = cu.cuuint64_t(_UINT64_MAX)
        check(cu.cuMemPoolSetAttribute(pool, attr, value), "cuMemPoolSetAttribute")
    _pools[device_id] = pool
    return pool


def peak_bytes(device_id: int) -> int:
    """The most bytes fuseray's allocations held at once on ``device_id`` since the last
    ``reset_peak`` (the pool's high-water mark; recycled small blocks count as held)."""
    attr = cu.CUmemPool_attribute.CU_MEMPOOL_ATTR_USED_MEM_HIGH
    return int(check(cu.cuMemPoolGetAttribute(_pool(device_id), attr), "cuMemPoolGetAttribute"))


def used_bytes(device_id: int) -> int:
    """The bytes fuseray's allocations hold on ``device_id`` now (recycled blocks included)."""
    attr = cu.CUmemPool_attribute.CU_MEMPOOL_ATTR_USED_MEM_CURRENT
    return int(check(cu.cuMemPoolGetAttribute(_pool(device_id), attr), "cuMemPoolGetAttribute"))


def reset_peak(device_id: int) -> None:
    attr = cu.CUmemPool_attribute.CU_MEMPOOL_ATTR_USED_MEM_HIGH
    check(cu.cuMemPoolSetAttribute(_pool(device_id), attr, cu.cuuint64_t(0)),
          "cuMemPoolSetAttribute")


# Small blocks are recycled by fuseray itself: a driver alloc/free pair costs about 2.5 us from
# Python, most of a cached call's budget, while popping a list costs 0.1 us. A block freed with
# last-use stream S may be handed to new work on S at once (stream order already puts that work
# after every earlier use), so blocks are filed per (stream, size). Filed bytes are capped per
# device; they go back to the driver when an allocation runs out of memory, and, in S's order,
# when S's stream object is collected (``_forget_stream``), before S is destroyed.
_SMALL_BLOCK = 1 << 20
_GRANULE = 512
_RECYCLE_LIMIT = 64 << 20
# Re-entrant because garbage collection may run a DeviceMemory.__del__ inside a critical section.
_recycle_lock = threading.RLock()
_recycled: dict[tuple[int, int], list[int]] = {}  # (id(stream), size) -> filed pointers
# id(stream) -> (weak reference to the stream, sizes filed under it). Weak, so that recycling never
# keeps a stream alive; ids stay unambiguous because a dying stream's files are removed with it.
_filers: dict[int, tuple[weakref.ref, set[int]]] = {}
_recycled_bytes: dict[int, int] = {}  # device id -> bytes filed


def block_size(nbytes: int) -> int:
    """The bytes a DeviceMemory of ``nbytes`` holds: small blocks round up to a granule (one size
    class per granule, so that they can be recycled)."""
    return (nbytes + _GRANULE - 1) & -_GRANULE if nbytes <= _SMALL_BLOCK else nbytes


def _allocate(size: int, stream: BaseStream) -> int:
    """A device pointer of ``size`` bytes (a granule multiple when small), in ``stream`` order."""
    if size <= _SMALL_BLOCK:
        filed = _recycled.get((id(stream), size))
        if filed:
            # acquire/release rather than ``with``: 0.1 us less on every cached call, here and
            # in _release
            _recycle_lock.acquire()
            try:
                if filed:
                    _recycled_bytes[stream.device_id] -= size
                    return filed.pop()
            finally:
                _recycle_lock.release()
    device_id = stream.device_id
    if device_id in _pools and driver.is_current(device_id):
        status, ptr = cu.cuMemAllocAsync(size, stream.handle)
        if not status:
            return int(ptr)
    with ContextScope(device_id):
        pool = _pool(device_id)
        status, ptr = cu.cuMemAllocAsync(size, stream.handle)
        if status == cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
            # Unreachable arrays in reference cycles still hold memory, filed blocks and frees
            # queued on streams are not yet back in the pool, and the pool may hold free blocks
            # too small for this request: release all of it, then try once more.
            gc.collect()
            for filer_id, (ref, _) in list(_filers.items()):
                filer = ref()
                if filer is not None and filer.device_id == device_id:
                    _unfile(filer_id, filer)
            check(cu.cuCtxSynchronize(), "cuCtxSynchronize")
            check(cu.cuMemPoolTrimTo(pool, 0), "cuMemPoolTrimTo")
            status, ptr = cu.cuMemAllocAsync(size, stream.handle)
            if status == cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
                raise OutOfMemoryError(size, device_id)
        if status:
            raise CUDAError(f"cuMemAllocAsync({size})", status)
    return int(ptr)


# Garbage collection can run a DeviceMemory.__del__, so a _release, inside this thread's own
# critical section: a collection starts at an allocation of a container (Python 3.10, 3.11), or
# at a call or a loop's jump (3.12 on); the lock is re-entrant and lets it in. So every update
# of the pool's state below is one step in which no collection can start (a setdefault, an
# append, a ``+=`` on an int), never a read, a call, then a write: a nested release then falls
# between two updates, each complete (a new file's list is inserted with setdefault, which keeps
# one a nested release inserted first). Only the limit check reads ahead, and a nested block
# can only make the files overshoot the limit by its own size.


def _release(ptr: int, size: int, stream: BaseStream) -> None:
    device_id = stream.device_id
    if size <= _SMALL_BLOCK:
        key = (id(stream), size)
        _recycle_lock.acquire()  # (see _allocate)
        try:
            if _recycled_bytes.get(device_id, 0) + size <= _RECYCLE_LIMIT:
                filed = _recycled.get(key)
                if filed is None:  # the first block of its size: a new list (see above)
                    new: list[int] = []
                    filed = _recycled.setdefault(key, new)
                    if filed is new:
                        _filers.setdefault(key[0], (weakref.ref(stream), set()))[1].add(size)
                filed.append(ptr)
                _recycled_bytes.setdefault(device_id, 0)
                _recycled_bytes[device_id] += size
                return
        finally:
            _recycle_lock.release()
    _free(ptr, device_id, stream)


def _unfile(filer_id: int, stream: BaseStream) -> None:
    """Free every block filed under ``stream`` (whose id is ``filer_id``), in its order."""
    with _recycle_lock:
        _, sizes = _filers.pop(filer_id, (None, ()))
        ptrs = []
        for size in sizes:
            # (see _release: single steps) a release nested here files into a new list
            filed = _recycled.pop((filer_id, size))
            count = len(filed)
            ptrs += filed
            # emptied, not only unlinked: an allocation that found this file before the lock
            # was taken here (in another thread) must not take a block freed below
            filed.clear()
            _recycled_bytes[stream.device_id] -= size * count
    for ptr in ptrs:
        _free(ptr, stream.device_id, stream)


def _forget_stream(stream: BaseStream) -> None:
    if id(stream) in _filers:
        _unfile(id(stream), stream)


streams.on_collect(_forget_stream)


def _free(ptr: int, device_id: int, stream: BaseStream) -> None:
    if driver.is_current(device_id):
        (status,) = cu.cuMemFreeAsync(ptr, stream.handle)
        if not status:
            return
    with ContextScope(device_id):
        (status,) = cu.cuMemFreeAsync(ptr, stream.handle)
        if status:
            # The last-use stream no longer exists (a foreign stream its owner destroyed). Wait
            # for everything on the device instead, then free in legacy-stream order.
            check(cu.cuCtxSynchronize(), "cuCtxSynchronize")
            check(cu.cuMemFreeAsync(ptr, 0), "cuMemFreeAsync")


class DeviceMemory:
    """One stream-ordered device allocation of at least ``size`` bytes, owned by this object.

    ``stream`` is the last-use stream: allocation happens on it, and when the object is garbage
    collected the block is freed (or, if small, recycled) in that stream's order. Zero-byte
    allocations have ``ptr == 0``.
    """

    __slots__ = ("__weakref__", "device_id", "ptr", "size", "stream")

    def __init__(self, size: int, stream: BaseStream) -> None:
        self.ptr = 0  # what __del__ sees if the allocation below raises
        self.size = size = block_size(size)
        self.device_id = stream.device_id
        self.stream = stream
        if size:
            self.ptr = _allocate(size, stream)

    def __del__(self) -> None:
        if self.ptr and not sys.is_finalizing():
            _release(self.ptr, self.size, self.stream)

    def __repr__(self) -> str:
        return f"<DeviceMemory {self.size} bytes at {self.ptr:#x} on device {self.device_id}>"


# The Python __del__: the C call site replaces it with its own (``_callsite.bind``), which files
# small blocks itself and calls _release for the rest; tests compare the two.
_python_del = DeviceMemory.__del__


class ForeignMemory:
    """Device memory owned by another library; ``owner`` keeps it alive, nothing is freed."""

    __slots__ = ("device_id", "owner", "ptr", "stream")

    def __init__(self, owner: object, ptr: int, device_id: int, stream: BaseStream | None):
        self.owner = owner
        self.ptr = ptr
        self.device_id = device_id
        self.stream = stream


# ----------------------------------------------------------------------------- the array value


class DeviceArray:
    """A materialised GPU array: pointer, shape, byte strides, dtype, device, memory owner.

    Several arrays (views) may share one ``memory``; stream tracking lives there. ``readonly``
    arrays come from producers that declared their data read-only.
    """

    __slots__ = (
        "__weakref__",
        "dtype",
        "is_c_contiguous",
        "memory",
        "ptr",
        "readonly",
        "shape",
        "strides",
    )

    def __init__(
        self,
        ptr: int,
        shape: Sequence[int],
        strides: Sequence[int] | None,
        dtype: object,
        memory: DeviceMemory | ForeignMemory,
        readonly: bool = False,
    ) -> None:
        self.dtype = _supported(dtype)
        self.shape = tuple(map(int, shape))
        self.strides = (
            _c_strides(self.shape, self.dtype.itemsize)
            if strides is None
            else tuple(map(int, strides))
        )
        if len(self.strides) != len(self.shape):
            raise ValueError(f"shape {self.shape} and strides {self.strides} differ in length")
        self.ptr = int(ptr)
        self.memory = memory
        self.readonly = bool(readonly)
        # stored, not a property: @jit's cache key reads it for every argument of every call
        self.is_c_contiguous = _is_c_contiguous(self.shape, self.strides, self.dtype.itemsize)

    @classmethod
    def _wrap(
        cls,
        ptr: int,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        dtype: np.dtype,
        memory: DeviceMemory | ForeignMemory,
        readonly: bool = False,
    ) -> DeviceArray:
        """Trusted constructor for the hot path: arguments already validated and normalised, and
        ``strides`` C-contiguous."""
        self = object.__new__(cls)
        self.is_c_contiguous = True
        self.ptr = ptr
        self.shape = shape
        self.strides = strides
        self.dtype = dtype
        self.memory = memory
        self.readonly = readonly
        return self

    @property
    def device_id(self) -> int:
        return self.memory.device_id

    @property
    def device(self) -> Device:
        """The array's CUDA device (``cupy.ndarray.device``; ``fr.ndarray.device`` reads it)."""
        return Device(self.memory.device_id)

    @property
    def stream(self) -> BaseStream | None:
        """The last-use stream (None if unknown, for foreign memory without stream info)."""
        return self.memory.stream

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def use_on(self, stream: BaseStream) -> None:
        """Declare that work about to be enqueued on ``stream`` uses this array.

        When the stream differs from the last-use stream, ``stream`` first waits for it; the
        array is then freed on, and reported to consumers with, ``stream``.
        """
        memory = self.memory
        previous = memory.stream
        if previous is stream:
            return
        if previous is not None:
            stream_wait(stream, previous)
        memory.stream = stream

    def _span(self) -> tuple[int, int]:
        """Byte offsets, relative to ``ptr``, of the lowest and one-past-highest bytes used."""
        low = high = 0
        for extent, stride in zip(self.shape, self.strides, strict=True):
            if stride < 0:
                low += (extent - 1) * stride
            else:
                high += (extent - 1) * stride
        return low, high + self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict:
        stream = self.memory.stream
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "descr": [("", self.dtype.str)],
            "data": (self.ptr if self.size else 0, self.readonly),
            "strides": None if self.is_c_contiguous else self.strides,
            "stream": None if stream is None else stream.interop_id,
            "version": 3,
        }

    def __dlpack_device__(self) -> tuple[int, int]:
        return (dlpack.KDL_CUDA, self.device_id)

    def __dlpack__(
        self,
        *,
        stream: int | None = None,
        max_version: tuple[int, int] | None = None,
        dl_device: tuple[int, int] | None = None,
        copy: bool | None = None,
    ) -> object:
        """Export as a DLPack capsule (array API standard protocol).

        ``stream`` is the consumer's stream: None or 1 for the legacy default stream, 2 for the
        per-thread one, a handle otherwise, -1 to skip synchronisation. The consumer stream is
        made to wait for this array's last-use stream. A versioned capsule is produced when the
        consumer accepts DLPack 1.x, else a legacy ``dltensor`` one (which cannot say read-only).
        """
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(f"cannot export a CUDA device {self.device_id} array to {dl_device}")
        if copy:
            raise BufferError("fuseray exports device arrays without copying; copy=True refused")
        if stream == 0:
            raise ValueError("stream=0 is ambiguous in DLPack; use 1 for the legacy stream")
        if stream != -1 and self.memory.stream is not None:
            consumer = ExternalStream(1 if stream is None else stream, self.device_id)
            stream_wait(consumer, self.memory.stream)
        versioned = max_version is not None and max_version[0] >= 1
        if self.readonly and not versioned:
            raise BufferError("a read-only array needs a DLPack >= 1.0 consumer (max_version)")
        return dlpack.export(
            self.ptr,
            self.shape,
            self.strides,
            self.dtype,
            self.device_id,
            self.readonly,
            self,
            versioned,
        )

    def __repr__(self) -> str:
        return (
            f"<DeviceArray shape={self.shape} dtype={self.dtype} strides={self.strides} "
            f"device={self.device_id} ptr={self.ptr:#x}>"
        )


def empty(
    shape: Sequence[int] | int, dtype: object, stream: object = None, device: int | None = None
) -> DeviceArray:
    """Uninitialised C-contiguous array allocated on ``stream`` (``cupy.empty``).

    ``shape`` is an int or a sequence of ints (a tuple must hold Python ints); ``stream`` is
    anything ``as_stream`` accepts (default: the current stream of ``device``).
    """
    dt = _supported(dtype)
    if type(shape) is not tuple:  # the code generator passes tuples of ints: skip the copy
        shape = (int(shape),) if isinstance(shape, int) else tuple(map(int, shape))
    if shape and min(shape) < 0:
        raise ValueError(f"negative dimension in shape {shape}")
    stream = as_stream(stream, device)
    memory = DeviceMemory(math.prod(shape) * dt.itemsize, stream)
    return DeviceArray._wrap(memory.ptr, shape, _c_strides(shape, dt.itemsize), dt, memory)


# ----------------------------------------------------------------------------- host transfers


def to_device(array: object, stream: object = None, device: int | None = None) -> DeviceArray:
    """Copy a host array to a new C-contiguous device array (``cupy.asarray``).

    Any layout is accepted (non-contiguous, negative strides, non-native byte order): it is
    staged through a contiguous native-order host copy. The copy is ordered on ``stream``;
    the host data may be modified as soon as this returns.
    """
    host = np.asarray(array)
    dt = _supported(host.dtype.newbyteorder("="))
    if host.dtype != dt or not host.flags.c_contiguous:
        host = np.array(host, dtype=dt, order="C")
    out = empty(host.shape, dt, stream, device)
    if host.nbytes:
        stream = out.stream
        with ContextScope(stream.device_id):
            # From pageable memory the driver stages the bytes before returning, which is what
            # lets the caller reuse ``array`` (and lets ``host`` die) right away.
            check(
                cu.cuMemcpyHtoDAsync(out.ptr, host.ctypes.data, host.nbytes, stream.handle),
                "cuMemcpyHtoDAsync",
            )
    return out


def to_host(array: DeviceArray, stream: object = None) -> np.ndarray:
    """Copy a device array to a new C-contiguous NumPy array (``cupy.asnumpy``).

    Waits for the copy. ``stream`` defaults to the array's last-use stream (else the current one).
    Strided arrays are fetched as the byte span they cover and re-laid out on the host.
    """
    out = np.empty(array.shape, array.dtype)
    if out.size == 0:
        return out
    if stream is None and array.stream is not None:
        stream = array.stream
    else:
        stream = as_stream(stream, array.device_id)
        array.use_on(stream)
    with ContextScope(stream.device_id):
        if array.is_c_contiguous:
            check(
                cu.cuMemcpyDtoHAsync(out.ctypes.data, array.ptr, out.nbytes, stream.handle),
                "cuMemcpyDtoHAsync",
            )
            check(cu.cuStreamSynchronize(stream.handle), "cuStreamSynchronize")
            return out
        low, high = array._span()
        staging = np.empty(high - low, np.uint8)
        check(
            cu.cuMemcpyDtoHAsync(staging.ctypes.data, array.ptr + low, high - low, stream.handle),
            "cuMemcpyDtoHAsync",
        )
        check(cu.cuStreamSynchronize(stream.handle), "cuStreamSynchronize")
    view = np.ndarray(array.shape, array.dtype, staging, offset=-low, strides=array.strides)
    out[...] = view
    return out


# ----------------------------------------------------------------------------- foreign arrays


def from_foreign(obj: object, stream: object = None) -> DeviceArray:
    """Zero-copy view of another library's CUDA array (``cupy.asarray`` on foreign data).

    Uses ``__cuda_array_interface__`` when present (CuPy, PyTorch, Numba), otherwise DLPack with
    a CUDA ``__dlpack_device__`` (JAX, PyTorch). ``stream`` is where fuseray will use the data
    (default: the current stream of the array's device); it is made to wait for the producer.
    """
    if isinstance(obj, DeviceArray):
        return obj
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        return _from_cai(obj, cai, stream)
    if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        return _from_dlpack(obj, stream)
    raise TypeError(
        f"{type(obj).__name__} exposes neither __cuda_array_interface__ nor a CUDA __dlpack__"
    )


def _foreign_device(obj: object, ptr: int) -> int:
    """The device holding ``obj``'s data at ``ptr``."""
    if driver.device_count() == 1:
        return 0  # the common case costs no driver round trip
    dlpack_device = getattr(obj, "__dlpack_device__", None)  # CuPy, PyTorch, JAX: no driver call
    if dlpack_device is not None:
        kind, device_id = dlpack_device()
        if int(kind) in (dlpack.KDL_CUDA, dlpack.KDL_CUDA_MANAGED):
            return int(device_id)
    # Ask for the owning context, or for stream-ordered memory (which has none) the owning pool:
    # CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL answered 0 for memory on device 1 of a two-H200
    # machine (driver 580.159, cuda-bindings 13.3.1).
    attrs = cu.CUpointer_attribute
    ctx = check(
        cu.cuPointerGetAttribute(attrs.CU_POINTER_ATTRIBUTE_CONTEXT, ptr), "cuPointerGetAttribute"
    )
    if int(ctx):
        return int(check(cu.cuCtxGetDevice_v2(ctx), "cuCtxGetDevice_v2"))
    pool = check(
        cu.cuPointerGetAttribute(attrs.CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE, ptr),
        "cuPointerGetAttribute",
    )
    # cuda-bindings 13.3 cannot read a pool's location attribute; match the devices' default
    # pools instead (no context is created for that).
    for device_id in range(driver.device_count()):
        handle = driver.device_handle(device_id)
        default = check(cu.cuDeviceGetDefaultMemPool(handle), "cuDeviceGetDefaultMemPool")
        if int(default) == int(pool):
            return device_id
    return driver.current_device()  # a private pool (RMM's, say): the caller's device


def _from_cai(obj: object, cai: dict, stream: object) -> DeviceArray:
    if cai.get("mask") is not None:
        raise TypeError("masked __cuda_array_interface__ arrays are not supported")
    dtype = np.dtype(cai["typestr"])
    if not dtype.isnative:
        raise TypeError(f"non-native byte order {dtype.str} is not supported")
    ptr, readonly = cai["data"]
    device_id = _foreign_device(obj, ptr) if ptr else driver.current_device()
    consumer = as_stream(stream, device_id)
    producer = cai.get("stream") if cai.get("version", 0) >= 3 else None
    if producer is not None:
        stream_wait(consumer, ExternalStream(producer, device_id))
    memory = ForeignMemory(obj, ptr, device_id, consumer)
    return DeviceArray(ptr, cai["shape"], cai.get("strides"), dtype, memory, readonly)


def _from_dlpack(obj: object, stream: object) -> DeviceArray:
    device_type, device_id = obj.__dlpack_device__()
    if int(device_type) not in (dlpack.KDL_CUDA, dlpack.KDL_CUDA_MANAGED):
        raise TypeError(f"{type(obj).__name__} lives on DLPack device type {device_type}, not CUDA")
    device_id = int(device_id)
    consumer = as_stream(stream, device_id)
    try:
        capsule = obj.__dlpack__(stream=consumer.interop_id, max_version=(1, 0))
    except TypeError:  # a producer from before DLPack 1.0 takes no max_version
        capsule = obj.__dlpack__(stream=consumer.interop_id)
    owner, ptr, shape, strides, dtype, readonly = dlpack.consume(capsule)
    memory = ForeignMemory(owner, ptr, device_id, consumer)
    return DeviceArray(ptr, shape, strides, dtype, memory, readonly)

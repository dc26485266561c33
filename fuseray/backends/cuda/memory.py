"""Device memory and the materialised GPU array value, with zero-copy interop.

Stage: backend, above ``driver.py`` and ``streams.py``. The code generator allocates outputs with
``empty``, moves NumPy data with ``to_device``/``to_host``, and wraps other libraries' arrays with
``from_foreign``; users hand ``DeviceArray`` to CuPy, PyTorch, JAX or Numba through
``__cuda_array_interface__`` and ``__dlpack__``.

Invariants:

* Allocation is stream-ordered (``cuMemAllocAsync`` from the device's default pool). Each
  allocation records its *last-use stream*; it is freed with ``cuMemFreeAsync`` on that stream, so
  the free is ordered after every kernel that used it. ``DeviceArray.use_on(stream)`` must be
  called before enqueuing work that touches an array on a stream; when the stream changes it makes
  the new stream wait for the old one, so "ordered after the last-use stream" implies "ordered
  after every earlier use".
* Out of memory: collect garbage, synchronise the device, trim the pool, retry once, then raise
  ``OutOfMemoryError``; nothing is left in a broken state.
* Nothing is freed during interpreter shutdown: process exit releases device memory, and calling
  the driver from a half-finalised interpreter is not safe.
* Strides are in bytes (NumPy's convention) everywhere except inside DLPack structs (elements).
* Only ``SUPPORTED_DTYPES`` cross this boundary; anything else raises ``TypeError``.
"""

from __future__ import annotations

import ctypes
import gc
import math
import sys
from collections.abc import Sequence

import numpy as np

from fuseray.backends.cuda import driver
from fuseray.backends.cuda.driver import ContextScope, CUDAError, check, cu
from fuseray.backends.cuda.streams import BaseStream, ExternalStream, as_stream, stream_wait

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

# dtype -> DLPack (type code, bits): kDLInt 0, kDLUInt 1, kDLFloat 2, kDLBool 6.
_DLPACK_CODES = {
    np.dtype(np.bool_): (6, 8),
    np.dtype(np.int8): (0, 8),
    np.dtype(np.int16): (0, 16),
    np.dtype(np.int32): (0, 32),
    np.dtype(np.int64): (0, 64),
    np.dtype(np.uint8): (1, 8),
    np.dtype(np.uint16): (1, 16),
    np.dtype(np.uint32): (1, 32),
    np.dtype(np.uint64): (1, 64),
    np.dtype(np.float16): (2, 16),
    np.dtype(np.float32): (2, 32),
    np.dtype(np.float64): (2, 64),
}
_DLPACK_DTYPES = {code: dtype for dtype, code in _DLPACK_CODES.items()}
SUPPORTED_DTYPES = tuple(_DLPACK_CODES)

_KDL_CUDA = 2
_KDL_CUDA_MANAGED = 13
_READ_ONLY = 1  # DLPACK_FLAG_BITMASK_READ_ONLY


class OutOfMemoryError(MemoryError):
    """A device allocation failed even after freeing cached and garbage memory."""

    def __init__(self, size: int, device_id: int) -> None:
        self.size = size
        self.device_id = device_id
        super().__init__(f"out of memory on CUDA device {device_id} allocating {size:,} bytes")


def _supported(dtype: object) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in _DLPACK_CODES:
        raise TypeError(f"fuseray's CUDA backend does not support dtype {dt} ({dt.str})")
    return dt


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
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


def _allocate(size: int, stream: BaseStream) -> int:
    device_id = stream.device_id
    with ContextScope(device_id):
        pool = _pool(device_id)
        status, ptr = cu.cuMemAllocAsync(size, stream.handle)
        if status == cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
            # Unreachable arrays in reference cycles still hold memory, frees queued on streams
            # complete only after a synchronisation, and the pool may hold free blocks too small
            # for this request: release all three, then try once more.
            gc.collect()
            check(cu.cuCtxSynchronize(), "cuCtxSynchronize")
            check(cu.cuMemPoolTrimTo(pool, 0), "cuMemPoolTrimTo")
            status, ptr = cu.cuMemAllocAsync(size, stream.handle)
            if status == cu.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
                raise OutOfMemoryError(size, device_id)
        if status:
            raise CUDAError(f"cuMemAllocAsync({size})", status)
    return int(ptr)


def _free(ptr: int, device_id: int, stream: BaseStream) -> None:
    with ContextScope(device_id):
        (status,) = cu.cuMemFreeAsync(ptr, stream.handle)
        if status:
            # The last-use stream no longer exists (a foreign stream its owner destroyed). Wait
            # for everything on the device instead, then free in legacy-stream order.
            check(cu.cuCtxSynchronize(), "cuCtxSynchronize")
            check(cu.cuMemFreeAsync(ptr, 0), "cuMemFreeAsync")


class DeviceMemory:
    """One stream-ordered device allocation of ``size`` bytes, owned by this object.

    ``stream`` is the last-use stream: allocation happens on it, and the free is enqueued on it
    when the object is garbage collected. Zero-byte allocations have ``ptr == 0``.
    """

    __slots__ = ("__weakref__", "device_id", "ptr", "size", "stream")

    def __init__(self, size: int, stream: BaseStream) -> None:
        self.ptr = 0
        self.size = size
        self.device_id = stream.device_id
        self.stream = stream
        if size:
            self.ptr = _allocate(size, stream)

    def __del__(self) -> None:
        if self.ptr and not sys.is_finalizing():
            _free(self.ptr, self.device_id, self.stream)

    def __repr__(self) -> str:
        return f"<DeviceMemory {self.size} bytes at {self.ptr:#x} on device {self.device_id}>"


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

    __slots__ = ("__weakref__", "dtype", "memory", "ptr", "readonly", "shape", "strides")

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
        self.shape = tuple(int(n) for n in shape)
        self.strides = (
            _c_strides(self.shape, self.dtype.itemsize)
            if strides is None
            else tuple(int(s) for s in strides)
        )
        if len(self.strides) != len(self.shape):
            raise ValueError(f"shape {self.shape} and strides {self.strides} differ in length")
        self.ptr = int(ptr)
        self.memory = memory
        self.readonly = bool(readonly)

    @property
    def device_id(self) -> int:
        return self.memory.device_id

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

    @property
    def is_c_contiguous(self) -> bool:
        if self.size == 0:
            return True
        expected = self.dtype.itemsize
        for extent, stride in zip(reversed(self.shape), reversed(self.strides), strict=True):
            if extent != 1 and stride != expected:
                return False
            expected *= extent
        return True

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
        return (_KDL_CUDA, self.device_id)

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
        return _export_capsule(self, versioned)

    def __repr__(self) -> str:
        return (
            f"<DeviceArray shape={self.shape} dtype={self.dtype} strides={self.strides} "
            f"device={self.device_id} ptr={self.ptr:#x}>"
        )


def empty(
    shape: Sequence[int] | int, dtype: object, stream: object = None, device: int | None = None
) -> DeviceArray:
    """Uninitialised C-contiguous array allocated on ``stream`` (``cupy.empty``).

    ``stream`` is anything ``as_stream`` accepts (default: the current stream of ``device``).
    """
    dt = _supported(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if any(n < 0 for n in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    stream = as_stream(stream, device)
    memory = DeviceMemory(math.prod(shape) * dt.itemsize, stream)
    return DeviceArray(memory.ptr, shape, None, dt, memory)


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


# ----------------------------------------------------------------------------- DLPack structs


class _DLDevice(ctypes.Structure):
    _fields_ = (("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32))


class _DLDataType(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16))


class _DLTensor(ctypes.Structure):
    _fields_ = (
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    )


# Both managed-tensor deleters take the struct's address; one C signature serves both.
_Deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _DLManagedTensor(ctypes.Structure):
    _fields_ = (
        ("dl_tensor", _DLTensor),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
    )


class _DLPackVersion(ctypes.Structure):
    _fields_ = (("major", ctypes.c_uint32), ("minor", ctypes.c_uint32))


class _DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = (
        ("version", _DLPackVersion),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
        ("flags", ctypes.c_uint64),
        ("dl_tensor", _DLTensor),
    )


_LEGACY = b"dltensor"
_LEGACY_USED = b"used_dltensor"
_VERSIONED = b"dltensor_versioned"
_VERSIONED_USED = b"used_dltensor_versioned"

# Private prototypes over the Python C API: setting argtypes on ctypes.pythonapi's shared function
# objects would change them for every other user in the process. PYFUNCTYPE keeps the GIL held.
_api = ctypes.pythonapi
_capsule_new = ctypes.PYFUNCTYPE(
    ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p
)(("PyCapsule_New", _api))
_capsule_is_valid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_IsValid", _api)
)
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", _api)
)
_capsule_set_name = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_SetName", _api)
)

# Exported tensors by struct address -> everything that must stay alive until the deleter runs
# (ctypes structs, shape and stride arrays, the DeviceArray and through it the memory).
_exports: dict[int, tuple] = {}


def _drop_export(address: int, _exports: dict = _exports) -> None:
    # The dict is bound as a default: consumers may release tensors while modules are torn down.
    _exports.pop(address, None)


_release_export = _Deleter(_drop_export)  # the deleter every exported tensor carries


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _capsule_destructor(
    capsule: int,
    _is_valid=_capsule_is_valid,
    _pointer=_capsule_pointer,
    _drop=_drop_export,
) -> None:
    # A consumed capsule was renamed "used_*" and its consumer calls the deleter; only a capsule
    # that was never consumed still has its original name and must release the export here.
    for name in (_LEGACY, _VERSIONED):
        if _is_valid(capsule, name):
            _drop(_pointer(capsule, name))


def _export_capsule(array: DeviceArray, versioned: bool) -> object:
    itemsize = array.dtype.itemsize
    if any(s % itemsize for s in array.strides):
        raise BufferError(f"strides {array.strides} are not multiples of the item size")
    ndim = array.ndim
    shape = (ctypes.c_int64 * max(ndim, 1))(*array.shape)
    strides = (ctypes.c_int64 * max(ndim, 1))(*(s // itemsize for s in array.strides))
    code, bits = _DLPACK_CODES[array.dtype]
    if versioned:
        managed = _DLManagedTensorVersioned()
        managed.version = _DLPackVersion(1, 0)
        managed.flags = _READ_ONLY if array.readonly else 0
        name = _VERSIONED
    else:
        managed = _DLManagedTensor()
        name = _LEGACY
    tensor = managed.dl_tensor
    tensor.data = array.ptr if array.size else None
    tensor.device = _DLDevice(_KDL_CUDA, array.device_id)
    tensor.ndim = ndim
    tensor.dtype = _DLDataType(code, bits, 1)
    tensor.shape = shape
    tensor.strides = strides
    tensor.byte_offset = 0
    managed.deleter = ctypes.cast(_release_export, ctypes.c_void_p).value
    address = ctypes.addressof(managed)
    _exports[address] = (managed, shape, strides, array)
    destructor = ctypes.cast(_capsule_destructor, ctypes.c_void_p).value
    return _capsule_new(address, name, destructor)


class _ImportedTensor:
    """Owns a consumed DLPack managed tensor and calls its producer's deleter when collected."""

    __slots__ = ("_address", "_deleter")

    def __init__(self, address: int, deleter: int | None) -> None:
        self._address = address
        self._deleter = _Deleter(deleter) if deleter else None

    def __del__(self) -> None:
        # The deleter runs without the GIL (CFUNCTYPE), as DLPack allows; producers take it if
        # they need it. Skipped at shutdown: the producer's library may already be gone.
        if self._deleter is not None and not sys.is_finalizing():
            self._deleter(self._address)


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


def _pointer_device(ptr: int) -> int:
    attr = cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
    return int(check(cu.cuPointerGetAttribute(attr, ptr), "cuPointerGetAttribute"))


def _from_cai(obj: object, cai: dict, stream: object) -> DeviceArray:
    if cai.get("mask") is not None:
        raise TypeError("masked __cuda_array_interface__ arrays are not supported")
    dtype = np.dtype(cai["typestr"])
    if not dtype.isnative:
        raise TypeError(f"non-native byte order {dtype.str} is not supported")
    ptr, readonly = cai["data"]
    device_id = _pointer_device(ptr) if ptr else driver.current_device()
    consumer = as_stream(stream, device_id)
    producer = cai.get("stream") if cai.get("version", 0) >= 3 else None
    if producer is not None:
        stream_wait(consumer, ExternalStream(producer, device_id))
    memory = ForeignMemory(obj, ptr, device_id, consumer)
    return DeviceArray(ptr, cai["shape"], cai.get("strides"), dtype, memory, readonly)


def _from_dlpack(obj: object, stream: object) -> DeviceArray:
    device_type, device_id = obj.__dlpack_device__()
    if int(device_type) not in (_KDL_CUDA, _KDL_CUDA_MANAGED):
        raise TypeError(f"{type(obj).__name__} lives on DLPack device type {device_type}, not CUDA")
    device_id = int(device_id)
    consumer = as_stream(stream, device_id)
    try:
        capsule = obj.__dlpack__(stream=consumer.interop_id, max_version=(1, 0))
    except TypeError:  # a producer from before DLPack 1.0 takes no max_version
        capsule = obj.__dlpack__(stream=consumer.interop_id)
    # Rename first: once the name says "used", the producer's capsule destructor no longer
    # frees the tensor, and our owner object must (also on the error paths below).
    if _capsule_is_valid(id(capsule), _VERSIONED):
        address = _capsule_pointer(id(capsule), _VERSIONED)
        _capsule_set_name(capsule, _VERSIONED_USED)
        managed = _DLManagedTensorVersioned.from_address(address)
        owner = _ImportedTensor(address, managed.deleter)
        if managed.version.major != 1:
            raise BufferError(f"unsupported DLPack major version {managed.version.major}")
        readonly = bool(managed.flags & _READ_ONLY)
    elif _capsule_is_valid(id(capsule), _LEGACY):
        address = _capsule_pointer(id(capsule), _LEGACY)
        _capsule_set_name(capsule, _LEGACY_USED)
        managed = _DLManagedTensor.from_address(address)
        owner = _ImportedTensor(address, managed.deleter)
        readonly = False
    else:
        raise BufferError("__dlpack__ did not return an unconsumed DLPack capsule")
    tensor = managed.dl_tensor
    if tensor.dtype.lanes != 1 or (tensor.dtype.code, tensor.dtype.bits) not in _DLPACK_DTYPES:
        dt = tensor.dtype
        raise TypeError(
            f"unsupported DLPack dtype (code={dt.code}, bits={dt.bits}, lanes={dt.lanes})"
        )
    dtype = _DLPACK_DTYPES[(tensor.dtype.code, tensor.dtype.bits)]
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    strides = (
        tuple(tensor.strides[i] * dtype.itemsize for i in range(tensor.ndim))
        if tensor.strides
        else None
    )
    ptr = (tensor.data or 0) + tensor.byte_offset
    memory = ForeignMemory(owner, ptr, device_id, consumer)
    return DeviceArray(ptr, shape, strides, dtype, memory, readonly)

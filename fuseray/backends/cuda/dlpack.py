"""DLPack in pure ctypes: the C structs, producing capsules and consuming them.

Stage: backend, used by ``memory.py`` only (``DeviceArray.__dlpack__`` and ``from_foreign``), which
also does the stream synchronisation the protocol asks for; this module only moves structs.

Invariants:

* Layouts follow ``dlpack.h`` (DLPack 1.1): the legacy ``DLManagedTensor`` in capsules named
  ``"dltensor"`` and ``DLManagedTensorVersioned`` in ``"dltensor_versioned"``. Strides inside the
  structs count elements; the functions here take and return byte strides.
* An exported tensor keeps its owner alive in ``_exports`` until the consumer calls the deleter,
  or, for a capsule nobody consumed, until the capsule is destroyed.
* A consumed capsule is renamed ``"used_*"`` before anything else, so that exactly one party (the
  ``ImportedTensor`` owner) calls the producer's deleter, on error paths too.
* The CPython capsule functions are called through private ctypes prototypes: setting argtypes on
  ``ctypes.pythonapi``'s shared function objects would change them for everyone in the process.
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np

__all__ = ["DTYPE_CODES", "KDL_CUDA", "KDL_CUDA_MANAGED", "ImportedTensor", "consume", "export"]

# dtype -> DLPack (type code, bits): kDLInt 0, kDLUInt 1, kDLFloat 2, kDLBool 6.
DTYPE_CODES = {
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
_CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}

KDL_CUDA = 2
KDL_CUDA_MANAGED = 13
_READ_ONLY = 1  # DLPACK_FLAG_BITMASK_READ_ONLY


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

# PYFUNCTYPE keeps the GIL held across these calls, as the C API requires.
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
# (ctypes structs, shape and stride arrays, and the owner passed to ``export``).
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


def export(
    ptr: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    dtype: np.dtype,
    device_id: int,
    readonly: bool,
    owner: object,
    versioned: bool,
) -> object:
    """A new, unconsumed DLPack capsule for CUDA memory at ``ptr``; ``owner`` is kept alive
    until the consumer releases it. ``strides`` are in bytes."""
    itemsize = dtype.itemsize
    if any(s % itemsize for s in strides):
        raise BufferError(f"strides {strides} are not multiples of the item size")
    ndim = len(shape)
    c_shape = (ctypes.c_int64 * max(ndim, 1))(*shape)
    c_strides = (ctypes.c_int64 * max(ndim, 1))(*(s // itemsize for s in strides))
    code, bits = DTYPE_CODES[dtype]
    if versioned:
        managed = _DLManagedTensorVersioned()
        managed.version = _DLPackVersion(1, 0)
        managed.flags = _READ_ONLY if readonly else 0
        name = _VERSIONED
    else:
        managed = _DLManagedTensor()
        name = _LEGACY
    tensor = managed.dl_tensor
    tensor.data = ptr if all(shape) else None  # DLPack wants NULL for empty tensors
    tensor.device = _DLDevice(KDL_CUDA, device_id)
    tensor.ndim = ndim
    tensor.dtype = _DLDataType(code, bits, 1)
    tensor.shape = c_shape
    tensor.strides = c_strides
    tensor.byte_offset = 0
    managed.deleter = ctypes.cast(_release_export, ctypes.c_void_p).value
    address = ctypes.addressof(managed)
    _exports[address] = (managed, c_shape, c_strides, owner)
    destructor = ctypes.cast(_capsule_destructor, ctypes.c_void_p).value
    return _capsule_new(address, name, destructor)


class ImportedTensor:
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


def consume(capsule: object) -> tuple[ImportedTensor, int, tuple, tuple | None, np.dtype, bool]:
    """Take ownership of a producer's capsule.

    Returns ``(owner, ptr, shape, byte strides or None, dtype, readonly)``; the memory stays valid
    while ``owner`` lives. Raises ``BufferError`` for a consumed or foreign capsule or an unknown
    DLPack major version, ``TypeError`` for a dtype fuseray does not support.
    """
    if _capsule_is_valid(id(capsule), _VERSIONED):
        address = _capsule_pointer(id(capsule), _VERSIONED)
        _capsule_set_name(capsule, _VERSIONED_USED)
        managed = _DLManagedTensorVersioned.from_address(address)
        owner = ImportedTensor(address, managed.deleter)
        if managed.version.major != 1:
            raise BufferError(f"unsupported DLPack major version {managed.version.major}")
        readonly = bool(managed.flags & _READ_ONLY)
    elif _capsule_is_valid(id(capsule), _LEGACY):
        address = _capsule_pointer(id(capsule), _LEGACY)
        _capsule_set_name(capsule, _LEGACY_USED)
        managed = _DLManagedTensor.from_address(address)
        owner = ImportedTensor(address, managed.deleter)
        readonly = False
    else:
        raise BufferError("__dlpack__ did not return an unconsumed DLPack capsule")
    tensor = managed.dl_tensor
    dt = tensor.dtype
    dtype = _CODE_DTYPES.get((dt.code, dt.bits)) if dt.lanes == 1 else None
    if dtype is None:
        raise TypeError(
            f"unsupported DLPack dtype (code={dt.code}, bits={dt.bits}, lanes={dt.lanes})"
        )
    shape = tuple(tensor.shape[i] for i in range(tensor.ndim))
    strides = (
        tuple(tensor.strides[i] * dtype.itemsize for i in range(tensor.ndim))
        if tensor.strides
        else None
    )
    ptr = (tensor.data or 0) + tensor.byte_offset
    return owner, ptr, shape, strides, dtype, readonly

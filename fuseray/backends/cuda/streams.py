"""Current device and current stream, per thread, with CuPy's semantics.

Stage: backend, above ``driver.py``. Everything that enqueues GPU work (kernel launches, copies,
allocations) asks ``get_current_stream()`` unless it is handed a stream explicitly.

Invariants:

* The current device is the device of the thread's current CUDA context, as ``cudaGetDevice``
  defines it (0 when the thread has none). ``Device.use()`` is ``cudaSetDevice``; ``with
  Device(i):`` restores the previous context on exit. fuseray, PyTorch and CuPy therefore always
  agree on which device is current.
* The current stream is kept per thread *and* per device. The default is the device's legacy
  default stream (handle 0), as in CuPy and PyTorch: it orders fuseray's work after other
  libraries' default-stream work without any explicit synchronisation. Choose a ``Stream`` with
  ``with stream:`` to overlap work.
* A ``Stream`` owns its CUDA stream and destroys it when garbage collected; ``ExternalStream`` and
  the default streams own nothing.
* Interop stream integers follow ``__cuda_array_interface__`` v3 and DLPack: 1 is the legacy
  default stream, 2 the per-thread default stream, anything larger a ``CUstream`` address; 0 is
  ambiguous there and is never emitted.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from fuseray.backends.cuda import driver
from fuseray.backends.cuda.driver import ContextScope, check, cu

__all__ = [
    "Device",
    "ExternalStream",
    "Stream",
    "as_stream",
    "default_stream",
    "get_current_device",
    "get_current_stream",
    "on_collect",
    "on_synchronize",
    "stream_wait",
]

LEGACY_STREAM = 1  # CU_STREAM_LEGACY, the interop spelling of the legacy default stream


class _ThreadState(threading.local):
    """Each thread's current streams and ``with`` stacks, made empty on the thread's first
    access (no AttributeError to catch: every launch reads ``streams``)."""

    def __init__(self) -> None:
        self.streams: dict[int, BaseStream] = {}  # device id -> stream chosen on this thread
        self.stream_stack: list = []  # what each open ``with stream:`` replaced
        self.contexts: list = []  # what each open ``with Device(i):`` replaced


_local = _ThreadState()

# Called with a stream object just before it is collected (an owned stream is destroyed right
# after): memory.py returns the blocks it keeps filed under that stream, in that stream's order.
_collect_hooks: list[Callable[[BaseStream], None]] = []


def on_collect(hook: Callable[[BaseStream], None]) -> None:
    """Run ``hook(stream)`` whenever a stream object is about to be garbage collected."""
    _collect_hooks.append(hook)


# Called as hook(device_id, stream) after a stream's synchronize, hook(device_id, None) after a
# device's: launch_index.py raises the IndexError a kernel recorded there (errors that kernels
# report through device memory surface at synchronisation points, as CUDA's own do).
_sync_hooks: list[Callable[[int, BaseStream | None], None]] = []


def on_synchronize(hook: Callable[[int, BaseStream | None], None]) -> None:
    """Run ``hook(device_id, stream)`` after every ``Stream.synchronize`` (``stream`` None after
    a ``Device.synchronize``)."""
    _sync_hooks.append(hook)


def _device_id(device: int | Device | None) -> int:
    # Hot path: launch code passes the int id of its arrays' device.
    return device if type(device) is int else Device(device).id


def get_current_device() -> Device:
    """The calling thread's current device (``cupy.cuda.Device()``)."""
    return Device(driver.current_device())


class Device:
    """A CUDA device; ``with Device(i):`` makes it current for the block (``cupy.cuda.Device``).

    ``Device()`` is the current device. Compares equal to another ``Device`` with the same id.
    """

    __slots__ = ("id",)

    def __init__(self, device: int | Device | None = None) -> None:
        if device is None:
            self.id = driver.current_device()
        else:
            self.id = int(device.id if isinstance(device, Device) else device)

    def use(self) -> None:
        """Make this device current for the calling thread (``cudaSetDevice``)."""
        driver.set_current_device(self.id)

    def __enter__(self) -> Device:
        # Save the raw context, not a device id: the thread may have had none, or a context that
        # is not a primary one, and either must be restored exactly.
        previous = driver.current_context()
        self.use()
        _local.contexts.append(previous)
        return self

    def __exit__(self, *exc: object) -> None:
        previous = _local.contexts.pop()
        check(cu.cuCtxSetCurrent(previous), "cuCtxSetCurrent")

    def synchronize(self) -> None:
        """Wait for all work on this device (``cudaDeviceSynchronize``)."""
        with ContextScope(self.id):
            check(cu.cuCtxSynchronize(), "cuCtxSynchronize")
        for hook in _sync_hooks:
            hook(self.id, None)

    @property
    def props(self) -> driver.DeviceProps:
        return driver.device_props(self.id)

    @property
    def compute_capability(self) -> tuple[int, int]:
        """``(major, minor)``, e.g. ``(9, 0)`` for an H100."""
        return self.props.compute_capability

    @property
    def arch(self) -> str:
        """NVRTC target for this device, e.g. ``"sm_90"``."""
        return self.props.arch

    def __index__(self) -> int:
        return self.id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("cuda-device", self.id))

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"


class BaseStream:
    """What every stream kind shares: a handle, its device, and current-stream switching.

    ``handle`` is the ``CUstream`` to pass to driver calls; ``ptr`` is the same as an int.
    """

    __slots__ = ("__weakref__", "device_id", "handle", "ptr")

    def __init__(self, handle_int: int, device_id: int) -> None:
        self.ptr = handle_int
        self.handle = cu.CUstream(handle_int)
        self.device_id = device_id

    def __del__(self) -> None:
        if sys.is_finalizing() or not hasattr(self, "ptr"):
            return
        for hook in _collect_hooks:
            hook(self)

    @property
    def interop_id(self) -> int:
        """This stream as a CAI/DLPack integer (legacy default stream = 1)."""
        return LEGACY_STREAM if self.ptr == 0 else self.ptr

    def use(self) -> BaseStream:
        """Make this the current stream of its device for the calling thread."""
        _local.streams[self.device_id] = self
        return self

    def __enter__(self) -> BaseStream:
        device = Device(self.device_id)
        device.__enter__()
        streams = _local.streams
        _local.stream_stack.append(streams.get(self.device_id))
        streams[self.device_id] = self
        return self

    def __exit__(self, *exc: object) -> None:
        previous = _local.stream_stack.pop()
        streams = _local.streams
        if previous is None:
            streams.pop(self.device_id, None)
        else:
            streams[self.device_id] = previous
        Device(self.device_id).__exit__()

    def synchronize(self) -> None:
        """Block until all work queued on this stream has finished."""
        with ContextScope(self.device_id):
            check(cu.cuStreamSynchronize(self.handle), "cuStreamSynchronize")
        for hook in _sync_hooks:
            hook(self.device_id, self)

    def __cuda_stream__(self) -> tuple[int, int]:
        """CUDA stream protocol (version 0, handle as int)."""
        return (0, self.ptr)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BaseStream)
            and other.ptr == self.ptr
            and other.device_id == self.device_id
        )

    def __hash__(self) -> int:
        return hash((self.ptr, self.device_id))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ptr:#x} on device {self.device_id}>"


class Stream(BaseStream):
    """A new CUDA stream on the current (or given) device (``cupy.cuda.Stream``).

    ``non_blocking=True`` creates a stream that does not synchronise with the legacy default
    stream. The stream is destroyed when this object is garbage collected; queued work still runs.
    """

    __slots__ = ()

    def __init__(self, non_blocking: bool = False, device: int | Device | None = None) -> None:
        device_id = _device_id(device)
        flags = cu.CUstream_flags.CU_STREAM_NON_BLOCKING if non_blocking else 0
        with ContextScope(device_id):
            handle = check(cu.cuStreamCreate(flags), "cuStreamCreate")
        super().__init__(int(handle), device_id)

    def __del__(self) -> None:
        # At interpreter shutdown the process exit releases every CUDA resource; calling into the
        # driver from a half-torn-down interpreter is what must not happen.
        if sys.is_finalizing() or not hasattr(self, "ptr"):
            return
        super().__del__()  # hooks first: they may still enqueue work on this stream
        with ContextScope(self.device_id):
            check(cu.cuStreamDestroy(self.handle), "cuStreamDestroy")


class ExternalStream(BaseStream):
    """A stream created elsewhere (PyTorch, CuPy, JAX, C code), by handle (``cupy.cuda.
    ExternalStream``). Owns nothing. ``owner``, when given, is kept alive as long as this object;
    otherwise the creator must keep the stream alive while fuseray arrays last used on it live:
    their memory is freed in that stream's order, and a destroyed handle crashes the driver.

    ``device`` defaults to the current device. Handles 0 and 1 are the legacy default stream, 2 the
    per-thread default stream.
    """

    __slots__ = ("owner",)

    def __init__(self, ptr: int, device: int | Device | None = None, owner: object = None) -> None:
        ptr = int(ptr)
        super().__init__(0 if ptr == LEGACY_STREAM else ptr, _device_id(device))
        self.owner = owner


_default_streams: dict[int, BaseStream] = {}


def default_stream(device: int | Device | None = None) -> BaseStream:
    """The legacy default stream (handle 0) of ``device`` (default: the current device)."""
    device_id = _device_id(device)
    stream = _default_streams.get(device_id)
    if stream is None:
        stream = _default_streams.setdefault(device_id, ExternalStream(0, device_id))
    return stream


def get_current_stream(device: int | Device | None = None) -> BaseStream:
    """The calling thread's current stream on ``device`` (``cupy.cuda.get_current_stream``).

    Defaults to the device's legacy default stream.
    """
    # every launch asks: the common cases (an int id, no stream chosen) are inlined
    device_id = device if type(device) is int else Device(device).id
    stream = _local.streams.get(device_id)
    if stream is None:
        stream = _default_streams.get(device_id) or default_stream(device_id)
    return stream


def as_stream(obj: object = None, device: int | Device | None = None) -> BaseStream:
    """Coerce ``obj`` to a fuseray stream.

    Accepts None (the current stream), fuseray streams, anything implementing ``__cuda_stream__``
    (PyTorch and CuPy streams, cuda.core), which the result keeps alive, or a raw ``CUstream``
    handle as an int, which the caller must keep alive (see ``ExternalStream``). ``device`` is
    where foreign handles live (default: the current device).
    """
    if obj is None:
        return get_current_stream(device)
    if isinstance(obj, BaseStream):
        return obj
    protocol = getattr(obj, "__cuda_stream__", None)
    if protocol is not None:
        version, handle = protocol()
        if version != 0:
            raise TypeError(f"unsupported __cuda_stream__ version {version} from {obj!r}")
        return ExternalStream(handle, device, owner=obj)
    if isinstance(obj, int) and not isinstance(obj, bool):
        return ExternalStream(obj, device)
    if isinstance(obj, cu.CUstream):
        return ExternalStream(int(obj), device)
    raise TypeError(f"cannot use {type(obj).__name__} as a CUDA stream")


def stream_wait(waiter: BaseStream, producer: BaseStream) -> None:
    """Order all later work on ``waiter`` after the work queued on ``producer`` so far.

    A no-op when they are the same stream. Uses a timing-free event, released immediately: the
    wait captures the event's state when it is enqueued.
    """
    if waiter.ptr == producer.ptr and waiter.device_id == producer.device_id:
        return
    with ContextScope(producer.device_id):
        flags = cu.CUevent_flags.CU_EVENT_DISABLE_TIMING
        event = check(cu.cuEventCreate(flags), "cuEventCreate")
        try:
            check(cu.cuEventRecord(event, producer.handle), "cuEventRecord")
            with ContextScope(waiter.device_id):
                check(cu.cuStreamWaitEvent(waiter.handle, event, 0), "cuStreamWaitEvent")
        finally:
            check(cu.cuEventDestroy(event), "cuEventDestroy")

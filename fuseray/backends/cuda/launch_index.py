"""Launch support for reads and writes at computed positions: the bounds record, and the
launches of a scatter kernel.

Stage: backend (CUDA), beside ``launch.py`` (which calls in here only for kernels with takes or
scatters: other kernels pay nothing).

Bounds. A bad index cannot raise inside a kernel, so kernels that index with computed positions
take a pointer to their device's *bounds record* (``fr_bounds`` in ``fuseray_index.cuh``: the
first bad index and its axis size), read nothing / write nothing for it, and go on. The host
reads the record back at the next synchronisation point (``check``: after ``to_numpy``'s copy,
``fr.synchronize``, ``Stream.synchronize``, ``Device.synchronize``) and raises NumPy's
``IndexError``, after zeroing the record so that the process stays usable (the error is
reported once). Until then the results of the failed computation are unspecified (0 where a bad
index was read), as for any asynchronous CUDA error.

- The record is allocated (zeroed) once per device, on first use, and never freed.
- Only streams that launched such a kernel since their last check are *pending*; a check with
  nothing pending is a dictionary lookup. A record is read on the stream just synchronised, so
  the kernels of that stream have all finished; a kernel still running on another stream may
  report later, at a later check (a record it is still writing is left for then).
- With several bad indices, the one reported is the first recorded, not necessarily NumPy's
  (the first in C order).

Scatter. ``run_scatter`` zeroes a winner array (one slot per position of axis 0, scratch from the
stream-ordered allocator, freed in stream order after the launches) and launches the kernel's two
passes (``codegen_index.py``) on the stream.
"""

from __future__ import annotations

import threading

import numpy as np

from . import driver, streams
from .codegen_index import winner_bytes
from .driver import ContextScope, check, cu
from .memory import DeviceArray, DeviceMemory

_RECORD_BYTES = 24  # fr_bounds: state, index, size (8 bytes each)
_records: dict[int, DeviceArray] = {}  # device id -> its bounds record
_pending: dict[int, set[int]] = {}  # device id -> handles of streams to check
_lock = threading.Lock()


def bounds_record(device_id: int, stream) -> int:
    """The address of ``device_id``'s bounds record for a launch on ``stream`` (which becomes
    pending: its next synchronisation reads the record)."""
    rec = _records.get(device_id)
    if rec is None:
        rec = _new_record(device_id)
    _pending[device_id].add(stream.ptr)
    return rec.ptr


def _new_record(device_id: int) -> DeviceArray:
    with _lock:
        rec = _records.get(device_id)
        if rec is not None:
            return rec
        # on the legacy stream, waited for: every stream may use the record from now on, and the
        # record never holds a user stream alive
        home = streams.default_stream(device_id)
        mem = DeviceMemory(_RECORD_BYTES, home)
        rec = DeviceArray._wrap(mem.ptr, (3,), (8,), np.dtype(np.int64), mem)
        with ContextScope(device_id):
            check(cu.cuMemsetD8Async(rec.ptr, 0, _RECORD_BYTES, home.handle), "cuMemsetD8Async")
            check(cu.cuStreamSynchronize(home.handle), "cuStreamSynchronize")
        if not _pending:
            streams.on_synchronize(check_bounds)
        _pending[device_id] = set()
        _records[device_id] = rec
        return rec


def check_bounds(device_id: int, stream=None) -> None:
    """Raise the IndexError a kernel recorded on ``device_id``, if any, once.

    Call right after ``stream`` was synchronised (None: the whole device was).
    """
    pending = _pending.get(device_id)
    if not pending:
        return
    home = stream if stream is not None else streams.default_stream(device_id)
    rec = _records[device_id]
    host = np.zeros(3, np.int64)
    with ContextScope(device_id):
        check(
            cu.cuMemcpyDtoHAsync(host.ctypes.data, rec.ptr, _RECORD_BYTES, home.handle),
            "cuMemcpyDtoHAsync",
        )
        check(cu.cuStreamSynchronize(home.handle), "cuStreamSynchronize")
    if stream is None:
        pending.clear()
    else:
        pending.discard(stream.ptr)
    if host[0] != 2:
        return  # clear, or being written by a kernel of another stream: reported later
    with ContextScope(device_id):
        check(cu.cuMemsetD8Async(rec.ptr, 0, _RECORD_BYTES, home.handle), "cuMemsetD8Async")
        check(cu.cuStreamSynchronize(home.handle), "cuStreamSynchronize")
    index, size = int(host[1]), int(host[2])
    raise IndexError(f"index {index} is out of bounds for axis 0 with size {size}")


def run_scatter(program, launch, head: list, tail: list, positions: int, stream) -> None:
    """Launch a scatter kernel's two passes on ``stream``.

    ``head``: the pointer arguments up to the bounds record; ``tail``: every argument after the
    pass number; ``positions``: the extent of axis 0 (one winner slot each).
    """
    gen = program.generated
    winners = DeviceMemory(positions * winner_bytes(gen.schedule), stream)
    if winners.ptr:
        with ContextScope(stream.device_id):
            check(
                cu.cuMemsetD8Async(winners.ptr, 0, winners.size, stream.handle), "cuMemsetD8Async"
            )
    for phase in (0, 1):
        args = [*head, winners.ptr, phase, *tail]
        driver.launch(
            program.function, launch.grid, launch.block, args, program.pack, 0, stream.handle
        )
    del winners  # its stream-ordered free follows both passes on the same stream

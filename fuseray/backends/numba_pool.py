"""Output memory for the numba backend: large blocks are recycled instead of faulted in anew.

Stage: backends (numba), used when a kernel allocates its outputs. A fresh large ``np.empty``
is a new ``mmap`` (glibc serves blocks above 32 MiB that way), so the kernel's first touch of
every page is a page fault plus zeroing by the kernel: on the 2-core VM of
``shared/BENCHMARKS.md`` that costs more than the 10M-element triad itself. A program that
computes in a loop frees an output of the same size each iteration; this pool hands that memory
to the next output instead (CuPy's memory pool does the same for device memory).

Invariants:
- a block returns to the pool only when no array can reach it: each output is made from a
  *lease* object through ``__array_interface__``, so the output and every view of it (NumPy
  collapses a view's base to the first base that is not an array) keep the lease alive, and
  the block is released by the lease's finalizer;
- the pool holds at most ``MAX_POOLED`` bytes of free blocks; blocks below ``MIN_BYTES`` are
  plain ``np.empty`` (malloc recycles those already);
- thread-safe: one lock around the free lists.
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np

MIN_BYTES = 1 << 20
MAX_POOLED = 1 << 30

_lock = threading.Lock()
_free: dict[int, list[np.ndarray]] = {}
_pooled = [0]


class _Lease:
    """Owner of one pooled block while arrays use it (their ``base``)."""

    __slots__ = ("__array_interface__", "__weakref__")

    def __init__(self, block: np.ndarray, shape: tuple[int, ...], dtype: np.dtype):
        self.__array_interface__ = {
            "shape": shape, "typestr": dtype.str, "data": (block.ctypes.data, False),
            "version": 3,
        }


def _release(block: np.ndarray) -> None:
    with _lock:
        if _pooled[0] + block.nbytes <= MAX_POOLED:
            _free.setdefault(block.nbytes, []).append(block)
            _pooled[0] += block.nbytes


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty(shape, dtype)``, C-contiguous, from recycled memory when there is some."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        blocks = _free.get(nbytes)
        block = blocks.pop() if blocks else None
        if block is not None:
            _pooled[0] -= nbytes
    if block is None:
        block = np.empty(nbytes, np.uint8)
    lease = _Lease(block, tuple(shape), dtype)
    weakref.finalize(lease, _release, block)
    return np.asarray(lease)


def clear() -> None:
    """Drop every free block (their memory goes back to the system)."""
    with _lock:
        _free.clear()
        _pooled[0] = 0

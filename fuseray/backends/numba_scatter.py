"""Scatter kernels on numba: ``x[i[j], r...] = v[j, r...]`` into a copy of ``x``, last write wins.

Stage: backends (numba), called by ``numba.run_kernel`` for a kernel of kind ``scatter``
(``fusion.Planner.scatter_kernel``: one ``scatter`` node over stored operands). Its three
operands are movement chains over data, so they are taken as NumPy views (no copy), flattened to
2-D ``(rows, r)`` shapes (``r`` = the trailing axes merged) and passed, as flat memory plus
offsets and strides, to one fixed loop (``SOURCE``) compiled and cached on disk like the
generated loops. So the loop specialises only on dtypes, never on shapes.

The loop (invariants):
- every index is checked before anything is written; the first one outside ``[-n, n)`` (in the
  order NumPy checks them) is returned and the launcher raises NumPy's ``IndexError``, so an
  out-of-bounds index never touches memory outside the arrays;
- the copy of ``x`` runs in parallel over (row, chunk of r) tasks;
- the writes keep the order of ``j``: tasks are chunks of ``r``, each of which walks every ``j``
  in order, so a position written twice takes the later value (NumPy's order) and no two tasks
  write the same element. A 1-D scatter (``r`` = 1) is one sequential task.
"""

from __future__ import annotations

import math

import numpy as np

from ..fusion import Kernel
from . import numba_pool
from .numba_layout import F16, flat_of

CHUNK = 4096  # elements of r per task: whole cache lines, and few enough tasks for small r

SOURCE = '''\
# fuseray.backends.numba_scatter: x[i[j], r] = v[j, r] into a copy of x (last write wins)
import numpy as np
from numba import prange


def fr_scatter(out, n, nr, x, xo, xs0, xs1, ix, io, is0, nj, v, vo, vs0, vs1, ch):
    for j in range(nj):
        k = ix[np.uint64(io + j * is0)]
        if k < -n or k >= n:
            return j
    nc = (nr + ch - 1) // ch
    for t in prange(n * nc):
        row = t // nc
        lo = (t - row * nc) * ch
        hi = min(nr, lo + ch)
        for c in range(lo, hi):
            out[np.uint64(row * nr + c)] = x[np.uint64(xo + row * xs0 + c * xs1)]
    for t in prange(nc):
        lo = t * ch
        hi = min(nr, lo + ch)
        for j in range(nj):
            k = ix[np.uint64(io + j * is0)]
            k = k + n if k < 0 else k
            for c in range(lo, hi):
                out[np.uint64(k * nr + c)] = v[np.uint64(vo + j * vs0 + c * vs1)]
    return -1
'''

_fn: list = []  # the dispatcher, once loaded


def _loop():
    if not _fn:
        from . import numba_cache

        fn, _ = numba_cache.load("fr_scatter", SOURCE)
        _fn.append(fn)
    return _fn[0]


def _value(node, env: dict) -> np.ndarray:
    """The NumPy value of an operand: a view of its data through its movement chain."""
    from .. import reference
    from ..views import movement_chain

    base, chain = movement_chain(node)
    if base in env:
        value = env[base]
    elif base.op == "const":
        value = np.asarray(base.arg[0], base.dtype)
    else:
        value = base.value
    value = np.asarray(value)
    for m in chain:
        value = reference.evaluate(m, [value])
    return value


def _flat2(value: np.ndarray, rows: int, nr: int) -> tuple[np.ndarray, int, int, int]:
    """(flat memory, offset, row stride, r stride) of ``value`` seen as ``(rows, nr)``."""
    two = value.reshape(rows, nr)  # a view except for layouts NumPy must copy to merge r
    flat, offset, strides = flat_of(two)
    return flat, offset, strides[0], strides[1]


def run(kernel: Kernel, env: dict, launch) -> None:
    """Compute the scatter of ``kernel`` into a new array ``env[node]``."""
    node = kernel.stores[0].value  # nodes may also hold the old array: an earlier scatter
    old, idx, values = (_value(s, env) for s in node.src)
    n = node.shape[0]
    nr = math.prod(node.shape[1:])
    nj = idx.shape[0]
    out = numba_pool.empty(node.shape, node.dtype)
    flat_out = out.reshape(-1)
    if out.dtype == F16:
        flat_out = flat_out.view(np.uint16)
    x, xo, xs0, xs1 = _flat2(np.asarray(old, node.dtype), n, nr)
    ix, io, (is0,) = flat_of(np.asarray(idx, np.int64))
    v, vo, vs0, vs1 = _flat2(np.asarray(values, node.dtype), nj, nr)
    bad = launch(_loop(), (flat_out, n, nr, x, xo, xs0, xs1, ix, io, is0, nj, v, vo, vs0,
                           vs1, CHUNK), n * -(-nr // CHUNK))
    if bad >= 0:
        raise IndexError(f"index {idx[bad]} is out of bounds for axis 0 with size {n}")
    env[node] = out

"""Array creation and data movement: asarray, zeros, full, arange, ... and asnumpy.

Stage: front end. Constant fills (``zeros``, ``ones``, ``full``, ``*_like``) are lazy: a 0-d
constant broadcast to the shape, which fuses into its consumers and allocates nothing. Data from
NumPy (or lists) is copied once into a leaf on the current device; device arrays of other
libraries are taken without a copy (``runtime.place``).
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..array import _note_shape_read, leaf_node, ndarray, wrap
from ..graph import Node
from .elementwise import astype, const
from .shape import _shape_arg


def asarray(obj, dtype=None) -> ndarray:
    """``numpy.asarray`` / ``cupy.asarray``: a fuseray array on the current device."""
    if isinstance(obj, ndarray):
        return obj if dtype is None or obj.dtype == np.dtype(dtype) else astype(obj, dtype)
    from .. import runtime

    value = runtime.place(obj, None if dtype is None else dtypes.as_dtype(dtype))
    return wrap(leaf_node(value))


def array(obj, dtype=None, copy=True) -> ndarray:
    """``numpy.array``."""
    out = asarray(obj, dtype)
    return out.copy() if copy and out is obj else out


def asnumpy(a) -> np.ndarray:
    """``cupy.asnumpy``: the values as a NumPy array."""
    if isinstance(a, ndarray):
        return a.get()
    from .. import runtime

    return runtime.foreign_to_numpy(a)


def full(shape, fill_value, dtype=None) -> ndarray:
    """``numpy.full``."""
    shape = _shape_arg(shape)
    if any(d < 0 for d in shape):
        raise ValueError("negative dimensions are not allowed")
    if isinstance(fill_value, ndarray):
        value = fill_value
        if dtype is not None:
            value = astype(value, dtype)
        from .shape import broadcast_to

        return broadcast_to(value, shape).copy()
    dt = dtypes.as_dtype(np.asarray(fill_value).dtype if dtype is None else dtype)
    node = const(fill_value, dt)
    return wrap(Node.make("expand", (node,), shape) if shape else node)


def zeros(shape, dtype=float) -> ndarray:
    """``numpy.zeros``."""
    return full(shape, 0, dtype)


def ones(shape, dtype=float) -> ndarray:
    """``numpy.ones``."""
    return full(shape, 1, dtype)


def empty(shape, dtype=float) -> ndarray:
    """``numpy.empty``: fuseray fills with zeros (lazily, so it costs nothing)."""
    return full(shape, 0, dtype)


def _like(a, fill, dtype, shape):
    from .elementwise import as_node

    node = as_node(a)
    if shape is None:
        _note_shape_read()  # a traced graph that copies a shape is specialised on it
    dtype = node.dtype if dtype is None else dtype
    return full(node.shape if shape is None else shape, fill, dtype)


def full_like(a, fill_value, dtype=None, shape=None) -> ndarray:
    """``numpy.full_like``."""
    return _like(a, fill_value, dtype, shape)


def zeros_like(a, dtype=None, shape=None) -> ndarray:
    """``numpy.zeros_like``."""
    return _like(a, 0, dtype, shape)


def ones_like(a, dtype=None, shape=None) -> ndarray:
    """``numpy.ones_like``."""
    return _like(a, 1, dtype, shape)


def empty_like(a, dtype=None, shape=None) -> ndarray:
    """``numpy.empty_like`` (zero-filled)."""
    return _like(a, 0, dtype, shape)


def arange(start, stop=None, step=None, dtype=None) -> ndarray:
    """``numpy.arange``."""
    if stop is None:
        start, stop = 0, start
    return asarray(np.arange(start, stop, 1 if step is None else step, dtype=dtype))


def linspace(start, stop, num=50, endpoint=True, dtype=None) -> ndarray:
    """``numpy.linspace``."""
    return asarray(np.linspace(start, stop, num, endpoint=endpoint, dtype=dtype))


def eye(N, M=None, k=0, dtype=float) -> ndarray:
    """``numpy.eye``."""
    return asarray(np.eye(N, M, k, dtype=dtype))


def identity(n, dtype=float) -> ndarray:
    """``numpy.identity``."""
    return eye(n, dtype=dtype)

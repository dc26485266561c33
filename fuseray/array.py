"""``fr.ndarray``: the user's handle on a lazy or materialised array.

Stage: front end. An ndarray holds one graph node. Operators, methods and NumPy's protocols
(``__array_ufunc__``, ``__array_function__``, ``__array__``, ``__array_namespace__``) build new
nodes through ``fuseray.api``; nothing runs until ``compute()`` (or a conversion that needs the
values: ``np.asarray``, ``print``, ``bool``) hands the node to ``fuseray.runtime``.

The handle is the only mutable thing in the front end: after ``compute()`` it points at a leaf
holding the result, so later expressions start from the data instead of the old graph.
"""

from __future__ import annotations

import threading

import numpy as np

from . import dtypes
from .graph import Buffer, Node

# Lazy graphs deeper than this are computed as soon as they are built (outside @jit tracing), so a
# Python loop that updates arrays forever runs in bounded memory and linear time.
FLUSH_DEPTH = 2000

_trace_state = threading.local()


def tracing():
    """The active @jit trace of this thread, or None."""
    return getattr(_trace_state, "trace", None)


class Storage:
    """The memory that an array and its views share, as the graph node of its current value.

    A write through any view (``v[...] = x``, ``v += 1``) replaces ``node`` with an update node;
    every array on the storage then reads its own view of the new value, as NumPy's views see
    each other's writes. Arrays that were never viewed or written have no storage.
    """

    __slots__ = ("node",)

    def __init__(self, node: Node):
        self.node = node


class ndarray:
    """A NumPy-like array whose operations are recorded, fused and compiled (``numpy.ndarray``)."""

    # _storage/_chain: the storage this array views and the movement steps (op, arg) from the
    # storage's value to this array's; _base: the storage node _node was derived from.
    __slots__ = ("_node", "_storage", "_chain", "_base", "_readonly", "__weakref__")
    __array_priority__ = 100  # NumPy defers binary operators to us

    def __init__(self, node: Node):
        self._node = node
        self._storage = None
        self._chain = ()
        self._base = None
        self._readonly = False

    @property
    def flags(self):
        return {"WRITEABLE": not self._readonly, "OWNDATA": not self._chain}

    # -- metadata -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        _note_shape_read(self)
        return self._node.shape

    @property
    def dtype(self) -> np.dtype:
        return self._node.dtype

    @property
    def ndim(self) -> int:
        return len(self._node.shape)

    @property
    def size(self) -> int:
        _note_shape_read(self)
        return self._node.size

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def T(self) -> ndarray:
        return _shape.transpose(self)

    @property
    def mT(self) -> ndarray:
        return _shape.swapaxes(self, -1, -2)

    @property
    def device(self):
        from . import runtime

        return runtime.device_of(self._node)

    @property
    def is_lazy(self) -> bool:
        """True until the array's values are computed."""
        return _leaf(self._node) is None

    def __len__(self) -> int:
        if not self._node.shape:
            raise TypeError("len() of unsized object")
        _note_shape_read(self)
        return self._node.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # -- evaluation and conversion ------------------------------------------------------------
    def compute(self) -> ndarray:
        """Evaluate the graph below this array; memoise and return the materialised array."""
        node = self._node
        if node.op == "buffer" and node.arg[0].value is not None and self._storage is None:
            return self  # already data (every @jit output): no trip through the runtime
        from . import runtime

        runtime.compute_arrays([self])
        return self

    def get(self) -> np.ndarray:
        """The values as a NumPy array (``cupy.ndarray.get``)."""
        from . import runtime

        return runtime.to_numpy(self)

    # -- zero-copy export: CuPy, PyTorch, Numba and JAX read fuseray arrays through these -------
    def _data(self):
        """The computed value: a ``DeviceArray`` on a GPU, a NumPy array on the CPU. Reading it
        computes the array; the exporter hands out this memory itself, not a copy."""
        from . import runtime

        runtime.compute_arrays([self])
        return _leaf(node_of(self)).value

    @property
    def __cuda_array_interface__(self) -> dict:
        """CAI v3 (with the stream of the array's last use), computing the array first. An array
        on the CPU has none: ``hasattr`` is False there, as for a NumPy array."""
        data = self._data()
        if isinstance(data, np.ndarray):
            raise AttributeError("a fuseray array on the CPU has no __cuda_array_interface__")
        return data.__cuda_array_interface__

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._data().__dlpack_device__()

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """DLPack export (array API standard), computing the array first. A CPU array exports
        NumPy's capsule, a GPU array fuseray's (the consumer's ``stream`` waits for our work)."""
        return self._data().__dlpack__(
            stream=stream, max_version=max_version, dl_device=dl_device, copy=copy
        )

    def __array__(self, dtype=None, copy=None):
        out = self.get()
        return out if dtype is None else out.astype(dtype, copy=False)

    def item(self, *args):
        return self.get().item(*args)

    def tolist(self):
        return self.get().tolist()

    def __bool__(self) -> bool:
        return bool(self.get())

    def __int__(self) -> int:
        return int(self.get())

    def __float__(self) -> float:
        return float(self.get())

    def __index__(self) -> int:
        if not dtypes.is_integer(self.dtype):
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return int(self.get())

    def __repr__(self) -> str:
        if tracing() is not None and self.is_lazy:
            return f"fuseray.ndarray(traced, shape={self._node.shape}, dtype={self.dtype})"
        text = repr(self.get())
        return "fuseray." + text if text.startswith("array(") else text

    def __str__(self) -> str:
        return str(self.get())

    def __format__(self, spec: str) -> str:
        return format(self.get(), spec) if not self._node.shape else str(self)

    # -- NumPy protocols ----------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _elementwise.array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import api

        return api.array_function(func, types, args, kwargs)

    def __array_namespace__(self, api_version=None):
        import fuseray

        return fuseray

    # -- methods ------------------------------------------------------------------------------
    def astype(self, dtype, copy=True) -> ndarray:
        return _elementwise.astype(self, dtype, copy=copy)

    def copy(self) -> ndarray:
        return _elementwise.copy(self)

    def reshape(self, *shape, order="C") -> ndarray:
        return _shape.reshape(self, shape[0] if len(shape) == 1 else shape, order=order)

    def transpose(self, *axes) -> ndarray:
        axes = axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else axes
        return _shape.transpose(self, axes or None)

    def swapaxes(self, a, b) -> ndarray:
        return _shape.swapaxes(self, a, b)

    def ravel(self, order="C") -> ndarray:
        return _shape.ravel(self, order=order)

    def flatten(self, order="C") -> ndarray:
        return _shape.ravel(self, order=order).copy()

    def squeeze(self, axis=None) -> ndarray:
        return _shape.squeeze(self, axis)

    def clip(self, min=None, max=None) -> ndarray:
        return _elementwise.clip(self, min, max)

    def round(self, decimals=0) -> ndarray:
        return _elementwise.round(self, decimals)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False) -> ndarray:
        return _reductions.sum(self, axis, dtype, out=out, keepdims=keepdims)

    def prod(self, axis=None, dtype=None, out=None, keepdims=False) -> ndarray:
        return _reductions.prod(self, axis, dtype, out=out, keepdims=keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False) -> ndarray:
        return _reductions.mean(self, axis, dtype, out=out, keepdims=keepdims)

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False) -> ndarray:
        return _reductions.var(self, axis, dtype, out=out, ddof=ddof, keepdims=keepdims)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False) -> ndarray:
        return _reductions.std(self, axis, dtype, out=out, ddof=ddof, keepdims=keepdims)

    def max(self, axis=None, out=None, keepdims=False) -> ndarray:
        return _reductions.max(self, axis, out=out, keepdims=keepdims)

    def min(self, axis=None, out=None, keepdims=False) -> ndarray:
        return _reductions.min(self, axis, out=out, keepdims=keepdims)

    def any(self, axis=None, out=None, keepdims=False) -> ndarray:
        return _reductions.any(self, axis, out=out, keepdims=keepdims)

    def all(self, axis=None, out=None, keepdims=False) -> ndarray:
        return _reductions.all(self, axis, out=out, keepdims=keepdims)

    def argmax(self, axis=None, out=None, keepdims=False) -> ndarray:
        return _reductions.argmax(self, axis, out=out, keepdims=keepdims)

    def argmin(self, axis=None, out=None, keepdims=False) -> ndarray:
        return _reductions.argmin(self, axis, out=out, keepdims=keepdims)

    def __getitem__(self, key) -> ndarray:
        return _shape.getitem(self, key)

    def __setitem__(self, key, value):
        _update.setitem(self, key, value)

    # in-place operators update the array (and every view of its storage), as in NumPy
    def __iadd__(self, o):
        return _update.inplace("add", self, o)

    def __isub__(self, o):
        return _update.inplace("subtract", self, o)

    def __imul__(self, o):
        return _update.inplace("multiply", self, o)

    def __itruediv__(self, o):
        return _update.inplace("divide", self, o)

    def __ifloordiv__(self, o):
        return _update.inplace("floor_divide", self, o)

    def __imod__(self, o):
        return _update.inplace("remainder", self, o)

    def __ipow__(self, o):
        return _update.inplace("power", self, o)

    def __iand__(self, o):
        return _update.inplace("bitwise_and", self, o)

    def __ior__(self, o):
        return _update.inplace("bitwise_or", self, o)

    def __ixor__(self, o):
        return _update.inplace("bitwise_xor", self, o)

    def __ilshift__(self, o):
        return _update.inplace("left_shift", self, o)

    def __irshift__(self, o):
        return _update.inplace("right_shift", self, o)

    # -- operators ----------------------------------------------------------------------------
    def __add__(self, o):
        return _elementwise.binary("add", self, o)

    def __radd__(self, o):
        return _elementwise.binary("add", o, self)

    def __sub__(self, o):
        return _elementwise.binary("subtract", self, o)

    def __rsub__(self, o):
        return _elementwise.binary("subtract", o, self)

    def __mul__(self, o):
        return _elementwise.binary("multiply", self, o)

    def __rmul__(self, o):
        return _elementwise.binary("multiply", o, self)

    def __truediv__(self, o):
        return _elementwise.binary("divide", self, o)

    def __rtruediv__(self, o):
        return _elementwise.binary("divide", o, self)

    def __floordiv__(self, o):
        return _elementwise.binary("floor_divide", self, o)

    def __rfloordiv__(self, o):
        return _elementwise.binary("floor_divide", o, self)

    def __mod__(self, o):
        return _elementwise.binary("remainder", self, o)

    def __rmod__(self, o):
        return _elementwise.binary("remainder", o, self)

    def __divmod__(self, o):
        return self // o, self % o

    def __rdivmod__(self, o):
        return o // self, o % self

    def __pow__(self, o):
        return _elementwise.binary("power", self, o)

    def __rpow__(self, o):
        return _elementwise.binary("power", o, self)

    def __and__(self, o):
        return _elementwise.binary("bitwise_and", self, o)

    def __rand__(self, o):
        return _elementwise.binary("bitwise_and", o, self)

    def __or__(self, o):
        return _elementwise.binary("bitwise_or", self, o)

    def __ror__(self, o):
        return _elementwise.binary("bitwise_or", o, self)

    def __xor__(self, o):
        return _elementwise.binary("bitwise_xor", self, o)

    def __rxor__(self, o):
        return _elementwise.binary("bitwise_xor", o, self)

    def __lshift__(self, o):
        return _elementwise.binary("left_shift", self, o)

    def __rlshift__(self, o):
        return _elementwise.binary("left_shift", o, self)

    def __rshift__(self, o):
        return _elementwise.binary("right_shift", self, o)

    def __rrshift__(self, o):
        return _elementwise.binary("right_shift", o, self)

    def __matmul__(self, o):
        raise TypeError("fuseray does not implement matmul: it fuses elementwise and reductions")

    def __eq__(self, o):  # type: ignore[override]
        return _elementwise.binary("equal", self, o)

    def __ne__(self, o):  # type: ignore[override]
        return _elementwise.binary("not_equal", self, o)

    def __lt__(self, o):
        return _elementwise.binary("less", self, o)

    def __le__(self, o):
        return _elementwise.binary("less_equal", self, o)

    def __gt__(self, o):
        return _elementwise.binary("greater", self, o)

    def __ge__(self, o):
        return _elementwise.binary("greater_equal", self, o)

    def __neg__(self):
        return _elementwise.unary("negative", self)

    def __pos__(self):
        return _elementwise.unary("positive", self)

    def __abs__(self):
        return _elementwise.unary("absolute", self)

    def __invert__(self):
        return _elementwise.unary("invert", self)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking and == is elementwise


# ---------------------------------------------------------------------------------------------
# node <-> array plumbing shared by the api modules
# ---------------------------------------------------------------------------------------------


def _leaf(node: Node) -> Node | None:
    """The buffer leaf holding ``node``'s values, or None while it is unevaluated."""
    if node.op == "buffer":
        return node if node.arg[0].value is not None else None
    return node._value


def node_of(x: ndarray) -> Node:
    """The node to build on: the array's view of its storage's current value, and a computed
    node's data leaf rather than its old graph."""
    st = x._storage
    if st is not None:
        base = st.node
        leaf = _leaf(base) if base.op != "buffer" else None
        if leaf is not None:
            st.node = base = leaf
        if x._base is not base:
            node = base
            for op, arg in x._chain:
                node = Node.make(op, (node,), arg, node.dtype)
            x._node, x._base = node, base
    node = x._node
    leaf = _leaf(node) if node.op != "buffer" else None
    if leaf is not None:
        x._node = leaf
        if st is not None and not x._chain:
            st.node = x._base = leaf
        return leaf
    return node


def storage_of(x: ndarray) -> Storage:
    """The storage ``x`` views, made on first use (x becomes its base)."""
    if x._storage is None:
        x._storage = Storage(node_of(x))
        x._base = x._storage.node
        x._chain = ()
    return x._storage


def view(source, node: Node, readonly: bool = False) -> ndarray:
    """``node`` (a movement of ``source``'s node) as an array sharing ``source``'s storage."""
    if not isinstance(source, ndarray):
        return wrap(node)
    st = storage_of(source)
    out = ndarray(node)
    out._storage, out._base = st, st.node
    same = node is node_of(source)  # an identity view (x[...], a 0-d x.T) adds no step
    out._chain = source._chain if same else (*source._chain, (node.op, node.arg))
    out._readonly = source._readonly or readonly
    return out


def leaf_node(value) -> Node:
    """A new buffer leaf over ``value`` (a NumPy or device array: its shape is a tuple and its
    dtype an ``np.dtype``)."""
    return Node.buffer(Buffer(value), value.shape, value.dtype)


def wrap(node: Node) -> ndarray:
    out = ndarray(node)
    if node.depth > FLUSH_DEPTH and tracing() is None:
        out.compute()
    return out


def _note_shape_read(x: ndarray | None = None) -> None:
    """A trace that reads concrete sizes must be specialised on them (see jit)."""
    trace = tracing()
    if trace is not None:
        trace.note_shape_read()


# The api modules import this one; bind them last so that the class above is complete first.
from .api import elementwise as _elementwise  # noqa: E402
from .api import reductions as _reductions  # noqa: E402
from .api import shape as _shape  # noqa: E402
from .api import update as _update  # noqa: E402

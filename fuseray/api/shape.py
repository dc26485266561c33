"""Shape functions and basic indexing: views that fuse.

Stage: front end. These record movement nodes (reshape, permute, expand, index) and joins
(concatenate). Arguments are stored as the user gave them where that keeps a traced graph valid
for other sizes (``reshape(-1, 1024)``, ``x[1:-1]``), and are resolved against the source shape by
``graph.infer_shape``.
"""

from __future__ import annotations

import operator

from .. import dtypes
from ..array import ndarray, view, wrap
from ..graph import Node, broadcast_shapes, infer_shape
from ..ops import OPS
from .elementwise import as_node, cast
from .reductions import normalize_axes


def _axis(axis, ndim: int) -> int:
    return normalize_axes(operator.index(axis), ndim)[0]


def _shape_arg(shape) -> tuple[int, ...]:
    if isinstance(shape, (int,)) or hasattr(shape, "__index__"):
        return (operator.index(shape),)
    return tuple(operator.index(d) for d in shape)


def reshape(a, shape, order="C") -> ndarray:
    """``numpy.reshape`` (C order)."""
    if order != "C":
        raise NotImplementedError("fuseray reshapes in C order only")
    node = as_node(a)
    spec = _shape_arg(shape)
    infer_shape(OPS["reshape"], (node,), spec)  # NumPy's errors, here and now
    if spec == node.shape:
        return view(a, node)
    out = Node.make("reshape", (node,), spec)
    return view(a, out) if _reshape_is_view(a, out) else wrap(out)


def _reshape_is_view(a, out: Node) -> bool:
    """NumPy returns a view when the reshape needs no copy of the base's (C-ordered) data."""
    if not isinstance(a, ndarray):
        return False
    from ..views import View, fold

    st = a._storage
    base = st.node if st is not None else out.src[0]
    steps = [*(a._chain if st is not None else ()), ("reshape", out.arg)]
    node, chain = base, []
    for op, arg in steps:
        node = Node.make(op, (node,), arg, node.dtype)
        chain.append(node)
    return len(fold(View.contiguous(base.shape), chain)) == 1


def ravel(a, order="C") -> ndarray:
    """``numpy.ravel``."""
    return reshape(a, (-1,), order=order)


def transpose(a, axes=None) -> ndarray:
    """``numpy.transpose``."""
    node = as_node(a)
    n = node.ndim
    if axes is None:
        perm = tuple(range(n))[::-1]
    else:
        axes = tuple(axes)
        if len(axes) != n:
            raise ValueError("axes don't match array")
        perm = tuple(_axis(ax, n) for ax in axes)
        if len(set(perm)) != n:
            raise ValueError("repeated axis in transpose")
    if perm == tuple(range(n)):
        return view(a, node)
    return view(a, Node.make("permute", (node,), perm))


def swapaxes(a, axis1, axis2) -> ndarray:
    """``numpy.swapaxes``."""
    n = as_node(a).ndim
    perm = list(range(n))
    i, j = _axis(axis1, n), _axis(axis2, n)
    perm[i], perm[j] = perm[j], perm[i]
    return transpose(a, perm)


def moveaxis(a, source, destination) -> ndarray:
    """``numpy.moveaxis``."""
    n = as_node(a).ndim
    src = [_axis(s, n) for s in (source if isinstance(source, (tuple, list)) else [source])]
    dst = [_axis(d, n) for d in (destination if isinstance(destination, (tuple, list))
                                 else [destination])]
    if len(src) != len(dst):
        raise ValueError(
            "`source` and `destination` arguments must have the same number of elements"
        )
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise ValueError("repeated axis in `source` or `destination` argument")
    order = [i for i in range(n) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(a, order)


def expand_dims(a, axis) -> ndarray:
    """``numpy.expand_dims``."""
    node = as_node(a)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    ndim = node.ndim + len(axes)
    new = normalize_axes(tuple(axes), ndim)
    shape = iter(node.shape)
    return reshape(node, tuple(1 if i in new else next(shape) for i in range(ndim)))


def squeeze(a, axis=None) -> ndarray:
    """``numpy.squeeze``."""
    node = as_node(a)
    if axis is None:
        axes = tuple(i for i, d in enumerate(node.shape) if d == 1)
    else:
        axes = normalize_axes(axis if isinstance(axis, tuple) else (axis,), node.ndim)
        if any(node.shape[i] != 1 for i in axes):
            raise ValueError("cannot select an axis to squeeze out which has size not equal to one")
    return reshape(node, tuple(d for i, d in enumerate(node.shape) if i not in axes))


def broadcast_to(a, shape) -> ndarray:
    """``numpy.broadcast_to``."""
    node = as_node(a)
    target = _shape_arg(shape)
    if any(d < 0 for d in target):
        raise ValueError("all elements of broadcast shape must be non-negative")
    infer_shape(OPS["expand"], (node,), target)
    # NumPy's broadcast_to returns a read-only view
    return view(a, node if target == node.shape else Node.make("expand", (node,), target),
                readonly=True)


def broadcast_arrays(*args) -> tuple[ndarray, ...]:
    """``numpy.broadcast_arrays``."""
    nodes = [as_node(a) for a in args]
    shape = broadcast_shapes(*(n.shape for n in nodes))
    return tuple(broadcast_to(n, shape) for n in nodes)


def broadcast_shapes_(*shapes) -> tuple[int, ...]:
    """``numpy.broadcast_shapes``."""
    return broadcast_shapes(*(_shape_arg(s) for s in shapes))


def concatenate(arrays, axis=0) -> ndarray:
    """``numpy.concatenate``; ``axis=None`` flattens first, as NumPy does."""
    nodes = [as_node(a) for a in arrays]
    if not nodes:
        raise ValueError("need at least one array to concatenate")
    if axis is None:
        nodes = [as_node(ravel(n)) for n in nodes]
        axis = 0
    if any(n.ndim == 0 for n in nodes):
        raise ValueError("zero-dimensional arrays cannot be concatenated")
    ndim = nodes[0].ndim
    for i, n in enumerate(nodes):
        if n.ndim != ndim:
            raise ValueError(
                "all the input array dimensions except for the concatenation axis must match"
                f" exactly, but along dimension 0, the array at index 0 has {ndim} dimension(s)"
                f" and the array at index {i} has {n.ndim} dimension(s)"
            )
    axis = _axis(axis, ndim)
    dtype = dtypes.result_type(*(n.dtype for n in nodes))
    nodes = [cast(n, dtype) for n in nodes]
    if len(nodes) == 1:
        return wrap(nodes[0])
    return wrap(Node.make("concatenate", nodes, axis))


def stack(arrays, axis=0) -> ndarray:
    """``numpy.stack``."""
    nodes = [as_node(a) for a in arrays]
    if not nodes:
        raise ValueError("need at least one array to stack")
    if len({n.shape for n in nodes}) != 1:
        raise ValueError("all input arrays must have the same shape")
    axis = _axis(axis, nodes[0].ndim + 1)
    return concatenate([expand_dims(n, axis) for n in nodes], axis=axis)


def getitem(a: ndarray, key) -> ndarray:
    """Basic indexing (ints, slices with any step, None, Ellipsis) as a view that fuses;
    integer and boolean array indices gather (``api.indexing``)."""
    from . import indexing

    if indexing.is_advanced(key):
        return indexing.getitem(a, key)
    node = as_node(a)
    entries = _normalize_key(key, node.ndim)
    if all(e == ("s", None, None, None) for e in entries):
        return view(a, node)
    infer_shape(OPS["index"], (node,), entries)  # IndexError at this line, as NumPy's
    return view(a, Node.make("index", (node,), entries))


def _normalize_key(key, ndim: int) -> tuple:
    items = key if isinstance(key, tuple) else (key,)
    consumed = sum(1 for k in items if k is not None and k is not Ellipsis)
    if sum(1 for k in items if k is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if consumed > ndim:
        raise IndexError(
            f"too many indices for array: array is {ndim}-dimensional, but {consumed} were indexed"
        )
    out = []
    for k in items:
        if k is Ellipsis:
            out.extend([("s", None, None, None)] * (ndim - consumed))
        elif k is None:
            out.append(("n",))
        elif isinstance(k, slice):
            parts = tuple(None if p is None else _index(p) for p in (k.start, k.stop, k.step))
            if parts[2] == 0:
                raise ValueError("slice step cannot be zero")
            out.append(("s", *parts))
        else:
            out.append(("i", _index(k)))
    out.extend([("s", None, None, None)] * (ndim - sum(1 for e in out if e[0] != "n")))
    return tuple(out)


def _index(k) -> int:
    if isinstance(k, bool):
        raise IndexError("boolean indices are not supported yet (advanced indexing)")
    try:
        return operator.index(k)
    except TypeError:
        raise IndexError(
            "only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) and integer or"
            " boolean arrays are valid indices (fuseray supports basic indexing only for now)"
        ) from None


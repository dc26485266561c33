"""Writes: ``x[key] = v``, in-place operators, and ``out=``, with NumPy's aliasing semantics.

Stage: front end. Arrays stay lazy values in the graph; a write replaces the value of the
written array's *storage* (``array.Storage``) by an update node, and every view of that storage
then reads its own view of the new value, so views and their base see each other's writes as in
NumPy. The right-hand side is read before the write (it is built from the old value), which is
NumPy's rule too.

A write through a chain of views is lowered back to the storage step by step: a permute or a
reshape is undone on the new values, and a basic index becomes
``update(region_mask, pad(values), old)``: the region's values padded (with masked views, so no
memory is read outside the region) to the old shape, selected by a padded mask. That is one
elementwise node, so the write fuses with the computation of its values; the planner stores it,
since later reads see the array through other views. A strided region (``x[::2] = v``) cannot be
padded: the values are spread out with a concatenate first, which ``fr.explain`` shows.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes
from ..array import FLUSH_DEPTH, ndarray, node_of, storage_of, tracing
from ..graph import Node, broadcast_node, index_entries
from .elementwise import Scalar, apply, as_node, cast, const, operand
from .shape import _normalize_key


def _value_node(value, dtype: np.dtype, shape: tuple[int, ...]) -> Node:
    """``value`` cast to ``dtype`` (unsafe, as NumPy's assignment) and broadcast to ``shape``."""
    v = operand(value)
    if isinstance(v, Scalar):
        if v.kind is int:
            dtypes.check_weak_int(v.value, dtype)
        v = const(v.value, dtype)
    v = cast(v, dtype)
    if not _broadcastable(v.shape, shape):
        raise ValueError(
            f"could not broadcast input array from shape {_fmt(v.shape)} into shape {_fmt(shape)}"
        )
    if v.ndim > len(shape):  # NumPy drops the value's extra leading 1s
        v = Node.make("reshape", (v,), v.shape[v.ndim - len(shape):], v.dtype)
    return broadcast_node(v, shape)


def _broadcastable(src, dst) -> bool:
    src = tuple(src)
    while len(src) > len(dst) and src[0] == 1:
        src = src[1:]  # NumPy drops leading 1s of the value
    return len(src) <= len(dst) and all(s in (1, d) for s, d in zip(src[::-1], dst[::-1]))


def _fmt(shape) -> str:
    return "(" + ",".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


# ---------------------------------------------------------------------------------------------
# lowering a write through a chain of views to an update of the storage's value
# ---------------------------------------------------------------------------------------------


def lower(old: Node, chain: tuple, new_view: Node) -> Node:
    """The storage value after the view at ``chain`` of ``old`` takes the values ``new_view``."""
    views = [old]
    for op, arg in chain:
        views.append(Node.make(op, (views[-1],), arg, old.dtype))
    value = new_view
    for (op, arg), below in zip(reversed(chain), reversed(views[:-1])):
        value = _undo(op, arg, below, value)
    return value


def _undo(op: str, arg, below: Node, value: Node) -> Node:
    """The value of ``below`` after its view ``op(arg)`` takes ``value``."""
    if op == "permute":
        inverse = tuple(int(i) for i in np.argsort(arg))
        return Node.make("permute", (value,), inverse, value.dtype)
    if op == "reshape":
        return Node.make("reshape", (value,), below.shape, value.dtype)
    if op == "expand":
        raise ValueError("assignment destination is read-only")
    if op == "index":
        return set_index(below, arg, value)
    raise AssertionError(f"cannot write through {op}")


def set_index(old: Node, key: tuple, sub: Node) -> Node:
    """``old`` with ``old[key]`` replaced by ``sub`` (which has that view's shape)."""
    entries = index_entries(old.shape, key)
    # the region as a box over old's axes: drop None axes, restore integer-indexed axes as 1
    box_shape, pads, flips, dilate = [], [], [], []
    axis = 0
    for e in entries:
        if e[0] == "n":
            continue
        n = old.shape[axis]
        if e[0] == "i":
            box_shape.append(1)
            pads.append((e[1], n - e[1] - 1))
        else:
            _, start, step, length = e
            box_shape.append(length)
            if length == 0:
                return old
            low = start if step > 0 else start + step * (length - 1)
            span = abs(step) * (length - 1) + 1
            pads.append((low, n - low - span))
            if step < 0:
                flips.append(len(box_shape) - 1)
            if abs(step) > 1:
                dilate.append((len(box_shape) - 1, abs(step)))
        axis += 1
    box = Node.make("reshape", (sub,), tuple(box_shape), sub.dtype) \
        if sub.shape != tuple(box_shape) else sub
    mask = Node.make("expand", (const(True, dtypes.BOOL),), tuple(box_shape), dtypes.BOOL) \
        if box_shape else const(True, dtypes.BOOL)
    if flips:
        key_flip = tuple(("s", None, None, -1 if i in flips else None)
                         for i in range(len(box_shape)))
        box = Node.make("index", (box,), key_flip, box.dtype)
    for d, step in dilate:
        box = _dilate(box, d, step)
        mask = _dilate(mask, d, step)
    widths = tuple(pads)
    padded = Node.make("pad", (box,), widths, box.dtype) if any(sum(w) for w in widths) else box
    region = Node.make("pad", (mask,), widths, dtypes.BOOL) if any(sum(w) for w in widths) \
        else mask
    return Node.make("update", (region, padded, old), None, old.dtype)


def _dilate(x: Node, axis: int, step: int) -> Node:
    """Spread ``x`` along ``axis``: step-1 zeros after each element, then trim the tail."""
    zeros = Node.make("expand", (const(0, x.dtype),), x.shape, x.dtype)
    parts = [x] + [zeros] * (step - 1)
    expanded = [Node.make("reshape", (p,), p.shape[:axis + 1] + (1,) + p.shape[axis + 1:],
                          p.dtype) for p in parts]
    stacked = Node.make("concatenate", expanded, axis + 1, x.dtype)
    flat_shape = x.shape[:axis] + (x.shape[axis] * step,) + x.shape[axis + 1:]
    flat = Node.make("reshape", (stacked,), flat_shape, x.dtype)
    keep = x.shape[axis] * step - (step - 1)
    key = tuple(("s", None, keep, None) if i == axis else ("s", None, None, None)
                for i in range(x.ndim))
    return Node.make("index", (flat,), key, x.dtype)


# ---------------------------------------------------------------------------------------------
# the entry points
# ---------------------------------------------------------------------------------------------


def _write(x: ndarray, chain: tuple, new_view: Node) -> None:
    if x._readonly:
        raise ValueError("assignment destination is read-only")
    st = storage_of(x)
    node_of(x)  # settle the storage's current value first
    st.node = lower(st.node, chain, new_view)
    if st.node.depth > FLUSH_DEPTH and tracing() is None:
        from .. import runtime

        base = ndarray(st.node)
        runtime.compute_arrays([base])
        st.node = base._node


def _is_bool_mask(key) -> bool:
    dt = getattr(key, "dtype", None)
    return dt is not None and np.dtype(dt) == np.bool_ and getattr(key, "ndim", 0) > 0


def _is_scalar_value(value) -> bool:
    """A value every selected element gets alike (no need to know how many are selected)."""
    v = operand(value)
    return isinstance(v, Scalar) or v.size == 1


def setitem(x: ndarray, key, value) -> None:
    """``x[key] = value`` for basic keys (ints, slices, None, Ellipsis), boolean masks and
    integer arrays."""
    from . import indexing

    if _is_bool_mask(key) and not _is_scalar_value(value) or \
            not _is_bool_mask(key) and indexing.is_advanced(key):
        indexing.setitem(x, key, value)
        return
    if _is_bool_mask(key):
        mask = as_node(key)
        target = node_of(x)
        if mask.shape != target.shape[: mask.ndim]:
            raise IndexError(
                f"boolean index did not match indexed array along axis 0; size of axis is"
                f" {target.shape[0]} but size of corresponding boolean axis is {mask.shape[0]}"
            )
        v = operand(value)
        full = _value_node(value if isinstance(v, Scalar) else
                           Node.make("reshape", (v,), (), v.dtype), x.dtype, target.shape)
        mask_full = broadcast_node(
            Node.make("reshape", (mask,), mask.shape + (1,) * (target.ndim - mask.ndim),
                      mask.dtype) if mask.ndim < target.ndim else mask, target.shape)
        new_view = apply("where", mask_full, full, target)._node
        _write(x, x._chain, cast(new_view, x.dtype))
        return
    entries = _normalize_key(key, x.ndim)
    target = node_of(x)
    chain = x._chain
    if not all(e == ("s", None, None, None) for e in entries):
        Node.make("index", (target,), entries, target.dtype)  # IndexError at this line
        chain = (*chain, ("index", entries))
        target = Node.make("index", (target,), entries, target.dtype)
    if isinstance(value, ndarray) and value._storage is not None and \
            value._storage is x._storage and value._chain == chain:
        return  # a view written onto itself (``x[k] += 1`` ends so): nothing changes
    _write(x, chain, _value_node(value, x.dtype, target.shape))


def inplace(name: str, x: ndarray, other) -> ndarray:
    """``x op= other``: computes ``x op other`` and writes it into x (NumPy's same_kind rule)."""
    result = apply(name, x, other)
    check_cast(name, result.dtype, x.dtype)
    if result._node.shape != node_of(x).shape:
        raise ValueError(
            f"non-broadcastable output operand with shape {_fmt(node_of(x).shape)} doesn't"
            f" match the broadcast shape {_fmt(result._node.shape)}"
        )
    _write(x, x._chain, cast(result._node, x.dtype))
    return x


def check_cast(name: str, src: np.dtype, dst: np.dtype) -> None:
    if not np.can_cast(src, dst, "same_kind"):
        raise np._core._exceptions._UFuncOutputCastingError(
            getattr(np, name), "same_kind", src, dst, 0
        )


def write_out(name: str, result: ndarray, out, *, reduction: bool = False) -> ndarray:
    """Store ``result`` into ``out`` as a ufunc's or a reduction's ``out=`` does; returns out."""
    if isinstance(out, tuple):
        if len(out) != 1:
            raise ValueError("The 'out' tuple must have exactly one entry")
        (out,) = out
    if not isinstance(out, ndarray):
        raise TypeError("return arrays must be of ArrayType (a fuseray array)")
    target = node_of(out)
    shape = result._node.shape
    if reduction:
        if target.shape != shape:
            raise ValueError(
                f"output parameter for reduction operation {name} has the wrong shape:"
                f" expected {_fmt(shape)}, got {_fmt(target.shape)}"
            )
    else:
        check_cast(name, result.dtype, out.dtype)
        if target.shape != shape:
            raise ValueError(
                f"non-broadcastable output operand with shape {_fmt(target.shape)} doesn't"
                f" match the broadcast shape {_fmt(shape)}"
            )
    _write(out, out._chain, cast(result._node, out.dtype))
    return out


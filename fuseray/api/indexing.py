"""Advanced indexing: integer and boolean array indices, take, nonzero, put, place, putmask,
copyto, with NumPy's rules for where the indexed dimensions go.

Stage: front end. Every advanced index is reduced to one primitive per direction over a leading
axis: ``take(x, i)`` reads ``x[i[j], ...]`` and ``scatter(x, i, v)`` writes ``v[j, ...]`` at
``x[i[j], ...]`` (the last write to a position wins, as in NumPy). The indexed axes are moved to
the front and merged, the index arrays are combined into one linear index (lazily, so it fuses
with whatever computed them), and the result's axes are put where NumPy puts them: in place of
the first indexed axis when the array indices are adjacent in the key, else in front.

Boolean masks select data-dependent counts: they are computed when the index is made (the
position of a fusion boundary ``fr.explain`` shows as a separate computation), then treated as the
integer indices ``nonzero`` returns. Bounds are checked at the call when the indices are already
computed on the CPU, and otherwise when the kernel that reads them runs.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .. import dtypes
from ..array import leaf_node, ndarray, node_of, wrap
from ..graph import Node, broadcast_node, broadcast_shapes
from .elementwise import apply, as_node, cast
from .shape import _normalize_key

INTP = dtypes.INTP


def is_advanced(key) -> bool:
    items = key if isinstance(key, tuple) else (key,)
    return any(_is_array_index(k) for k in items)


def _is_array_index(k) -> bool:
    return isinstance(k, (ndarray, np.ndarray, list)) or (
        hasattr(k, "__cuda_array_interface__") or hasattr(k, "__dlpack__")
    ) and not np.isscalar(k)


def _index_node(k) -> Node:
    """An index array as an intp node (booleans are handled before this)."""
    node = as_node(k)
    if node.dtype.kind not in "iub":
        raise IndexError(
            "arrays used as indices must be of integer (or boolean) type"
        )
    return cast(node, INTP)


def nonzero_values(a) -> tuple[np.ndarray, ...]:
    """The positions of the true elements, computed now (their count decides shapes)."""
    from .. import runtime

    node = as_node(a)
    (value,) = runtime.evaluate([node])
    host = value if isinstance(value, np.ndarray) else runtime.to_numpy(wrap(node))
    return np.nonzero(host)


def _expand_masks(items: list) -> list:
    out = []
    for k in items:
        if _is_array_index(k):
            dt = getattr(k, "dtype", None) if not isinstance(k, list) else np.asarray(k).dtype
            if dt is not None and np.dtype(dt) == np.bool_:
                out.extend(fr_array(i) for i in nonzero_values(k))
                continue
        out.append(k)
    return out


def fr_array(values: np.ndarray) -> ndarray:
    from .creation import asarray

    return asarray(values)


def _split(x: Node, key) -> tuple[tuple, list[tuple[int, Node]], bool, int]:
    """Basic key for the non-array entries; (axis in the basic result, index) per array entry;
    whether the array entries are adjacent; the count of result axes before the first one."""
    items = _expand_masks(list(key if isinstance(key, tuple) else (key,)))
    # with arrays present, integers index like 0-d arrays
    items = [fr_array(np.asarray(k)) if isinstance(k, (int, np.integer)) and not isinstance(
        k, bool) else k for k in items]
    arrays = [i for i, k in enumerate(items) if _is_array_index(k)]
    adjacent = arrays == list(range(arrays[0], arrays[-1] + 1))
    consumed = sum(1 for k in items if k is not None and k is not Ellipsis)
    if consumed > x.ndim:
        raise IndexError(
            f"too many indices for array: array is {x.ndim}-dimensional, but {consumed}"
            " were indexed"
        )
    basic, picks, out_axis = [], [], 0
    before_first = None
    for pos, k in enumerate(items):
        if k is Ellipsis:
            n = x.ndim - consumed
            basic.extend([slice(None)] * n)
            out_axis += n
        elif k is None:
            basic.append(None)
            out_axis += 1
        elif pos in arrays:
            if before_first is None:
                before_first = out_axis
            basic.append(slice(None))
            picks.append((out_axis, _index_node(k)))
            out_axis += 1
        elif isinstance(k, slice):
            basic.append(k)
            out_axis += 1
        else:
            basic.append(k)  # an integer without arrays cannot reach here
    return tuple(basic), picks, adjacent, before_first


def _linear(picks: list[tuple[int, Node]], shape: tuple[int, ...]) -> tuple[Node, tuple]:
    """One index over the merged picked axes, and the broadcast shape of the index arrays."""
    try:
        bshape = broadcast_shapes(*(i.shape for _, i in picks))
    except ValueError:
        listed = " ".join(str(i.shape).replace(" ", "") for _, i in picks)
        raise IndexError(
            f"shape mismatch: indexing arrays could not be broadcast together with shapes {listed}"
        ) from None
    if len(picks) == 1:
        axis, idx = picks[0]
        _check_now(idx, shape[axis], axis)
        return idx, bshape
    # merged axes: wrap negatives per axis here; an index out of its own axis's range makes the
    # merged index invalid, so the take still raises IndexError
    lin, bad = None, None
    for axis, idx in picks:
        n = shape[axis]
        _check_now(idx, n, axis)
        idx = broadcast_node(idx, bshape)
        wrapped = apply("where", apply("less", idx, 0), apply("add", idx, n), idx)
        out = apply("logical_or", apply("less", idx, -n), apply("greater_equal", idx, n))
        lin = wrapped if lin is None else apply("add", apply("multiply", lin, n), wrapped)
        bad = out if bad is None else apply("logical_or", bad, out)
    total = math.prod(shape[a] for a, _ in picks)
    return apply("where", bad, -total - 1, lin)._node, bshape


def _check_now(idx: Node, size: int, axis: int) -> None:
    """NumPy's IndexError at the call when the indices are already known on the CPU."""
    value = idx.value if idx.op == "buffer" else None
    if value is None and idx.op == "cast" and idx.src[0].op == "buffer":
        value = idx.src[0].value
    if isinstance(value, np.ndarray) and value.size:
        bad = value[(value < -size) | (value >= size)]
        if bad.size:
            raise IndexError(
                f"index {bad.flat[0]} is out of bounds for axis {axis} with size {size}"
            )


def _front(x: Node, axes: list[int]) -> tuple[Node, tuple[int, ...]]:
    """``x`` with ``axes`` moved to the front and merged into one (C order)."""
    perm = tuple(axes) + tuple(a for a in range(x.ndim) if a not in axes)
    moved = Node.make("permute", (x,), perm, x.dtype) if perm != tuple(range(x.ndim)) else x
    rest = moved.shape[len(axes):]
    merged = (math.prod(moved.shape[: len(axes)]),) + rest
    out = Node.make("reshape", (moved,), merged, x.dtype) if merged != moved.shape else moved
    return out, perm


def getitem(a, key) -> ndarray:
    """``a[key]`` with integer or boolean arrays in the key: a gather (NumPy returns a copy)."""
    x = as_node(a)
    if _is_single_mask(key, x):
        key = nonzero_values(key)
    basic, picks, adjacent, before = _split(x, key)
    from .shape import getitem as basic_getitem

    y = as_node(basic_getitem(wrap(x), basic)) if any(
        b is not None and b != slice(None) for b in basic) or None in basic else x
    axes = [ax for ax, _ in picks]
    lin, bshape = _linear(picks, y.shape)
    merged, _ = _front(y, axes)
    flat_lin = lin
    out = Node.make("take", (merged, flat_lin), None, y.dtype)
    # result axes: bshape first, then y's other axes; NumPy puts bshape at `before` if adjacent
    nb = len(bshape)
    if adjacent and before:
        order = list(range(nb, nb + before)) + list(range(nb)) + list(
            range(nb + before, out.ndim))
        out = Node.make("permute", (out,), tuple(order), out.dtype)
    return wrap(out)


def _is_single_mask(key, x: Node) -> bool:
    if isinstance(key, tuple) or not _is_array_index(key):
        return False
    dt = np.asarray(key).dtype if isinstance(key, list) else np.dtype(key.dtype)
    return dt == np.bool_


def setitem(x: ndarray, key, value) -> None:
    """``x[key] = value`` with array indices: a scatter into x's storage (last write wins)."""
    from .update import _value_node, _write

    base = node_of(x)
    if _is_single_mask(key, base):
        key = nonzero_values(key)
    basic, picks, adjacent, before = _split(base, key)
    basic_entries = _normalize_key(basic, base.ndim)
    chain = x._chain
    y = base
    if not all(e == ("s", None, None, None) for e in basic_entries):
        y = Node.make("index", (base,), basic_entries, base.dtype)
        chain = (*chain, ("index", basic_entries))
    axes = [ax for ax, _ in picks]
    lin, bshape = _linear(picks, y.shape)
    merged, perm = _front(y, axes)
    if perm != tuple(range(y.ndim)):
        chain = (*chain, ("permute", perm))
    rest = merged.shape[1:]
    if merged.shape != tuple(y.shape[a] for a in perm):
        chain = (*chain, ("reshape", merged.shape))
    # the values, as NumPy lays them out for this key, then flattened over the index shape
    nb = len(bshape)
    result_shape = bshape + rest
    if adjacent and before:
        other = rest
        result_shape = other[:before] + bshape + other[before:]
    values = _value_node(value, x.dtype, result_shape)
    if adjacent and before:
        order = tuple(range(before, before + nb)) + tuple(range(before)) + tuple(
            range(before + nb, len(result_shape)))
        values = Node.make("permute", (values,), order, values.dtype)
    count = math.prod(bshape)
    flat_values = Node.make("reshape", (values,), (count,) + rest, values.dtype)
    flat_lin = Node.make("reshape", (lin,), (count,), lin.dtype) if lin.shape != (count,) else lin
    new_view = Node.make("scatter", (merged, flat_lin, flat_values), None, merged.dtype)
    _write(x, chain, new_view)


def take(a, indices, axis=None) -> ndarray:
    """``numpy.take`` (mode='raise')."""
    x = as_node(a)
    if axis is None:
        x = Node.make("reshape", (x,), (-1,), x.dtype) if x.ndim != 1 else x
        axis = 0
    axis = operator.index(axis)
    from .reductions import normalize_axes

    axis = normalize_axes(axis, x.ndim)[0]
    idx = _index_node(indices)  # booleans are 0 and 1 here, not a mask
    out_shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    if x.shape[axis] == 0 and math.prod(out_shape):
        raise IndexError("cannot do a non-empty take from an empty axes.")
    if not math.prod(x.shape[:axis]):  # NumPy checks no index where it copies no row
        from .creation import empty

        return empty(out_shape, x.dtype)
    key = (slice(None),) * axis + (wrap(idx),)
    return getitem(wrap(x), key)


def nonzero(a) -> tuple[ndarray, ...]:
    """``numpy.nonzero``: computed now, since its length depends on the data."""
    if as_node(a).ndim == 0:
        raise ValueError(
            "Calling nonzero on 0d arrays is not allowed. Use np.atleast_1d(scalar).nonzero()"
            " instead."
        )
    return tuple(fr_array(i) for i in nonzero_values(a))


def where_one(condition) -> tuple[ndarray, ...]:
    """``numpy.where(condition)``: the same as ``nonzero``."""
    return nonzero(condition)


def _cycled(values: Node, count: int) -> Node:
    """``values`` flattened and repeated cyclically to ``count`` elements (NumPy's put rule)."""
    flat = Node.make("reshape", (values,), (-1,), values.dtype) if values.ndim != 1 else values
    if flat.shape[0] == count:
        return flat
    if flat.shape[0] == 0:
        raise ValueError("cannot place or put from an empty array")
    positions = leaf_node(np.arange(count, dtype=INTP) % flat.shape[0])
    return Node.make("take", (flat, positions), None, flat.dtype)


def put(a: ndarray, ind, v) -> None:
    """``numpy.put``: ``a.flat[ind] = v``, v repeated as needed (the last write wins)."""
    from .shape import reshape

    flat = reshape(a, (-1,))
    idx = _index_node(ind)
    idx = Node.make("reshape", (idx,), (-1,), idx.dtype) if idx.ndim != 1 else idx
    values = _cycled(cast(as_node(v), a.dtype), idx.shape[0])
    setitem(flat, wrap(idx), wrap(values))


def place(arr: ndarray, mask, vals) -> None:
    """``numpy.place``: the true positions of ``mask`` take ``vals`` in order, cycled."""
    positions = nonzero_values(mask)
    count = positions[0].size if positions else 0
    if count == 0:
        return
    values = _cycled(cast(as_node(vals), arr.dtype), count)
    setitem(arr, tuple(fr_array(p) for p in positions), wrap(values))


def putmask(a: ndarray, mask, values) -> None:
    """``numpy.putmask``: ``a.flat[i] = values.flat[i % values.size]`` where mask is true."""
    from .update import _write

    target = node_of(a)
    vals = _cycled(cast(as_node(values), a.dtype), target.size)
    vals = Node.make("reshape", (vals,), target.shape, vals.dtype)
    m = broadcast_node(cast(as_node(mask), dtypes.BOOL), target.shape)
    _write(a, a._chain, apply("where", m, vals, target)._node)


def copyto(dst: ndarray, src, casting="same_kind", where=True) -> None:
    """``numpy.copyto``."""
    from .update import _value_node, _write

    target = node_of(dst)
    s = as_node(src)
    if not np.can_cast(s.dtype, dst.dtype, casting):
        raise TypeError(
            f"Cannot cast array data from {s.dtype!r} to {dst.dtype!r} according to the rule"
            f" {casting!r}"
        )
    values = _value_node(wrap(s), dst.dtype, target.shape)
    if where is not True:
        m = broadcast_node(cast(as_node(where), dtypes.BOOL), target.shape)
        values = apply("where", m, values, target)._node
    _write(dst, dst._chain, values)


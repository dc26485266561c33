"""Reductions named as NumPy names them: sum, prod, mean, var, std, max, min, any, all, argmax.

Stage: front end. Each function checks ``axis`` (``numpy.exceptions.AxisError``), picks NumPy's
result and accumulation dtypes, and records reduce nodes. ``mean`` is a primitive reduction (sum,
then divide by the count, as CuPy's post-map does); ``var`` and ``std`` are built from it, so a
variance is two fused reductions over the same rows, not a new op.
"""

from __future__ import annotations

import builtins
import math
import operator

import numpy as np
from numpy.exceptions import AxisError

from .. import dtypes
from ..array import wrap
from ..graph import Node
from .elementwise import apply, as_node, cast


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """NumPy's axis checks: ints or a tuple of ints, in range, no duplicates; None means all."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in items:
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(
                f"'{type(a).__name__}' object cannot be interpreted as an integer"
            ) from None
        if not -ndim <= a < ndim:
            raise AxisError(a, ndim)
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError("duplicate value in 'axis'")
    return tuple(sorted(out))


def _reduce(name: str, node: Node, axes, keepdims: bool, dtype=None, extra=()) -> Node:
    arg = (axes, bool(keepdims), *extra)
    return Node.make(name, (node,), arg, dtype=dtype or node.dtype)


def _requested(dtype):
    return None if dtype is None else dtypes.as_dtype(dtype)


def _accumulating(name: str, a, axis, dtype, keepdims) -> Node:
    node = as_node(a)
    axes = normalize_axes(axis, node.ndim)
    out = dtypes.reduction_dtype(name, node.dtype, _requested(dtype))
    return _reduce(name, cast(node, out), axes, keepdims)


def _with_out(ufunc_name: str):
    """Give a reduction NumPy's ``out=``: the result is written into ``out`` (unsafe casting)."""

    def deco(fn):
        def wrapper(*args, out=None, **kwargs):
            result = fn(*args, **kwargs)
            if out is None:
                return result
            from .update import write_out

            return write_out(ufunc_name, result, out, reduction=True)

        wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = (
            fn.__name__, fn.__qualname__, fn.__doc__)
        return wrapper

    return deco


@_with_out("add")
def sum(a, axis=None, dtype=None, keepdims=False):  # noqa: A001 - NumPy's name
    """``numpy.sum``."""
    return wrap(_accumulating("sum", a, axis, dtype, keepdims))


@_with_out("multiply")
def prod(a, axis=None, dtype=None, keepdims=False):
    """``numpy.prod``."""
    return wrap(_accumulating("prod", a, axis, dtype, keepdims))


def _extremum(name: str, ufunc: str, a, axis, keepdims) -> Node:
    node = as_node(a)
    axes = normalize_axes(axis, node.ndim)
    if builtins.any(node.shape[i] == 0 for i in axes):
        raise ValueError(
            f"zero-size array to reduction operation {ufunc} which has no identity"
        )
    return _reduce(name, node, axes, keepdims)


@_with_out("maximum")
def max(a, axis=None, keepdims=False):  # noqa: A001 - NumPy's name
    """``numpy.max`` (``amax``): NaN propagates."""
    return wrap(_extremum("max", "maximum", a, axis, keepdims))


@_with_out("minimum")
def min(a, axis=None, keepdims=False):  # noqa: A001 - NumPy's name
    """``numpy.min`` (``amin``): NaN propagates."""
    return wrap(_extremum("min", "minimum", a, axis, keepdims))


def _logical(name: str, a, axis, keepdims) -> Node:
    node = as_node(a)
    axes = normalize_axes(axis, node.ndim)
    return _reduce(name, cast(node, dtypes.BOOL), axes, keepdims)


@_with_out("logical_or")
def any(a, axis=None, keepdims=False):  # noqa: A001 - NumPy's name
    """``numpy.any``."""
    return wrap(_logical("any", a, axis, keepdims))


@_with_out("logical_and")
def all(a, axis=None, keepdims=False):  # noqa: A001 - NumPy's name
    """``numpy.all``."""
    return wrap(_logical("all", a, axis, keepdims))


def _float_dtypes(node: Node, dtype) -> tuple[np.dtype, np.dtype]:
    """(accumulation, result) dtypes of NumPy's mean/var/std: ints -> float64, float16 via f32."""
    if dtype is not None:
        requested = dtypes.as_dtype(dtype)
        acc = np.dtype(np.float32) if requested == np.float16 else requested
        return acc, requested
    if dtypes.is_float(node.dtype):
        acc = np.dtype(np.float32) if node.dtype == np.float16 else node.dtype
        return acc, node.dtype
    return np.dtype(np.float64), np.dtype(np.float64)


def _mean(node: Node, axes, keepdims, acc, ddof=0) -> Node:
    return _reduce("mean", cast(node, acc), axes, keepdims, extra=(ddof,))


@_with_out("add")
def mean(a, axis=None, dtype=None, keepdims=False):
    """``numpy.mean``."""
    node = as_node(a)
    axes = normalize_axes(axis, node.ndim)
    acc, out = _float_dtypes(node, dtype)
    return wrap(cast(_mean(node, axes, keepdims, acc), out))


def _variance(a, axis, dtype, ddof, keepdims) -> tuple[Node, np.dtype]:
    node = as_node(a)
    axes = normalize_axes(axis, node.ndim)
    if dtype is None and node.dtype == np.float16:
        return _half_variance(node, axes, int(ddof), keepdims), node.dtype
    acc, out = _float_dtypes(node, dtype)
    x = cast(node, acc)
    centred = apply("subtract", x, _mean(x, axes, True, acc))
    squares = apply("multiply", centred, centred)
    return _mean(squares._node, axes, keepdims, acc, ddof=int(ddof)), out


def _half_variance(node: Node, axes, ddof: int, keepdims) -> Node:
    """NumPy's float16 variance, step by step: unlike ``mean``, ``numpy.var`` does not widen
    float16, so its mean, deviations, squares and their sum are each rounded to float16 (sums
    accumulate in float32 first), and each division by a count is a float64 one."""
    count = math.prod(node.shape[i] for i in axes)

    def per_count(total: Node, n: int) -> Node:
        return cast(apply("divide", cast(total, np.dtype(np.float64)), float(n))._node, node.dtype)

    mean = per_count(_reduce("sum", node, axes, True), count)
    centred = apply("subtract", node, mean)
    squares = apply("multiply", centred, centred)._node
    return per_count(_reduce("sum", squares, axes, keepdims), builtins.max(count - ddof, 0))


@_with_out("add")
def var(a, axis=None, dtype=None, ddof=0, keepdims=False):
    """``numpy.var``: mean of squared deviations over (count - ddof)."""
    v, out = _variance(a, axis, dtype, ddof, keepdims)
    return wrap(cast(v, out))


@_with_out("add")
def std(a, axis=None, dtype=None, ddof=0, keepdims=False):
    """``numpy.std``."""
    v, out = _variance(a, axis, dtype, ddof, keepdims)
    return wrap(cast(apply("sqrt", v)._node, out))


def _arg(name: str, a, axis, keepdims) -> Node:
    node = as_node(a)
    if axis is None:
        axes = tuple(range(node.ndim))
        if node.size == 0:
            raise ValueError(f"attempt to get {name} of an empty sequence")
    else:
        axes = normalize_axes(operator.index(axis), node.ndim)
        if node.shape[axes[0]] == 0:
            raise ValueError(f"attempt to get {name} of an empty sequence")
    return _reduce(name, node, axes, keepdims, dtype=dtypes.INTP)


@_with_out("argmax")
def argmax(a, axis=None, keepdims=False):
    """``numpy.argmax``: index of the first maximum (a NaN counts as the maximum)."""
    return wrap(_arg("argmax", a, axis, keepdims))


@_with_out("argmin")
def argmin(a, axis=None, keepdims=False):
    """``numpy.argmin``: index of the first minimum (a NaN counts as the minimum)."""
    return wrap(_arg("argmin", a, axis, keepdims))


amax, amin = max, min

# ``np.add.reduce(x)`` and friends, reached through ``__array_ufunc__`` (axis=0 as NumPy's).
UFUNC_REDUCTIONS = {
    "add": lambda x, axis=0, **kw: sum(x, axis, **kw),
    "multiply": lambda x, axis=0, **kw: prod(x, axis, **kw),
    "maximum": lambda x, axis=0, **kw: max(x, axis),
    "minimum": lambda x, axis=0, **kw: min(x, axis),
    "logical_and": lambda x, axis=0, **kw: all(x, axis),
    "logical_or": lambda x, axis=0, **kw: any(x, axis),
}

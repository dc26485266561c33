"""Elementwise functions named as NumPy (and scipy.special) name them.

Stage: front end. Every function here types its operands with NumPy's own loop resolution
(``dtypes.resolve_ufunc``, which applies NEP 50's weak Python scalars), inserts explicit casts to
the loop dtypes, and records one node. Errors (no loop for these dtypes, a Python int that does
not fit, shapes that do not broadcast) are raised here, at the line that caused them.
"""

from __future__ import annotations

import builtins
import functools
import math

import numpy as np

from .. import dtypes
from ..array import ndarray, node_of, wrap
from ..graph import Node, broadcast_shapes
from ..ops import COMPARISONS, OPS, UFUNCS, Dtype, Kind


class Scalar:
    """A Python or NumPy scalar operand before it meets an array: value plus promotion kind."""

    __slots__ = ("value", "kind")

    def __init__(self, value):
        self.value = value
        self.kind = dtypes.scalar_kind(value)


def operand(x):
    """An ndarray's node, a Scalar, or a new leaf for a NumPy array (or list) operand."""
    if isinstance(x, ndarray):
        return node_of(x)
    if isinstance(x, (Node, Scalar)):
        return x
    if isinstance(x, (bool, int, float, complex, np.generic)):
        return Scalar(x)
    from .creation import asarray

    return node_of(asarray(x))


def const(value, dtype: np.dtype, weak: bool = False) -> Node:
    """A 0-d constant of ``dtype``; ``value`` is stored as the Python scalar of that dtype.

    ``weak`` marks a constant that came from a Python scalar, so that arithmetic on such scalars
    alone stays weakly typed (NEP 50), as it does in Python.
    """
    dtype = dtypes.as_dtype(dtype)
    py = np.asarray(value).astype(dtype).item()
    if isinstance(py, float) and math.isnan(py):
        py = math.nan  # one spelling of NaN, so equal constants share a node
    return Node.make("const", (), (py, dtype.str, weak), dtype=dtype)


def cast(node: Node, dtype: np.dtype) -> Node:
    if node.dtype == dtype:
        return node
    return Node.make("cast", (node,), None, dtype=dtype)


def _kind(x):
    if isinstance(x, Scalar):
        return x.kind
    weak = weak_kind(x)
    return x.dtype if weak is None else weak


@functools.lru_cache(maxsize=4096)
def weak_kind(node: Node):
    """``int``/``float`` for a 0-d value computed only from Python scalars (a @jit scalar
    parameter, or constants made from Python scalars), else None."""
    if node.shape != ():
        return None
    if node.op == "param":
        return node.arg[1]
    if node.op == "const":
        weak = node.arg[2]
    else:
        weak = node.kind is Kind.ELEMENTWISE and bool(node.src) and all(
            weak_kind(s) is not None for s in node.src
        )
    if not weak:
        return None
    return float if node.dtype.kind == "f" else int if node.dtype.kind in "iu" else None


def _materialise(x, dtype: np.dtype) -> Node:
    """The operand as a node of ``dtype``: a scalar becomes a constant (NumPy 2's overflow rule)."""
    if isinstance(x, Scalar):
        if x.kind is int:
            dtypes.check_weak_int(x.value, dtype)
        return const(x.value, dtype, weak=x.kind in dtypes.WEAK_TYPES)
    return cast(x, dtype)


def _fit_comparison(name: str, operands: list) -> list:
    """NumPy compares an array with an out-of-range Python int exactly; widen instead of failing."""
    if name not in COMPARISONS:
        return operands
    arrays = [o for o in operands if not isinstance(o, Scalar)]
    for o in operands:
        if isinstance(o, Scalar) and o.kind is int and arrays:
            loop = dtypes.resolve_ufunc(OPS[name].ufunc, tuple(_kind(x) for x in operands))
            try:
                dtypes.check_weak_int(o.value, loop[0])
            except OverflowError:
                wide = np.dtype(np.int64) if o.value >= np.iinfo(np.int64).min else np.float64
                wide = np.dtype(np.uint64) if o.value > np.iinfo(np.int64).max else wide
                if o.value > np.iinfo(np.uint64).max:
                    wide = np.dtype(np.float64)
                o.kind = dtypes.as_dtype(wide)
    return operands


def apply(name: str, *args, arg=None) -> ndarray:
    """Record elementwise op ``name`` over ``args`` with NumPy's typing."""
    row = OPS[name]
    operands = [operand(a) for a in args]
    if builtins.all(isinstance(o, Scalar) for o in operands):
        # NumPy turns scalar-only calls into 0-d arrays of the default (strong) dtypes
        operands = [const(o.value, np.asarray(o.value).dtype) for o in operands]
    rule = row.dtype_rule
    if rule is Dtype.UFUNC:
        operands = _fit_comparison(name, operands)
        loop = dtypes.resolve_ufunc(row.ufunc, tuple(_kind(o) for o in operands))
        ins, out = loop[:-1], loop[-1]
        if name == "power" and dtypes.is_integer(ins[1]):
            _check_integer_power(operands[1], ins[1])
    elif rule is Dtype.SPECIAL:
        kind = _kind(operands[0])
        out = np.dtype(np.float32) if kind == np.float32 else np.dtype(np.float64)
        ins = (out,)
    elif name == "where":
        value = [_weak_value(o) for o in operands[1:]]
        out = dtypes.result_type(*value)
        ins = (dtypes.BOOL, out, out)
    else:  # SAME: round
        out = as_node(operands[0]).dtype
        ins = (out,) * len(operands)
    nodes = [_materialise(o, d) for o, d in zip(operands, ins)]
    broadcast_shapes(*(n.shape for n in nodes))  # raise NumPy's message before building
    return wrap(Node.make(name, nodes, arg, dtype=out))


def _weak_value(o):
    """What ``np.result_type`` needs to apply NEP 50: a weak Python scalar itself, or a dtype."""
    kind = _kind(o)
    if isinstance(o, Scalar):
        return o.value if kind in dtypes.WEAK_TYPES else kind
    return kind(0) if isinstance(kind, type) else kind


def _check_integer_power(exponent, dtype: np.dtype) -> None:
    value = exponent.value if isinstance(exponent, Scalar) else None
    if isinstance(value, int):  # NumPy refuses an out-of-range Python int first (u8 ** -1)
        dtypes.check_weak_int(value, dtype)
    if value is None and isinstance(exponent, Node) and exponent.op == "const":
        value = exponent.arg[0]
    if value is not None and value < 0:
        raise ValueError("Integers to negative integer powers are not allowed.")


def unary(name: str, x) -> ndarray:
    return apply(name, x)


def binary(name: str, a, b) -> ndarray:
    return apply(name, a, b)


def as_node(x) -> Node:
    """An operand as a node; a lone scalar becomes a 0-d array of NumPy's default dtype for it."""
    node = operand(x)
    return const(node.value, np.asarray(node.value).dtype) if isinstance(node, Scalar) else node


def astype(x, dtype, copy=True) -> ndarray:
    """``ndarray.astype``: an explicit conversion with C casting semantics, as NumPy's."""
    node = as_node(x)
    out = cast(node, dtypes.as_dtype(dtype))
    if out is node and copy:
        out = Node.make("copy", (node,), None, dtype=node.dtype)
    return wrap(out)


def copy(x) -> ndarray:
    """``numpy.copy``."""
    return astype(x, as_node(x).dtype)


def where(condition, x=None, y=None) -> ndarray:
    """``numpy.where`` with three arguments."""
    if x is None and y is None:
        from .indexing import nonzero

        return nonzero(condition)
    if x is None or y is None:
        raise ValueError("either both or neither of x and y should be given")
    return apply("where", condition, x, y)


def clip(a, a_min=None, a_max=None) -> ndarray:
    """``numpy.clip``; bounds out of an integer dtype's range are clamped to it, as NumPy does."""
    if a_min is None and a_max is None:
        raise ValueError("One of max or min must be given")
    out = wrap(as_node(a))
    kind = out.dtype
    for bound, op in ((a_min, "maximum"), (a_max, "minimum")):
        if bound is None:
            continue
        if isinstance(bound, int) and not isinstance(bound, bool) and dtypes.is_integer(kind):
            info = np.iinfo(kind)
            bound = builtins.min(builtins.max(bound, int(info.min)), int(info.max))
        out = apply(op, out, bound)
    return out


def round(a, decimals=0) -> ndarray:  # noqa: A001 - NumPy's name
    """``numpy.round``: half to even, as NumPy does."""
    if dtypes.is_integer(_kind(operand(a))) and decimals >= 0:
        return copy(a)
    return apply("round", a, arg=int(decimals))


around = round


def array_ufunc(ufunc, method, inputs, kwargs):
    """``ndarray.__array_ufunc__``: NumPy ufuncs called on fuseray arrays stay lazy."""
    out = kwargs.pop("out", None)
    dtype = kwargs.pop("dtype", None)
    if kwargs:
        raise TypeError(f"{ufunc.__name__}: unsupported arguments {sorted(kwargs)}")
    if method == "__call__":
        name = _UFUNC_NAMES.get(ufunc.__name__, ufunc.__name__)
        if name not in OPS:
            return NotImplemented
        if ufunc.nout == 2 and name == "divmod":
            return divmod(*inputs)
        return FUNCTIONS[name](*inputs, out=out, dtype=dtype) if name in FUNCTIONS else \
            apply(name, *inputs)
    if method == "reduce":
        from . import reductions

        reducer = reductions.UFUNC_REDUCTIONS.get(ufunc.__name__)
        if reducer is None:
            return NotImplemented
        (x,) = inputs
        result = reducer(x, **({"dtype": dtype} if dtype is not None else {}))
        if out is not None:
            from .update import write_out

            return write_out(ufunc.__name__, result, out, reduction=True)
        return result
    return NotImplemented


# ufunc names whose NumPy spelling differs from the op table's
_UFUNC_NAMES = {"true_divide": "divide", "conjugate": "positive", "abs": "absolute"}


def divmod(a, b):  # noqa: A001 - NumPy's name
    """``numpy.divmod``: (floor_divide, remainder)."""
    return apply("floor_divide", a, b), apply("remainder", a, b)


def _define(name: str):
    def fn(*args, out=None, dtype=None):
        row = OPS[name]
        if len(args) != row.arity:
            raise TypeError(f"{name}() takes {row.arity} positional arguments, got {len(args)}")
        result = apply(name, *args)
        if dtype is not None:
            result = astype(result, dtype)
        if out is not None:
            from .update import write_out

            return write_out(name, result, out)
        return result

    fn.__name__ = name
    fn.__qualname__ = name
    fn.__doc__ = f"``numpy.{name}``, recorded lazily."
    return fn


# One public function per ufunc row of the op table, e.g. ``add``, ``sin``, ``logical_xor``.
FUNCTIONS = {name: _define(name) for name in sorted(UFUNCS) if name not in ("cast", "copy")}
SPECIAL_FUNCTIONS = {name: _define(name) for name in ("erf", "erfc", "expit", "logit")}
globals().update(FUNCTIONS)
ALIASES = {
    "abs": "absolute",
    "mod": "remainder",
    "true_divide": "divide",
    "pow": "power",
    "bitwise_not": "invert",
    "bitwise_left_shift": "left_shift",
    "bitwise_right_shift": "right_shift",
    "acos": "arccos",
    "asin": "arcsin",
    "atan": "arctan",
    "atan2": "arctan2",
    "acosh": "arccosh",
    "asinh": "arcsinh",
    "atanh": "arctanh",
}
globals().update({alias: FUNCTIONS[name] for alias, name in ALIASES.items()})

"""Value ranges: an interval that every non-NaN value of a float node lies in.

Stage: backend (CUDA), an analysis the code generator asks when it picks a helper for an op
whose cheaper form is exact only on part of the domain: ``sqrt`` of an operand proven normal
(``abs(y) + 0.5``) skips sqrtf's subnormal and zero handling, and ``sin`` of an operand proven
small (``sqrt(...) * 0.99 + 0.01``) skips the argument reduction (``fr_sqrt_normal``,
``fr_sin_small`` in ``kernels/fuseray_math.cuh``).

Invariants:

* A range is ``(lo, hi)`` with ``lo <= hi``, possibly infinite; ``UNKNOWN`` is
  ``(-inf, inf)``. It bounds every value the node can take *except NaN*: an op that may yield NaN
  (``sqrt`` of a negative, ``inf - inf``) still bounds its other values, and the helpers chosen
  from a range pass NaN through.
* Bounds hold for the kernel's rounded arithmetic, not only for exact arithmetic: they are
  computed in float64 and every rounded step is widened outward by ``_ROUNDED`` (correctly
  rounded ops) or ``_LIBM`` (library functions, a few ulp), plus a subnormal's worth.
* Only constants in the graph narrow a range: a jit parameter or an input array is unknown. A
  constant that changes a proof changes the kernel's source (a new compile), as any constant
  used here does; other constants stay kernel arguments.
* The walk looks ``DEPTH`` nodes down: enough for chains such as chain20's
  ``sin(sqrt(abs(sin(y)) + 0.5) * 0.99 + 0.01)``, and bounded on long ones.
"""

from __future__ import annotations

import math

import numpy as np

from ...graph import Node

UNKNOWN = (-math.inf, math.inf)
DEPTH = 8

_ROUNDED = 2.0**-20  # relative: over float32's 2^-24 rounding (float16 widens by its own eps)
_LIBM = 2.0**-16  # relative: libm's float32 functions are a few ulp (2^-23 each)
_TINY = 2.0**-126  # absolute: a result rounded in the subnormal range

_VIEWS = frozenset({"reshape", "expand", "permute", "index"})
_UNIT = (-1.0, 1.0)
# ops whose non-NaN values lie in a fixed interval whatever their operands
_FIXED = {
    "sin": _UNIT, "cos": _UNIT, "tanh": _UNIT, "erf": _UNIT,
    "erfc": (0.0, 2.0), "expit": (0.0, 1.0), "cosh": (1.0, math.inf),
    "arctan": (-math.pi / 2, math.pi / 2), "arccos": (0.0, math.pi),
    "arcsin": (-math.pi / 2, math.pi / 2),
}
# monotonic increasing functions: their range is the image of the operand's
_INCREASING = {"exp": math.exp, "exp2": lambda v: 2.0**v}


def value_range(node: Node, depth: int = DEPTH) -> tuple[float, float]:
    """An interval holding every non-NaN value of float ``node`` (``UNKNOWN`` if nothing is
    proven)."""
    while node.op in _VIEWS:  # the same values, rearranged
        node = node.src[0]
    op = node.op
    if op == "const" and node.dtype.kind in "biuf":
        v = float(node.arg[0])
        # an integer past 2^24 may round where a float operation converts it
        exact = node.dtype.kind == "f" or abs(v) <= 2**24
        return (v, v) if v == v and exact else UNKNOWN
    if node.dtype.kind != "f":  # integer arithmetic wraps: no proofs through it
        return UNKNOWN
    if op in _FIXED:
        return _widen(node, _FIXED[op], _LIBM)
    if depth == 0 or op not in _RULES:
        return _nonnegative(node) or UNKNOWN
    ranges = [value_range(s, depth - 1) for s in node.src]
    return _RULES[op](node, *ranges)


def _nonnegative(node: Node) -> tuple[float, float] | None:
    if node.op in ("absolute", "sqrt", "square", "exp", "exp2") or (
        node.op == "multiply" and node.src[0] is node.src[1]
    ):
        return (0.0, math.inf)
    return None


def _widen(node: Node, r: tuple[float, float], rel: float) -> tuple[float, float]:
    """``r`` made wide enough for ``node``'s rounding (``rel`` of its bounds, or its dtype's
    epsilon if larger: float16 results are float32 ones rounded again)."""
    info = np.finfo(node.dtype)
    rel = max(rel, float(info.eps))
    lo, hi = r
    if lo != lo or hi != hi:  # inf - inf, 0 * inf: no proof
        return UNKNOWN
    lo, hi = lo - abs(lo) * rel - _TINY, hi + abs(hi) * rel + _TINY
    # past the type's largest finite value a result rounds to infinity
    big = float(info.max)
    return (-math.inf if lo < -big else lo, math.inf if hi > big else hi)


def _absolute(node, a):
    lo, hi = a
    if lo >= 0:
        return a
    if hi <= 0:
        return (-hi, -lo)
    return (0.0, max(-lo, hi))


def _multiply(node, a, b):
    if node.src[0] is node.src[1]:  # x * x is never negative, whatever x's range
        return _square(node, a)
    corners = [x * y for x in a for y in b]
    if any(c != c for c in corners):
        return UNKNOWN
    return _widen(node, (min(corners), max(corners)), _ROUNDED)


def _square(node, a):
    lo, hi = _absolute(node, a)
    return _nonnegative_part(_widen(node, (lo * lo, hi * hi), _ROUNDED))


def _nonnegative_part(r):
    """A range of an op whose results are never negative, widened: below zero it is zero."""
    return (max(r[0], 0.0), r[1])


def _sqrt(node, a):
    lo, hi = a
    return _nonnegative_part(
        _widen(node, (math.sqrt(max(lo, 0.0)), math.sqrt(max(hi, 0.0))), _ROUNDED))


def _increasing(node, a):
    f = _INCREASING[node.op]
    lo, hi = (_saturate(f, v) for v in a)
    return _nonnegative_part(_widen(node, (lo, hi), _LIBM))


def _saturate(f, v: float) -> float:
    try:
        return f(v)
    except OverflowError:
        return math.inf


def _divide(node, a, b):
    if b[0] <= 0 <= b[1]:  # a divisor range holding zero: the quotient is unbounded
        return UNKNOWN
    corners = [x / y for x in a for y in b if not (math.isinf(x) and math.isinf(y))]
    if len(corners) < 4:
        return UNKNOWN
    return _widen(node, (min(corners), max(corners)), _ROUNDED)


def _cast(node, a):
    # float to float rounds; from bool or integer operands nothing is proven, constants included
    if node.src[0].dtype.kind != "f" or node.dtype.kind != "f":
        return UNKNOWN
    return _widen(node, a, _ROUNDED)


_RULES = {
    "absolute": _absolute,
    "negative": lambda node, a: (-a[1], -a[0]),
    "positive": lambda node, a: a,
    "copy": lambda node, a: a,
    "add": lambda node, a, b: _widen(node, (a[0] + b[0], a[1] + b[1]), _ROUNDED),
    "subtract": lambda node, a, b: _widen(node, (a[0] - b[1], a[1] - b[0]), _ROUNDED),
    "multiply": _multiply,
    "square": _square,
    "divide": _divide,
    "sqrt": _sqrt,
    "exp": _increasing,
    "exp2": _increasing,
    # NaN-propagating extrema and selection are exact: each value is one of the operands'
    "maximum": lambda node, a, b: (max(a[0], b[0]), max(a[1], b[1])),
    "minimum": lambda node, a, b: (min(a[0], b[0]), min(a[1], b[1])),
    "where": lambda node, c, a, b: (min(a[0], b[0]), max(a[1], b[1])),
    # a row's max or min is one of its values
    "max": lambda node, a: a,
    "min": lambda node, a: a,
    "cast": _cast,
}

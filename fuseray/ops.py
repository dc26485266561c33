"""THE op table: one row per op, read by every stage.

Stage: shared. The front end reads a row to type an op and build its node, the passes read the
algebraic facts (commutative, idempotent, ...), the NumPy interpreter calls ``numpy``, and the code
generators expand ``cuda`` / ``py`` templates. Groups (``ELEMENTWISE``, ``COMMUTATIVE``, ...) are
derived from the table, never listed by hand, so adding an op is adding one row, and the tests pick
it up by iterating ``OPS``.

Templates: ``{0}``, ``{1}``, ... are the operands, already converted to the op's *loop* dtype (the
front end inserts the casts NumPy's type resolution asks for), so a template never promotes. Most
rows use an overloaded helper ``fr_<name>`` defined once per backend (``kernels/fuseray_math.cuh``
for CUDA, ``backends/numba_math.py`` for the CPU), which is where dtype-specific care lives
(integer division by zero, NaN-propagating max, float16 computed in float32).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class Kind(enum.Enum):
    LEAF = "leaf"  # a value the graph does not compute: a buffer, a constant, a jit parameter
    ELEMENTWISE = "elementwise"
    REDUCE = "reduce"
    MOVEMENT = "movement"  # changes how elements are addressed, never their values
    JOIN = "join"  # concatenate: writes each source into a region of its result
    GATHER = "gather"  # take: reads its first source at positions its second source computes
    SCATTER = "scatter"  # writes values at computed positions of a copy of an array


class Dtype(enum.Enum):
    """How an op's result dtype is found."""

    UFUNC = "ufunc"  # NumPy's own loop resolution for the ufunc of the same name
    SPECIAL = "special"  # scipy.special style: float32 stays float32, all else float64
    SAME = "same"  # result has the (common) dtype of the value operands
    CAST = "cast"  # the node carries its target dtype
    BOOL = "bool"
    REDUCTION = "reduction"  # NumPy's reduction of the same name decides (sum of int8 is int64)
    INDEX = "index"  # intp (argmax, argmin)


@dataclass(frozen=True, slots=True)
class OpDef:
    name: str  # NumPy's spelling
    kind: Kind
    arity: int  # operand count; -1 for variadic
    dtype_rule: Dtype
    numpy: Callable | None  # reference implementation on NumPy arrays (loop dtypes in)
    cuda: str = ""  # CUDA C expression template, empty: "fr_<name>({0}, ...)"
    py: str = ""  # Python expression template for numba, empty: "fr_<name>({0}, ...)"
    ufunc: np.ufunc | None = None  # the ufunc whose type resolution the op follows
    commutative: bool = False
    idempotent: bool = False  # f(f(x)) == f(x) (unary) or f(x, x) == x (binary)
    involution: bool = False  # f(f(x)) == x
    identity: object = None  # reductions: the neutral element of the combine
    float_only: bool = False  # reductions/elementwise defined only on floats after promotion
    flops: int = 1  # rough cost, for explain() and the CPU/GPU cost models

    def template(self, backend: str) -> str:
        text = self.cuda if backend == "cuda" else self.py
        if text:
            return text
        args = ", ".join(f"{{{i}}}" for i in range(self.arity))
        return f"fr_{self.name}({args})"


def _special(name: str) -> Callable:
    """Reference for scipy.special functions; SciPy when installed, else exact scalar math."""
    scalar = {
        "erf": math.erf,
        "erfc": math.erfc,
        "expit": lambda x: 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x)),
        "logit": lambda p: math.log(p / (1 - p)) if 0 < p < 1 else _logit_edge(p),
    }[name]

    def ref(x: np.ndarray) -> np.ndarray:
        try:
            import scipy.special

            return getattr(scipy.special, name)(x)
        except ImportError:
            out = np.frompyfunc(scalar, 1, 1)(x.astype(np.float64))
            return np.asarray(out, dtype=np.float64).astype(x.dtype)

    ref.__name__ = name
    return ref


def _logit_edge(p: float) -> float:
    if p == 0:
        return -math.inf
    if p == 1:
        return math.inf
    return math.nan


def _ew(name, arity, numpy_fn=None, *, cuda="", py="", rule=Dtype.UFUNC, flops=1, **facts):
    fn = numpy_fn if numpy_fn is not None else getattr(np, name)
    ufunc = fn if isinstance(fn, np.ufunc) else None
    return OpDef(name, Kind.ELEMENTWISE, arity, rule, fn, cuda, py, ufunc, flops=flops, **facts)


def _red(name, identity, numpy_fn=None, rule=Dtype.REDUCTION, **facts):
    fn = numpy_fn if numpy_fn is not None else getattr(np, name)
    return OpDef(name, Kind.REDUCE, 1, rule, fn, identity=identity, **facts)


def _where(cond, a, b):
    return np.where(cond, a, b)


def _cast(x, dtype=None):
    return x.astype(dtype)


def _copy(x):
    return np.array(x, copy=True)


def _round(x, decimals=0):
    return np.round(x, decimals)


def _mean(x, axis=None, keepdims=False, ddof=0):
    """Sum divided by (count - ddof): NumPy's mean when ddof is 0, and var's last step."""
    count = math.prod(x.shape[a] for a in axis) if axis is not None else x.size
    return np.true_divide(np.sum(x, axis=axis, keepdims=keepdims), max(count - ddof, 0))


_ROWS = [
    # leaves
    OpDef("buffer", Kind.LEAF, 0, Dtype.CAST, None),
    OpDef("const", Kind.LEAF, 0, Dtype.CAST, None),
    OpDef("param", Kind.LEAF, 0, Dtype.CAST, None),
    # arithmetic
    _ew("add", 2, cuda="({0} + {1})", py="({0} + {1})", commutative=True),
    _ew("subtract", 2, cuda="({0} - {1})", py="({0} - {1})"),
    _ew("multiply", 2, cuda="({0} * {1})", py="({0} * {1})", commutative=True),
    _ew("divide", 2, flops=4),
    _ew("floor_divide", 2, flops=8),
    _ew("remainder", 2, flops=8),
    _ew("fmod", 2, flops=8),
    _ew("power", 2, flops=20),
    _ew("float_power", 2, flops=20),
    _ew("negative", 1, cuda="(-{0})", py="(-{0})", involution=True),
    _ew("positive", 1, cuda="{0}", py="{0}", idempotent=True),
    _ew("absolute", 1, idempotent=True),
    _ew("sign", 1, idempotent=True),
    _ew("reciprocal", 1, flops=4),
    _ew("square", 1, cuda="({0} * {0})", py="({0} * {0})"),
    _ew("sqrt", 1, flops=4),
    _ew("cbrt", 1, flops=20),
    # exponents and logarithms
    _ew("exp", 1, flops=20),
    _ew("exp2", 1, flops=20),
    _ew("expm1", 1, flops=20),
    _ew("log", 1, flops=20),
    _ew("log2", 1, flops=20),
    _ew("log10", 1, flops=20),
    _ew("log1p", 1, flops=20),
    _ew("logaddexp", 2, commutative=True, flops=40),
    _ew("logaddexp2", 2, commutative=True, flops=40),
    # trigonometric and hyperbolic
    *(_ew(n, 1, flops=20) for n in ("sin", "cos", "tan", "arcsin", "arccos", "arctan")),
    *(_ew(n, 1, flops=20) for n in ("sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh")),
    _ew("arctan2", 2, flops=40),
    _ew("hypot", 2, commutative=True, flops=10),
    _ew("degrees", 1),
    _ew("radians", 1),
    # rounding
    _ew("floor", 1, idempotent=True),
    _ew("ceil", 1, idempotent=True),
    _ew("trunc", 1, idempotent=True),
    _ew("rint", 1, idempotent=True),
    _ew("round", 1, _round, rule=Dtype.SAME),
    # extrema and selection
    _ew("maximum", 2, commutative=True, idempotent=True),
    _ew("minimum", 2, commutative=True, idempotent=True),
    _ew("fmax", 2, commutative=True, idempotent=True),
    _ew("fmin", 2, commutative=True, idempotent=True),
    _ew("copysign", 2),
    _ew("where", 3, _where, cuda="({0} ? {1} : {2})", py="({1} if {0} else {2})", rule=Dtype.SAME),
    # an array update (x[key] = v): where(region, padded value, old); the planner stores it
    _ew("update", 3, _where, cuda="({0} ? {1} : {2})", py="({1} if {0} else {2})",
        rule=Dtype.SAME),
    # classification
    _ew("signbit", 1),
    _ew("isnan", 1),
    _ew("isinf", 1),
    _ew("isfinite", 1),
    # comparisons
    _ew("equal", 2, cuda="({0} == {1})", py="({0} == {1})", commutative=True),
    _ew("not_equal", 2, cuda="({0} != {1})", py="({0} != {1})", commutative=True),
    _ew("less", 2),
    _ew("less_equal", 2),
    _ew("greater", 2),
    _ew("greater_equal", 2),
    # logical and bitwise
    _ew("logical_and", 2, cuda="({0} && {1})", py="({0} and {1})", commutative=True),
    _ew("logical_or", 2, cuda="({0} || {1})", py="({0} or {1})", commutative=True),
    _ew("logical_xor", 2, cuda="({0} != {1})", commutative=True),
    _ew("logical_not", 1, cuda="(!{0})", py="(not {0})", involution=True),
    _ew("bitwise_and", 2, commutative=True, idempotent=True),
    _ew("bitwise_or", 2, commutative=True, idempotent=True),
    _ew("bitwise_xor", 2, commutative=True),
    _ew("invert", 1, involution=True),
    _ew("left_shift", 2),
    _ew("right_shift", 2),
    # scipy.special
    *(_ew(n, 1, _special(n), rule=Dtype.SPECIAL, flops=20)
      for n in ("erf", "erfc", "expit", "logit")),
    # conversions
    _ew("cast", 1, _cast, cuda="{0}", py="{0}", rule=Dtype.CAST),
    _ew("copy", 1, _copy, cuda="{0}", py="{0}", rule=Dtype.SAME),
    # reductions
    _red("sum", 0, commutative=True),
    _red("prod", 1, commutative=True),
    _red("max", None, commutative=True, idempotent=True),
    _red("min", None, commutative=True, idempotent=True),
    _red("any", False, commutative=True, idempotent=True),
    _red("all", True, commutative=True, idempotent=True),
    _red("mean", 0, _mean, rule=Dtype.SAME, commutative=True),
    _red("argmax", None, rule=Dtype.INDEX),
    _red("argmin", None, rule=Dtype.INDEX),
    # movement
    OpDef("reshape", Kind.MOVEMENT, 1, Dtype.SAME, np.reshape),
    OpDef("permute", Kind.MOVEMENT, 1, Dtype.SAME, np.transpose),
    OpDef("expand", Kind.MOVEMENT, 1, Dtype.SAME, np.broadcast_to),
    OpDef("index", Kind.MOVEMENT, 1, Dtype.SAME, None),
    OpDef("pad", Kind.MOVEMENT, 1, Dtype.SAME, None),  # arg ((before, after), ...); reads 0
    # joins
    OpDef("concatenate", Kind.JOIN, -1, Dtype.SAME, np.concatenate),
    # advanced indexing: take(x, i)[j, r...] = x[i[j], r...]; scatter(x, i, v): x with
    # x[i[j], r...] = v[j, r...] (the last write to a position wins, as in NumPy)
    OpDef("take", Kind.GATHER, 2, Dtype.SAME, None),
    OpDef("scatter", Kind.SCATTER, 3, Dtype.SAME, None),
]

OPS: dict[str, OpDef] = {row.name: row for row in _ROWS}
assert len(OPS) == len(_ROWS), "duplicate op names in the table"


def _group(pred) -> frozenset[str]:
    return frozenset(name for name, row in OPS.items() if pred(row))


LEAVES = _group(lambda r: r.kind is Kind.LEAF)
ELEMENTWISE = _group(lambda r: r.kind is Kind.ELEMENTWISE)
REDUCE = _group(lambda r: r.kind is Kind.REDUCE)
MOVEMENT = _group(lambda r: r.kind is Kind.MOVEMENT)
UNARY = _group(lambda r: r.kind is Kind.ELEMENTWISE and r.arity == 1)
BINARY = _group(lambda r: r.kind is Kind.ELEMENTWISE and r.arity == 2)
COMMUTATIVE = _group(lambda r: r.commutative and r.kind is Kind.ELEMENTWISE)
COMPARISONS = frozenset({"equal", "not_equal", "less", "less_equal", "greater", "greater_equal"})
ARG_REDUCTIONS = frozenset({"argmax", "argmin"})
# Elementwise ops that users reach by name (cast/copy/where/round are reached through methods).
UFUNCS = _group(lambda r: r.kind is Kind.ELEMENTWISE and r.ufunc is not None)
SPECIAL = _group(lambda r: r.dtype_rule is Dtype.SPECIAL)

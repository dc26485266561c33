"""``fr_<name>``: one numba scalar helper per elementwise op of the table, with NumPy's semantics.

Stage: backends (numba). ``ops.OpDef.template("py")`` expands to ``fr_<name>(a, b)`` unless the
row gives an infix form; generated kernels import every name below. Each helper is a Python stub
with a numba ``@overload`` that picks an implementation from the operand types, so the generated
source is dtype-free, like the CUDA templates.

Invariants the code generator relies on:

- Operands already have the op's loop dtype (the front end inserts casts), and the generator
  casts every result to the node's dtype. So a helper may return a wider type (numba promotes
  int8 + int8 to int64) and the cast wraps it exactly as NumPy's int8 loop does.
- float16 values arrive as float32 (numba has no CPU float16); the generator rounds the result
  to float16 after each op, which is what NumPy's float16 loops do.
- No helper raises or allocates: integer division and remainder by zero give 0, as NumPy 2's
  loops do (NumPy also warns; we do not), shifts past the bit width give 0 or -1, and
  ``MIN // -1`` wraps. A raising helper would also stop LLVM from vectorising the loop.
- float32 exp, log, tanh, erf (and expit through exp) use ``numba_vecmath`` so that the loop
  vectorises; everything else is libm through numba, which matches NumPy's non-SIMD loops.

Float division, remainder and floor division port NumPy's ``npy_divmod`` so that signs of zero,
infinities and the snapping of quotients agree bit for bit.
"""

from __future__ import annotations

import math
import operator

import numpy as np
from numba import njit, types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .numba_intrinsics import JIT, round_f16
from .numba_vecmath import erf_f32, exp_f32, log_f32, tanh_f32

_LOG2 = math.log(2.0)
_LOG2E = 1.0 / _LOG2


def _stub(name: str):
    def fn(*args):
        raise RuntimeError(f"{name} is a numba helper: call it from compiled code")

    fn.__name__ = fn.__qualname__ = name
    return fn


def _np(t):
    """The NumPy scalar type of numba type ``t`` (to make typed constants in a typer)."""
    return as_dtype(t).type


def _is_float(t) -> bool:
    return isinstance(t, types.Float)


def _is_int(t) -> bool:
    return isinstance(t, types.Integer)


def _signed(t) -> bool:
    return isinstance(t, types.Integer) and t.signed


# Helpers that expand to long vectorisable code are marked alwaysinline for LLVM: its inliner
# gives up on a loop that calls several of them, and a call stops vectorisation (two erf calls
# made Black-Scholes 20x slower)
_INLINE = {"exp", "log", "tanh", "erf", "expit"}
_JIT_INLINE = {**JIT, "forceinline": True}


def _define(name: str):
    """Register ``fr_<name>`` in this module with the decorated typer as its numba overload."""

    def register(typer):
        stub = _stub(f"fr_{name}")
        overload(stub, jit_options=_JIT_INLINE if name in _INLINE else JIT)(typer)
        globals()[f"fr_{name}"] = stub
        __all__.append(f"fr_{name}")
        return typer

    return register


__all__: list[str] = ["fr_f16"]


# ---------------------------------------------------------------------------------------------
# float16: the generator rounds each float16 result with fr_f16 (float32 in, float32 out)
# ---------------------------------------------------------------------------------------------

fr_f16 = round_f16


# ---------------------------------------------------------------------------------------------
# helpers that are one function for every dtype (float32 exp, log, tanh, erf: numba_vecmath)
# ---------------------------------------------------------------------------------------------


def _unary(name: str, fn, f32=None):
    def typer(a):
        if f32 is not None and a == types.float32:
            return lambda a: f32(a)
        return lambda a: fn(a)

    typer.__name__ = name
    _define(name)(typer)


def _binary(name: str, fn):
    def typer(a, b):
        return lambda a, b: fn(a, b)

    typer.__name__ = name
    _define(name)(typer)


for _name, _fn, _f32 in (
    ("sqrt", math.sqrt, None), ("cbrt", np.cbrt, None), ("exp", math.exp, exp_f32),
    ("exp2", np.exp2, None), ("expm1", math.expm1, None), ("log", math.log, log_f32),
    ("log2", np.log2, None), ("log10", math.log10, None), ("log1p", math.log1p, None),
    ("sin", math.sin, None), ("cos", math.cos, None), ("tan", math.tan, None),
    ("arcsin", math.asin, None), ("arccos", math.acos, None), ("arctan", math.atan, None),
    ("sinh", math.sinh, None), ("cosh", math.cosh, None), ("tanh", math.tanh, tanh_f32),
    ("arcsinh", math.asinh, None), ("arccosh", math.acosh, None),
    ("arctanh", math.atanh, None), ("signbit", np.signbit, None), ("erf", math.erf, erf_f32),
    ("erfc", math.erfc, None),
):
    _unary(_name, _fn, _f32)

for _name, _fn in (
    ("divide", operator.truediv), ("float_power", operator.pow), ("arctan2", math.atan2),
    ("hypot", math.hypot), ("copysign", np.copysign), ("less", operator.lt),
    ("less_equal", operator.le), ("greater", operator.gt), ("greater_equal", operator.ge),
    ("bitwise_and", operator.and_), ("bitwise_or", operator.or_),
    ("bitwise_xor", operator.xor),
):
    _binary(_name, _fn)


# ---------------------------------------------------------------------------------------------
# arithmetic
# ---------------------------------------------------------------------------------------------


def _float_divmod(t):
    """NumPy's npy_divmod for float type ``t``: (floor quotient, Python-style modulus)."""
    one, half = _np(t)(1.0), _np(t)(0.5)

    def divmod_(a, b):
        mod = np.fmod(a, b)
        div = (a - mod) / b
        if mod != 0:
            if (b < 0) != (mod < 0):
                mod += b
                div -= one
        else:
            mod = np.copysign(mod - mod, b)  # a zero with the sign of b
        if div != 0:
            floordiv = np.floor(div)
            if div - floordiv > half:
                floordiv += one
        else:
            floordiv = np.copysign(div - div, a / b)
        return floordiv, mod

    return njit(**JIT)(divmod_)


@_define("floor_divide")
def _floor_divide(a, b):
    if _is_float(a):
        divmod_ = _float_divmod(a)
        return lambda a, b: a / b if b == 0 else divmod_(a, b)[0]
    if _signed(a):
        return lambda a, b: 0 if b == 0 else (-a if b == -1 else a // b)
    return lambda a, b: 0 if b == 0 else a // b


@_define("remainder")
def _remainder(a, b):
    if _is_float(a):
        divmod_ = _float_divmod(a)
        return lambda a, b: np.fmod(a, b) if b == 0 else divmod_(a, b)[1]
    if _signed(a):
        return lambda a, b: 0 if (b == 0 or b == -1) else a % b
    return lambda a, b: 0 if b == 0 else a % b


@_define("fmod")
def _fmod(a, b):
    if _is_float(a):
        return lambda a, b: np.fmod(a, b)
    if _signed(a):

        def impl(a, b):
            if b == 0 or b == -1:
                return 0
            r = a % b  # Python's sign (of b); C's fmod takes the sign of a
            return r - b if r != 0 and (r < 0) != (a < 0) else r

        return impl
    return lambda a, b: 0 if b == 0 else a % b


@_define("power")
def _power(a, b):
    if _is_float(a):
        return lambda a, b: a**b
    if _is_int(a):
        # square and multiply in 64 bits: wrapping there and truncating to the node dtype later
        # equals NumPy's wrapping in the narrow type (multiplication commutes with mod 2**k)
        wide = np.int64 if a.signed else np.uint64

        def impl(a, b):
            if b < 0:  # the generator raises NumPy's ValueError before this value is used
                return wide(0)
            base = wide(a)
            e = b
            out = wide(1)
            while e > 0:
                if e & 1:
                    out = out * base
                base = base * base
                e >>= 1
            return out

        return impl
    return lambda a, b: a**b


@_define("absolute")
def _absolute(a):
    if isinstance(a, types.Boolean):
        return lambda a: a
    return lambda a: abs(a)


@_define("sign")
def _sign(a):
    if _is_float(a):
        one, zero = _np(a)(1.0), _np(a)(0.0)
        return lambda a: one if a > 0 else (-one if a < 0 else (zero if a == 0 else a))
    if _signed(a):
        return lambda a: (a > 0) - (a < 0)
    return lambda a: 1 if a > 0 else 0


@_define("reciprocal")
def _reciprocal(a):
    if _is_float(a):
        one = _np(a)(1.0)
        return lambda a: one / a
    # NumPy computes 1.0 / x and converts back: 0 -> inf -> INT_MIN for 32/64-bit signed types
    # on x86 (cvttsd2si) and 0 for the narrower ones after truncation
    zero = np.iinfo(np.int64).min if a.bitwidth == 64 else -(2**31)
    zero = zero if a.signed and a.bitwidth >= 32 else 0
    if a.signed:
        return lambda a: zero if a == 0 else (a if (a == 1 or a == -1) else 0)
    return lambda a: (1 if a == 1 else 0)


# ---------------------------------------------------------------------------------------------
# exponents and logarithms
# ---------------------------------------------------------------------------------------------


@_define("logaddexp")
def _logaddexp(a, b):
    log2 = _np(a)(_LOG2)

    def impl(a, b):
        if a == b:
            return a + log2  # handles infinities of the same sign
        d = a - b
        if d > 0:
            return a + math.log1p(math.exp(-d))
        if d <= 0:
            return b + math.log1p(math.exp(d))
        return d  # NaN

    return impl


@_define("logaddexp2")
def _logaddexp2(a, b):
    log2e, one = _np(a)(_LOG2E), _np(a)(1.0)

    def impl(a, b):
        if a == b:
            return a + one
        d = a - b
        if d > 0:
            return a + log2e * math.log1p(np.exp2(-d))
        if d <= 0:
            return b + log2e * math.log1p(np.exp2(d))
        return d

    return impl


def _scale(name: str, num: float, den: float):
    """``a * (num / den)`` with the constant computed in a's type, as NumPy's loops do:
    float32 multiplies by (180.0f / pi_f), float64 by (180.0 / pi)."""

    def typer(a):
        c = _np(a)(_np(a)(num) / _np(a)(den))
        return lambda a: a * c

    typer.__name__ = name
    _define(name)(typer)


_scale("degrees", 180.0, math.pi)
_scale("radians", math.pi, 180.0)


# ---------------------------------------------------------------------------------------------
# rounding: floor/ceil/trunc/rint of integers are the integers themselves (NumPy 2 loops)
# ---------------------------------------------------------------------------------------------


def _identity_on_ints(name: str, fn):
    def typer(a):
        if _is_int(a) or isinstance(a, types.Boolean):
            return lambda a: a
        return lambda a: fn(a)

    typer.__name__ = name
    _define(name)(typer)


for _name, _fn in (("floor", np.floor), ("ceil", np.ceil), ("trunc", np.trunc),
                   ("rint", np.rint)):
    _identity_on_ints(_name, _fn)


@_define("round")
def _round(a, decimals):
    """``numpy.round``: scale by 10**decimals, round half to even, scale back, in the dtype.

    NumPy runs three ufuncs (multiply, rint, true_divide) with the Python float 10**decimals as
    a weak scalar, so each step rounds to the dtype; integers go through float64.
    """
    if _is_int(a):

        def impl(a, decimals):
            f = 10.0 ** (-decimals)
            return np.rint(a / f) * f

        return impl
    t = _np(a)

    def impl(a, decimals):
        if decimals >= 0:
            f = t(10.0**decimals)
            return np.rint(a * f) / f
        f = t(10.0 ** (-decimals))
        return np.rint(a / f) * f

    return impl


@_define("round_f16")
def _round_f16(a, decimals):
    """``numpy.round`` of float16 values held in float32: every step rounds to float16."""

    def impl(a, decimals):
        if decimals >= 0:
            f = round_f16(np.float32(10.0**decimals))
            return round_f16(np.rint(round_f16(a * f)) / f)
        f = round_f16(np.float32(10.0 ** (-decimals)))
        return round_f16(np.rint(round_f16(a / f)) * f)

    return impl


# ---------------------------------------------------------------------------------------------
# extrema, selection, classification
# ---------------------------------------------------------------------------------------------


@_define("maximum")
def _maximum(a, b):
    if _is_float(a):
        # NaN from either side wins; ties (-0.0 vs 0.0) give b, like NumPy's SIMD loop
        return lambda a, b: a if (a > b or a != a) else b
    return lambda a, b: a if a >= b else b


@_define("minimum")
def _minimum(a, b):
    if _is_float(a):
        return lambda a, b: a if (a < b or a != a) else b
    return lambda a, b: a if a <= b else b


@_define("fmax")
def _fmax(a, b):
    if _is_float(a):
        return lambda a, b: a if (a >= b or b != b) else b  # NaN loses to a number
    return lambda a, b: a if a >= b else b


@_define("fmin")
def _fmin(a, b):
    if _is_float(a):
        return lambda a, b: a if (a <= b or b != b) else b
    return lambda a, b: a if a <= b else b


@_define("isnan")
def _isnan(a):
    if _is_float(a):
        return lambda a: a != a
    return lambda a: False


@_define("isinf")
def _isinf(a):
    if _is_float(a):
        return lambda a: abs(a) == np.inf
    return lambda a: False


@_define("isfinite")
def _isfinite(a):
    if _is_float(a):
        return lambda a: abs(a) < np.inf  # False for NaN too
    return lambda a: True


# ---------------------------------------------------------------------------------------------
# logical and bitwise
# ---------------------------------------------------------------------------------------------


@_define("logical_xor")
def _logical_xor(a, b):
    return lambda a, b: (a != 0) != (b != 0)


@_define("invert")
def _invert(a):
    if isinstance(a, types.Boolean):
        return lambda a: not a
    return lambda a: ~a


@_define("left_shift")
def _left_shift(a, b):
    # NumPy 2 defines shifts by >= the bit width (and by negative counts) as 0
    bits = a.bitwidth if _is_int(a) else 8
    return lambda a, b: (a << b) if (b >= 0 and b < bits) else (a - a)


@_define("right_shift")
def _right_shift(a, b):
    bits = a.bitwidth if _is_int(a) else 8
    if _signed(a):
        return lambda a, b: (a >> b) if (b >= 0 and b < bits) else (-1 if a < 0 else 0)
    return lambda a, b: (a >> b) if (b >= 0 and b < bits) else (a - a)


# ---------------------------------------------------------------------------------------------
# scipy.special
# ---------------------------------------------------------------------------------------------


@_define("expit")
def _expit(a):
    if a == types.float32:
        one = np.float32(1.0)
        return lambda a: one / (one + exp_f32(-a))

    def impl(a):
        if a >= 0:
            return 1.0 / (1.0 + math.exp(-a))
        e = math.exp(a)
        return e / (1.0 + e)

    return impl


@_define("logit")
def _logit(a):
    one = _np(a)(1.0)
    return lambda a: math.log(a / (one - a))

"""Bit-level building blocks for the numba backend: bit casts, fused multiply-add, float16.

Stage: backends (numba). numba has no float16 arithmetic on the CPU and no scalar bit casts, so
this module supplies both as tiny LLVM intrinsics and branch-free helpers that LLVM can inline
and vectorise. Generated kernels keep a float16 value in a float32 register, rounded to float16
precision after every op (NumPy's float16 loops compute in float32 and round per op); float16
arrays travel as uint16 and are converted on load and store with round-half-to-even, exactly as
``numpy.float16`` conversions do.

Invariants: every helper is a pure function of its arguments (no allocation, no exceptions), so
a loop that calls them stays vectorisable.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

JIT = {"error_model": "numpy", "cache": False}

_INT_OF = {types.float32: ir.IntType(32), types.float64: ir.IntType(64)}
_FLOAT_OF = {types.int32: ir.FloatType(), types.int64: ir.DoubleType()}


@intrinsic
def bits_of(typingctx, x):
    """The IEEE bits of a float32 (as int32) or float64 (as int64)."""
    if x not in _INT_OF:
        return None
    result = types.int32 if x == types.float32 else types.int64

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _INT_OF[x])

    return result(x), codegen


@intrinsic
def float_of(typingctx, x):
    """The float32 (from int32) or float64 (from int64) with these IEEE bits."""
    if x not in _FLOAT_OF:
        return None
    result = types.float32 if x == types.int32 else types.float64

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _FLOAT_OF[x])

    return result(x), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (llvm.fma): exact polynomial steps, vectorisable."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None
    lltype = ir.FloatType() if a == types.float32 else ir.DoubleType()
    name = "llvm.fma.f32" if a == types.float32 else "llvm.fma.f64"

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(lltype, [lltype] * 3), name
        )
        return builder.call(fn, args)

    return a(a, a, a), codegen


# ---------------------------------------------------------------------------------------------
# float16 <-> float32/float64, round half to even (the conversions numpy.float16 performs)
# ---------------------------------------------------------------------------------------------

_TWO_112 = np.float32(2.0**112)


@njit(**JIT)
def f16_to_f32(h):
    """The float32 holding float16 bits ``h`` exactly (NaN stays NaN, subnormals scale)."""
    h = np.int32(h) & 0xFFFF
    sign = (h & 0x8000) << 16
    rest = (h & 0x7FFF) << 13
    # normal and subnormal halves: reinterpret with the exponent re-biased by 2**112
    scaled = float_of(np.int32(rest)) * _TWO_112
    special = float_of(np.int32(rest | 0x7F800000))  # exponent 31: inf or NaN
    value = special if (h & 0x7C00) == 0x7C00 else scaled
    return float_of(np.int32(bits_of(value) | sign))


_F32_DENORM_MAGIC = np.float32(0.5)  # bits (126 << 23): 2**-1, the subnormal rounding anchor


@njit(**JIT)
def f32_to_f16(f):
    """float16 bits of float32 ``f``, round half to even (overflow gives inf, NaN stays NaN)."""
    bits = bits_of(f)
    sign = (bits >> 16) & 0x8000
    u = bits & 0x7FFFFFFF
    # NaN -> quiet NaN, inf and values past the float16 range (after rounding) -> inf
    big = np.int32(0x7E00) if u > 0x7F800000 else np.int32(0x7C00)
    # results below 2**-14 are float16 subnormals: let an FP add do the rounding at 2**-24
    sub = bits_of(float_of(np.int32(u)) + _F32_DENORM_MAGIC) - np.int32(0x3F000000)
    # normal results: re-bias, round half to even on the 13 dropped mantissa bits
    odd = (u >> 13) & 1
    norm = (u + np.int32(-(112 << 23) + 0xFFF) + odd) >> 13
    out = big if u >= 0x47800000 else (sub if u < 0x38800000 else norm)
    return np.uint16(out | sign)


_F64_DENORM_MAGIC = np.float64(2.0**28)  # bits (1051 << 52): its ulp is 2**-24


@njit(**JIT)
def f64_to_f16(d):
    """float16 bits of float64 ``d`` rounded once (not through float32: no double rounding)."""
    bits = bits_of(d)
    sign = np.int32((bits >> 48) & 0x8000)
    u = bits & 0x7FFFFFFFFFFFFFFF
    big = np.int64(0x7E00) if u > 0x7FF0000000000000 else np.int64(0x7C00)
    sub = bits_of(float_of(np.int64(u)) + _F64_DENORM_MAGIC) - np.int64(0x41B0000000000000)
    odd = (u >> 42) & 1
    norm = (u + np.int64(-((1023 - 15) << 52) + (1 << 41) - 1) + odd) >> 42
    out = big if u >= 0x40F0000000000000 else (sub if u < 0x3F10000000000000 else norm)
    return np.uint16(np.int32(out) | sign)


@njit(**JIT)
def round_f16(x):
    """float32 ``x`` rounded to the nearest float16 value (kept in float32)."""
    return f16_to_f32(f32_to_f16(np.float32(x)))


@njit(**JIT)
def round_f16_from_f64(x):
    """float64 ``x`` rounded once to the nearest float16 value (as float32)."""
    return f16_to_f32(f64_to_f16(x))

"""Vectorisable float32 transcendentals for the numba backend: exp, log, tanh, erf.

Stage: backends (numba). PyPI's llvmlite has no SVML, so ``math.exp`` on float32 is a scalar
libm call per element, while NumPy's float32 exp/log/tanh are AVX-512 loops. A fused loop that
calls libm loses to NumPy on transcendental-heavy work; these functions are branch-free float32
arithmetic (selects, bit casts, FMA) that LLVM inlines and vectorises with the rest of the loop.

Accuracy (checked by ``tests/test_numba_backend.py`` on dense grids against float64): exp, log
and tanh within 2 ulp, erf within 1 ulp. IEEE specials follow C99: NaN in gives NaN out,
``exp(inf) = inf``, ``exp(-inf) = 0``, ``log(0) = -inf``, ``log(x < 0) = NaN``, signed zeros
preserved by tanh and erf. Algorithms: exp, log and tanh follow Cephes (range reduction by
ln 2 in two parts, minimax polynomials); erf uses polynomials fitted for fuseray and evaluated
in float64 (one final rounding), with ``exp(-x*x)`` from ``exp_f32``.

Only float32 uses these: float64 keeps libm (NumPy's float64 results are libm-accurate too), and
float16 rounds a float32 result to float16, where these functions' last-bit differences vanish.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .numba_intrinsics import JIT, bits_of, float_of, fma

F = np.float32
D = np.float64
_INF = F(np.inf)
_NAN = F(np.nan)


@njit(forceinline=True, **JIT)
def exp_f32(x):
    """e**x for float32 x (Cephes expf, branch free)."""
    z = np.floor(x * F(1.44269504088896341) + F(0.5))
    # r = x - z*ln2 with ln2 split in two so the product is exact
    r = fma(z, F(-0.693359375), x)
    r = fma(z, F(2.12194440e-4), r)
    p = F(1.9875691500e-4)
    p = fma(p, r, F(1.3981999507e-3))
    p = fma(p, r, F(8.3334519073e-3))
    p = fma(p, r, F(4.1665795894e-2))
    p = fma(p, r, F(1.6666665459e-1))
    p = fma(p, r, F(5.0000001201e-1))
    p = fma(p, r * r, r) + F(1.0)
    # scale by 2**n in two halves so that subnormal results (n down to -150) are reached
    n = np.int32(max(min(z, F(200.0)), F(-200.0)))
    h = n >> 1
    out = p * float_of(np.int32((h + 127) << 23)) * float_of(np.int32((n - h + 127) << 23))
    out = _INF if x > F(88.72283935546875) else out
    out = F(0.0) if x < F(-103.972084045410) else out
    return x if x != x else out


@njit(forceinline=True, **JIT)
def log_f32(x):
    """Natural log for float32 x (Cephes logf, branch free; subnormals pre-scaled)."""
    tiny = x < F(1.17549435e-38)
    xs = x * F(8388608.0) if tiny else x
    bits = bits_of(xs)
    e = ((bits >> 23) & 0xFF) - (149 if tiny else 126)
    m = float_of(np.int32((bits & 0x807FFFFF) | 0x3F000000))  # x = m * 2**e, m in [0.5, 1)
    low = m < F(0.707106781186547524)
    e = e - 1 if low else e
    m = (m + m - F(1.0)) if low else (m - F(1.0))
    z = m * m
    p = F(7.0376836292e-2)
    p = fma(p, m, F(-1.1514610310e-1))
    p = fma(p, m, F(1.1676998740e-1))
    p = fma(p, m, F(-1.2420140846e-1))
    p = fma(p, m, F(1.4249322787e-1))
    p = fma(p, m, F(-1.6668057665e-1))
    p = fma(p, m, F(2.0000714765e-1))
    p = fma(p, m, F(-2.4999993993e-1))
    p = fma(p, m, F(3.3333331174e-1))
    fe = F(e)
    y = p * m * z
    y = fma(fe, F(-2.12194440e-4), y)
    y = fma(z, F(-0.5), y)
    out = fma(fe, F(0.693359375), m + y)
    out = _INF if x == _INF else out
    out = -_INF if x == F(0.0) else out
    return _NAN if (x < F(0.0) or x != x) else out


@njit(forceinline=True, **JIT)
def tanh_f32(x):
    """tanh for float32 x (Cephes tanhf: odd polynomial near 0, exp-based elsewhere)."""
    a = abs(x)
    e = exp_f32(a + a)
    big = F(1.0) - F(2.0) / (e + F(1.0))  # exp overflow gives 1 - 0 = 1, as it should
    big = big if x >= F(0.0) else -big
    z = x * x
    p = F(-5.70498872745e-3)
    p = fma(p, z, F(2.06390887954e-2))
    p = fma(p, z, F(-5.37397155531e-2))
    p = fma(p, z, F(1.33314422036e-1))
    p = fma(p, z, F(-3.33332819422e-1))
    small = fma(p * z, x, x)
    small = x if a < F(1e-30) else small  # keeps the sign of -0.0
    out = small if a <= F(0.625) else big
    return x if x != x else out


# erf(x) / x = P(x*x) on |x| < 1 (relative error 4e-11 in float64)
_EA = (1.12837916709551, -0.376126385315697, 0.112837826047226, -0.0268654384155394,
       0.00522105354195226, -0.000848439770232585, 0.000112682584316917,
       -9.67359414263834e-06)
# erfc(x) * exp(x*x) = R(1/x) on 1 <= x <= 4 (relative error 3e-9 in float64)
_EB = (3.43812215e-05, 5.63548322e-01, 4.53348593e-03, -2.92957371e-01, -4.38660329e-02,
       8.44041069e-01, -1.44214219e+00, 1.34303618e+00, -7.59291696e-01, 2.45813426e-01,
       -3.51659976e-02)


@njit(forceinline=True, **JIT)
def erf_f32(x):
    """erf for float32 x: polynomials in float64, one rounding to float32."""
    a = D(abs(x))
    s = a * a
    p = D(_EA[7])
    p = fma(p, s, D(_EA[6]))
    p = fma(p, s, D(_EA[5]))
    p = fma(p, s, D(_EA[4]))
    p = fma(p, s, D(_EA[3]))
    p = fma(p, s, D(_EA[2]))
    p = fma(p, s, D(_EA[1]))
    p = fma(p, s, D(_EA[0]))
    small = a * p
    t = D(1.0) / max(a, D(1.0))
    q = D(_EB[10])
    q = fma(q, t, D(_EB[9]))
    q = fma(q, t, D(_EB[8]))
    q = fma(q, t, D(_EB[7]))
    q = fma(q, t, D(_EB[6]))
    q = fma(q, t, D(_EB[5]))
    q = fma(q, t, D(_EB[4]))
    q = fma(q, t, D(_EB[3]))
    q = fma(q, t, D(_EB[2]))
    q = fma(q, t, D(_EB[1]))
    q = fma(q, t, D(_EB[0]))
    large = D(1.0) - D(exp_f32(F(-s))) * q
    out = F(small if a < D(1.0) else (large if a < D(4.0) else D(1.0)))
    out = out if x >= F(0.0) else -out
    out = x if a == D(0.0) else out  # erf(-0.0) = -0.0
    return x if x != x else out

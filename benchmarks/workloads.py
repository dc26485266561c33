"""The workloads of BENCHMARKS.md, written once as array-API functions of ``xp``.

Used by the benchmark scripts (every framework runs the same definition), by the fusion tests
(kernel counts) and by the code-generation tests (every kernel compiles).
"""

from __future__ import annotations

import math

import numpy as np

R, V = 0.02, 0.3  # Black-Scholes rate and volatility
ROW = 1024  # softmax / layernorm / colsum row length


def triad(xp, a, b, c):
    return a * b + c


def chain20(xp, y):
    for _ in range(5):
        y = y * 0.99 + 0.01
        y = xp.sin(y)
        y = xp.abs(y) + 0.5
        y = xp.sqrt(y)
    return y


def gelu(xp, x):
    return 0.5 * x * (1 + xp.tanh(0.7978845608 * (x + 0.044715 * x * x * x)))


def _erf(xp, x):
    if xp is np:
        import scipy.special

        return scipy.special.erf(x)
    special = getattr(xp, "special", None)
    if special is not None and hasattr(special, "erf"):
        return special.erf(x)
    import scipy.special  # CuPy: cupyx.scipy.special is picked by the caller

    return scipy.special.erf(x)


def black_scholes(xp, s, x, t, erf=None):
    erf = erf or (lambda v: _erf(xp, v))
    sqrt_t = xp.sqrt(t)
    d1 = (xp.log(s / x) + (R + 0.5 * V * V) * t) / (V * sqrt_t)
    d2 = d1 - V * sqrt_t
    cdf1 = 0.5 * (1 + erf(d1 / math.sqrt(2)))
    cdf2 = 0.5 * (1 + erf(d2 / math.sqrt(2)))
    discount = x * xp.exp(-R * t)
    call = s * cdf1 - discount * cdf2
    put = discount * (1 - cdf2) - s * (1 - cdf1)
    return call, put


def sumsq(xp, x):
    return (x * x).sum()


def softmax(xp, m):
    e = xp.exp(m - m.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def layernorm(xp, m, g):
    mean = m.mean(axis=1, keepdims=True)
    var = ((m - mean) ** 2).mean(axis=1, keepdims=True)
    return (m - mean) / xp.sqrt(var + 1e-5) * g


def colsum(xp, m, g):
    return (m * g).sum(axis=0)


def inputs(name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Random normal float32 inputs (positive where the math needs it) for ``n`` elements."""
    f32 = np.float32
    if name in ("softmax", "layernorm", "colsum"):
        m = rng.standard_normal((n // ROW, ROW), dtype=f32)
        return (m,) if name == "softmax" else (m, rng.standard_normal(ROW, dtype=f32))
    if name == "black_scholes":
        return (rng.uniform(10, 50, n).astype(f32), rng.uniform(10, 50, n).astype(f32),
                rng.uniform(0.25, 2, n).astype(f32))
    count = {"triad": 3, "chain20": 1, "gelu": 1, "sumsq": 1}[name]
    return tuple(rng.standard_normal(n, dtype=f32) for _ in range(count))


WORKLOADS = {
    "triad": triad, "chain20": chain20, "gelu": gelu, "black_scholes": black_scholes,
    "sumsq": sumsq, "softmax": softmax, "layernorm": layernorm, "colsum": colsum,
}
# The fewest bytes each workload must move, per element of N (BENCHMARKS.md).
MIN_BYTES_PER_ELEMENT = {"triad": 16, "chain20": 8, "gelu": 8, "black_scholes": 20, "sumsq": 4,
                         "softmax": 8, "layernorm": 8, "colsum": 4}

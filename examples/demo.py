"""fuseray in one minute: a NumPy pipeline, fused, checked against NumPy, timed.

Runs on the GPU when there is one (else on the CPU) and prints where it ran, what it fused,
how long a call took, and how far the result is from NumPy's float64 answer.
"""

from __future__ import annotations

import math
import time

import numpy as np

import fuseray as fr


@fr.jit
def black_scholes(s, x, t, r=0.02, v=0.3):
    """Call and put prices: one fused kernel for both outputs."""
    sqrt_t = fr.sqrt(t)
    d1 = (fr.log(s / x) + (r + 0.5 * v * v) * t) / (v * sqrt_t)
    d2 = d1 - v * sqrt_t
    cdf1 = 0.5 * (1 + fr.special.erf(d1 / math.sqrt(2)))
    cdf2 = 0.5 * (1 + fr.special.erf(d2 / math.sqrt(2)))
    discount = x * fr.exp(-r * t)
    return s * cdf1 - discount * cdf2, discount * (1 - cdf2) - s * (1 - cdf1)


@fr.jit
def softmax(m):
    e = fr.exp(m - m.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference(s, x, t, m, r=0.02, v=0.3):
    from scipy.special import erf

    s, x, t, m = (a.astype(np.float64) for a in (s, x, t, m))
    d1 = (np.log(s / x) + (r + 0.5 * v * v) * t) / (v * np.sqrt(t))
    d2 = d1 - v * np.sqrt(t)
    cdf1, cdf2 = 0.5 * (1 + erf(d1 / math.sqrt(2))), 0.5 * (1 + erf(d2 / math.sqrt(2)))
    disc = x * np.exp(-r * t)
    e = np.exp(m - m.max(1, keepdims=True))
    return s * cdf1 - disc * cdf2, disc * (1 - cdf2) - s * (1 - cdf1), e / e.sum(1, keepdims=True)


def rel_err(got, want) -> float:
    return float(np.linalg.norm(fr.asnumpy(got) - want) / np.linalg.norm(want))


def main() -> None:
    rng = np.random.default_rng(0)
    n = 1 << 22
    s, x = rng.uniform(10, 50, n).astype(np.float32), rng.uniform(10, 50, n).astype(np.float32)
    t = rng.uniform(0.25, 2, n).astype(np.float32)
    m = rng.standard_normal((n // 1024, 1024), dtype=np.float32)
    S, X, T, M = (fr.asarray(a) for a in (s, x, t, m))
    print(f"fuseray {fr.__version__}: arrays live on {S.device}")
    black_scholes.explain(S, X, T)
    softmax.explain(M)

    timings = {}
    for name, call in (("black_scholes", lambda: fr.compute(*black_scholes(S, X, T))),
                       ("softmax", lambda: softmax(M).compute())):
        start = time.perf_counter()
        call()  # first call: traces, plans and compiles
        first = time.perf_counter() - start
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            call()
            fr.synchronize()
            runs.append(time.perf_counter() - start)
        timings[name] = (first, float(np.median(runs)))

    call, put = black_scholes(S, X, T)
    probs = softmax(M)
    want_call, want_put, want_probs = reference(s, x, t, m)
    errors = {"call": rel_err(call, want_call), "put": rel_err(put, want_put),
              "softmax": rel_err(probs, want_probs)}
    for name, (first, median) in timings.items():
        print(f"{name:>14}: first call {first * 1e3:8.1f} ms, then {median * 1e3:8.2f} ms"
              f" per call on {S.device}")
    for name, err in errors.items():
        print(f"{name:>14}: relative error vs NumPy float64 {err:.1e}")
    assert all(err < 1e-5 for err in errors.values()), "fuseray disagrees with NumPy"
    print("OK: results match NumPy")


if __name__ == "__main__":
    main()

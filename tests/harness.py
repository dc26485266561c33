"""A CuPy-style harness: run a test body with ``xp=numpy`` and ``xp=fuseray`` and compare.

``@numpy_vs_fuseray()`` calls the decorated body twice. If NumPy raises, fuseray must raise an
exception of the same kind (a subclass of NumPy's exception class, or NumPy's class a subclass of
ours); otherwise both results must agree in dtype, shape and values (within a tolerance that
depends on the dtype: fuseray backends may use different but correctly rounded math).
"""

from __future__ import annotations

import functools
import inspect
import itertools

import numpy as np

import fuseray as fr
from fuseray import dtypes, ops

TOLERANCE = {  # (rtol, atol) per result dtype kind/size
    np.dtype(np.float16): (2e-3, 1e-3),
    np.dtype(np.float32): (2e-5, 1e-6),
    np.dtype(np.float64): (1e-12, 1e-14),
}


def to_numpy(x):
    if isinstance(x, fr.ndarray):
        return fr.asnumpy(x)
    return x


def assert_same(expected, actual, rtol=None, atol=None, check_dtype=True):
    """``actual`` (fuseray or NumPy) equals ``expected`` (NumPy) in dtype, shape and values."""
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected)
        for e, a in zip(expected, actual):
            assert_same(e, a, rtol, atol, check_dtype)
        return
    got = to_numpy(actual)
    exp = np.asarray(expected)
    got_arr = np.asarray(got)
    if check_dtype:
        assert got_arr.dtype == exp.dtype, f"dtype: fuseray {got_arr.dtype}, numpy {exp.dtype}"
    assert got_arr.shape == exp.shape, f"shape: fuseray {got_arr.shape}, numpy {exp.shape}"
    if exp.dtype.kind == "f":
        r, a = TOLERANCE.get(exp.dtype, (1e-12, 0))
        np.testing.assert_allclose(
            got_arr, exp, rtol=r if rtol is None else rtol, atol=a if atol is None else atol,
            equal_nan=True,
        )
    else:
        np.testing.assert_array_equal(got_arr, exp)


def run_both(body, *args, **kwargs):
    """(numpy outcome, fuseray outcome): each a result or the exception raised."""
    outcomes = []
    for xp in (np, fr):
        try:
            with np.errstate(all="ignore"):
                result = body(*args, xp=xp, **kwargs)
                if xp is fr:
                    result = _materialise(result)
            outcomes.append(result)
        except Exception as e:  # noqa: BLE001 - comparing which exception both raise
            outcomes.append(e)
    return outcomes


def _materialise(result):
    if isinstance(result, (tuple, list)):
        return type(result)(_materialise(r) for r in result)
    return to_numpy(result)


def compare_outcomes(np_out, fr_out, rtol=None, atol=None, check_dtype=True):
    if isinstance(np_out, Exception):
        assert isinstance(fr_out, Exception), (
            f"NumPy raised {type(np_out).__name__}: {np_out}, fuseray returned {fr_out!r}"
        )
        assert isinstance(fr_out, type(np_out)) or isinstance(np_out, type(fr_out)), (
            f"NumPy raised {type(np_out).__name__}({np_out}),"
            f" fuseray raised {type(fr_out).__name__}({fr_out})"
        )
        return
    if isinstance(fr_out, Exception):
        raise AssertionError(f"fuseray raised, NumPy did not: {fr_out!r}") from fr_out
    assert_same(np_out, fr_out, rtol, atol, check_dtype)


def numpy_vs_fuseray(rtol=None, atol=None, check_dtype=True):
    """Decorator: run the body (which takes ``xp``) with NumPy and fuseray and compare."""

    def deco(body):
        sig = inspect.signature(body)
        params = [p for name, p in sig.parameters.items() if name != "xp"]

        @functools.wraps(body)
        def wrapper(*args, **kwargs):
            np_out, fr_out = run_both(body, *args, **kwargs)
            compare_outcomes(np_out, fr_out, rtol, atol, check_dtype)

        wrapper.__signature__ = sig.replace(parameters=params)
        return wrapper

    return deco


def random_array(shape, dtype, rng, *, nonzero=True, low=None, high=None):
    """Random data (never zeros) of ``dtype``; floats normal, ints in a small safe range."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo = max(int(info.min), -50 if low is None else low)
        hi = min(int(info.max), 50 if high is None else high)
        out = np.asarray(rng.integers(lo, hi + 1, size=shape)).astype(dtype)
        if nonzero:
            out[out == 0] = 1
        return out
    out = rng.standard_normal(shape) * 3
    if low is not None or high is not None:
        lo = -3 if low is None else low
        hi = 3 if high is None else high
        out = rng.uniform(lo, hi, size=shape)
    out = np.asarray(out).astype(dtype)
    if nonzero:
        out[out == 0] = dtype.type(0.5)
    return out


def views(base: np.ndarray):
    """Layouts that must be read in place: the base, transposed, reversed and strided views."""
    yield "base", base
    if base.ndim >= 2:
        yield "transposed", base.T
    if base.ndim >= 1 and base.shape[0] > 1:
        yield "reversed", base[::-1]
        yield "strided", base[::2]


@functools.lru_cache(maxsize=1)
def ufunc_loop_groups() -> dict[tuple[str, ...], frozenset[str]]:
    """Input dtype names -> the op-table ufuncs whose NumPy loop takes exactly those dtypes."""
    groups: dict[tuple[str, ...], set[str]] = {}
    for name in sorted(ops.UFUNCS):
        row = ops.OPS[name]
        for combo in itertools.product(dtypes.SUPPORTED, repeat=row.arity):
            try:
                loop = dtypes.resolve_ufunc(row.ufunc, combo)
            except TypeError:
                continue
            groups.setdefault(tuple(d.name for d in loop[:-1]), set()).add(name)
    return {k: frozenset(v) for k, v in groups.items()}

"""Reductions: every axis subset, keepdims, dtype=, ddof, NaN, empty axes, against NumPy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fuseray as fr
from fuseray import dtypes
from harness import compare_outcomes, numpy_vs_fuseray, random_array, run_both

pytestmark = pytest.mark.usefixtures("reference_backend")

DTYPES = [d.name for d in dtypes.SUPPORTED]
REDUCTIONS = ["sum", "prod", "max", "min", "any", "all", "mean", "var", "std"]


def axis_choices(ndim):
    yield None
    for k in range(1, ndim + 1):
        for axes in itertools.combinations(range(ndim), k):
            yield axes if k > 1 else axes[0]
    if ndim:
        yield -1


def lift(xp, a):
    return a if xp is np else fr.asarray(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_axes(name, dtype):
    rng = np.random.default_rng(11)
    for shape in [(), (1,), (7,), (3, 5), (2, 3, 4)]:
        base = random_array(shape, dtype, rng, low=-2, high=3)
        if name == "prod" and np.dtype(dtype).kind == "f":
            base = (base / 3).astype(dtype)
        for axis in axis_choices(len(shape)):
            for keepdims in (False, True):
                body = lambda xp: getattr(lift(xp, base), name)(axis=axis, keepdims=keepdims)  # noqa: E731
                compare_outcomes(*run_both(body))
        if shape and len(shape) > 1:  # reductions of views read in place
            body = lambda xp: getattr(lift(xp, base).T[::-1], name)(axis=0)  # noqa: E731
            compare_outcomes(*run_both(body))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_arg_reductions(name, dtype):
    rng = np.random.default_rng(5)
    for shape in [(1,), (9,), (3, 5), (2, 3, 4)]:
        base = random_array(shape, dtype, rng, low=-3, high=3)  # ties: first occurrence wins
        for axis in [None, *range(len(shape)), -1]:
            for keepdims in (False, True):
                compare_outcomes(*run_both(
                    lambda xp: getattr(xp, name)(lift(xp, base), axis=axis, keepdims=keepdims)))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_nan_propagation(dtype):
    a = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, -np.inf]], dtype=dtype)
    for name in ["sum", "max", "min", "mean", "argmax", "argmin", "var", "any", "all", "prod"]:
        for axis in (None, 0, 1):
            compare_outcomes(*run_both(lambda xp: getattr(xp, name)(lift(xp, a), axis=axis)))


@pytest.mark.parametrize("name", REDUCTIONS)
def test_empty_axes(name):
    a = np.ones((0, 3), np.float32)
    for axis in (None, 0, 1):
        compare_outcomes(*run_both(lambda xp: getattr(xp, name)(lift(xp, a), axis=axis)))


@numpy_vs_fuseray()
def test_sum_dtype_argument(xp):
    a = lift(xp, np.arange(1, 200, dtype=np.int8))
    return a.sum(dtype=np.int8), a.sum(), a.sum(dtype=np.float32), xp.prod(a[:5], dtype=np.int16)


@numpy_vs_fuseray()
def test_var_std_ddof(xp):
    a = lift(xp, np.random.default_rng(1).standard_normal((6, 7)).astype(np.float32))
    return a.var(ddof=1), a.std(axis=0, ddof=2), a.var(axis=1, keepdims=True), xp.std(a, ddof=7,
                                                                                       axis=1)


@numpy_vs_fuseray()
def test_mean_of_ints_and_halves(xp):
    a = lift(xp, np.arange(10, dtype=np.int16).reshape(2, 5))
    h = lift(xp, np.linspace(0, 1, 10).astype(np.float16))
    return a.mean(), a.mean(axis=1), h.mean(), h.std(), a.mean(dtype=np.float32)


@pytest.mark.parametrize("axis,ddof", [(None, 0), (1, 1), (0, 0), ((0, 1), 2)])
def test_half_var_and_std_round_each_step_as_numpy(axis, ddof):
    """numpy.var does not widen float16 (mean does): its mean, deviations, squares and sums are
    each rounded to float16; the interpreter's results equal NumPy's bit for bit."""
    x = (np.random.default_rng(2).uniform(-3, 3, (37, 28)) * 40).astype(np.float16)
    for name in ("var", "std"):
        want = getattr(np, name)(x, axis=axis, ddof=ddof)
        got = getattr(fr, name)(fr.asarray(x), axis=axis, ddof=ddof).get()
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, want)


@numpy_vs_fuseray()
def test_ufunc_reduce_and_array_function(xp):
    a = lift(xp, np.arange(1.0, 13.0).reshape(3, 4))
    return np.add.reduce(a), np.sum(a, axis=1), np.max(a, axis=0), np.mean(a)


def test_array_function_stays_lazy():
    a = fr.asarray(np.arange(6.0).reshape(2, 3))
    out = np.sum(np.exp(a), axis=0)
    assert isinstance(out, fr.ndarray) and out.is_lazy
    np.testing.assert_allclose(out.get(), np.exp(np.arange(6.0).reshape(2, 3)).sum(0))

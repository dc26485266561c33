"""Every elementwise row of the op table × every dtype × shapes and layouts, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

import fuseray as fr
from fuseray import dtypes
from fuseray.ops import OPS, SPECIAL, UFUNCS
from harness import compare_outcomes, random_array, run_both, views

pytestmark = pytest.mark.usefixtures("reference_backend")

DTYPES = [d.name for d in dtypes.SUPPORTED]
UNARY = sorted(n for n in UFUNCS | SPECIAL if OPS[n].arity == 1)
BINARY = sorted(n for n in UFUNCS if OPS[n].arity == 2)
SHAPES = [(), (0,), (1,), (7,), (13,), (3, 5), (2, 3, 5)]
BROADCAST_PAIRS = [((3, 1), (1, 5)), ((5,), (3, 5)), ((2, 1, 5), (3, 1)), ((), (4,))]


def function(xp, name):
    if name in SPECIAL:
        return getattr(scipy.special if xp is np else fr.special, name)
    return getattr(xp, name)


def lift(xp, a):
    return a if xp is np else fr.asarray(a)


def check(body, *args):
    np_out, fr_out = run_both(body, *args)
    compare_outcomes(np_out, fr_out)


def test_every_row_is_covered():
    covered = set(UNARY) | set(BINARY) | {"where", "cast", "copy", "round", "update"}
    missing = {n for n, r in OPS.items() if r.kind.value == "elementwise"} - covered
    assert not missing, f"ops without a test: {missing}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", UNARY)
def test_unary(name, dtype):
    rng = np.random.default_rng(abs(hash((name, dtype))) % 2**32)
    for shape in SHAPES:
        base = random_array(shape, dtype, rng)
        for layout, _ in views(base):
            def body(xp):
                x = lift(xp, base)
                x = {"base": x, "transposed": getattr(x, "T", x)}.get(layout, x)
                if layout == "reversed":
                    x = x[::-1]
                elif layout == "strided":
                    x = x[::2]
                return function(xp, name)(x)

            check(body)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BINARY)
def test_binary(name, dtype):
    rng = np.random.default_rng(abs(hash((name, dtype, 2))) % 2**32)
    fn = lambda xp: function(xp, name)  # noqa: E731
    for shape in SHAPES:
        a = random_array(shape, dtype, rng, low=0 if name in ("left_shift", "right_shift")
                         else None, high=5 if "shift" in name or name == "power" else None)
        b = random_array(shape, dtype, rng, low=0 if "shift" in name or name == "power"
                         else None, high=5 if "shift" in name or name == "power" else None)
        check(lambda xp: fn(xp)(lift(xp, a), lift(xp, b)))
        if a.ndim:
            check(lambda xp: fn(xp)(lift(xp, a)[::-1], lift(xp, b)))
        if a.ndim >= 2:
            check(lambda xp: fn(xp)(lift(xp, a).T, lift(xp, b).T))
        # a Python scalar on either side (NEP 50: it takes the array's dtype)
        scalar = 2 if np.dtype(dtype).kind in "iub" else 1.5
        scalar = True if np.dtype(dtype).kind == "b" else scalar
        check(lambda xp: fn(xp)(lift(xp, a), scalar))
        check(lambda xp: fn(xp)(scalar, lift(xp, b)))
    for sa, sb in BROADCAST_PAIRS:
        a = random_array(sa, dtype, rng, low=0, high=5)
        b = random_array(sb, dtype, rng, low=0, high=5)
        check(lambda xp: fn(xp)(lift(xp, a), lift(xp, b)))


MIXED = [("int8", "uint8"), ("int16", "float16"), ("int64", "uint64"), ("float32", "float64"),
         ("bool", "int32"), ("uint32", "int32"), ("float16", "float32"), ("int8", "float64")]


@pytest.mark.parametrize("pair", MIXED, ids="-".join)
@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "divide", "floor_divide",
                                  "maximum", "less", "equal", "arctan2", "bitwise_and",
                                  "logaddexp", "remainder", "power", "copysign"])
def test_mixed_dtypes(name, pair):
    rng = np.random.default_rng(7)
    a = random_array((11,), pair[0], rng, low=0, high=5)
    b = random_array((11,), pair[1], rng, low=0, high=5)
    check(lambda xp: getattr(xp, name)(lift(xp, a), lift(xp, b)))


@pytest.mark.parametrize("dtype", ["int8", "int32", "uint8", "uint64", "int64"])
def test_integer_division_by_zero_and_overflow(dtype):
    info = np.iinfo(dtype)
    a = np.array([7, -7 if info.min else 9, info.min, info.max, 0], dtype=dtype)
    b = np.array([0, 0, -1 if info.min else 1, 2, 0], dtype=dtype)
    for name in ("floor_divide", "remainder", "fmod", "add", "multiply", "subtract"):
        check(lambda xp: getattr(xp, name)(lift(xp, a), lift(xp, b)))
    check(lambda xp: divmod(lift(xp, a), lift(xp, b)))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_nan_and_inf_propagate(dtype):
    a = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0], dtype=dtype)
    b = np.array([1.0, np.nan, np.inf, -0.0, np.nan, -np.inf], dtype=dtype)
    for name in ("maximum", "minimum", "fmax", "fmin", "add", "multiply", "divide", "copysign",
                 "arctan2", "hypot", "logaddexp", "power", "floor_divide", "remainder"):
        check(lambda xp: getattr(xp, name)(lift(xp, a), lift(xp, b)))
    for name in ("sign", "isnan", "isinf", "isfinite", "signbit", "floor", "rint", "sqrt"):
        check(lambda xp: getattr(xp, name)(lift(xp, a)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_where_clip_round_astype(dtype):
    rng = np.random.default_rng(3)
    a = random_array((4, 5), dtype, rng)
    b = random_array((5,), dtype, rng)
    c = random_array((4, 5), "bool", rng)
    check(lambda xp: xp.where(lift(xp, c), lift(xp, a), lift(xp, b)))
    check(lambda xp: xp.where(lift(xp, c), lift(xp, a), 0))
    check(lambda xp: xp.where(lift(xp, c), 1.5, lift(xp, b)))
    if dtype != "bool":
        check(lambda xp: xp.clip(lift(xp, a), 0, 3))
        check(lambda xp: xp.clip(lift(xp, a), -1000, 1000))
        check(lambda xp: xp.round(lift(xp, a)))
        check(lambda xp: xp.round(lift(xp, a), 1))
    for target in DTYPES:
        check(lambda xp: lift(xp, a).astype(target))
    check(lambda xp: lift(xp, a).copy())


def test_weak_python_scalars_keep_array_dtype():
    a = np.arange(1, 6, dtype=np.float32)
    check(lambda xp: lift(xp, a) * 2.5)
    check(lambda xp: lift(xp, a.astype(np.int8)) + 3)
    check(lambda xp: lift(xp, a.astype(np.int8)) * 2.5)
    check(lambda xp: lift(xp, a.astype(np.int8)) + 1000)  # OverflowError in NumPy 2
    check(lambda xp: lift(xp, a.astype(np.int8)) < 1000)  # exact comparison in NumPy 2
    check(lambda xp: lift(xp, a.astype(np.uint8)) > -1)
    check(lambda xp: lift(xp, a) + np.float64(1))  # NumPy scalars are strong
    check(lambda xp: lift(xp, a.astype(np.int8)) ** -1)

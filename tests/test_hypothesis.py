"""Random expression graphs built from the op table: fuseray agrees with NumPy on every one.

Each example draws a few input arrays of broadcast-compatible shapes and a program of steps
(elementwise ops from the table, reductions over random axes, views); every step runs under
NumPy and under fuseray. Where NumPy raises, fuseray must raise the same kind of error (at the
call, or for data-dependent errors at compute). All results are computed together at the end, so
the planner sees multi-output graphs that mix elementwise work, reductions and views.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
from hypothesis import example, given
from hypothesis import strategies as st

import fuseray as fr
from fuseray.ops import OPS, SPECIAL, UFUNCS
from harness import compare_outcomes

pytestmark = pytest.mark.usefixtures("reference_backend")

LEAF_DTYPES = ["float64", "float32", "float16", "int64", "int32", "int8", "uint8", "bool"]
UNARY = sorted(n for n in UFUNCS | SPECIAL if OPS[n].arity == 1)
BINARY = sorted(n for n in UFUNCS if OPS[n].arity == 2)
REDUCE = ["sum", "prod", "max", "min", "mean", "any", "all", "var", "std", "argmax", "argmin"]
VIEWS = ["T", "reverse", "step", "flatten", "index0", "newaxis", "swap"]
# ops that choose or move elements: where, concatenate, take (indices that may be out of bounds),
# clip; a "select" step is (kind, name, a, b, c) with b and c naming operands or picking indices
SELECTS = ["where", "concatenate", "take", "clip"]
TAKE_INDICES = [[0], [0, -1], [1, 0, 1], [4, 2], []]


def fn(xp, name):
    if name in SPECIAL:
        return getattr(scipy.special if xp is np else fr.special, name)
    return getattr(xp, name)


@st.composite
def programs(draw, max_steps: int = 8):
    rank = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    n_leaves = draw(st.integers(1, 3))
    leaves = []
    for _ in range(n_leaves):
        keep = draw(st.integers(0, rank))
        sub = [d if draw(st.booleans()) else 1 for d in shape[rank - keep:]]
        dtype = draw(st.sampled_from(LEAF_DTYPES))
        seed = draw(st.integers(0, 2**32 - 1))
        leaves.append((tuple(sub), dtype, seed))
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        kind = draw(st.sampled_from(["unary", "binary", "binary", "scalar", "reduce", "view",
                                     "select"]))
        a = draw(st.integers(0, 99))
        if kind == "unary":
            steps.append(("unary", draw(st.sampled_from(UNARY)), a))
        elif kind == "binary":
            steps.append(("binary", draw(st.sampled_from(BINARY)), a, draw(st.integers(0, 99))))
        elif kind == "scalar":
            value = draw(st.sampled_from([2, -1, 0.5, 3.0, True]))
            steps.append(("scalar", draw(st.sampled_from(BINARY)), a, value, draw(st.booleans())))
        elif kind == "reduce":
            steps.append(("reduce", draw(st.sampled_from(REDUCE)), a, draw(st.integers(-1, 3)),
                          draw(st.booleans())))
        elif kind == "select":
            name = draw(st.sampled_from(SELECTS))
            steps.append((kind, name, a, draw(st.integers(0, 99)), draw(st.integers(0, 99))))
        else:
            steps.append(("view", draw(st.sampled_from(VIEWS)), a))
    return leaves, steps


def make_leaf(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind in "iu":
        out = rng.integers(1, 6, size=shape).astype(dtype)
        return np.asarray(out)
    return np.asarray(rng.uniform(-3, 3, size=shape)).astype(dtype)


# Ops whose result jumps where an operand crosses a point: a rounding boundary, zero, a tie.
JUMPS = {
    "ceil", "floor", "rint", "trunc", "sign", "signbit", "copysign", "floor_divide", "fmod",
    "remainder", "equal", "not_equal", "greater", "greater_equal", "less", "less_equal",
    "logical_and", "logical_or", "logical_xor", "logical_not", "isfinite", "isinf", "isnan",
    "power", "float_power", "argmax", "argmin", "any", "all", "where",
}
# Ops whose result has the same bits wherever it is computed, given its operands' bits: exact or
# correctly rounded. The rest (transcendentals, sums in some order) may round an ulp apart between
# NumPy's own loops (its contiguous SIMD expm1 and its strided libm one) or between backends; the
# tolerances accept that, but a jump on such a value can turn it into any result.
EXACT = JUMPS - {"power", "float_power"} | {
    "absolute", "negative", "positive", "add", "subtract", "multiply", "divide", "reciprocal",
    "sqrt", "square", "maximum", "minimum", "fmax", "fmin", "max", "min", *VIEWS, *SELECTS,
}


def step_operands(step, n: int) -> tuple[int, ...]:
    """The indices of the values ``step`` reads, with ``n`` values before it."""
    if step[0] == "binary" or step[1] == "concatenate":
        return step[2] % n, step[3] % n
    if step[1] == "where":
        return step[2] % n, step[3] % n, step[4] % n
    return (step[2] % n,)


def comparable(sources: list, values: list) -> list[bool]:
    """Per value of a program, whether two runs of it must agree on it. ``sources`` holds each
    value's (op name, operand indices), a leaf's (None, ()); ``values`` are NumPy's. Not where a
    jump reads a float that may be an ulp apart (not from ``EXACT`` ops and leaves alone), not
    where signbit or copysign read a NaN's sign (IEEE leaves it open: NumPy's 0-d float16
    arccos(5) is +nan, its array loop's -nan, CUDA's default NaN is positive), and not for
    anything computed from a value that is not."""
    ok: list[bool] = []
    exact: list[bool] = []
    for (name, operands), value in zip(sources, values):
        inputs = [values[j] for j in operands]
        floats = [j for j in operands if values[j].dtype.kind in "fc"]
        nan_sign = name in ("signbit", "copysign") and any(np.isnan(values[j]).any()
                                                           for j in floats)
        ok.append(all(ok[j] for j in operands) and not nan_sign and not (
            name in JUMPS and not all(exact[j] for j in floats)))
        whole = all(v.dtype.kind in "biu" for v in (*inputs, value))
        exact.append(ok[-1] and all(exact[j] for j in operands)
                     and (name is None or name in EXACT or whole))
    return ok


def apply_step(xp, step, values):
    kind, name = step[0], step[1]
    x = values[step[2] % len(values)]
    if kind == "unary":
        return fn(xp, name)(x)
    if kind == "binary":
        return fn(xp, name)(x, values[step[3] % len(values)])
    if kind == "scalar":
        value, left = step[3], step[4]
        return fn(xp, name)(x, value) if left else fn(xp, name)(value, x)
    if kind == "select":
        y, z = values[step[3] % len(values)], values[step[4] % len(values)]
        if name == "where":
            return xp.where(x, y, z)
        if name == "concatenate":
            return xp.concatenate([x, y], axis=step[4] % 2 - 1)
        if name == "take":
            indices = np.array(TAKE_INDICES[step[3] % len(TAKE_INDICES)], dtype=np.intp)
            return xp.take(x, indices, axis=None if x.ndim == 0 else step[4] % x.ndim)
        return xp.clip(x, -1, 2.5)
    if kind == "reduce":
        axis = None if step[3] < 0 or x.ndim == 0 else step[3] % x.ndim
        if name in ("argmax", "argmin"):
            return getattr(xp, name)(x, axis=axis, keepdims=step[4])
        return getattr(x, name)(axis=axis, keepdims=step[4])
    if name == "T":
        return x.T
    if name == "reverse":
        return x[::-1] if x.ndim else x
    if name == "step":
        return x[..., ::2] if x.ndim else x
    if name == "flatten":
        return x.reshape(-1)
    if name == "index0":
        return x[0] if x.ndim else x
    if name == "newaxis":
        return x[:, None] if x.ndim else x[None]
    return xp.swapaxes(x, 0, -1) if x.ndim else x


VAR_PLUS_TAKE_OF_ITS_INPUT = [
    ([(shape, "float64", 0)],
     [("reduce", "var", 0, 0, False), ("select", "take", 0, 0, 0), ("binary", "add", 1, 2)])
    for shape in ((1,), (5,))
]


@given(programs())
# a reduction read directly by another ((x * x).sum(axis=1).max()): once a CodegenError
@example(([((4, 5), "float32", 1)], [("binary", "multiply", 0, 0), ("reduce", "sum", 1, 1, False),
                                      ("reduce", "max", 2, -1, False)]))
# jumps (JUMPS) on operands NumPy's loops round differently: copysign reading a NaN's sign, and
# fmod(e, e[::-1]) of e = expm1(x), which the reference takes from one contiguous expm1 and
# fuseray computes through the view (NumPy's strided loop is an ulp off its SIMD one)
@example(([((), "int8", 0), ((1, 1), "float64", 0)],
          [("unary", "arccos", 0), ("scalar", "copysign", 2, 2, False), ("binary", "add", 1, 3)]))
@example(([((1,), "float64", 0)],
          [("unary", "expm1", 0), ("view", "reverse", 1), ("binary", "fmod", 1, 2)]))
# x.var() + take(x, ...) in one row kernel (and, over 5 elements, one reduce kernel): the take's
# source is read in full too, two accesses of one buffer, whose register cache was declared twice
# (found by CI's compile-all on the dev profile)
@example(VAR_PLUS_TAKE_OF_ITS_INPUT[0])
@example(VAR_PLUS_TAKE_OF_ITS_INPUT[1])
def test_random_graphs_match_numpy(program):
    check_program(program)


@given(programs(max_steps=32))
# where(c, b, x.var()) read through a broadcast by power: a value computed from a reduction with
# no row kernel, recomputed and re-addressed in its reader's kernel (compile-all refused it)
@example(([((1,), "uint8", 79), ((1,), "float64", 231389), ((3,), "float16", 412273)],
          [("reduce", "var", 15, 2, False), ("view", "newaxis", 46), ("select", "where", 67, 56, 8),
           ("binary", "power", 40, 59), ("binary", "subtract", 12, 90),
           ("reduce", "argmin", 57, 0, True), ("binary", "right_shift", 90, 13),
           ("select", "concatenate", 67, 70, 6)]))
def test_long_random_graphs_match_numpy(program):
    """Deeper graphs: more kernels, reductions of reductions, views of values that a later
    kernel stores (the planner bugs the short programs took thousands of examples to reach)."""
    check_program(program)


def check_program(program) -> None:
    """Every step of ``program`` under NumPy and fuseray: the same errors, then the same values
    (where two runs must agree: ``comparable``), all computed together at the end."""
    leaves, steps = program
    np_values = [make_leaf(*leaf) for leaf in leaves]
    fr_values = [fr.asarray(v) for v in np_values]
    sources = [(None, ())] * len(np_values)
    for step in steps:
        with np.errstate(all="ignore"):
            try:
                expected = apply_step(np, step, np_values)
            except Exception as e:  # noqa: BLE001 - fuseray must raise the same kind
                expected = e
            try:
                got = apply_step(fr, step, fr_values)
                if isinstance(expected, Exception):
                    got.compute()  # data-dependent errors surface at compute
            except Exception as e:  # noqa: BLE001
                got = e
        compare_outcomes(expected, got if isinstance(got, Exception) else np.zeros(0),
                         check_dtype=False) if isinstance(expected, Exception) else None
        if isinstance(expected, Exception):
            continue
        assert not isinstance(got, Exception), f"fuseray raised {got!r} at {step}"
        if np.asarray(expected).size > 10_000:
            continue
        sources.append((step[1], step_operands(step, len(np_values))))
        np_values.append(np.asarray(expected))
        fr_values.append(got)
    results = fr.compute(*fr_values) if len(fr_values) > 1 else (fr_values[0],)
    results = [r.get() for r in results]
    for want, have, ok in zip(np_values, results, comparable(sources, np_values)):
        if ok:
            compare_outcomes(want, have, rtol=3e-3 if want.dtype == np.float16 else 1e-5,
                             atol=1e-3 if want.dtype == np.float16 else 1e-6)

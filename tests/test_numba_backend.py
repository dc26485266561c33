"""The numba CPU backend against the NumPy interpreter: same dtypes, shapes and values.

Every test builds fuseray expressions twice, once per backend (forced through ``fr.config``), and
compares the results. numba compiles each new loop structure (~0.3-3 s on this 2-core machine),
so tests put many ops into one kernel (one ``compute`` of many outputs) and share one disk cache
for the session, which the subprocess tests also read.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import threading
import warnings

import numba_warm
import numpy as np
import pytest
import test_indexing
import test_update

import fuseray as fr
from fuseray import config, runtime
from fuseray.backends import numba as numba_backend
from fuseray.backends import numba_cache
from fuseray.ops import OPS, Kind
from harness import assert_same

# a kernel that silently fell back to the interpreter would pass every comparison below
pytestmark = pytest.mark.filterwarnings("error:.*numba backend could not compile:RuntimeWarning")

ALL_DTYPES = [np.dtype(t) for t in
              ("?", "b", "h", "i", "q", "B", "H", "I", "Q", "e", "f", "d")]
FLOATS = [np.dtype(t) for t in "efd"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One numba disk cache for the whole session (subprocess tests reuse it), the one that
    numba_warm.py's child process fills when it runs."""
    path = numba_warm.cache_dir() or tmp_path_factory.mktemp("fuseray-cache")
    old = os.environ.get("FUSERAY_CACHE_DIR")
    os.environ["FUSERAY_CACHE_DIR"] = str(path)
    numba_cache.reset_cache_dir()
    yield path
    numba_cache.reset_cache_dir()
    if old is None:
        os.environ.pop("FUSERAY_CACHE_DIR", None)
    else:
        os.environ["FUSERAY_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def cpu(monkeypatch, cache_dir):
    monkeypatch.setattr(config, "device", "cpu")
    monkeypatch.setattr(config, "cpu_backend", "numba")
    # tiny kernels normally run in the interpreter; here every kernel goes through numba
    monkeypatch.setattr(numba_backend, "SMALL_KERNEL", 0)


def evaluate(build, inputs, backend):
    """Values of ``build(*fuseray inputs)`` (a list of arrays) computed in one plan."""
    old = config.cpu_backend
    config.cpu_backend = backend
    try:
        xs = [fr.asarray(a) if isinstance(a, np.ndarray) else a for a in inputs]
        outs = build(*xs)
        with np.errstate(all="ignore"):
            runtime.compute_arrays(outs)
        return [o.get() for o in outs]
    finally:
        config.cpu_backend = old


def agree(build, inputs, names=None, rtol=None, atol=None):
    """numba and the NumPy interpreter give the same dtype, shape and values for every output."""
    expected = evaluate(build, inputs, "numpy")
    got = evaluate(build, inputs, "numba")
    failures = []
    for k, (e, g) in enumerate(zip(expected, got)):
        try:
            assert_same(e, g, rtol=rtol, atol=atol)
        except AssertionError as err:
            label = names[k] if names else k
            failures.append(f"{label}: {str(err).strip().splitlines()[0:6]}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, 2.5, -2.5, 1e-3, 65504.0]


def data(shape, dtype, seed=0, low=-60, high=60):
    """Values of ``dtype`` that reach the edges: zeros, negatives, NaN/inf, int extremes."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    n = math.prod(shape)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        out = rng.integers(max(low, int(info.min)), min(high, int(info.max)) + 1, size=n)
        out = out.astype(dtype)
        if n > 8:  # the extremes wrap in arithmetic
            out[:2] = (info.min, info.max)
        return out.reshape(shape)
    out = (rng.standard_normal(n) * 4).astype(dtype)
    if n > len(SPECIALS) * 2:
        out[1:1 + len(SPECIALS)] = np.array(SPECIALS).astype(dtype)
    return out.reshape(shape)


# ---------------------------------------------------------------------------------------------
# the op table x dtypes: every elementwise op, one kernel per (dtype, layout)
# ---------------------------------------------------------------------------------------------

UNARY = sorted(n for n, r in OPS.items() if r.kind is Kind.ELEMENTWISE and r.arity == 1
               and n not in ("cast", "copy", "round"))
BINARY = sorted(n for n, r in OPS.items() if r.kind is Kind.ELEMENTWISE and r.arity == 2)
SPECIAL = {"erf", "erfc", "expit", "logit"}


def _op(name):
    if name in SPECIAL:
        return getattr(fr.special, name)
    return getattr(fr, name)


def _unary(f):
    return lambda x, y, s, c: f(x)


def _binary(f, second):
    return lambda x, y, s, c: f(x, second(y, s))


def table_outputs(dtype):
    """(names, build) for every op of the table that NumPy defines for ``dtype``."""
    dtype = np.dtype(dtype)
    probe_x = fr.asarray(np.zeros(3, dtype))
    ops = []
    for name in UNARY:
        try:
            _op(name)(probe_x)
        except TypeError:
            continue
        ops.append((name, _unary(_op(name))))
    for name in BINARY:
        try:
            _op(name)(probe_x, probe_x)
        except TypeError:
            continue
        if name in ("left_shift", "right_shift"):  # counts past the bit width included
            ops.append((name, _binary(_op(name), lambda y, s: s)))
        elif name == "power" and dtype.kind in "iu":  # negative exponents raise
            ops.append((name, _binary(_op(name), lambda y, s: s % 7)))
        else:
            ops.append((name, _binary(_op(name), lambda y, s: y)))
    ops.append(("where", lambda x, y, s, c: fr.where(c, x, y)))
    ops.append(("copy", lambda x, y, s, c: x.copy()))
    if dtype.kind == "f":
        for d in (0, 1, 2, -1):
            ops.append((f"round{d}", lambda x, y, s, c, d=d: fr.round(x, d)))
    elif dtype.kind in "iu":
        # x // 4: rounding the type's extremes overflows, and NumPy's float->int cast of that
        # is undefined behaviour
        ops.append(("round-1", lambda x, y, s, c: fr.round(x // 4, -1)))
    for target in ALL_DTYPES:  # float -> int casts: test_float_to_int_casts (in-range values)
        if dtype.kind != "f" or target.kind in "fb":
            ops.append((f"astype[{target}]", lambda x, y, s, c, t=target: x.astype(t)))
    names = [n for n, _ in ops]

    def build(x, y, s, c):
        return [f(x, y, s, c) for _, f in ops]

    return names, build


def table_inputs(shape, dtype):
    dtype = np.dtype(dtype)
    x = data(shape, dtype, seed=1)
    y = data(shape, dtype, seed=2)
    bits = dtype.itemsize * 8
    if dtype.kind in "iu":
        s = np.random.default_rng(3).integers(0, bits + 3, size=shape).astype(dtype)
    else:
        s = data(shape, dtype, seed=3)
    c = data(shape, np.bool_, seed=4)
    return [x, y, s, c]


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_op_table(dtype):
    names, build = table_outputs(dtype)
    agree(build, table_inputs((97,), dtype), names)


@pytest.mark.parametrize("dtype", [np.dtype("f"), np.dtype("i"), np.dtype("e")], ids=str)
def test_op_table_strided(dtype):
    """The same ops reading transposed and reversed views of 2-D buffers."""
    names, build = table_outputs(dtype)
    inputs = table_inputs((11, 13), dtype)

    def strided(x, y, s, c):
        return build(x.T, y[::-1].T, s.T[:, ::-1], c.T)

    agree(strided, inputs, names)


@pytest.mark.parametrize("dtype", [np.dtype(t) for t in "fdbBhHiIqQe"], ids=str)
def test_float_to_int_casts(dtype):
    """Every float -> dtype conversion of finite values that fit (NumPy's C casts)."""
    rng = np.random.default_rng(5)
    lo = 0 if dtype.kind == "u" else -100
    hi = min(100, np.finfo(dtype).max if dtype.kind == "f" else np.iinfo(dtype).max)
    sources = [(rng.uniform(lo, hi, 101)).astype(src) for src in "efd"]
    agree(lambda a, b, c: [a.astype(dtype), b.astype(dtype), c.astype(dtype)], sources)


# ---------------------------------------------------------------------------------------------
# shapes and layouts
# ---------------------------------------------------------------------------------------------

LAYOUTS = {
    "scalar": ((), lambda x: x),
    "empty": ((0,), lambda x: x),
    "one": ((1,), lambda x: x),
    "prime": ((101,), lambda x: x),
    "2d": ((7, 13), lambda x: x),
    "3d": ((3, 5, 7), lambda x: x),
    "transposed": ((13, 7), lambda x: x.T),
    "3d-permuted": ((3, 5, 7), lambda x: x.transpose(2, 0, 1)),
    "reversed": ((101,), lambda x: x[::-1]),
    "negative-2d": ((7, 13), lambda x: x[::-1, ::-2]),
    "sliced": ((9, 16), lambda x: x[1:8, 2:15]),
    "reshaped-view": ((6, 10), lambda x: x[:, ::2].reshape(30)),
}


def expression(x, y, b):
    """A mix of infix, helper and select ops, with a broadcast operand ``b``."""
    if x.dtype.kind == "f":
        return [fr.where(x > 0, fr.sin(x) * y, x - y) + b, fr.exp(x * 0.1) / (1 + y * y), x * b]
    return [(x * y + 3) // (y | 1) + b, x % (y + 100), fr.maximum(x, y) - b]


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("dtype", [np.dtype(t) for t in "fie"], ids=str)
def test_layouts(layout, dtype):
    shape, view = LAYOUTS[layout]
    x, y = data(shape, dtype, seed=1), data(shape, dtype, seed=2)
    out_shape = view(np.empty(shape)).shape
    b = data(out_shape[-1:] if out_shape else (), dtype, seed=3)
    agree(lambda x, y, b: expression(view(x), view(y), b), [x, y, b])


def test_broadcasting_both_sides():
    col, row = data((17, 1), "f", 1), data((1, 23), "f", 2)
    cube = data((3, 1, 23), "f", 3)
    agree(lambda c, r, k: [c * r + 1, fr.hypot(c, r), k - c * r, (c + k).T],
          [col, row, cube])


def test_concatenate_regions():
    a, b = data((5, 7), "f", 1), data((5, 3), "f", 2)
    agree(lambda a, b: [fr.concatenate([a, b * 2, a[:, :2].T.reshape(5, 2)], axis=1),
                        fr.concatenate([a.T, b.T[::-1]], axis=0)], [a, b])


def test_masked_reads_from_updates():
    """Array updates plan padded (masked) views: masked-out positions read zero."""
    base = data((6, 11), "f", 1)

    def build(x):
        y = x * 1.0
        y[1:4, 2:9] = x[1:4, 2:9] * 10 + 1
        z = y + 0
        z[:, ::3] = -x[:, ::3]
        return [y, z]

    agree(build, [base])


def test_only_masked_accesses_carry_range_flags(monkeypatch):
    """Each ``and`` of a generated kernel is a branch in numba's IR that every pass walks (an op
    table's kernel once carried ~90 dead ones, which cost a quarter of its compile time): an
    access with nothing masked names no in-range flag, a masked one still checks its range."""
    sources = []
    monkeypatch.setattr(numba_backend, "_compiled", {})  # every kernel is loaded here
    load = numba_cache.load
    monkeypatch.setattr(numba_cache, "load",
                        lambda name, source: sources.append(source) or load(name, source))
    flag = re.compile(r"^\s*m[rs]\d+ = ", re.MULTILINE)
    base = data((6, 11), "f", 1)
    agree(lambda x: [x * 1.25 + x[::-1] - 0.75, (x.T * 3.5).sum(axis=0)], [base])
    assert sources and not any(flag.search(s) for s in sources)

    sources.clear()

    def masked(x):
        y = x * 1.75
        y[1:4, 2:9] = x[1:4, 2:9] * 10 + 2.25
        return [y]

    agree(masked, [base])
    assert any(flag.search(s) or " if (" in s for s in sources)


def test_noncontiguous_buffers_in_jit():
    """jit reads NumPy arguments in place: reversed and strided buffers are read directly."""
    base = data((12, 16), "f", 1)
    f = fr.jit(lambda a, b: a * 2 + b)
    a, b = base[::-1, ::2], np.asfortranarray(base)[:, 1::2]
    expected = a * np.float32(2) + b
    assert_same(expected, f(a, b))


def test_int_power_negative_exponent_raises():
    x = fr.asarray(np.arange(1, 80, dtype=np.int32))
    e = fr.asarray(np.r_[np.ones(78, np.int32), -1].astype(np.int32))
    with pytest.raises(ValueError, match="negative integer powers"):
        (x ** e).compute()


# ---------------------------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------------------------

AXES = [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]


def reductions(x, axes, keepdims):
    axis = axes if axes else ()
    outs = [x.sum(axis, keepdims=keepdims), x.max(axis, keepdims=keepdims),
            x.min(axis, keepdims=keepdims), fr.any(x > 1, axis, keepdims=keepdims),
            fr.all(x > -3, axis, keepdims=keepdims)]
    if x.dtype.kind == "f":
        outs += [x.mean(axis, keepdims=keepdims), fr.prod(x * 0.5 + 1, axis, keepdims=keepdims),
                 x.std(axis, ddof=1, keepdims=keepdims)]
    else:
        outs += [fr.prod(x % 3, axis, keepdims=keepdims)]
    return outs


@pytest.mark.parametrize("axes", AXES, ids=str)
@pytest.mark.parametrize("dtype", [np.dtype("f"), np.dtype("i")], ids=str)
def test_reductions_all_axes(axes, dtype):
    x = data((4, 5, 6), dtype, 1)
    if dtype.kind == "f":
        x[1, 2, 3] = np.nan  # max/min propagate it; mean/std too
    agree(lambda x: reductions(x, axes, keepdims=len(axes) % 2 == 1), [x], rtol=1e-5)


@pytest.mark.parametrize("axes", [(0,), (1, 2), (0, 2)], ids=str)
def test_reductions_of_views(axes):
    x = data((6, 5, 4), "f", 2)
    agree(lambda x: reductions(x.transpose(2, 0, 1)[::-1], axes, keepdims=False), [x],
          rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.dtype(t) for t in "fd?bHe"], ids=str)
def test_arg_reductions(dtype):
    x = data((5, 6, 7), dtype, 3)
    if dtype.kind == "f":
        x[2, 3, 4] = x[1, 1, 1] = np.nan  # the first NaN is the extreme
        x[0, 0, :3] = 1e4  # ties: the first occurrence wins
    agree(lambda x: [x.argmax(0), x.argmin(1), x.argmax(2), x.argmin(None), x.argmax(None),
                     x.argmax(1, keepdims=True)], [x])


def test_reduction_dtypes():
    """int8 sums to int64, bool sums count, float16 accumulates in float32."""
    i8, b = data((9, 40), "b", 1), data((9, 40), "?", 2)
    h = (np.abs(data((9, 40), "e", 3)) + 1).astype(np.float16)
    h[np.isnan(h) | np.isinf(h)] = 1
    agree(lambda i8, b, h: [i8.sum(1), b.sum(0), i8.prod(), h.sum(1), h.mean(0), h.max(1),
                            h.var(), i8.mean(1)], [i8, b, h], rtol=2e-3)


def test_empty_reductions():
    x = np.zeros((0, 5), np.float32)
    agree(lambda x: [x.sum(0), x.prod(0), x.mean(0), fr.any(x, 0), fr.all(x, 0), x.sum()], [x])


def test_split_reductions_are_deterministic_and_right():
    """Few rows, long rows: per-chunk partials combined in a fixed order."""
    x = data((3, 150_001), "f", 4)
    x[1, 100_000] = np.nan
    y = data((300_001,), "d", 5)

    def build(x, y):
        return [x.sum(1), x.max(1), x.argmin(1), x.mean(1), (y * y).sum(), y.argmax(),
                fr.exp(x - x.max(1, keepdims=True))]

    agree(build, [x, y], rtol=1e-4)
    first = evaluate(build, [x, y], "numba")
    old = numba_backend._numba.get_num_threads()
    numba_backend._numba.set_num_threads(1)
    try:
        again = evaluate(build, [x, y], "numba")
    finally:
        numba_backend._numba.set_num_threads(old)
    for a, b in zip(first, again):  # bit for bit, whatever the thread count
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# the BENCHMARKS.md workloads (small sizes)
# ---------------------------------------------------------------------------------------------


def test_workloads():
    rng = np.random.default_rng(7)
    n, rows = 4096, 8
    a, b, c = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    s = (np.abs(a) * 20 + 10).astype(np.float32)
    k = (np.abs(b) * 20 + 10).astype(np.float32)
    t = (np.abs(c) + 0.1).astype(np.float32)
    m = rng.standard_normal((rows, n // rows)).astype(np.float32)
    g = rng.standard_normal(n // rows).astype(np.float32)

    def build(a, b, c, s, k, t, m, g):
        y = a
        for _ in range(5):
            y = fr.sqrt(fr.abs(fr.sin(y * 0.99 + 0.01)) + 0.5)
        gelu = 0.5 * a * (1 + fr.tanh(0.7978845608 * (a + 0.044715 * a * a * a)))
        sq = fr.sqrt(t)
        d1 = (fr.log(s / k) + (0.02 + 0.5 * 0.3 * 0.3) * t) / (0.3 * sq)
        d2 = d1 - 0.3 * sq
        n1 = 0.5 + 0.5 * fr.special.erf(d1 * 0.7071067811865476)
        n2 = 0.5 + 0.5 * fr.special.erf(d2 * 0.7071067811865476)
        disc = k * fr.exp(-0.02 * t)
        e = fr.exp(m - m.max(1, keepdims=True))
        mean = m.mean(1, keepdims=True)
        var = ((m - mean) ** 2).mean(1, keepdims=True)
        return [a * b + c, y, gelu, s * n1 - disc * n2, disc * (1 - n2) - s * (1 - n1),
                (a * a).sum(), e / e.sum(1, keepdims=True),
                (m - mean) / fr.sqrt(var + 1e-5) * g, (m * g).sum(0)]

    agree(build, [a, b, c, s, k, t, m, g], rtol=1e-4, atol=1e-5)


def test_vector_math_accuracy():
    """float32 exp/log/tanh/erf (vectorised, not libm) within a few ulp of float64 math."""
    import math as m

    x = np.concatenate([np.linspace(-110, 100, 200_003, dtype=np.float32),
                        np.array(SPECIALS + [1e-40, -1e-40, 88.72, 88.73, -103.9], np.float32)])
    pos = np.abs(x) + np.float32(1e-30)
    got = evaluate(lambda x, p: [fr.exp(x), fr.log(p), fr.tanh(x), fr.special.erf(x)],
                   [x, pos], "numba")
    erf = np.vectorize(m.erf, otypes=[np.float64])
    with np.errstate(all="ignore"):
        exact = [np.exp(x.astype(np.float64)), np.log(pos.astype(np.float64)),
                 np.tanh(x.astype(np.float64)), erf(x.astype(np.float64))]
    for g, e in zip(got, exact):
        e32 = e.astype(np.float32)
        assert np.array_equal(np.isnan(g), np.isnan(e32))
        finite = np.isfinite(e32) & (np.abs(e32) > 1.2e-38)
        ulp = np.abs(g[finite] - e[finite]) / np.spacing(np.abs(e32[finite]))
        assert ulp.max() <= 2.0
        assert np.array_equal(g[np.isinf(e32)], e32[np.isinf(e32)])


# ---------------------------------------------------------------------------------------------
# compilation: sizes, cache, fallback, threads
# ---------------------------------------------------------------------------------------------


def test_new_size_does_not_recompile():
    f = fr.jit(lambda a, b: fr.exp(a) * b + 1)
    f(fr.asarray(data((1000,), "f", 1)), fr.asarray(data((1000,), "f", 2))).compute()
    before = dict(numba_backend._compiled)
    for n in (5000, 77777, 3):
        a, b = data((n,), "f", 1), data((n,), "f", 2)
        assert_same(np.exp(a) * b + np.float32(1), f(fr.asarray(a), fr.asarray(b)), rtol=1e-5)
    assert numba_backend._compiled.keys() == before.keys()
    for fn in before.values():
        if fn is not numba_backend._FALLBACK:
            assert len(fn.signatures) <= 1


SCRIPT = """
import numpy as np, fuseray as fr, time
from fuseray import config
from fuseray.backends import numba as nb
config.device = "cpu"
a = np.arange(100_000, dtype=np.float32)  # big enough not to run in the interpreter
x = fr.asarray(a)
t = time.perf_counter()
y = (fr.exp(x * 0.00001) * 3 + x).compute()
print(time.perf_counter() - t)
print(sum(fn.stats.cache_hits.get(s, 0) for fn in nb._compiled.values()
          for s in fn.signatures))
assert np.allclose(y.get(), np.exp(a * np.float32(0.00001)) * 3 + a, rtol=1e-6)
"""


def _run_script(cache, code=SCRIPT):
    env = dict(os.environ, FUSERAY_CACHE_DIR=str(cache), FUSERAY_CPU_BACKEND="numba",
               PYTHONWARNINGS="error::RuntimeWarning")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return [float(v) for v in res.stdout.split()]


def test_cache_reused_by_a_new_process(tmp_path):
    cache = tmp_path / "cache"
    first_time, first_hits = _run_script(cache)
    second_time, second_hits = _run_script(cache)
    assert first_hits == 0
    assert second_hits >= 1
    assert second_time < first_time


def test_corrupted_cache_recovers(tmp_path):
    cache = tmp_path / "cache"
    _run_script(cache)
    for f in (cache / "numba" / "__pycache__").iterdir():
        f.write_bytes(b"\x00garbage" * 7)
    time_, _ = _run_script(cache)  # recompiles, right answer, no warning escalated to error


def test_unwritable_cache_dir(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    _run_script(blocker / "sub")


def test_compile_failure_falls_back_with_one_warning(monkeypatch):
    from fuseray.backends import numba_codegen

    def broken(self):
        raise RuntimeError("simulated code generator failure")

    monkeypatch.setattr(numba_codegen.Generator, "generate", broken)
    monkeypatch.setattr(numba_backend, "_compiled", {})
    x = data((300,), "f", 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            y = (fr.asarray(x) * 3 + 1).get()
            np.testing.assert_array_equal(y, x * np.float32(3) + np.float32(1))
    ours = [w for w in caught if "numba backend could not compile" in str(w.message)]
    assert len(ours) == 1


def test_numba_typing_failure_falls_back(monkeypatch):
    from fuseray.backends import numba_codegen

    real = numba_codegen.Generator.expr

    def bad_expr(self, i):  # valid Python that numba cannot type
        return "np.float32(object())" if self.nodes[i][0] == "multiply" else real(self, i)

    monkeypatch.setattr(numba_codegen.Generator, "expr", bad_expr)
    monkeypatch.setattr(numba_backend, "_compiled", {})
    x = data((257,), "f", 3)
    with pytest.warns(RuntimeWarning, match="could not compile"):
        y = (fr.asarray(x) * 2 - 1).get()
    np.testing.assert_array_equal(y, x * np.float32(2) - np.float32(1))


def test_without_numba_uses_the_interpreter(monkeypatch):
    monkeypatch.setattr(numba_backend, "_numba", None)
    monkeypatch.setattr(numba_backend, "_warned", [])
    assert runtime.cpu_backend() is not numba_backend  # warns once
    x = data((100,), "f", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal((fr.asarray(x) + 1).get(), x + np.float32(1))


def test_threads_share_compiled_loops():
    x = data((20_000,), "f", 1)
    expected = np.float32(2) * x + np.float32(1)
    errors = []

    def work():
        try:
            for _ in range(5):
                np.testing.assert_allclose((fr.asarray(x) * 2 + 1).get(), expected)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# ---------------------------------------------------------------------------------------------
# advanced indexing: take and scatter are generated (a fallback warning fails these tests)
# ---------------------------------------------------------------------------------------------

# the interpreter's indexing and update programs, run here on numba: a subset that reaches every
# new code path (each new loop structure costs a compile; the rest would add a minute)
INDEXING = [
    *((test_indexing.test_advanced_reads, i) for i in (1, 10, 11, 12, 13, 14, 15)),
    *((test_indexing.test_advanced_writes, i) for i in (2, 5, 7, 8)),
    (test_indexing.test_gather_fuses_with_its_index_computation, None),
    # heat_3d is left out: 15 s of compiling for nothing the others do not reach
    *((test_update.test_stencils_match_numpy, name) for name in ("jacobi_1d", "jacobi_2d",
                                                                  "fdtd_1d")),
]


@pytest.mark.parametrize("case", INDEXING, ids=lambda c: f"{c[0].__name__}[{c[1]}]")
def test_indexing_and_update_programs(case):
    test, arg = case
    test() if arg is None else test(arg)


def test_take_reads_every_rank_and_dtype():
    """x[i] for x of rank 1 to 3, index arrays of rank 1 to 3, negative indices, reversed and
    transposed sources, four dtypes; the reads of one shape fuse into one loop."""
    i1, i2 = np.array([3, -1, 0, -7]), np.array([[1, -2], [0, 6]])
    i225 = np.arange(20).reshape(2, 2, 5) % 14 - 7
    v, m, c = data((7,), "f", 1), data((7, 5), "f", 2), data((7, 3, 5), "f", 3)
    h, b, k = data((7, 5), "e", 4), data((7, 5), "?", 5), data((7, 5), "b", 6)

    def build(v, m, c, h, b, k):
        return [m[i2], v[i225], c[i2, i2 % 3], m[::-1, ::-1][i2], h[i2], b[i2],
                fr.take(c.T[0], i225), c[:, 1][i1], k[i1]]

    agree(build, [v, m, c, h, b, k])


def test_take_fuses_into_elementwise_and_reductions():
    x, y = data((50, 30), "f", 1), data((30,), "f", 2)
    idx = fr.asarray(np.array([4, -1, 7, 7, 0, 49]))

    def build(x, y):
        rows = x[(idx * 3) % 50]  # the index is computed in the kernel too
        return [fr.exp(rows * 0.1) + y, rows.sum(), rows / rows.sum(1, keepdims=True),
                rows.max(1), y[x.argmax(1)]]

    agree(build, [x, y], rtol=1e-5)
    xs = fr.asarray(x)
    _, plan = runtime.prepare([(xs[idx] * 2 + 1)._node, (xs[idx] * 2).sum()._node])
    assert sorted(k.kind for k in plan.kernels) == ["elementwise", "reduce"]
    assert all("take" in k.ops() for k in plan.kernels)
    assert "take" in fr.explain(xs[idx] * 2 + 1)


def test_scatter_writes_last_wins_and_masks():
    """Repeated positions take the last value, also when the trailing axes split in tasks;
    boolean masks read and write; put, place and putmask."""
    v = data((9,), "d", 1)
    wide = data((6, 9000), "f", 2)  # three chunks of trailing elements: parallel tasks
    pos = np.array([2, 5, 2, -1, 2, 5])

    def build(v, wide):
        a, d, e, f, g = (v + 0 for _ in range(5))
        a[pos] = fr.arange(6.0)
        b = wide + 0
        b[pos] = wide[::-1] * 2
        c = wide.T + 0
        c[:, pos] = -wide.T[:, :6]
        d[d > 0] = 0
        fr.putmask(e, e < 0, v[:4])
        fr.put(f, np.array([0, 3, 3, -9]), v[4:6])
        fr.place(g, g > 0, v[:2])
        return [a, b, c, d, e, f, g, v[v < 0]]

    agree(build, [v, wide])


def test_out_of_bounds_index_raises_and_backend_stays_usable():
    x = data((5, 4), "f", 1)

    def read(i):
        return (fr.asarray(x)[i * 3] * 2).sum()

    def write(i):
        a = fr.asarray(x)
        a[i * 3] = 1.0
        return a

    for op in (read, write):
        for i, bad in [(np.array([1, 4]), 12), (np.array([-3, 1]), -9)]:
            with pytest.raises(IndexError) as caught:
                op(fr.asarray(i)).compute()  # the index is computed: the kernel checks it
            assert str(caught.value) == f"index {bad} is out of bounds for axis 0 with size 5"
    agree(lambda i: [read(i), write(i)], [np.array([1, -1])])



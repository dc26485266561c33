"""The fusion plan: how many kernels the benchmark workloads and long traces take, and why."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import fuseray as fr
from fuseray import config, fusion
from fuseray.array import FLUSH_DEPTH

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import workloads  # noqa: E402

pytestmark = pytest.mark.usefixtures("reference_backend")


def plan_of(fn, *args):
    _, inst, _ = fr.jit(fn).lower(*args)
    return inst.plan


@pytest.mark.parametrize("name,kinds", [
    ("triad", ["elementwise"]), ("chain20", ["elementwise"]), ("gelu", ["elementwise"]),
    ("black_scholes", ["elementwise"]), ("sumsq", ["reduce"]), ("softmax", ["row"]),
    ("layernorm", ["row"]), ("colsum", ["reduce"]),
])
def test_benchmark_workloads_are_one_kernel(name, kinds):
    rng = np.random.default_rng(0)
    args = workloads.inputs(name, 4096, rng)
    fn = workloads.WORKLOADS[name]
    plan = plan_of(lambda *a: fn(fr, *a), *args)
    assert [k.kind for k in plan.kernels] == kinds
    assert not [why for n, why in plan.splits.items() if not why.startswith("graph output")]
    # and the one kernel computes NumPy's answer
    got = fr.jit(lambda *a: fn(fr, *a))(*args)
    want = fn(np, *(a.astype(np.float64) for a in args))
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple)
                    else (want,)):
        np.testing.assert_allclose(g.get(), w, rtol=2e-4, atol=2e-4)


def test_black_scholes_writes_both_outputs_from_one_kernel():
    args = workloads.inputs("black_scholes", 1000, np.random.default_rng(1))
    plan = plan_of(lambda *a: workloads.black_scholes(fr, *a), *args)
    (k,) = plan.kernels
    assert len(k.stores) == 2 and len(k.inputs) == 3
    assert k.bytes_moved() == 20 * 1000


def test_layernorm_row_kernel_keeps_per_row_values_per_row():
    m, g = workloads.inputs("layernorm", 64 * 1024, np.random.default_rng(2))
    (k,) = plan_of(lambda m, g: workloads.layernorm(fr, m, g), m, g).kernels
    assert k.axes == (1,) and k.space == m.shape and len(k.reductions) == 2
    sqrt = [n for n in k.nodes if n.op == "sqrt"]
    assert sqrt and all(n in k.row_level for n in sqrt)  # one sqrt per row, not per element


def test_long_trace_is_cut_at_the_op_limit():
    def f(x):
        for i in range(20_000):
            x = fr.sin(x) if i % 2 else x * 1.0001
        return x

    x = np.random.default_rng(3).random(16).astype(np.float32)
    plan = plan_of(f, x)
    limit = config.max_kernel_ops
    assert len(plan.kernels) == -(-20_000 // limit)
    assert all(len(k.ops()) <= limit for k in plan.kernels)
    assert any("op limit" in why for why in plan.splits.values())
    ref = x.copy()
    for i in range(20_000):
        ref = np.sin(ref) if i % 2 else ref * np.float32(1.0001)
    np.testing.assert_allclose(fr.jit(f)(x).get(), ref, rtol=1e-5)


def test_long_eager_loop_flushes_and_stays_shallow():
    x = fr.asarray(np.ones(8))
    for _ in range(10_000):
        x = x * 1.0001 + 0.0001
    assert x._node.depth <= FLUSH_DEPTH + 1
    np.testing.assert_allclose(x.get()[0], (1.0001 ** 10_000) + 0.0001 * sum(
        1.0001 ** k for k in range(10_000)), rtol=1e-9)


def test_reduction_read_transposed_is_materialised_with_a_reason():
    m = np.random.default_rng(4).random((6, 8))
    plan = plan_of(lambda m: m - m.sum(axis=0)[:, None][:6, :1].T[:, :1], m)
    assert len(plan.kernels) == 2
    assert any("layout" in why or "iteration space" in why for why in plan.splits.values())


@pytest.mark.parametrize("case", ["rows", "row_broadcast", "epilogue"])
def test_a_take_of_computed_rows_reads_them_from_memory(case):
    """x.sum(1)[i] with as many indices as rows: the take must not join the reduction's kernel
    (it reads the sums at computed positions, which only memory holds)."""
    from fuseray.backends.cuda import program

    x = np.random.default_rng(7).standard_normal((6, 5))
    i = np.array([5, 0, 3, 3, 1, 2])
    fns = {
        "rows": lambda xp, x, i: x.sum(1)[i],
        "row_broadcast": lambda xp, x, i: (x - x.max(1, keepdims=True))[i] * 2,
        "epilogue": lambda xp, x, i: xp.exp(x.sum(1))[i] + x.mean(1),
    }
    f = fns[case]
    plan = plan_of(lambda x, i: f(fr, x, i), x, i)
    assert len(plan.kernels) == 2
    assert fusion.TAKEN in plan.splits.values()
    for k in plan.kernels:  # the CUDA generator accepts both kernels
        program.generate(k)
    got = fr.asnumpy(f(fr, fr.asarray(x), fr.asarray(i)))
    np.testing.assert_allclose(got, f(np, x, i), rtol=1e-12, atol=1e-12)


def test_consecutive_scatters_read_the_earlier_one_from_memory(recwarn):
    """x[i] += 1; x[j] = v: the second scatter kernel's old array is the first one's output
    (both backends once took it for the scatter they compute)."""
    from fuseray.array import node_of
    from fuseray.backends.cuda import program

    rng = np.random.default_rng(10)
    steps = [rng.integers(-64, 64, 200) for _ in range(3)]
    h0 = rng.standard_normal(64)
    out = []
    for xp in (np, fr):
        hist = xp.array(h0)
        for t, idx in enumerate(steps):
            i = xp.asarray(idx)
            hist[i] += 1.0
            hist[i[::7]] = hist[i[::7]] * 0.5 + t
        out.append(hist)
    _, plan = fr.runtime.prepare([node_of(out[1])])
    assert [k.kind for k in plan.kernels].count("scatter") == 6
    for k in plan.kernels:
        program.generate(k)
    np.testing.assert_allclose(fr.asnumpy(out[1]), out[0], rtol=1e-12)
    assert not [w for w in recwarn if "interpret" in str(w.message)]  # no backend fallback


def test_a_lazy_stencil_loop_reuses_its_kernels():
    """u = 0.25 * concatenate([u[:1], u[:-2] + u[2:], u[-1:]]) + 0.5 * u, step after step: the
    views must not pull every earlier step into each kernel (a new source, and a new compile, per
    step); the set of distinct kernels stops growing."""
    import collections

    from fuseray import runtime
    from fuseray.array import node_of

    def names(steps):
        u = fr.asarray(np.random.default_rng(9).standard_normal(256))
        for _ in range(steps):
            u = 0.25 * fr.concatenate([u[:1], u[:-2] + u[2:], u[-1:]]) + 0.5 * u
        _, plan = runtime.prepare([node_of(u)])
        return collections.Counter(k.name for k in plan.kernels), u

    few, _ = names(40)
    many, u = names(80)
    assert set(many) == set(few) and len(many) < 40
    want = np.random.default_rng(9).standard_normal(256)
    for _ in range(80):
        want = 0.25 * np.concatenate([want[:1], want[:-2] + want[2:], want[-1:]]) + 0.5 * want
    np.testing.assert_allclose(u.get(), want, rtol=1e-12)


def test_two_reductions_of_one_array_share_a_kernel():
    m = np.random.default_rng(5).random((6, 8))
    plan = plan_of(lambda m: (m.sum(axis=1), m.max(axis=1), m.std(axis=1)), m)
    assert len(plan.kernels) == 1 and len(plan.kernels[0].stores) == 3


@pytest.mark.parametrize("fn", [lambda m: m.sum(axis=1).max(),
                                lambda m: (m * m).sum(axis=1).sum()])
def test_reduction_of_reduction_is_two_kernels(fn):
    m = np.random.default_rng(6).random((6, 8))
    first, second = plan_of(fn, m).kernels
    # the second reads the first's stored rows and nothing upstream of them
    assert second.inputs == first.outputs
    assert all(n.shape == (6,) or n.ndim == 0 for n in second.nodes)
    np.testing.assert_allclose(fr.jit(fn)(m).get(), fn(m), rtol=1e-12)


@pytest.mark.parametrize("shape,fn", [
    ((), lambda x: (abs(x), x.sum(), abs(x.sum()).reshape(-1))),
    ((), lambda x: (x.min(), np.minimum(x.min(), x)[None])),
    ((1, 5), lambda x: (abs(x), abs(x.sum(axis=0, keepdims=True)).reshape(-1))),
    ((1,), lambda x: (x * 2, np.remainder(x.max(axis=0, keepdims=True), x)[::-1])),
])
def test_values_of_the_space_re_addressed_after_a_reduction_are_stored(shape, fn):
    """Where the reduced extent is 1, a value computed from a reduction has the space's shape
    (full level) and one value per row at once; re-addressed by a view it is read from memory,
    as the CUDA generator needs (compile-all generates these plans)."""
    x = np.random.default_rng(9).uniform(1, 3, shape)
    for want, got in zip(fn(x), fr.compute(*fn(fr.asarray(x)))):
        np.testing.assert_allclose(got.get(), want, rtol=1e-12)


@pytest.mark.parametrize("view", [lambda y: y[::2], lambda y: y[::-1][:3]])
def test_a_new_reduction_kernel_comes_after_what_it_reads(view):
    """A reduction over a view of a value computed from another reduction: the value is stored
    by a kernel planned before the reduction's own (a kernel planned after it could only be
    recomputed there, which a view of it cannot be)."""
    x = np.random.default_rng(10).uniform(1, 2, 6)

    def fn(x):
        y = x + x[::2].sum()
        return view(y).sum()

    *first, last = plan_of(fn, x).kernels
    y = [n for n in last.nodes if n.op == "add"]
    assert y and all(n in last.inputs for n in y)  # read from memory, not recomputed
    assert any(s.value in y for k in first for s in k.stores)
    np.testing.assert_allclose(fr.jit(fn)(x).get(), fn(x), rtol=1e-12)


@pytest.mark.parametrize("x,indices,axis", [
    (np.array(0.8), [0], None),  # a 0-d source: the take is a reshape's
    (np.arange(12.0).reshape(3, 4), [2, 0], 0),
])
def test_a_take_returned_and_reduced_is_read_in_kernel_order(x, indices, axis):
    """A take is an output and a reduction's operand: the reduction's kernel computes it
    or reads it from an earlier kernel, never from one planned after it (the planner took a
    stored take for a value stored elsewhere whatever the kernel order, and every backend
    then looked for it before it existed)."""
    indices = np.array(indices, dtype=np.intp)

    def fn(x):
        xp = fr if isinstance(x, fr.ndarray) else np
        t = xp.take(x, indices, axis=axis)
        return t, (t * 2).sum(axis=0 if t.ndim == 1 else 1)

    kernels = plan_of(fn, x).kernels
    for i, k in enumerate(kernels):
        stored_before = {s.target for earlier in kernels[:i] for s in earlier.stores}
        assert all(n.op == "buffer" or n in stored_before for n in k.inputs), k
    for got, want in zip(fr.jit(fn)(x), fn(x), strict=True):
        np.testing.assert_allclose(got.get(), want, rtol=1e-12)


def test_concatenate_pieces_store_into_regions():
    a = np.arange(6.0).reshape(2, 3)
    plan = plan_of(lambda a: fr.concatenate([a * 2, fr.exp(a)], axis=0), a)
    assert len(plan.kernels) == 2 and all(k.stores[0].region is not None for k in plan.kernels)


def test_constant_folding_and_cse():
    x = np.arange(4.0)
    plan = plan_of(lambda x: (x * (2.0 + 3.0)) + (x * (2.0 + 3.0)), x)
    (k,) = plan.kernels
    assert k.ops().count("multiply") == 1 and "add" in k.ops()
    assert not [n for n in k.nodes if n.op == "add" and all(s.op == "const" for s in n.src)]


def test_simplification_never_changes_numpys_answer():
    x = np.array([np.nan, -0.0, np.inf, 1.0])
    f = fr.jit(lambda x: (x * 0, x + 0.0, x * 1, x - 0, x ** 1, x ** 2, -(-x)))
    with np.errstate(all="ignore"):
        want = (x * 0, x + 0.0, x * 1, x - 0, x ** 1, x ** 2, -(-x))
    for got, exp in zip(f(x), want):
        np.testing.assert_array_equal(got.get(), exp)
        assert np.array_equal(np.signbit(got.get()), np.signbit(exp))


def test_explain_and_show_graph(tmp_path):
    m = np.random.default_rng(7).random((4, 8)).astype(np.float32)
    text = fr.explain(lambda m: workloads.softmax(fr, m), m)
    assert "1 kernel(s)" in text and "row over [4, 8]" in text and "max" in text and "exp" in text
    assert "reads  m: float32[4, 8]" in text and "moves" in text
    dot = fr.show_graph(lambda m: workloads.softmax(fr, m), m, filename=str(tmp_path / "g.dot"))
    assert dot.startswith("digraph fuseray") and "cluster_0" in dot
    assert (tmp_path / "g.dot").read_text() == dot
    lazy = fr.asarray(m) + 1
    assert "elementwise" in fr.explain(lazy)


def test_dead_code_is_never_computed():
    def f(x):
        unused = fr.exp(x).sum()  # noqa: F841 - dead: not returned
        return x + 1

    plan = plan_of(f, np.arange(4.0))
    assert [k.ops() for k in plan.kernels] == [["add"]]


def test_augmented_assignment_updates_in_place_as_numpy_does():
    a = fr.asarray(np.arange(3.0))
    b = a
    b += 1
    assert b is a and a.get().tolist() == [1.0, 2.0, 3.0]


@pytest.mark.skipif(__import__("shutil").which("dot") is None, reason="Graphviz is not installed")
def test_show_graph_renders_svg(tmp_path):
    m = np.random.default_rng(8).random((4, 8))
    fr.show_graph(lambda m: workloads.layernorm(fr, m, m[0]), m, filename=str(tmp_path / "g.svg"))
    assert (tmp_path / "g.svg").read_text().lstrip().startswith(("<?xml", "<svg"))

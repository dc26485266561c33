"""Writes with NumPy's aliasing semantics: setitem, views, in-place operators, out=, stencils."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fuseray as fr
from harness import compare_outcomes, run_both

pytestmark = pytest.mark.usefixtures("reference_backend")


def fresh(xp, a):
    """A new array of ``a``'s values that the body may write to."""
    return np.array(a, copy=True) if xp is np else fr.asarray(a)


def check(body):
    compare_outcomes(*run_both(body))


BASE = np.arange(60, dtype=np.float64).reshape(3, 4, 5) - 20

PATTERNS = [
    lambda xp, a: a.__setitem__((1, slice(None), slice(1, 4)), -1.0) or a,
    lambda xp, a: a.__setitem__((slice(None, None, -1),), a[0] * 2) or a,
    lambda xp, a: a.__setitem__((Ellipsis, slice(None, None, 2)), 9) or a,
    lambda xp, a: a.__setitem__((slice(None), 0), a[:, -1] + a[:, 1]) or a,
    lambda xp, a: a.__setitem__((0, 0, 0), 123) or a,
    lambda xp, a: a.__setitem__((slice(1, None),), a[:-1]) or a,  # overlapping source
    lambda xp, a: a.__setitem__((slice(None, -1),), a[1:]) or a,
    lambda xp, a: a.__setitem__((None, 1), a[2]) or a,
    lambda xp, a: a.__setitem__((slice(None), slice(None, None, -2), slice(1, None, 3)), 5) or a,
    lambda xp, a: a.__setitem__(a > 10, 0) or a,
    lambda xp, a: a.__setitem__(a[0] > 0, -5) or a,
    lambda xp, a: a.__setitem__((), a.T.T * 2) or a,
]


@pytest.mark.parametrize("i", range(len(PATTERNS)))
def test_setitem_patterns(i):
    check(lambda xp: PATTERNS[i](xp, fresh(xp, BASE)))


def views_see_writes(xp):
    a = fresh(xp, BASE)
    v = a[1:, ::2]  # a view
    t = a.T  # another view
    r = a.reshape(12, 5)  # a view (C order)
    vv = v[:, 1:]  # a view of a view
    v[0] = 1000  # through a view: visible in the base and all other views
    t[0, 0] += 7  # augmented assignment through a transposed view
    r[-1] *= -1
    vv[...] = vv - 1
    c = a.copy()
    c[...] = 0  # a copy is independent
    return a, v, t, r, vv, c


def test_views_and_base_see_each_others_writes():
    check(views_see_writes)


def test_inplace_operators_update_aliases():
    def body(xp):
        a = fresh(xp, BASE)
        b = a  # the same array
        b += 1
        s = a[0]
        s *= 3
        a[1] //= 2
        a[2] **= 2
        return a, b, s

    check(body)


def test_inplace_casting_rule():
    check(lambda xp: fresh(xp, np.arange(4, dtype=np.int32)).__iadd__(1.5))
    check(lambda xp: fresh(xp, np.arange(4, dtype=np.float32)).__iadd__(np.arange(4)))
    check(lambda xp: fresh(xp, np.arange(4, dtype=np.int8)).__imul__(3))


def test_assignment_casts_and_errors():
    check(lambda xp: fresh(xp, np.zeros(4, np.int8)).__setitem__(0, 3.7))
    check(lambda xp: fresh(xp, np.zeros(4, np.int8)).__setitem__(0, 1000))
    check(lambda xp: fresh(xp, np.zeros(4)).__setitem__(slice(1, 3), np.ones(3)))
    check(lambda xp: fresh(xp, np.zeros(4)).__setitem__(7, 1))
    check(lambda xp: xp.broadcast_to(fresh(xp, np.ones(3)), (2, 3)).__setitem__(0, 1))
    check(lambda xp: fresh(xp, np.zeros((2, 3))).__setitem__(0, np.ones((1, 1, 3))))


def test_ufunc_out():
    def body(xp):
        x = fresh(xp, BASE)
        y = xp.zeros_like(x)
        xp.exp(x / 100, out=y)
        xp.add(x, 1, out=x)  # out aliases an input
        z = xp.zeros((4, 5))
        r = x.sum(axis=0, out=z)
        m = xp.zeros(5, dtype=np.int64)
        x[0].max(axis=0, out=m)
        return y, x, z, r, m

    check(body)


def test_out_errors():
    check(lambda xp: xp.exp(fresh(xp, BASE), out=xp.zeros(3)))
    check(lambda xp: xp.exp(fresh(xp, BASE), out=xp.zeros(BASE.shape, dtype=np.int32)))
    check(lambda xp: fresh(xp, BASE).sum(axis=0, out=xp.zeros(5)))


# -- stencils written as plain NumPy ---------------------------------------------------------


def jacobi_1d(xp, u, steps):
    for _ in range(steps):
        u[1:-1] = 0.5 * (u[:-2] + u[2:])
    return u


def jacobi_2d(xp, u, steps):
    for _ in range(steps):
        u[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])
    return u


def heat_3d(xp, u, steps, alpha=0.1):
    for _ in range(steps):
        lap = (u[:-2, 1:-1, 1:-1] + u[2:, 1:-1, 1:-1] + u[1:-1, :-2, 1:-1] + u[1:-1, 2:, 1:-1]
               + u[1:-1, 1:-1, :-2] + u[1:-1, 1:-1, 2:] - 6 * u[1:-1, 1:-1, 1:-1])
        u[1:-1, 1:-1, 1:-1] += alpha * lap
    return u


def fdtd_1d(xp, ez, hy, steps):
    for t in range(steps):
        hy[:-1] += 0.5 * (ez[1:] - ez[:-1])
        ez[1:] += 0.5 * (hy[1:] - hy[:-1])
        ez[0] = xp.sin(0.1 * t)
    return ez, hy


STENCILS = {
    "jacobi_1d": (jacobi_1d, lambda r: (r.random(64),)),
    "jacobi_2d": (jacobi_2d, lambda r: (r.random((24, 20)),)),
    "heat_3d": (heat_3d, lambda r: (r.random((10, 9, 8)),)),
    "fdtd_1d": (fdtd_1d, lambda r: (r.random(50), r.random(50))),
}


@pytest.mark.parametrize("name", STENCILS)
def test_stencils_match_numpy(name):
    fn, make = STENCILS[name]
    inputs = make(np.random.default_rng(0))
    check(lambda xp: fn(xp, *(fresh(xp, a) for a in inputs), 5))


@pytest.mark.parametrize("name,kernels", [("jacobi_1d", 1), ("jacobi_2d", 1), ("heat_3d", 1),
                                          ("fdtd_1d", 2)])
def test_one_kernel_per_update_in_a_time_step(name, kernels):
    fn, make = STENCILS[name]
    inputs = make(np.random.default_rng(1))
    step = fr.jit(lambda *a: fn(fr, *a, 1))
    _, inst, _ = step.lower(*inputs)
    assert len(inst.plan.kernels) == kernels


def test_long_update_loop_runs_in_bounded_graph():
    u = fr.asarray(np.random.default_rng(2).random(32))
    ref = u.get()
    for _ in range(3000):
        u[1:-1] = 0.5 * (u[:-2] + u[2:])
        ref[1:-1] = 0.5 * (ref[:-2] + ref[2:])
    np.testing.assert_allclose(u.get(), ref, rtol=1e-12)


# -- random sequences of slice writes and reads on aliased arrays ----------------------------

slices = st.tuples(st.integers(-6, 6) | st.none(), st.integers(-6, 6) | st.none(),
                   st.sampled_from([None, 1, 2, -1, -2, 3]))


@given(st.lists(st.tuples(st.sampled_from(["a", "v", "t"]), slices, slices,
                          st.sampled_from(["scalar", "self", "other"])), min_size=1, max_size=6))
def test_random_slice_writes_match_numpy(ops):
    def body(xp):
        a = fresh(xp, np.arange(30.0).reshape(5, 6))
        arrays = {"a": a, "v": a[1:, ::-1], "t": a.T}
        for name, s0, s1, kind in ops:
            target = arrays[name]
            key = (slice(*s0), slice(*s1))
            region = target[key]
            if kind == "scalar":
                value = 7.5
            elif kind == "self":
                value = region * 2 + 1
            else:
                value = arrays["t" if name != "t" else "a"][key][: region.shape[0],
                                                             : region.shape[1]]
            target[key] = value
        return a, arrays["v"], arrays["t"]

    check(body)

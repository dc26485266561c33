"""Advanced indexing reads and writes, take/nonzero/put/place/putmask/copyto, against NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fuseray as fr
from harness import compare_outcomes, run_both

pytestmark = pytest.mark.usefixtures("reference_backend")

A = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) - 50


def fresh(xp, a=A):
    return np.array(a, copy=True) if xp is np else fr.asarray(a)


def idx(xp, values):
    values = np.asarray(values)
    return values if xp is np else fr.asarray(values)


def check(body):
    compare_outcomes(*run_both(body))


READ_KEYS = [
    lambda xp: (idx(xp, [1, 0, 1]),),
    lambda xp: (slice(None), idx(xp, [2, -1, 0])),
    lambda xp: (0, idx(xp, [[1, 2], [0, 0]]), slice(1, 3)),  # ints join the array index
    lambda xp: (idx(xp, [1, 0]), idx(xp, [2, 1])),  # adjacent: at their place
    lambda xp: (slice(None), idx(xp, [0, 2]), idx(xp, [3, 1])),  # adjacent, not first
    lambda xp: (idx(xp, [0, 1]), slice(None), idx(xp, [3, 1])),  # not adjacent: in front
    lambda xp: (Ellipsis, idx(xp, [4, 0, 4])),
    lambda xp: (None, idx(xp, [1]), slice(None, None, -1)),
    lambda xp: (idx(xp, [1, 0])[:, None], idx(xp, [0, 1, 2])),  # broadcasting index arrays
    lambda xp: (idx(xp, np.array([True, False])),),
    lambda xp: (slice(None), idx(xp, np.array([False, True, True]))),
    lambda xp: (idx(xp, [0, 1]), idx(xp, [0, 5])),  # out of bounds on axis 1
    lambda xp: (idx(xp, [3]),),  # out of bounds
    lambda xp: (idx(xp, [-3]),),  # out of bounds, negative
    lambda xp: (idx(xp, [0, 1]), idx(xp, [0, 1, 2])),  # shape mismatch
    lambda xp: (idx(xp, [0.5]),),  # not integers
]


@pytest.mark.parametrize("i", range(len(READ_KEYS)))
def test_advanced_reads(i):
    check(lambda xp: fresh(xp)[READ_KEYS[i](xp)])
    check(lambda xp: fresh(xp)[READ_KEYS[i](xp)] * 2 + 1)  # consumers fuse after the gather


def test_boolean_mask_reads():
    check(lambda xp: fresh(xp)[fresh(xp) > 40])
    check(lambda xp: fresh(xp)[0][fresh(xp)[0] < -40])
    check(lambda xp: fresh(xp)[fresh(xp)[:, :, 0, 0] > -40])
    check(lambda xp: fresh(xp)[(fresh(xp) > 100)])  # nothing selected


WRITE_CASES = [
    lambda xp, a: a.__setitem__(idx(xp, [1, 0, 1]), -1.0),
    lambda xp, a: a.__setitem__((slice(None), idx(xp, [2, 0])), a[:, :2] * 10),
    lambda xp, a: a.__setitem__((0, idx(xp, [0, 0, 2]), 1), idx(xp, [7.0, 8.0, 9.0])),  # repeats
    lambda xp, a: a.__setitem__((idx(xp, [1, 0]), slice(None), idx(xp, [3, 1])), 5.0),
    lambda xp, a: a.__setitem__(a > 40, idx(xp, np.arange(29, dtype=np.float32))),
    lambda xp, a: a.__setitem__(a < 0, 0),
    lambda xp, a: a.__setitem__((idx(xp, [0, 1]), idx(xp, [0, 2])), idx(xp, np.ones((2, 4, 5)))),
    lambda xp, a: a.__setitem__(idx(xp, [5]), 1.0),  # out of bounds
    lambda xp, a: a.__setitem__(a > 40, idx(xp, [1.0, 2.0])),  # wrong count
]


@pytest.mark.parametrize("i", range(len(WRITE_CASES)))
def test_advanced_writes(i):
    def body(xp):
        a = fresh(xp)
        v = a[1]  # a view: sees the writes
        WRITE_CASES[i](xp, a)
        return a, v

    check(body)


@pytest.mark.parametrize("shape,indices,axis", [
    ((0, 1, 1), [1], 1),  # no row is copied: NumPy checks no index
    ((0, 3), [5], 1),
    ((0, 0), [0], 1),
    ((2, 1, 0), [1], 1),  # rows of nothing: still checked
    ((2, 0, 0), [0], 1),
    ((2, 0), [0], 1),  # "cannot do a non-empty take from an empty axes."
    ((0,), [0], None),
    ((0, 1, 1), [1], 0),
    ((2, 1), [], 1),
    ((3,), [True, False], None),  # booleans are indices 1 and 0 here, not a mask
])
def test_take_checks_indices_as_numpy_does(shape, indices, axis):
    x = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    i = np.array(indices, dtype=None if indices else np.intp)
    check(lambda xp: xp.take(fresh(xp, x), i, axis=axis))


def test_take_nonzero_where_put_place_putmask_copyto():
    check(lambda xp: xp.take(fresh(xp), idx(xp, [5, 0, 119])))
    check(lambda xp: xp.take(fresh(xp), idx(xp, [[3, 1], [0, 0]]), axis=2))
    check(lambda xp: xp.take(fresh(xp), idx(xp, [200])))
    check(lambda xp: xp.nonzero(fresh(xp)[0] > 10))
    check(lambda xp: xp.where(fresh(xp)[1, 1] < -20))

    def puts(xp):
        a = fresh(xp, np.arange(10.0))
        xp.put(a, idx(xp, [0, 3, 3]), idx(xp, [9.0, 8.0, 7.0]))
        b = fresh(xp, np.arange(10.0))
        xp.put(b, idx(xp, [1, 2, 5, 6]), idx(xp, [-1.0, -2.0]))  # values repeat
        c = fresh(xp, np.arange(10.0))
        xp.place(c, c > 5, idx(xp, [100.0, 200.0]))
        d = fresh(xp, np.arange(10.0))
        xp.putmask(d, d % 3 == 0, idx(xp, [-5.0, -6.0, -7.0]))
        e = fresh(xp, np.zeros((2, 5)))
        xp.copyto(e, idx(xp, np.arange(5.0)))
        f = fresh(xp, np.zeros((2, 5)))
        xp.copyto(f, idx(xp, np.arange(10.0).reshape(2, 5)), where=idx(xp, [True, False] * 5
                                                                       ).reshape(2, 5))
        return a, b, c, d, e, f

    check(puts)
    check(lambda xp: xp.copyto(fresh(xp, np.zeros(3, np.int32)), idx(xp, [1.5, 2.5, 3.5])))
    check(lambda xp: xp.nonzero(fresh(xp, np.array(3.0))))


def test_gather_fuses_with_its_index_computation():
    x = np.arange(100.0)
    f = fr.jit(lambda x, i: x[(i * 7) % 100] + 1)
    i = np.arange(10)
    np.testing.assert_array_equal(f(x, i).get(), x[(i * 7) % 100] + 1)
    _, inst, _ = f.lower(x, i)
    assert len(inst.plan.kernels) == 1 and "take" in inst.plan.kernels[0].ops()


def test_lazy_out_of_bounds_index_raises_at_compute():
    x = fr.asarray(np.arange(10.0))
    i = fr.asarray(np.array([1, 2])) * 10  # lazy: checked when the kernel runs
    y = x[i]
    with pytest.raises(IndexError, match="out of bounds"):
        y.compute()

"""Shape functions, basic indexing views, creation functions: against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import fuseray as fr
from harness import compare_outcomes, numpy_vs_fuseray, run_both

pytestmark = pytest.mark.usefixtures("reference_backend")

BASE = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) - 30


def lift(xp, a=BASE):
    return a if xp is np else fr.asarray(a)


KEYS = [
    0, -1, (1, 2), (slice(None), 1), (Ellipsis, 2), (None, 0), (slice(None, None, -1),),
    (slice(1, None, 2), slice(None, None, -2)), (0, Ellipsis, None, slice(3, 0, -1)),
    (slice(-3, -1), None, 1), (1, 2, 3, 4), (slice(5, 1),), (slice(None), slice(None), None),
    (Ellipsis,), (slice(-100, 100, 3), 0, slice(None, None, -1)),
]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_basic_indexing(key):
    compare_outcomes(*run_both(lambda xp: lift(xp)[key]))
    compare_outcomes(*run_both(lambda xp: lift(xp)[key] * 2 + 1))  # views fuse
    compare_outcomes(*run_both(lambda xp: lift(xp).T[key]))  # a view of a view


@pytest.mark.parametrize("key", [(2, 0), (0, 0, 0, 0, 0), (Ellipsis, Ellipsis), 9, (0, -4),
                                 (slice(None, None, 0),), (1.5,)], ids=repr)
def test_bad_index_errors(key):
    compare_outcomes(*run_both(lambda xp: lift(xp)[key]))


SHAPE_OPS = [
    lambda xp, a: a.reshape(6, 20),
    lambda xp, a: a.reshape(-1, 5),
    lambda xp, a: a.reshape((5, -1)),
    lambda xp, a: a.T.reshape(-1),  # not a view in NumPy: a copy there, a reindex here
    lambda xp, a: a[:, ::2].reshape(2, -1),
    lambda xp, a: a.ravel(),
    lambda xp, a: a.transpose(0, 2, 1, 3),
    lambda xp, a: xp.transpose(a, (3, 1, 0, 2)),
    lambda xp, a: xp.swapaxes(a, 0, -1),
    lambda xp, a: xp.moveaxis(a, 0, -1),
    lambda xp, a: xp.moveaxis(a, [0, 1], [-1, -2]),
    lambda xp, a: xp.expand_dims(a, (0, 3)),
    lambda xp, a: xp.squeeze(a[:1, :, :1]),
    lambda xp, a: xp.squeeze(a[:1], axis=0),
    lambda xp, a: xp.broadcast_to(a[0, 0, 0], (3, 4, 5)),
    lambda xp, a: xp.broadcast_arrays(a[0, :, :1], a[1, :1, :2]),
    lambda xp, a: xp.concatenate([a, a * 2], axis=1),
    lambda xp, a: xp.concatenate([a[0], a[1, :2] + 1, a[0, :1]], axis=0),
    lambda xp, a: xp.concatenate([a, a], axis=None),
    lambda xp, a: xp.concatenate([a.sum(0), a.max(0)], axis=-1),
    lambda xp, a: xp.stack([a[0], a[1] * 3], axis=2),
    lambda xp, a: xp.stack([a[0, 0, 0], a[1, 1, 1]]),
    lambda xp, a: a.mT,
    lambda xp, a: a.flatten(),
    lambda xp, a: a.reshape(0, -1) if a.size == 0 else a.reshape(120, 1, 1),
]


@pytest.mark.parametrize("i", range(len(SHAPE_OPS)))
def test_shape_functions(i):
    compare_outcomes(*run_both(lambda xp: SHAPE_OPS[i](xp, lift(xp))))


BAD_SHAPE_OPS = [
    lambda xp, a: a.reshape(7, -1),
    lambda xp, a: a.reshape(-1, -1),
    lambda xp, a: a.transpose(0, 0, 1, 2),
    lambda xp, a: a.transpose(0, 1),
    lambda xp, a: xp.swapaxes(a, 0, 4),
    lambda xp, a: xp.squeeze(a, axis=1),
    lambda xp, a: xp.broadcast_to(a, (3, 4)),
    lambda xp, a: xp.concatenate([a, a[0]]),
    lambda xp, a: xp.concatenate([a, a[:, :2]], axis=0),
    lambda xp, a: xp.concatenate([a, a], axis=4),
    lambda xp, a: xp.stack([a, a[0]]),
    lambda xp, a: xp.expand_dims(a, 6),
    lambda xp, a: xp.moveaxis(a, [0, 0], [1, 2]),
]


@pytest.mark.parametrize("i", range(len(BAD_SHAPE_OPS)))
def test_shape_errors(i):
    compare_outcomes(*run_both(lambda xp: BAD_SHAPE_OPS[i](xp, lift(xp))))


@numpy_vs_fuseray()
def test_creation(xp):
    return (
        xp.zeros((2, 3)), xp.ones(4, dtype=np.int8), xp.empty((0, 2)).shape,
        xp.full((2, 2), 7.5, dtype=np.float32), xp.full(3, True), xp.zeros_like(lift(xp)),
        xp.ones_like(lift(xp), dtype=np.int16), xp.full_like(lift(xp), 2), xp.arange(10),
        xp.arange(1.0, 2.0, 0.25), xp.arange(5, dtype=np.uint8), xp.linspace(0, 1, 7),
        xp.linspace(2, 3, 4, endpoint=False, dtype=np.float32), xp.eye(3), xp.eye(3, 4, k=1),
        xp.identity(2), xp.asarray([1, 2, 3]), xp.asarray([[1.5, 2]], dtype=np.float16),
        xp.array(3.0), xp.asarray(np.float32(2)), xp.ones(()),
    )


def test_conversions_and_metadata():
    a = fr.asarray(BASE)
    assert a.shape == BASE.shape and a.ndim == 4 and a.size == BASE.size and a.dtype == np.float32
    assert a.nbytes == BASE.nbytes and a.itemsize == 4 and len(a) == 2
    assert isinstance(a.get(), np.ndarray) and np.array_equal(np.asarray(a), BASE)
    assert np.array_equal(fr.asnumpy(a), BASE) and fr.asnumpy(BASE) is not None
    out = a.get()
    out[...] = 0  # the copy is the caller's: it must not change the array
    assert np.array_equal(a.get(), BASE)
    assert float(fr.asarray(2.5)) == 2.5 and int(fr.asarray(3)) == 3 and bool(fr.asarray(1))
    assert fr.asarray(np.arange(3))[1].item() == 1 and a[0, 0].tolist() == BASE[0, 0].tolist()
    assert repr(fr.asarray([1.0, 2.0])) == "fuseray.array([1., 2.])"
    assert [x.tolist() for x in fr.asarray(np.arange(3))] == [0, 1, 2]
    assert fr.get_array_module(a) is fr and fr.get_array_module(BASE) is np
    assert a.__array_namespace__() is fr and str(a.device) == "cpu"


def test_values_are_copied_in():
    src = np.arange(4.0)
    a = fr.asarray(src)
    src[0] = 100  # NumPy data is copied to the device (CuPy's semantics), so this is not seen
    assert a.get()[0] == 0.0


def test_compute_memoises_and_returns_materialised():
    a = fr.asarray(np.arange(5.0))
    b = fr.exp(a) + 1
    assert b.is_lazy
    assert b.compute() is b and not b.is_lazy
    c = b * 2  # builds on the data, not the old graph
    assert c._node.depth == 1
    x, y = fr.compute(a + 1, a * 3)
    assert not x.is_lazy and np.array_equal(y.get(), np.arange(5.0) * 3)

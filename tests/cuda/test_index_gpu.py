"""Advanced indexing on the GPU against NumPy: gathers (``x[int_array]``, ``take``) alone and fused
into elementwise chains and reductions, scatters (``x[idx] = v``, put/place/putmask/copyto) with
repeated indices, boolean masks, nonzero, and out-of-bounds indices, which raise NumPy's
IndexError at the next synchronisation and leave the process usable.

Every test is marked ``gpu`` and skips cleanly without an NVIDIA GPU, driver and NVRTC. The cases
of the CPU tests (tests/test_indexing.py) run here again, on the device, through the same harness;
the others use random non-zero data. Device memory is poisoned before each test (test_backend_gpu's
fixture), so an element a kernel fails to write shows up as a mismatch.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import fuseray as fr

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import test_indexing as cpu  # noqa: E402

# on_gpu (autouse): the device, poisoned memory, and a final fr.synchronize(), which raises a bad
# index a test left unreported in that test rather than the next one
from test_backend_gpu import _gpu, on_gpu  # noqa: E402, F401

from harness import assert_same, compare_outcomes, random_array, run_both  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _gpu(), reason="needs an NVIDIA GPU, driver and NVRTC"),
]


def check(body, atol=None):
    compare_outcomes(*run_both(body), atol=atol)


def numpy_message(fn) -> str:
    """NumPy's IndexError message for ``fn()``, as a pattern for ``pytest.raises``."""
    with pytest.raises(IndexError) as info:
        fn()
    return re.escape(str(info.value))


# ---------------------------------------------------------------------------------------------
# the CPU suite's cases, on the device
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("i", range(len(cpu.READ_KEYS)))
def test_advanced_reads(i):
    cpu.test_advanced_reads(i)


@pytest.mark.parametrize("i", range(len(cpu.WRITE_CASES)))
def test_advanced_writes(i):
    cpu.test_advanced_writes(i)


def test_boolean_masks_take_nonzero_put_place_putmask_copyto():
    cpu.test_boolean_mask_reads()
    cpu.test_take_nonzero_where_put_place_putmask_copyto()


# ---------------------------------------------------------------------------------------------
# gathers
# ---------------------------------------------------------------------------------------------

DTYPES = ["float32", "float64", "float16", "int32", "int64", "uint8", "bool"]
SHAPES = [(1000,), (37, 11), (9, 5, 7)]
# device-side views of the source: the take reads them in place
VIEWS = {
    "base": lambda x: x,
    "reversed": lambda x: x[::-1],
    "strided": lambda x: x[::2],
    "offset": lambda x: x[1:],
    "transposed": lambda x: x.T,
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gathers_match_numpy(dtype, shape, view):
    rng = np.random.default_rng(0)
    base = random_array(shape, dtype, rng)
    n = VIEWS[view](base).shape[0]
    for index in (rng.integers(-n, n, 50), rng.integers(-n, n, (4, 6)), np.array(n - 1)):
        check(lambda xp, i=index: VIEWS[view](xp.asarray(base))[xp.asarray(i)])


@pytest.mark.parametrize("index_dtype", ["int32", "uint8", "int16", "uint64"])
def test_gathers_with_narrow_or_unsigned_indices(index_dtype):
    rng = np.random.default_rng(1)
    x = random_array((200, 3), "float32", rng)
    low = -100 if np.dtype(index_dtype).kind == "i" else 0
    i = rng.integers(low, 200, 300).astype(index_dtype)
    check(lambda xp: xp.asarray(x)[xp.asarray(i)])


def test_index_pairs_and_slices():
    rng = np.random.default_rng(2)
    x = random_array((40, 30, 5), "float32", rng)
    i, j = rng.integers(-40, 40, 100), rng.integers(-30, 30, 100)
    keys = [
        lambda xp: (xp.asarray(i), xp.asarray(j)),
        lambda xp: (xp.asarray(i), slice(None), xp.asarray(j) % 5),
        lambda xp: (slice(None), xp.asarray(j), xp.asarray(i) % 5),
        lambda xp: (xp.asarray(i)[:, None], xp.asarray(j)[None, :10]),
        lambda xp: (slice(2, None, 3), xp.asarray(j)),
    ]
    for key in keys:
        check(lambda xp, key=key: xp.asarray(x)[key(xp)])


def test_large_gather():
    rng = np.random.default_rng(3)
    x = random_array((1 << 20,), "float32", rng)
    i = rng.integers(-(1 << 20), 1 << 20, 3_000_000)
    check(lambda xp: xp.asarray(x)[xp.asarray(i)])


def test_take_fuses_into_an_elementwise_chain():
    rng = np.random.default_rng(4)
    x = random_array((200, 33), "float32", rng)
    i = rng.integers(-200, 200, 500)
    f = fr.jit(lambda x, i: fr.sin(x[(i * 7) % 200]) * 2 + x[i])
    assert_same(np.sin(x[(i * 7) % 200]) * 2 + x[i], f(x, i))
    _, inst, _ = f.lower(x, i)
    assert len(inst.plan.kernels) == 1 and inst.plan.kernels[0].ops().count("take") == 2


def test_take_fuses_into_reductions():
    rng = np.random.default_rng(5)
    x = random_array((200, 33), "float32", rng)
    i = rng.integers(-200, 200, 500)
    v = random_array((200,), "float64", rng)

    def body(xp):
        xi = xp.asarray(x)[xp.asarray(i)]
        e = xp.exp(xi - xi.max(axis=1, keepdims=True))
        xs = xp.asarray(x).sum(axis=1)
        return (
            xi.sum(axis=1),
            xi.sum(axis=0),  # the index varies along the reduced axis
            xi.max(),
            xi.std(axis=1),
            e / e.sum(axis=1, keepdims=True),  # softmax of the gathered rows
            xp.asarray(x)[(xp.asarray(i) * 3) % 200].argmax(axis=1),
            xp.asarray(v)[(xs > 0).astype(np.int64) * 7],  # a take of one value per row
        )

    # float32 sums of 33 terms of size ~10 in another order: absolute error up to ~2e-5
    check(body, atol=1e-4)


def test_nonzero_and_where():
    rng = np.random.default_rng(6)
    x = random_array((50, 40), "float64", rng)
    check(lambda xp: xp.nonzero(xp.asarray(x) > 0.5))
    check(lambda xp: xp.where(xp.asarray(x) < -1))
    check(lambda xp: xp.asarray(x)[xp.nonzero(xp.asarray(x) > 2)])


# ---------------------------------------------------------------------------------------------
# scatters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "int64", "float16", "bool", "int8"])
def test_setitem_with_repeated_indices_last_write_wins(dtype):
    rng = np.random.default_rng(7)
    n, count = 257, 20_000  # every position written about 80 times
    old = random_array((n,), dtype, rng)
    idx = rng.integers(-n, n, count)
    values = random_array((count,), dtype, rng)

    def body(xp):
        a = xp.array(old)  # a copy: the body writes to it
        a[xp.asarray(idx)] = xp.asarray(values)
        return a

    check(body)
    rows, vals2 = random_array((64, 9), dtype, rng), random_array((5000, 9), dtype, rng)
    idx2 = rng.integers(-64, 64, 5000)

    def rows_body(xp):
        a = xp.array(rows)
        a[xp.asarray(idx2)] = xp.asarray(vals2)
        return a

    check(rows_body)
    first, again = fr.asnumpy(body(fr)), fr.asnumpy(body(fr))
    np.testing.assert_array_equal(first, again)  # the same winners every time


def test_boolean_mask_writes():
    rng = np.random.default_rng(8)
    x = random_array((300, 7), "float64", rng)

    def body(xp):
        a = xp.array(x)
        a[a < 0] = 0
        b = xp.array(x)
        b[b > 1] = b[b > 1] * 10  # values gathered with the same mask
        c = xp.array(x)
        c[(c > 0).all(axis=1)] = xp.asarray(np.arange(7.0))  # whole rows
        return a, b, c

    check(body)


def test_put_place_putmask_copyto():
    rng = np.random.default_rng(9)
    n = 1000
    x = random_array((n,), "float64", rng)
    ind = rng.integers(-n, n, 300)
    vals = random_array((13,), "float64", rng)

    def body(xp):
        a = xp.array(x)  # copies: the body writes to them
        xp.put(a, xp.asarray(ind), xp.asarray(vals))  # values cycle, positions repeat
        b = xp.array(x)
        xp.place(b, b > 0, xp.asarray(vals))
        c = xp.array(x)
        xp.putmask(c, c < 0, xp.asarray(vals[:11]))
        d = xp.array(x).reshape(10, 100)
        xp.copyto(d, xp.asarray(x[:100]) * 2, where=d > 1)
        return a, b, c, d

    check(body)


def test_fancy_stencil_and_scatter_in_a_loop():
    rng = np.random.default_rng(10)
    n = 500
    u0 = random_array((n,), "float64", rng)
    left, right = (np.arange(n) - 1) % n, (np.arange(n) + 1) - n  # right: negative indices
    steps = [rng.integers(-64, 64, 200) for _ in range(8)]
    hist0 = random_array((64,), "float64", rng)

    def body(xp):
        u = xp.asarray(u0)
        lo, hi = xp.asarray(left), xp.asarray(right)
        for _ in range(20):
            u = 0.5 * u + 0.25 * (u[lo] + u[hi])  # a periodic 1-D stencil
        hist = xp.array(hist0)
        for t, idx in enumerate(steps):
            i = xp.asarray(idx)
            hist[i] += 1.0  # repeated positions count once, as in NumPy
            hist[i[::7]] = hist[i[::7]] * 0.5 + t
        return u, hist

    check(body)


# ---------------------------------------------------------------------------------------------
# bounds: NumPy's IndexError at the next synchronisation, once; the process stays usable
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [10, 12, -11, -1000])
def test_out_of_bounds_read_raises_at_sync(bad):
    x_np = np.arange(10.0) + 1
    idx = np.array([0, 3, bad, 1])
    message = numpy_message(lambda: x_np[idx])
    x = fr.asarray(x_np)
    with pytest.raises(IndexError, match=message):
        fr.asnumpy(x[fr.asarray(idx)] * 2)
    fr.synchronize()  # reported once
    good = idx[[0, 1, 3]]
    assert_same(x_np[good] * 2, x[fr.asarray(good)] * 2)


def test_out_of_bounds_inside_reductions_raises_at_sync():
    x_np = random_array((8, 5), "float32", np.random.default_rng(11))
    idx = np.array([1, 9, 2])
    message = numpy_message(lambda: x_np[idx])
    x, i = fr.asarray(x_np), fr.asarray(idx)
    with pytest.raises(IndexError, match=message):
        fr.asnumpy(x[i].sum(axis=1))
    xi = x[i]
    with pytest.raises(IndexError, match=message):
        fr.asnumpy(fr.exp(xi - xi.max(axis=1, keepdims=True)))
    assert_same(x_np[[1, 2]].sum(axis=1), x[fr.asarray(np.array([1, 2]))].sum(axis=1))


@pytest.mark.parametrize("bad", [7, -8])
def test_out_of_bounds_write_raises_at_sync_and_writes_nothing(bad):
    a_np = np.arange(7.0)
    idx = np.array([1, bad, 2])
    message = numpy_message(lambda: a_np.copy().__setitem__(idx, 5.0))
    guard = fr.asarray(np.full(4096, 5.0))  # memory around the target: must stay untouched
    a = fr.asarray(a_np)
    a[fr.asarray(idx)] = fr.asarray(np.array([10.0, 20.0, 30.0]))
    with pytest.raises(IndexError, match=message):
        fr.asnumpy(a)
    np.testing.assert_array_equal(fr.asnumpy(guard), 5.0)
    b = fr.asarray(a_np)
    b[fr.asarray(np.array([1, -1]))] = 9.0
    assert_same(np.array([0.0, 9, 2, 3, 4, 5, 9]), b)


def test_bounds_errors_surface_at_every_synchronisation_point():
    x = fr.asarray(np.arange(10.0))
    message = re.escape("index 11 is out of bounds for axis 0 with size 10")

    def bad():
        # a new index array each time: x[i] of an array already computed is not computed again
        # (its values are unspecified after the error, as a failed CUDA kernel's output is)
        return fr.asarray(np.array([4, 11]))

    x[bad()].compute()  # queued, not waited for
    with pytest.raises(IndexError, match=message):
        fr.synchronize()
    x[bad()].compute()
    with pytest.raises(IndexError, match=message):
        fr.cuda.Device().synchronize()
    stream = fr.cuda.Stream(non_blocking=True)
    with stream:
        x[bad()].compute()
    with pytest.raises(IndexError, match=message):
        stream.synchronize()
    x[bad()].compute()
    with pytest.raises(IndexError, match=message):
        x[fr.asarray(np.array([2]))].get()  # any copy to the host waits, so reports
    fr.synchronize()
    fr.cuda.Device().synchronize()
    assert_same(np.array([4.0, 9.0]), x[fr.asarray(np.array([4, -1]))])

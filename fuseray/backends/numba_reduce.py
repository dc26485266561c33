"""Block reductions for the numba backend: vectorisable float sums and NaN-aware extrema.

Stage: backends (numba). A float accumulation ``acc += v`` is a serial dependency that LLVM will
not reorder without fast-math flags, and fast-math flags on a whole kernel would also let LLVM
reassociate the elementwise code and the range reductions in ``numba_vecmath``. So a generated
reduction writes the operand values of a block (at most ``BLOCK`` elements) into a scratch
buffer and reduces the buffer here with 16 explicit lanes: independent accumulators that LLVM
vectorises exactly as written, combined pairwise at the end. The result is deterministic (it
depends on block boundaries, never on threads), and like NumPy's own pairwise sum it is more
accurate than one running sum.

Invariants: ``n >= 1`` for the extremum helpers (a block is never empty); float16 values arrive
as float32 and are summed in float32, as NumPy accumulates float16 sums.
"""

from __future__ import annotations

from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .numba_intrinsics import JIT

BLOCK = 1024  # scratch elements per block: 4 KiB of float32, well inside L1

__all__ = ["BLOCK", "fr_block_sum", "fr_block_prod", "fr_block_max", "fr_block_min",
           "fr_block_argmax", "fr_block_argmin"]


def _stub(name):
    def fn(*args):
        raise RuntimeError(f"{name} is a numba helper: call it from compiled code")

    fn.__name__ = fn.__qualname__ = name
    return fn


fr_block_sum = _stub("fr_block_sum")
fr_block_prod = _stub("fr_block_prod")
fr_block_max = _stub("fr_block_max")
fr_block_min = _stub("fr_block_min")
fr_block_argmax = _stub("fr_block_argmax")
fr_block_argmin = _stub("fr_block_argmin")


@overload(fr_block_sum, jit_options=JIT)
def _block_sum(buf, n):
    zero = as_dtype(buf.dtype).type(0)

    def impl(buf, n):
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
        a8 = a9 = a10 = a11 = a12 = a13 = a14 = a15 = zero
        n16 = n - n % 16
        for j in range(0, n16, 16):
            a0 += buf[j]
            a1 += buf[j + 1]
            a2 += buf[j + 2]
            a3 += buf[j + 3]
            a4 += buf[j + 4]
            a5 += buf[j + 5]
            a6 += buf[j + 6]
            a7 += buf[j + 7]
            a8 += buf[j + 8]
            a9 += buf[j + 9]
            a10 += buf[j + 10]
            a11 += buf[j + 11]
            a12 += buf[j + 12]
            a13 += buf[j + 13]
            a14 += buf[j + 14]
            a15 += buf[j + 15]
        for j in range(n16, n):
            a0 += buf[j]
        return (((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))) + (
            ((a8 + a9) + (a10 + a11)) + ((a12 + a13) + (a14 + a15))
        )

    return impl


@overload(fr_block_prod, jit_options=JIT)
def _block_prod(buf, n):
    one = as_dtype(buf.dtype).type(1)

    def impl(buf, n):
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = one
        n8 = n - n % 8
        for j in range(0, n8, 8):
            a0 *= buf[j]
            a1 *= buf[j + 1]
            a2 *= buf[j + 2]
            a3 *= buf[j + 3]
            a4 *= buf[j + 4]
            a5 *= buf[j + 5]
            a6 *= buf[j + 6]
            a7 *= buf[j + 7]
        for j in range(n8, n):
            a0 *= buf[j]
        return ((a0 * a1) * (a2 * a3)) * ((a4 * a5) * (a6 * a7))

    return impl


def _extremum(greater: bool):
    """16-lane max (or min) where a NaN anywhere wins: once a lane holds NaN it keeps it."""

    def typer(buf, n):
        if greater:
            def better(v, a):
                return v > a or v != v
        else:
            def better(v, a):
                return v < a or v != v
        from numba import njit

        better = njit(**JIT)(better)

        def impl(buf, n):
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = buf[0]
            a8 = a9 = a10 = a11 = a12 = a13 = a14 = a15 = buf[0]
            n16 = n - n % 16
            for j in range(0, n16, 16):
                v = buf[j]
                a0 = v if better(v, a0) else a0
                v = buf[j + 1]
                a1 = v if better(v, a1) else a1
                v = buf[j + 2]
                a2 = v if better(v, a2) else a2
                v = buf[j + 3]
                a3 = v if better(v, a3) else a3
                v = buf[j + 4]
                a4 = v if better(v, a4) else a4
                v = buf[j + 5]
                a5 = v if better(v, a5) else a5
                v = buf[j + 6]
                a6 = v if better(v, a6) else a6
                v = buf[j + 7]
                a7 = v if better(v, a7) else a7
                v = buf[j + 8]
                a8 = v if better(v, a8) else a8
                v = buf[j + 9]
                a9 = v if better(v, a9) else a9
                v = buf[j + 10]
                a10 = v if better(v, a10) else a10
                v = buf[j + 11]
                a11 = v if better(v, a11) else a11
                v = buf[j + 12]
                a12 = v if better(v, a12) else a12
                v = buf[j + 13]
                a13 = v if better(v, a13) else a13
                v = buf[j + 14]
                a14 = v if better(v, a14) else a14
                v = buf[j + 15]
                a15 = v if better(v, a15) else a15
            for j in range(n16, n):
                v = buf[j]
                a0 = v if better(v, a0) else a0
            for v in (a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
                a0 = v if better(v, a0) else a0
            return a0

        return impl

    return typer


overload(fr_block_max, jit_options=JIT)(_extremum(True))
overload(fr_block_min, jit_options=JIT)(_extremum(False))


def _arg_extremum(greater: bool):
    """(value, index) of the first extremum of ``buf[:n]``; the first NaN wins outright."""

    def typer(buf, n):
        def impl(buf, n):
            best = buf[0]
            at = 0
            if best != best:
                return best, at
            for i in range(1, n):
                v = buf[i]
                if v != v:
                    return v, i
                if (v > best) if greater else (v < best):
                    best = v
                    at = i
            return best, at

        return impl

    return typer


overload(fr_block_argmax, jit_options=JIT)(_arg_extremum(True))
overload(fr_block_argmin, jit_options=JIT)(_arg_extremum(False))

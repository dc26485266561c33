"""Supported dtypes, their C names, and NumPy 2 type promotion.

Stage: shared by every stage. fuseray never re-implements NumPy's promotion tables: a ufunc's
loop dtypes come from ``ufunc.resolve_dtypes``, which already applies NEP 50 (Python scalars are
*weak*: they take the dtype of the array they meet). Everything here is a thin, cached layer over
that, plus the facts the code generators need (C type names, identities, limits).

Invariant: every dtype stored in a graph node is one of ``SUPPORTED`` and is a canonical
native-byte-order ``np.dtype``.
"""

from __future__ import annotations

import functools

import numpy as np

BOOL = np.dtype(np.bool_)
INTEGER = tuple(np.dtype(t) for t in "b h i q".split()) + tuple(
    np.dtype(t) for t in "B H I Q".split()
)
FLOATING = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
SUPPORTED = (BOOL, *INTEGER, *FLOATING)
INTP = np.dtype(np.intp)

C_NAMES = {
    BOOL: "bool",
    np.dtype(np.int8): "signed char",
    np.dtype(np.int16): "short",
    np.dtype(np.int32): "int",
    np.dtype(np.int64): "long long",
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.uint16): "unsigned short",
    np.dtype(np.uint32): "unsigned int",
    np.dtype(np.uint64): "unsigned long long",
    np.dtype(np.float16): "__half",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}

# Weak Python scalar types, in the spelling ``ufunc.resolve_dtypes`` accepts (bool has no weak
# form in NEP 50: a Python bool behaves as ``np.bool_``).
WEAK_TYPES = (int, float)


def as_dtype(dtype) -> np.dtype:
    """Canonical supported dtype for ``dtype``, or TypeError naming what is unsupported."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"fuseray does not support dtype {dtype!r}") from e
    if dt.byteorder not in "=|":
        dt = dt.newbyteorder("=")
    if dt not in SUPPORTED:
        kind = "complex " if dt.kind == "c" else ""
        raise TypeError(f"fuseray does not support {kind}dtype {str(dt)!r} (yet)")
    return dt


def c_name(dtype: np.dtype) -> str:
    return C_NAMES[np.dtype(dtype)]


def is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def is_integer(dtype) -> bool:
    return np.dtype(dtype).kind in "iu"


def scalar_kind(value) -> type | np.dtype:
    """The promotion type of a Python or NumPy scalar: ``int``/``float`` (weak) or a dtype."""
    if isinstance(value, (bool, np.bool_)):
        return BOOL
    if isinstance(value, np.generic):
        return as_dtype(value.dtype)
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, complex):
        raise TypeError("fuseray does not support complex dtype 'complex128' (yet)")
    raise TypeError(f"fuseray does not support scalars of type {type(value).__name__!r}")


@functools.lru_cache(maxsize=4096)
def resolve_ufunc(ufunc: np.ufunc, kinds: tuple) -> tuple[np.dtype, ...]:
    """Loop dtypes (inputs..., output) NumPy picks for ``ufunc`` on operands of ``kinds``.

    ``kinds`` holds dtypes for arrays and ``int``/``float`` for weak Python scalars. Raises
    NumPy's own TypeError when no loop exists.
    """
    loop = ufunc.resolve_dtypes((*kinds, *([None] * ufunc.nout)))
    return tuple(as_dtype(d) for d in loop)


def check_weak_int(value: int, dtype: np.dtype) -> None:
    """NumPy 2 refuses a Python int that does not fit the dtype it is weakly cast to."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise OverflowError(f"Python integer {value} out of bounds for {dtype.name}")


def result_type(*arrays_and_dtypes) -> np.dtype:
    """``numpy.result_type`` restricted to supported dtypes."""
    return as_dtype(np.result_type(*arrays_and_dtypes))


@functools.lru_cache(maxsize=1024)
def reduction_dtype(name: str, dtype: np.dtype, requested: np.dtype | None) -> np.dtype:
    """Result dtype of NumPy reduction ``name`` over ``dtype`` (asks NumPy on a 1-element array)."""
    sample = np.ones(1, dtype)
    fn = getattr(np, name)
    kwargs = {"dtype": requested} if requested is not None else {}
    return as_dtype(fn(sample, **kwargs).dtype)

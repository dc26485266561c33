"""NumPy semantics of one node: the definition every backend is checked against.

Stage: shared by the passes (constant folding evaluates with it, so folding can never change a
result) and the NumPy interpreter backend (which is this function in a loop).
"""

from __future__ import annotations

import numpy as np

from .graph import Node, index_entries
from .ops import Kind


def evaluate(node: Node, args: list[np.ndarray]) -> np.ndarray:
    """The value of ``node`` given the values of its sources, exactly as NumPy computes it."""
    kind = node.kind
    row = node.row
    if kind is Kind.ELEMENTWISE:
        with np.errstate(all="ignore"):
            if node.op == "cast":
                out = args[0].astype(node.dtype)
            elif node.op == "round":
                out = row.numpy(args[0], node.arg)
            else:
                out = row.numpy(*args)
        return np.asarray(out).astype(node.dtype, copy=False)
    if kind is Kind.REDUCE:
        axes, keepdims = node.arg[0], node.arg[1]
        x = args[0]
        with np.errstate(all="ignore"):
            if node.op == "mean":
                out = row.numpy(x, axis=axes, keepdims=keepdims, ddof=node.arg[2])
            elif node.op in ("argmax", "argmin"):
                out = _arg_reduce(row.numpy, x, axes, keepdims)
            else:
                out = row.numpy(x, axis=axes, keepdims=keepdims)
        return np.asarray(out).astype(node.dtype, copy=False)
    if kind is Kind.MOVEMENT:
        x = args[0]
        if node.op == "reshape":
            return x.reshape(node.shape)
        if node.op == "permute":
            return x.transpose(node.arg)
        if node.op == "expand":
            return np.broadcast_to(x, node.shape)
        if node.op == "pad":
            return np.pad(x, node.arg)
        return x[basic_key(x.shape, node.arg)]
    if kind is Kind.JOIN:
        return np.concatenate(args, axis=node.arg)
    if kind is Kind.GATHER:
        x, idx = args
        check_bounds(idx, x.shape[0])
        return x[idx]
    if kind is Kind.SCATTER:
        old, idx, values = args
        check_bounds(idx, old.shape[0])
        out = np.array(old, copy=True)
        out[idx] = values  # NumPy assigns in order: the last write to a position wins
        return out
    if node.op == "const":
        return np.asarray(node.arg[0], dtype=node.dtype)
    raise AssertionError(f"no reference for {node.op}")


def _arg_reduce(fn, x: np.ndarray, axes, keepdims: bool) -> np.ndarray:
    """argmax/argmin over one axis, or over all axes in C order (NumPy's axis=None)."""
    if x.ndim == 0:
        return fn(x)
    if len(axes) == 1:
        return fn(x, axis=axes[0], keepdims=keepdims)
    out = fn(x.reshape(-1), axis=0)
    return np.asarray(out).reshape((1,) * x.ndim) if keepdims else np.asarray(out)


def basic_key(shape, entries) -> tuple:
    """A NumPy indexing key for a normalised ``index`` argument."""
    key = []
    for e in index_entries(shape, entries):
        if e[0] == "n":
            key.append(None)
        elif e[0] == "i":
            key.append(e[1])
        else:
            _, start, step, length = e
            stop = start + step * length
            key.append(slice(start, stop if stop >= 0 else None, step))
    return tuple(key)


def check_bounds(idx: np.ndarray, size: int) -> None:
    """NumPy's IndexError for the first index outside [-size, size) (negatives count back)."""
    if idx.size and (idx.min() < -size or idx.max() >= size):
        bad = idx[(idx < -size) | (idx >= size)].flat[0]
        raise IndexError(f"index {bad} is out of bounds for axis 0 with size {size}")

"""Affine views: how a kernel addresses the elements of a buffer through movement ops.

Stage: between the graph and the backends. A chain of movement nodes (reshape, permute, expand,
index) over a buffer is folded into a short stack of :class:`View` s. Each view maps a logical
multi-index over its ``shape`` to ``offset + sum(i_d * strides_d)``: for the innermost view that
is an element offset into the buffer, for an outer one a linear position in the C order of the
view below it. Almost every chain folds into one view (slices, steps, flips, transposes,
broadcasts, and any reshape NumPy could do without a copy); a reshape of a non-contiguous view
that NumPy would copy adds a second view instead, and the code generators unravel between them.
A view may carry a *mask* (``pad`` makes one, for array updates): indices outside it read zero
without touching memory.

Views are plain values (tuples of ints): kernels are specialised on their *structure* (count,
ranks, contiguity class), and the numbers travel as kernel arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .graph import Node, index_entries, normalize_reshape


@dataclass(frozen=True, slots=True)
class View:
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements, may be 0 (broadcast) or negative (reversed)
    offset: int = 0
    # valid index range [lo, hi) per dim, or None when every index is valid. Outside it the view
    # reads zero (of the dtype) and never touches memory: ``pad`` makes such views.
    mask: tuple[tuple[int, int], ...] | None = None

    @staticmethod
    def contiguous(shape: tuple[int, ...], offset: int = 0) -> View:
        return View(tuple(shape), c_strides(shape), offset)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def is_contiguous(self) -> bool:
        """C-contiguous over its own shape (size-1 dims may have any stride)."""
        return all(
            n == 1 or s == c for n, s, c in zip(self.shape, self.strides, c_strides(self.shape))
        )

    def is_uniform(self) -> bool:
        """Every index maps to the same element (a broadcast scalar)."""
        return all(n == 1 or s == 0 for n, s in zip(self.shape, self.strides))

    def valid(self, index: tuple[int, ...]) -> bool:
        return self.mask is None or all(lo <= i < hi for i, (lo, hi) in zip(index, self.mask))

    # -- movement ---------------------------------------------------------------------------
    def permute(self, perm) -> View:
        mask = None if self.mask is None else tuple(self.mask[p] for p in perm)
        return View(tuple(self.shape[p] for p in perm), tuple(self.strides[p] for p in perm),
                    self.offset, mask)

    def expand(self, shape) -> View:
        lead = len(shape) - len(self.shape)
        strides = [0] * lead + [
            0 if n == 1 and m != 1 else s
            for n, s, m in zip(self.shape, self.strides, shape[lead:])
        ]
        mask = None
        if self.mask is not None:
            mask = tuple((0, m) for m in shape[:lead]) + tuple(
                ((0, m) if hi > lo else (0, 0)) if n == 1 and m != 1 else (lo, hi)
                for (lo, hi), n, m in zip(self.mask, self.shape, shape[lead:])
            )
        return View(tuple(shape), tuple(strides), self.offset, mask)

    def index(self, key) -> View:
        shape, strides, mask, offset, axis = [], [], [], self.offset, 0
        for e in index_entries(self.shape, key):
            if e[0] == "n":
                shape.append(1)
                strides.append(0)
                mask.append((0, 1))
                continue
            stride = self.strides[axis]
            lo, hi = self.mask[axis] if self.mask is not None else (0, self.shape[axis])
            if e[0] == "i":
                offset += e[1] * stride
                if not lo <= e[1] < hi:
                    raise NotImplementedError("an integer index into the padding of a view")
            else:
                _, start, step, length = e
                offset += start * stride if length else 0
                shape.append(length)
                strides.append(stride * step)
                # positions j with lo <= start + step * j < hi
                if step > 0:
                    jlo, jhi = -((start - lo) // step), -((start - hi) // step)
                else:
                    jlo, jhi = (start - hi) // -step + 1, (start - lo) // -step + 1
                jlo, jhi = max(jlo, 0), min(jhi, length)
                mask.append((jlo, max(jhi, jlo)))
            axis += 1
        shape, strides = tuple(shape), tuple(strides)
        if self.mask is None or all(m == (0, n) for m, n in zip(mask, shape)):
            return View(shape, strides, offset)
        return View(shape, strides, offset, tuple(mask))

    def pad(self, widths) -> View:
        """Grow each dim by (before, after) positions that read zero."""
        shape = tuple(n + b + a for n, (b, a) in zip(self.shape, widths))
        offset = self.offset - sum(b * s for (b, _), s in zip(widths, self.strides))
        old = self.mask or tuple((0, n) for n in self.shape)
        mask = tuple((lo + b, hi + b) for (lo, hi), (b, _) in zip(old, widths))
        return View(shape, self.strides, offset, mask)

    def reshape(self, shape) -> View | None:
        """The same elements under ``shape`` as one view, or None when that needs a copy (or
        when a mask cannot follow the reshape: then the mask stays on the view below)."""
        if self.mask is not None:
            return None
        strides = _nocopy_strides(self.shape, self.strides, shape)
        return None if strides is None else View(tuple(shape), strides, self.offset)


def c_strides(shape) -> tuple[int, ...]:
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(out))


def _nocopy_strides(old_shape, old_strides, new_shape):
    """NumPy's no-copy reshape: strides for ``new_shape`` or None (C order)."""
    if math.prod(old_shape) == 0:
        return c_strides(new_shape)
    old = [(n, s) for n, s in zip(old_shape, old_strides) if n != 1]
    new = list(new_shape)
    out = [0] * len(new)
    oi = ni = 0
    while oi < len(old) and ni < len(new):
        if new[ni] == 1:
            ni += 1
            continue
        # grow the old and new groups until their sizes match
        oj, nj = oi + 1, ni + 1
        op, np_ = old[oi][0], new[ni]
        while op != np_:
            if np_ < op:
                np_ *= new[nj]
                nj += 1
            else:
                op *= old[oj][0]
                oj += 1
        for k in range(oi, oj - 1):  # the old group must be contiguous within itself
            if old[k][1] != old[k + 1][0] * old[k + 1][1]:
                return None
        stride = old[oj - 1][1]
        for k in range(nj - 1, ni - 1, -1):
            out[k] = stride
            stride *= new[k]
        oi, ni = oj, nj
    return tuple(out)


def apply_movement(views: tuple[View, ...], node: Node) -> tuple[View, ...]:
    """The view stack after movement ``node`` (whose source the stack already addresses)."""
    top = views[-1]
    if node.op == "permute":
        return (*views[:-1], top.permute(node.arg))
    if node.op == "expand":
        return (*views[:-1], top.expand(node.shape))
    if node.op == "index":
        return (*views[:-1], top.index(node.arg))
    if node.op == "pad":
        return (*views[:-1], top.pad(node.arg))
    if node.op == "reshape":
        shape = normalize_reshape(top.shape, node.arg)
        merged = top.reshape(shape)
        if merged is not None:
            return (*views[:-1], merged)
        return (*views, View.contiguous(shape))
    raise AssertionError(f"{node.op} is not a movement op")


def movement_chain(node: Node) -> tuple[Node, list[Node]]:
    """Split ``node`` into its base (first non-movement node) and the movement ops above it."""
    chain = []
    while node.row.kind.value == "movement":
        chain.append(node)
        node = node.src[0]
    return node, chain[::-1]


def fold(base_view: View, chain: list[Node]) -> tuple[View, ...]:
    views = (base_view,)
    for m in chain:
        views = apply_movement(views, m)
    return views


def buffer_view(value) -> View:
    """The innermost view of a materialised array (NumPy or device array) in element strides."""
    item = value.dtype.itemsize
    strides = tuple(s // item for s in value.strides)
    return View(tuple(value.shape), strides, 0)

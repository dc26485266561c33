"""Gathers in a kernel model: each ``take``'s index, evaluated at the take's own point.

Stage: backend (CUDA), a part of the kernel model (``model.py`` calls ``gather_order``).

``take(x, i)[j..., r...] = x[i[j...], r...]``: the index ``i`` has a prefix of the take's shape
(``i.shape + x.shape[1:]``), so the planner hands it over at its own, smaller shape. A kernel
evaluates a node at one point of one shape (the space S at full level, the row at row level);
to read ``i[j...]`` at the take's point (j..., r...), the model evaluates ``i`` *broadcast over
the take's trailing axes*: its cone is rebuilt at the take's shape (``broadcast``), every read
below it becoming a broadcast view (a reshape and an expand over the same data). Then the index,
like every other operand, has exactly its consumer's shape, and the layouts, levels and passes of
the rest of the model apply unchanged. A broadcast take (a take inside another take's index) is
the take of its broadcast source: ``take(x, i)`` broadcast over e trailing axes is
``take(x', i)`` with ``x'`` = x broadcast over e new trailing axes.

The take's source ``x`` is never evaluated: the planner materialises it, and the model addresses
it at the computed position (a *gather access*, see ``model.gather_layout``).

Invariants: nodes are never mutated (the rebuilt index cone is new, hash-consed nodes); the result
depends only on the kernel's structure.
"""

from __future__ import annotations

from ...fusion import Kernel
from ...graph import Node, toposort
from ...ops import Kind
from ...views import View, fold, movement_chain


class GatherError(Exception):
    """A take the CUDA model cannot place (``model.py`` re-raises it as a ``CodegenError``)."""


def _broadcast_view(n: Node, shape: tuple[int, ...]) -> Node:
    """``n`` (of a prefix of ``shape``) read at every point of ``shape``: reshape, then expand."""
    extra = len(shape) - n.ndim
    padded = n.shape + (1,) * extra
    if padded != n.shape:
        n = Node.make("reshape", (n,), padded, n.dtype)
    return Node.make("expand", (n,), shape, n.dtype) if padded != shape else n


def _reads_own_row(view: View, space: tuple[int, ...], axes: tuple[int, ...]) -> bool:
    """True when ``view`` (over ``space``) reads, at each point, the row value of that point's
    row: C-contiguous over the kept axes, stride 0 over the reduced ones (extent 1: any)."""
    kept = [d for d in range(len(space)) if d not in axes]
    stride, expect = 1, {}
    for d in reversed(kept):
        expect[d] = stride
        stride *= space[d]
    return (
        view.shape == space
        and view.mask is None
        and all(
            n == 1 or s == expect.get(d, 0)
            for d, (n, s) in enumerate(zip(view.shape, view.strides))
        )
    )


class _Placer:
    """The broadcast index cones of one kernel's takes."""

    def __init__(self, kernel: Kernel, computed: set[Node], level: dict[Node, str]):
        self.kernel = kernel
        self.computed = computed  # nodes the kernel evaluates (elementwise, takes, reductions)
        self.level = level  # computed node -> "full" | "row"; new nodes are added
        self.index_of: dict[Node, Node] = {}  # take -> its index at the take's shape
        self.memo: dict[tuple[Node, tuple[int, ...], str], Node] = {}

    def deps(self, n: Node) -> tuple[Node, ...]:
        """What evaluating ``n`` needs computed (a take: its index, never its source; a view:
        the row value below it, if the kernel computes that). A take reached the first time
        gets its index here, so only the takes something needs are placed."""
        if n not in self.level:
            if n.kind is Kind.MOVEMENT:
                base, _ = movement_chain(n)
                return (base,) if base in self.level else ()
            return ()
        if n.kind is not Kind.GATHER:
            return n.src
        index = self.index_of.get(n)
        if index is None:
            lvl = self.level[n]
            self._check_shape(n, lvl)
            index = self.index_of[n] = self.broadcast(n.src[1], n.shape, lvl)
        return (index,)

    def _check_shape(self, t: Node, lvl: str) -> None:
        k = self.kernel
        rows = 1
        for d, n in enumerate(k.space):
            rows *= 1 if d in k.axes else n
        if lvl == "full" and t.shape != k.space or lvl == "row" and t.size != rows:
            raise GatherError(
                f"{k.name}: {t!r} has neither the kernel's space {k.space} nor one value per row"
            )

    def _rebuilt(self, n: Node, lvl: str) -> bool:
        """Whether ``n`` is re-evaluated at the wider shape (else read through a broadcast)."""
        if n not in self.computed or n.kind not in (Kind.ELEMENTWISE, Kind.GATHER):
            return False
        # a row value under a full-level take is read as its row's value where that is what the
        # broadcast means (checked in ``_read``); at row level it is evaluated per row anyway
        return not (self.level.get(n) == "row" and lvl == "full")

    def broadcast(self, root: Node, shape: tuple[int, ...], lvl: str) -> Node:
        """``root``'s value at every point of ``shape`` (``root.shape`` is a prefix of it)."""
        if root.shape == shape:
            return root
        key = (root, shape, lvl)
        if key in self.memo:
            return self.memo[key]
        order = toposort(
            [root], stop=lambda n: n.kind is not Kind.ELEMENTWISE or not self._rebuilt(n, lvl)
        )
        for n in order:
            k = (n, shape, lvl)
            if k in self.memo:
                continue
            if not self._rebuilt(n, lvl):
                self.memo[k] = self._read(n, shape, lvl)
                continue
            if n.kind is Kind.GATHER:
                x = n.src[0]
                wide = _broadcast_view(x, x.shape + shape[n.ndim :])
                out = Node.make("take", (wide, n.src[1]), None, n.dtype)
            else:
                srcs = [self.memo[(s, shape, lvl)] for s in n.src]
                out = Node.make(n.op, srcs, n.arg, n.dtype)
            self._add(out, lvl)
            self.memo[k] = out
        return self.memo[key]

    def _add(self, n: Node, lvl: str) -> None:
        if self.level.setdefault(n, lvl) != lvl:
            raise GatherError(f"{self.kernel.name}: {n!r} is needed at both full and row level")
        self.computed.add(n)

    def _read(self, n: Node, shape: tuple[int, ...], lvl: str) -> Node:
        """A read of ``n`` (data, a constant, or a row value) broadcast to ``shape``."""
        out = _broadcast_view(n, shape)
        base, chain = movement_chain(out)
        if base in self.computed and self.level.get(base) == "row" and lvl == "full":
            views = fold(View.contiguous(base.shape), chain)
            k = self.kernel
            if len(views) != 1 or not _reads_own_row(views[0], k.space, k.axes):
                raise GatherError(
                    f"{k.name}: a take's index reads the row value {base!r} at other rows"
                )
        return out


def gather_order(
    kernel: Kernel, computed: set[Node], level: dict[Node, str]
) -> tuple[list[Node], dict[Node, Node]]:
    """The computed nodes of a kernel with takes, dependencies first, and each take's index.

    ``computed`` and ``level`` describe the plan's nodes; the broadcast index cones are added to
    them. Only what the stores and reductions reach is returned (an index at its own shape is
    usually reached no more).
    """
    placer = _Placer(kernel, computed, level)
    roots = [*kernel.reductions, *(s.value for s in kernel.stores)]
    order = [n for n in toposort(roots, deps=placer.deps) if n in computed]
    return order, placer.index_of

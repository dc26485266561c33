"""Layout passes: make broadcasting explicit and push movement ops down to the data.

After these two passes every elementwise node's sources have exactly its shape, and movement ops
sit only directly on data (buffers, constants, jit parameters), on reductions or joins, or on
nodes computed from reductions (which the fusion planner reads as a row value broadcast back).
A kernel therefore evaluates every fused elementwise node at the kernel's own index, and every
read of memory is one affine view (``views.py``) of one buffer.
"""

from __future__ import annotations

from ..graph import Node, broadcast_node
from ..ops import Kind
from .rewrite import rewrite


def _explicit(node: Node) -> Node | None:
    if node.kind is not Kind.ELEMENTWISE:
        return None
    src = tuple(broadcast_node(s, node.shape) for s in node.src)
    return None if src == node.src else Node.make(node.op, src, node.arg, node.dtype)


def explicit_broadcast(roots):
    return rewrite(roots, _explicit)


def push_views(roots):
    """Move movement ops below elementwise ops, except below values computed from reductions.

    Pushing is always correct (an elementwise op commutes with re-addressing its operands); it is
    skipped over reduction-dependent nodes so that a per-row value (a mean, a 1/std) stays one
    value per row instead of being recomputed for every element it is broadcast to.
    """
    from_reduction: dict[Node, bool] = {}

    def push(node: Node) -> Node | None:
        # the engine shows every node to the rule after its sources, so the dict is complete
        from_reduction[node] = node.kind is Kind.REDUCE or any(from_reduction[s] for s in node.src)
        if node.kind is not Kind.MOVEMENT:
            return None
        inner = node.src[0]
        if inner.kind is not Kind.ELEMENTWISE or from_reduction[inner] or inner.op == "update":
            return None  # an updated array read through a view is stored, not recomputed
        src = tuple(Node.make(node.op, (s,), node.arg, s.dtype) for s in inner.src)
        return Node.make(inner.op, src, inner.arg, inner.dtype)

    return rewrite(roots, push)

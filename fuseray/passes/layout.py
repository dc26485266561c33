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


# The most elementwise ops a view is pushed through (its cone is recomputed at the view's
# positions). A stencil loop, u = 0.25 * concatenate([u[:1], u[:-2] + u[2:], u[-1:]]) + 0.5 * u,
# read every earlier step through views: unbounded, each step's kernels inlined the whole history
# (new source, new compile, every step). Past the limit the value is stored once and read.
PUSH_LIMIT = 16


def push_views(roots):
    """Move movement ops below elementwise ops, except below values computed from reductions
    and below elementwise cones of more than ``PUSH_LIMIT`` ops.

    Pushing is always correct (an elementwise op commutes with re-addressing its operands); it is
    skipped over reduction-dependent nodes so that a per-row value (a mean, a 1/std) stays one
    value per row instead of being recomputed for every element it is broadcast to.
    """
    from_reduction: dict[Node, bool] = {}
    cone_ops: dict[Node, int] = {}  # elementwise ops below a node, capped past PUSH_LIMIT

    def push(node: Node) -> Node | None:
        # the engine shows every node to the rule after its sources, so the dicts are complete
        # (a source made by an earlier rewrite is measured on demand)
        from_reduction[node] = node.kind is Kind.REDUCE or any(from_reduction[s] for s in node.src)
        if node.kind is not Kind.MOVEMENT:
            return None
        inner = node.src[0]
        if inner.kind is not Kind.ELEMENTWISE or from_reduction[inner] or inner.op == "update":
            return None  # an updated array read through a view is stored, not recomputed
        if _cone_ops(inner, cone_ops) > PUSH_LIMIT:
            return None
        src = tuple(Node.make(node.op, (s,), node.arg, s.dtype) for s in inner.src)
        return Node.make(inner.op, src, inner.arg, inner.dtype)

    return rewrite(roots, push)


def _cone_ops(node: Node, memo: dict[Node, int]) -> int:
    """Elementwise ops in ``node``'s cone through elementwise and movement nodes (a DAG counted
    as a tree: an upper bound), capped at PUSH_LIMIT + 1; iterative."""
    stack = [node]
    while stack:
        n = stack[-1]
        if n in memo:
            stack.pop()
            continue
        todo = [s for s in n.src if s not in memo and s.kind in (Kind.ELEMENTWISE, Kind.MOVEMENT)]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        own = 1 if n.kind is Kind.ELEMENTWISE else 0
        below = sum(memo.get(s, 0) for s in n.src)
        memo[n] = min(own + below, PUSH_LIMIT + 1)
    return memo[node]

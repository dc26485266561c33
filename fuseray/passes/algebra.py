"""Constant folding and algebraic simplification that never change NumPy's result.

Folding evaluates with ``reference.evaluate`` (NumPy itself), so it is exact by construction.
Simplification only applies identities that hold bit for bit in IEEE arithmetic and in wrapping
integer arithmetic: ``x * 1``, ``x - 0``, ``-(-x)``, ``x ** 2 -> square``, ... and never
``x * 0 -> 0`` (NaN, inf and -0.0 say no) or ``x + 0.0 -> x`` for floats (-0.0 + 0.0 is +0.0).
"""

from __future__ import annotations

import numpy as np

from .. import reference
from ..graph import Node
from ..ops import Kind
from .rewrite import first_of, rewrite


def _const_under(node: Node) -> Node | None:
    """The constant a chain of movement ops broadcasts (a pad breaks uniformity: it adds 0s)."""
    while node.kind is Kind.MOVEMENT and node.op != "pad":
        node = node.src[0]
    return node if node.op == "const" else None


def uniform_value(node: Node):
    """The single value every element of ``node`` has, if it is a broadcast constant."""
    c = _const_under(node)
    return None if c is None else c.arg[0]


def is_uniform(node: Node) -> bool:
    return _const_under(node) is not None


def broadcast_const(value, dtype, shape) -> Node:
    c = Node.make("const", (), (value, np.dtype(dtype).str, False), dtype=dtype)
    return c if not shape else Node.make("expand", (c,), tuple(shape))


def _fold(node: Node) -> Node | None:
    if node.kind not in (Kind.ELEMENTWISE, Kind.MOVEMENT) or not node.src:
        return None
    if not all(is_uniform(s) for s in node.src):
        return None
    if node.kind is Kind.MOVEMENT:
        if node.src[0].op == "const" and node.op == "expand" or node.op == "pad":
            return None  # the canonical broadcast constant, or zeros around a constant
        return broadcast_const(uniform_value(node.src[0]), node.dtype, node.shape)
    args = [np.asarray(uniform_value(s), dtype=s.dtype) for s in node.src]
    try:
        value = reference.evaluate(node, args)
    except (ValueError, ArithmeticError):
        return None  # a run-time error (e.g. integers to negative powers) stays at run time
    return broadcast_const(value.item(), node.dtype, node.shape)


def fold_constants(roots):
    return rewrite(roots, _fold)


def _same_as(node: Node, x: Node) -> Node | None:
    """``x`` stands for ``node`` only if it already has node's shape and dtype."""
    return x if x.shape == node.shape and x.dtype == node.dtype else None


def _identities(node: Node) -> Node | None:
    op, src = node.op, node.src
    if node.kind is not Kind.ELEMENTWISE or not src:
        return None
    floating = node.dtype.kind == "f"
    if op == "multiply" or op == "divide" and floating:
        for a, b in ((src[0], src[1]), (src[1], src[0])) if op == "multiply" else [src]:
            if uniform_value(b) == 1:
                return _same_as(node, a)
    if op == "subtract" and uniform_value(src[1]) == 0:
        return _same_as(node, src[0])
    if op == "add" and not floating:
        for a, b in ((src[0], src[1]), (src[1], src[0])):
            if uniform_value(b) == 0:
                return _same_as(node, a)
    if op == "power" and uniform_value(src[1]) == 2 and src[0].shape == node.shape:
        return Node.make("square", (src[0],), None, node.dtype)
    if op == "power" and uniform_value(src[1]) == 1:
        return _same_as(node, src[0])
    if node.row.involution and src[0].op == op:
        if op != "logical_not" or src[0].src[0].dtype.kind == "b":
            return _same_as(node, src[0].src[0])
    if node.row.idempotent and node.row.arity == 1 and src[0].op == op:
        return src[0]
    if node.row.idempotent and node.row.arity == 2 and src[0] is src[1]:
        return _same_as(node, src[0])
    if op == "positive":
        return _same_as(node, src[0])
    if op == "where" and src[1] is src[2]:
        return _same_as(node, src[1])
    if op == "cast" and src[0].op == "cast":
        inner = src[0]
        if np.can_cast(inner.src[0].dtype, inner.dtype, "safe"):
            return Node.make("cast", (inner.src[0],), None, node.dtype) if inner.src[
                0
            ].dtype != node.dtype else inner.src[0]
    return None


def simplify(roots):
    return rewrite(roots, first_of(_identities))

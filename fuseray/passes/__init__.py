"""Pure graph rewrites, and the optimizer's visible sequence of them.

Stage: passes. A pass maps roots to new roots; a rule maps one node (whose sources are already
rewritten) to a replacement or None. Nothing mutates a node. ``optimize`` is the whole sequence;
with ``FUSERAY_DEBUG=1`` (or ``config.debug``) it runs ``graph.verify`` after every step.
Dead code needs no pass: only what the roots reach is ever walked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .. import config
from ..graph import Node, verify
from .algebra import fold_constants, simplify
from .layout import explicit_broadcast, push_views

Rule = Callable[[Node], "Node | None"]


def optimize(roots: Sequence[Node]) -> list[Node]:
    """The optimizer: constant folding and simplification, then the layout the planner expects."""
    g = list(roots)
    for step in (fold_constants, simplify, explicit_broadcast, push_views):
        g = step(g)
        if config.debug:
            verify(g)
    return g


__all__ = ["optimize", "fold_constants", "simplify", "explicit_broadcast", "push_views"]

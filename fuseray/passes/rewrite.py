"""The rewrite engine: apply rules bottom-up until nothing changes, without recursion.

A rule sees a node whose sources are already in normal form. When it returns a replacement, the
replacement is itself normalised (its new sources may match further rules), so one call reaches
a fixed point. Results are memoised per node, so shared subgraphs are rewritten once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..graph import Node


def rebuild_with(node: Node, src: tuple[Node, ...]) -> Node:
    return node if src == node.src else Node.make(node.op, src, node.arg, node.dtype)


def rewrite(roots: Sequence[Node], rule: Callable[[Node], Node | None]) -> list[Node]:
    memo: dict[Node, Node] = {}
    stack: list[tuple] = [(r, 0, None) for r in roots]
    while stack:
        node, stage, pending = stack.pop()
        if node in memo:
            continue
        if stage == 0:
            stack.append((node, 1, None))
            stack.extend((s, 0, None) for s in node.src if s not in memo)
        elif stage == 1:
            new = rebuild_with(node, tuple(memo[s] for s in node.src))
            out = rule(new)
            if out is None or out is new:
                memo[node] = memo[new] = new
            else:
                stack.append((node, 2, out))
                stack.append((out, 0, None))
        else:
            memo[node] = memo[pending]
    return [memo[r] for r in roots]


def first_of(*rules: Callable[[Node], Node | None]) -> Callable[[Node], Node | None]:
    """A rule that tries ``rules`` in order and returns the first replacement."""

    def rule(node: Node) -> Node | None:
        for r in rules:
            out = r(node)
            if out is not None and out is not node:
                return out
        return None

    return rule

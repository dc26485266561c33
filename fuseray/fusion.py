"""The fusion plan: partition an optimised graph into kernels.

Stage: fusion (after ``passes.optimize``, before any backend). The plan is backend-independent:
the NumPy interpreter, the numba CPU backend and the CUDA code generator all execute the same
kernels.

A kernel iterates one *space* ``S`` and reduces over a set of its ``axes`` (none for an
elementwise kernel). Its nodes live at one of two levels: *full* (one value per element of S) or
*row* (one value per row: per index of the axes that are not reduced). So one kernel kind covers

- elementwise chains (no axes; several outputs of one space in one kernel: Black-Scholes);
- map-reduce (elementwise work feeding reductions, then row-level epilogue work: ``std``);
- row kernels (reductions whose results are broadcast back over the same rows and consumed at
  full level: softmax, layernorm, logsumexp), one launch instead of three.

Elementwise nodes are never materialised on their own account: they are inlined into every
kernel that needs them. A value is written to memory only when it is a graph output, or when a
consumer cannot fuse it (a reduction result read in a layout that is not a broadcast over its
rows, a reduction of a reduction, a join, a kernel over the op limit); each such split records
its reason, and ``explain`` prints them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from . import config
from .graph import Node, toposort
from .ops import Kind
from .views import View, fold, movement_chain

LEAF_OPS = ("buffer", "const", "param")
# kinds computed inside whichever kernel needs them (a take reads its source from memory)
INLINED = (Kind.ELEMENTWISE, Kind.GATHER)


@dataclass(frozen=True)
class Store:
    """Write ``value`` (computed in the kernel) into the buffer of ``target`` (at ``region``)."""

    value: Node
    target: Node
    region: View | None = None  # None: the whole target buffer, C-contiguous


@dataclass(frozen=True)
class Kernel:
    name: str  # fr_<kind>_<digest8>: stable across sizes, easy to find in a profiler
    kind: str  # "elementwise" | "reduce" | "row" | "scatter"
    space: tuple[int, ...]  # the full iteration space S
    axes: tuple[int, ...]  # reduced axes of S; () for an elementwise kernel
    nodes: tuple[Node, ...]  # everything the kernel reads or evaluates, sources first
    inputs: tuple[Node, ...]  # materialised nodes whose buffers the kernel reads
    stores: tuple[Store, ...]
    reductions: tuple[Node, ...]
    row_level: frozenset[Node]  # nodes with one value per row (reductions, epilogues)

    @property
    def rows(self) -> tuple[int, ...]:
        """The row space: S without the reduced axes."""
        return tuple(d for i, d in enumerate(self.space) if i not in self.axes)

    @property
    def outputs(self) -> tuple[Node, ...]:
        return tuple(s.target for s in self.stores)

    def ops(self) -> list[str]:
        """The computing ops fused here (not loads, constants or re-addressing)."""
        inputs = set(self.inputs)
        return [n.op for n in self.nodes
                if n.kind in (Kind.ELEMENTWISE, Kind.REDUCE, Kind.GATHER, Kind.SCATTER)
                and n not in inputs]

    def bytes_moved(self) -> int:
        """The fewest bytes this kernel must move: each input read once, each output written."""
        read = sum(n.size * n.dtype.itemsize for n in self.inputs)
        write = sum(s.value.size * s.value.dtype.itemsize for s in self.stores)
        return read + write


@dataclass
class Plan:
    roots: list[Node]
    kernels: list[Kernel]
    splits: dict[Node, str] = field(default_factory=dict)  # materialised node -> why
    # what a backend derives from the plan once and reuses on every run (e.g. CUDA bindings)
    backend_state: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def materialised(self) -> set[Node]:
        return {s.target for k in self.kernels for s in k.stores}


# ---------------------------------------------------------------------------------------------
# cones: what a kernel must evaluate to produce a value
# ---------------------------------------------------------------------------------------------


@dataclass
class Cone:
    nodes: list[Node]  # elementwise nodes to evaluate, sources first
    accesses: list[Node]  # movement chains or bases read from memory or constants
    reads: list[tuple[Node, Node]]  # (base, access head) for every non-leaf base reached
    gathered: set[Node] = field(default_factory=set)  # bases its takes read at computed positions


ANCHOR_WINDOW = 256  # the most recent groups an elementwise store may join (see anchor_elementwise)
TAKEN = "read at computed positions by a take (x[indices]): only memory holds them"


def cone(value: Node, materialised: set[Node]) -> Cone:
    """Walk from ``value`` through elementwise nodes; stop at data, views and reductions."""
    order = toposort(
        [value],
        stop=lambda n: n is not value and (n.kind not in INLINED or n in materialised),
    )
    nodes, accesses, reads = [], [], []
    for n in order:
        if n.kind in INLINED and (n is value or n not in materialised):
            nodes.append(n)
            continue
        accesses.append(n)
        base, _ = movement_chain(n)
        if base.op not in LEAF_OPS:
            reads.append((base, n))
    # the bases takes read at computed positions: stored by an earlier kernel, never computed
    # in the one that takes from them
    gathered = {movement_chain(t.src[0])[0] for t in nodes if t.kind is Kind.GATHER}
    return Cone(nodes, accesses, reads, gathered)


# ---------------------------------------------------------------------------------------------
# groups under construction
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Group:
    index: int
    space: tuple[int, ...]
    axes: tuple[int, ...]
    reductions: list[Node] = field(default_factory=list)
    full: list[Node] = field(default_factory=list)  # full-level values to store
    row: list[Node] = field(default_factory=list)  # row-level values to store (epilogues)
    deps: set[int] = field(default_factory=set)
    region: tuple[Node, View] | None = None  # join piece: (target, region)
    closed: bool = False  # holds a value cut at the op limit: takes nothing more
    scatter: Node | None = None  # a scatter group holds only its scatter

    @property
    def n_rows(self) -> int:
        return math.prod(d for i, d in enumerate(self.space) if i not in self.axes)


def _row_broadcast_view(space, axes) -> View:
    rows = tuple(d for i, d in enumerate(space) if i not in axes)
    strides = iter(View.contiguous(rows).strides)
    return View(space, tuple(0 if i in axes else next(strides) for i in range(len(space))), 0)


def _same_addressing(a: View, b: View) -> bool:
    if a.shape != b.shape or a.offset != b.offset:
        return False
    return all(n == 1 or s == t for n, s, t in zip(a.shape, a.strides, b.strides))


class Planner:
    def __init__(self, roots: list[Node]):
        self.roots = roots
        self.order = toposort(roots)
        self.position = {n: i for i, n in enumerate(self.order)}
        self.groups: list[Group] = []
        self.group_of: dict[Node, Group] = {}  # reductions and values computed from them -> home
        self.materialised: set[Node] = set()
        self.owner: dict[Node, Group] = {}  # materialised node -> the group that stores it
        self.splits: dict[Node, str] = {}

    def new_group(self, space, axes) -> Group:
        g = Group(len(self.groups), tuple(space), tuple(axes))
        self.groups.append(g)
        return g

    def is_row_value(self, g: Group, node: Node) -> bool:
        return bool(g.axes) and (node.kind is Kind.REDUCE or node.shape != g.space)

    # -- can a group compute a value? ---------------------------------------------------------
    def level_of_read(self, g: Group, base: Node, head: Node, at_shape) -> str | None:
        """'full' or 'row' if ``head`` reads ``base`` (a value homed in ``g``) fusibly, else None.

        A read fuses when it is a pure broadcast of the row value over the reduced axes (a full
        level consumer, like ``x - mean[:, None]``), or a mere reshape of it (a row-level
        consumer, like ``sqrt(var)``).
        """
        if self.group_of.get(base) is not g or self.owner.get(base, g) is not g:
            return None
        if not self._row_level(g, base):
            # a full-level value of g (``abs(x.sum())`` where the space is 0-d, or any value of
            # the space's shape when the reduced extent is 1) re-addressed: only memory has it
            return None
        _, chain = movement_chain(head)
        views = fold(View.contiguous(base.shape), chain)
        if len(views) != 1:
            return None
        (v,) = views
        if v.mask is not None:
            return None
        if at_shape == g.space and _same_addressing(v, _row_broadcast_view(g.space, g.axes)):
            return "full"
        if math.prod(at_shape) == g.n_rows and v.size == base.size and v.offset == 0 \
                and v.is_contiguous():
            return "row"
        return None

    def try_join(self, g: Group, value: Node, c: Cone, level: str) -> bool:
        """Can ``g`` compute ``value`` (whose cone is ``c``) at ``level``?"""
        if g.closed or g.scatter is not None:  # a scatter kernel computes nothing else
            return False
        gathered = c.gathered
        for base, head in c.reads:
            if base in gathered and (base not in self.materialised or self.owner.get(base) is g):
                return False
            if base in self.materialised:
                dep = self.owner.get(base)
                if dep is g and head is not base:
                    return False  # g's own value at another index: only memory has it
                if dep is not None and dep.index >= g.index and dep is not g:
                    return False
                continue
            if self.level_of_read(g, base, head, value.shape) != level:
                return False
        return True

    @staticmethod
    def read_reason(base: Node) -> str:
        if base.op == "update":
            return "an updated array read through a view (stored once, not recomputed per read)"
        if base.kind is Kind.JOIN:
            return "a concatenate result read by another kernel"
        return ("a reduction result (or a value computed from one) read in a layout that is not"
                " a broadcast over its own rows")

    def store_reads(self, c: Cone) -> None:
        """Materialise every non-leaf base of ``c`` before the kernel that reads them is formed,
        so that it comes after their producers: a value stored by a kernel formed later would
        have to be recomputed in the reader, which a view of it (``y[::2]``) cannot be."""
        for base, _ in c.reads:
            self.materialise(base, self.read_reason(base))

    def settle_reads(self, g: Group, c: Cone, reason: str | None = None) -> None:
        """Materialise every non-leaf base of ``c`` that ``g`` does not compute itself."""
        for base, _ in c.reads:
            if self.group_of.get(base) is g and self.owner.get(base, g) is g:
                continue
            self.materialise(base, reason or self.read_reason(base))
            dep = self.owner.get(base)
            if dep is not None and dep is not g:
                g.deps.add(dep.index)

    def row_home(self, e: Node, c: Cone) -> Group | None:
        """The group whose rows can compute ``e``, a value computed from reductions."""
        homes = sorted({self.group_of[b] for b, _ in c.reads if b in self.group_of},
                       key=lambda g: g.index)
        for g in homes:
            if e.shape == g.space and self.try_join(g, e, c, "full"):
                return g
            if e.size == g.n_rows and e.shape != g.space and self.try_join(g, e, c, "row"):
                return g
        return None

    # -- anchors ------------------------------------------------------------------------------
    def plan_reduction(self, r: Node) -> None:
        space, axes = r.src[0].shape, r.arg[0]
        c = cone(r.src[0], self.materialised)
        same = [g for g in self.groups if g.space == space and g.axes == axes and not g.region]
        homes = {self.group_of[b] for b, _ in c.reads if b in self.group_of}
        # prefer the group whose row values this reduction reads (layernorm's var after its
        # mean), then any sibling over the same rows (sum and max of one array)
        for g in sorted(same, key=lambda g: (g not in homes, -g.index)):
            if self.try_join(g, r.src[0], c, "full"):
                break
        else:
            self.store_reads(c)  # a new kernel computes none of what it reads
            g = self.new_group(space, axes)
        self.settle_reads(g, c)
        g.reductions.append(r)
        self.group_of[r] = g

    def anchor_elementwise(self, e: Node, reason: str) -> None:
        """Store elementwise value ``e``: in its row kernel if it has one, else by its shape."""
        c = cone(e, self.materialised)
        g = self.group_of.get(e)
        if g is None:
            self.store_reads(c)
            # a group before the last producer e reads cannot take e (try_join refuses it), and
            # looking further back than ANCHOR_WINDOW groups only costs time (quadratic in long
            # traces) for fusion a long trace does not need
            first = max((self.owner[b].index for b, _ in c.reads if b in self.owner), default=0)
            first = max(first, len(self.groups) - ANCHOR_WINDOW)
            for cand in reversed(self.groups[first:]):
                if cand.space == e.shape and not cand.axes and not cand.region and \
                        self.try_join(cand, e, c, "full"):
                    g = cand
                    break
            else:
                g = self.new_group(e.shape, ())
            self.group_of[e] = g
        self.settle_reads(g, c)
        self.materialised.add(e)
        self.owner[e] = g
        self.splits.setdefault(e, reason)
        (g.row if self.is_row_value(g, e) else g.full).append(e)

    def materialise(self, node: Node, reason: str) -> None:
        """Make ``node`` a stored output of the group that computes it."""
        if node in self.materialised or node.op in LEAF_OPS:
            return
        if node.kind in INLINED:
            self.anchor_elementwise(node, reason)
            return
        self.materialised.add(node)
        self.splits.setdefault(node, reason)
        if node.kind is Kind.REDUCE:
            self.owner[node] = self.group_of[node]
        # a join is stored by its pieces (plan_join); a movement root is a view of its base

    def plan_join(self, j: Node) -> None:
        offset, whole = 0, View.contiguous(j.shape)
        for s in j.src:
            key = [("s", None, None, None)] * j.ndim
            key[j.arg] = ("s", offset, offset + s.shape[j.arg], 1)
            offset += s.shape[j.arg]
            g = self.new_group(s.shape, ())
            g.region = (j, whole.index(tuple(key)))
            c = cone(s, self.materialised)
            if s.kind is not Kind.ELEMENTWISE:
                self.materialise(movement_chain(s)[0], "read by a concatenate piece")
            self.settle_reads(g, c, "read by a concatenate piece")
            g.full.append(s)
        self.owner[j] = self.groups[-1]

    def plan_scatter(self, n: Node) -> None:
        """A scatter runs as its own kernel over stored operands (positions may repeat)."""
        for s in n.src:
            base, _ = movement_chain(s)
            self.materialise(base, "read by a scatter (x[indices] = values)")
        g = self.new_group(n.shape, ())
        g.scatter = n
        self.group_of[n] = g
        self.materialised.add(n)
        self.owner[n] = g
        self.splits.setdefault(n, "a scatter (x[indices] = values) is stored")

    # -- the walk -----------------------------------------------------------------------------
    def run(self) -> Plan:
        limit = config.max_kernel_ops
        cost: dict[Node, int] = {}
        derived: set[Node] = set()  # values computed from reductions
        for n in self.order:
            if n.kind is Kind.REDUCE or any(s in derived for s in n.src):
                derived.add(n)
        # computed values read through a view (the layout passes left such a view in place:
        # an updated array read shifted, a stencil's neighbours) are stored when reached, in
        # order, so every later kernel reads them and no cone walks back past them
        # (a value computed from reductions is read through a view by its row kernel, where it
        # has one; without one it is stored like the rest)
        viewed_any = {m.src[0] for m in self.order if m.kind is Kind.MOVEMENT
                      and m.src[0].kind in INLINED}
        viewed = {v for v in viewed_any if v not in derived}
        # a take reads its source at computed positions: only memory has them
        taken = {movement_chain(m.src[0])[0] for m in self.order if m.kind is Kind.GATHER}
        viewed |= {b for b in taken if b.kind in INLINED}
        for n in self.order:
            if n.kind is Kind.REDUCE:
                self.plan_reduction(n)
                if n in taken:
                    self.materialise(n, TAKEN)
            elif n.kind is Kind.JOIN:
                self.materialise(n, "concatenate writes each piece into its region")
                self.plan_join(n)
            elif n.kind is Kind.SCATTER:
                self.plan_scatter(n)
            elif n.kind in INLINED:
                if n in derived and n not in self.group_of:
                    home = self.row_home(n, cone(n, self.materialised))
                    if home is not None:
                        self.group_of[n] = home
                if n in viewed or n in viewed_any and n not in self.group_of:
                    self.materialise(n, TAKEN if n in taken else self.read_reason(n))
                # bound the ops in one kernel: materialise a value whose inlined cone is too big
                cost[n] = 1 + sum(cost.get(s, 0) for s in n.src if s not in self.materialised)
                if cost[n] >= limit:
                    self.materialise(n, f"op limit: a kernel holds at most {limit} ops"
                                        " (fr.config.max_kernel_ops)")
                    self.owner[n].closed = True
        for r in self.roots:
            base, _ = movement_chain(r)
            self.materialise(base, "graph output" if base is r else "graph output (as a view)")
        return Plan(self.roots, [self.kernel(g) for g in self.groups if self.has_work(g)],
                    self.splits)

    def has_work(self, g: Group) -> bool:
        return bool(g.reductions and any(self.owner.get(r) is g for r in g.reductions)
                    or g.full or g.row or g.scatter)

    # -- from a group to a kernel -------------------------------------------------------------
    def scatter_kernel(self, g: Group) -> Kernel:
        n = g.scatter
        nodes, inputs = [], []
        for s in n.src:
            base, chain = movement_chain(s)
            nodes.extend(x for x in [base, *chain] if x not in nodes)
            if base.op not in ("const", "param") and base not in inputs:
                inputs.append(base)
        nodes.append(n)
        return _kernel("scatter", g, nodes, inputs, [Store(n, n)], frozenset())

    def kernel(self, g: Group) -> Kernel:
        if g.scatter is not None:
            return self.scatter_kernel(g)
        # values stored by earlier kernels are read; one stored by a later kernel (an output
        # materialised after this group was formed) is recomputed here, so kernels run in order
        elsewhere = _StoredElsewhere(self, g)
        inside: set[Node] = set()
        inputs: list[Node] = []
        todo = [*g.reductions, *g.row, *g.full]
        while todo:
            v = todo.pop()
            if v in inside:
                continue
            inside.add(v)
            if v.kind is Kind.REDUCE and self.group_of.get(v) is g:
                todo.append(v.src[0])
                continue
            if v in elsewhere:  # reduced directly by this kernel (x.sum(axis=1).sum()): read it
                if v not in inputs:
                    inputs.append(v)
                continue
            c = cone(v, _StoredElsewhere(self, g, v) if v.kind in INLINED else elsewhere)
            inside.update(c.nodes)
            for head in c.accesses:
                base, chain = movement_chain(head)
                inside.update(chain)
                if base.op in LEAF_OPS or base in elsewhere:
                    inside.add(base)
                    if base.op != "const" and base.op != "param" and base not in inputs:
                        inputs.append(base)
                elif base is not v:
                    todo.append(base)  # a row value this kernel computes itself
        nodes = sorted(inside, key=self.position.__getitem__)
        stores = [Store(v, v) for v in (*g.reductions, *g.row, *g.full)
                  if self.owner.get(v) is g and v in self.materialised]
        if g.region is not None:
            stores = [Store(v, g.region[0], g.region[1]) for v in g.full]
        row_level = frozenset(n for n in nodes if self._row_level(g, n))
        if not g.reductions:
            kind = "elementwise"
        else:
            kind = "row" if any(s.value not in row_level for s in stores) else "reduce"
        return _kernel(kind, g, nodes, inputs, stores, row_level)

    def _row_level(self, g: Group, n: Node) -> bool:
        if not g.reductions:
            return False
        if n.kind is Kind.REDUCE:
            return True
        return n.shape != g.space and n.size == g.n_rows and n.kind is not Kind.LEAF \
            or n.kind is Kind.LEAF and n.shape != g.space and n.size == g.n_rows and n.size > 1


class _StoredElsewhere:
    """The materialised values that group ``g`` reads from memory, as a membership test (except
    ``skip``): those of other kinds stored by other groups, and those stored by earlier groups.
    Building this set for every kernel was quadratic in long traces (a 1000-step loop: 11,000
    kernels x 4,000 stored values)."""

    __slots__ = ("g", "planner", "skip")

    def __init__(self, planner: Planner, g: Group, skip: Node | None = None):
        self.planner, self.g, self.skip = planner, g, skip

    def __contains__(self, n: Node) -> bool:
        if n is self.skip or n not in self.planner.materialised:
            return False
        owner = self.planner.owner.get(n)
        if n.kind not in INLINED and owner is not self.g:
            return True
        return owner is not None and owner.index < self.g.index


def _kernel(kind, g: Group, nodes, inputs, stores, row_level) -> Kernel:
    index = {n: i for i, n in enumerate(nodes)}
    h = hashlib.blake2b(digest_size=4)
    h.update(f"{kind}|{len(g.space)}|{g.axes}".encode())
    for n in nodes:
        h.update(f"|{n.op}:{n.dtype.str}:{len(n.shape)}:{[index.get(s) for s in n.src]}".encode())
    return Kernel(
        name=f"fr_{kind}_{h.hexdigest()}",
        kind=kind,
        space=g.space,
        axes=g.axes,
        nodes=tuple(nodes),
        inputs=tuple(inputs),
        stores=tuple(stores),
        reductions=tuple(g.reductions),
        row_level=frozenset(row_level),
    )


def plan(roots: list[Node]) -> Plan:
    """Partition the optimised graph under ``roots`` into kernels (see the module docstring)."""
    return Planner(list(roots)).run()

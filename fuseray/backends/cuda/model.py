"""What one fused kernel reads, computes and writes, and how each memory access is addressed.

Stage: backend (CUDA), between the fusion plan and the code generator. ``KernelModel`` is the
structural reading of a ``fusion.Kernel`` (computed once per kernel object):

- *accesses*: every read of memory, one per distinct head node (a buffer leaf, an input from an
  earlier kernel, or a movement chain over one), at the level of its consumers: ``full`` (one
  element per point of the space S) or ``row`` (one element per row);
- *consts* and *params*: uniform scalars, passed as kernel arguments so that a new constant
  never recompiles a kernel (except one that changes what the code generator can prove, such as
  ``sqrt(abs(y) + c)``'s operand being normal when c >= 2^-100: ``ranges.value_range``);
- *computed*: the elementwise and reduce nodes evaluated here, in node order (their temporaries
  are t0, t1, ... in that order);
- *outputs*: the stores, each at the level of its value;
- for reduce/row kernels, *stages*: reductions grouped so that a reduction reading another's row
  value (``x - mean``) runs in a later pass over the row;
- *gathers*: each ``take`` is computed like an elementwise node, from its *index* (evaluated at the
  take's own point, see ``model_index.py``) and a *gather access* of its source, a read of memory
  at the position the index names (``gather_layout``); a ``scatter`` kernel has no computed nodes,
  only the accesses of its three operands (``scatter``). Kernels with either take a pointer to the
  device's bounds record (``bounds``), where an out-of-range index is reported.

``Layout`` is the per-call part: given an access's actual array (its strides, its offset), which
*class* of addressing it needs (contiguous, uniform, linear, strided, or a stack of views) and the
numbers that go with it. Generated source depends only on the classes; the numbers are kernel
arguments. Classes depend on sizes only where NumPy's own contiguity flags do (extent-1 axes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...fusion import Kernel, Store
from ...graph import Node
from ...ops import Kind
from ...views import View, buffer_view, c_strides, fold, movement_chain
from .model_index import GatherError, gather_order


class CodegenError(NotImplementedError):
    """The CUDA code generator cannot handle a kernel the planner produced (names the kernel)."""


@dataclass(eq=False)
class Access:
    """A read of memory: ``head`` (what consumers name) over ``base`` (what holds the data).

    ``level`` "full" and "row": read at the consumer's point; "gather": the source of a take,
    read at the position the take's index names (its views' top has the source's shape).

    ``scalar`` names the kernel argument of a constant or jit parameter read through a padded
    (masked) view (or gathered from): such an access touches no memory, it is the scalar inside
    the mask and zero outside it.
    """

    index: int
    head: Node
    base: Node
    chain: tuple[Node, ...]
    level: str  # "full" | "row" | "gather"
    scalar: str | None = None

    @property
    def in_memory(self) -> bool:
        return self.scalar is None

    @property
    def name(self) -> str:
        return f"a{self.index}"

    @property
    def dtype(self) -> np.dtype:
        return self.head.dtype


@dataclass(eq=False)
class Output:
    """A store of ``store.value`` at ``level``; written through pointer ``o<index>``."""

    index: int
    store: Store
    level: str

    @property
    def name(self) -> str:
        return f"o{self.index}"

    @property
    def dtype(self) -> np.dtype:
        return self.store.target.dtype


@dataclass(frozen=True)
class Ref:
    """How a kernel obtains an operand: ``kind`` is "temp", "access", "const" or "param"."""

    kind: str
    name: str
    node: Node


@dataclass(frozen=True)
class Gather:
    """A take's two halves: the access of its source, and the node whose value at the take's
    point is the index (the take's own index, broadcast over its trailing axes)."""

    access: Access
    index: Node


@dataclass(eq=False)
class KernelModel:
    kernel: Kernel
    accesses: list[Access] = field(default_factory=list)
    consts: list[Node] = field(default_factory=list)
    params: list[Node] = field(default_factory=list)
    computed: list[Node] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    refs: dict[Node, Ref] = field(default_factory=dict)
    level: dict[Node, str] = field(default_factory=dict)  # computed node -> "full" | "row"
    stage: dict[Node, int] = field(default_factory=dict)  # reduction -> pass it is computed in
    row_stage: dict[Node, int] = field(default_factory=dict)  # row node -> passes it waits for
    gathers: dict[Node, Gather] = field(default_factory=dict)  # take -> source and index
    scatter: Node | None = None  # the scatter node of a scatter kernel

    @property
    def is_reduce(self) -> bool:
        return bool(self.kernel.reductions)

    @property
    def space(self) -> tuple[int, ...]:
        return self.kernel.space

    @property
    def axes(self) -> tuple[int, ...]:
        return self.kernel.axes

    @property
    def kept(self) -> tuple[int, ...]:
        return tuple(d for d in range(len(self.space)) if d not in self.axes)

    @property
    def n_stages(self) -> int:
        return 1 + max(self.stage.values(), default=-1)

    @property
    def full_stores(self) -> list[Output]:
        return [o for o in self.outputs if o.level == "full"]

    @property
    def row_stores(self) -> list[Output]:
        return [o for o in self.outputs if o.level == "row"]

    @property
    def passes(self) -> int:
        """Passes over each row: one per stage of reductions, plus one writing full-level
        outputs (row kernels)."""
        return self.n_stages + (1 if self.full_stores else 0)

    def temp(self, node: Node) -> str:
        return self.refs[node].name

    def deps(self, node: Node) -> tuple[Node, ...]:
        """The operands computed node ``node`` is evaluated from (a take: its index only)."""
        g = self.gathers.get(node)
        return (g.index,) if g is not None else node.src

    @property
    def bounds(self) -> bool:
        """Whether the kernel reads or writes at computed positions, so takes the bounds record."""
        return bool(self.gathers) or self.scatter is not None

    @property
    def sizes(self) -> dict[str, int]:
        """Kernel-wide sizes beyond the space's (a scatter: how many values, and the elements
        each writes)."""
        if self.scatter is None:
            return {}
        count = self.scatter.src[1].shape[0]
        return {"count": count, "R": math.prod(self.space[1:])}

    def launch_elements(self, n: int) -> int:
        """Elements a launch's grid should cover: the space's ``n``, or a scatter's larger pass."""
        if self.scatter is None:
            return n
        sizes = self.sizes
        return max(n, sizes["count"], sizes["count"] * sizes["R"])

    def describe(self) -> list[str]:
        """The fused subgraph, one line per computed node, for the comment atop the source."""
        lines = []
        for n in self.computed:
            args = []
            if n in self.gathers:
                args.append(self.gathers[n].access.name)
            for s in self.deps(n):
                r = self.refs.get(s)
                args.append(r.name if r is not None else "?")
            extra = f" {n.arg}" if n.arg is not None and n.kind is not Kind.ELEMENTWISE else ""
            if n.op == "round":
                extra = f" decimals={n.arg}"
            level = " (row)" if self.level.get(n) == "row" and self.is_reduce else ""
            lines.append(
                f"{self.temp(n)} = {n.op}({', '.join(args)}){extra}  {n.dtype.name}{level}"
            )
        for a in self.accesses:
            ops = "".join(f".{m.op}" for m in a.chain)
            what = "buffer" if a.base.op == "buffer" else f"input {a.base.op}"
            if a.scalar is not None:
                what = f"{a.base.op} {a.scalar}"
            lines.append(f"{a.name}: {what} {a.base.dtype.name}{ops} ({a.level})")
        if self.scatter is not None:
            args = ", ".join(self.refs[s].name for s in self.scatter.src)
            lines.append(f"o0 <- scatter({args})  {self.scatter.dtype.name}")
            return lines
        for o in self.outputs:
            where = " region" if o.store.region is not None else ""
            value = self.refs[o.store.value].name
            lines.append(f"{o.name}{where} <- {value} ({o.level})")
        return lines


def build_model(kernel: Kernel) -> KernelModel:
    """Read ``kernel`` structurally; raise ``CodegenError`` for a shape this backend cannot run."""
    m = KernelModel(kernel)
    if kernel.kind == "scatter":
        return _scatter_model(m)
    if kernel.kind not in ("elementwise", "reduce", "row"):
        raise CodegenError(
            f"{kernel.name}: the CUDA code generator has no {kernel.kind!r} kernels yet"
        )
    inputs = set(kernel.inputs)
    reductions = set(kernel.reductions)
    reduce = bool(reductions)
    for n in kernel.nodes:
        if n in inputs:
            continue
        if n.kind in (Kind.ELEMENTWISE, Kind.GATHER) or n in reductions:
            m.computed.append(n)
            m.level[n] = "row" if reduce and n in kernel.row_level else "full"
        elif n.kind is Kind.REDUCE:
            raise CodegenError(
                f"{kernel.name}: {n!r} is a reduction the kernel neither computes"
                " nor reads as an input"
            )
        elif n.kind not in (Kind.LEAF, Kind.MOVEMENT):
            raise CodegenError(
                f"{kernel.name}: the CUDA code generator cannot compute {n.op!r}"
                f" ({n.kind.value}) nodes yet"
            )
    index_of = _place_gathers(m) if any(n.kind is Kind.GATHER for n in m.computed) else {}
    for i, n in enumerate(m.computed):
        m.refs[n] = Ref("temp", f"t{i}", n)
    for t, index in index_of.items():
        m.gathers[t] = Gather(_gather_access(m, t, inputs), index)

    def resolve(s: Node, level: str) -> Ref:
        r = m.refs.get(s)
        if r is None:
            r = _new_ref(m, s, inputs, level)
            m.refs[s] = r
        if r.kind == "access":
            access = m.accesses[int(r.name[1:])]
            if access.level != level:
                raise CodegenError(
                    f"{kernel.name}: {s!r} is read at {access.level} level by a"
                    f" {level}-level consumer"
                )
        return r

    for n in m.computed:
        consumer = "full" if n in reductions else m.level[n]
        for s in m.deps(n):
            resolve(s, consumer)
    for i, st in enumerate(kernel.stores):
        value = st.value
        level = "full"
        if reduce and (
            m.level.get(value) == "row" or value not in m.level and value.shape != kernel.space
        ):
            level = "row"
        resolve(value, level)
        m.outputs.append(Output(i, st, level))
    if reduce:
        _assign_stages(m, reductions)
    return m


def _place_gathers(m: KernelModel) -> dict[Node, Node]:
    """Re-order ``m.computed`` for a kernel with takes (see ``model_index.py``): every take gets
    its index at its own shape, and what no store or reduction reaches is dropped."""
    try:
        order, index_of = gather_order(m.kernel, set(m.computed), m.level)
    except GatherError as e:
        raise CodegenError(str(e)) from None
    m.computed = order
    m.level = {n: m.level[n] for n in order}
    return {t: index_of[t] for t in order if t.kind is Kind.GATHER}


def _gather_access(m: KernelModel, take: Node, inputs: set[Node]) -> Access:
    """The read of ``take``'s source at computed positions: memory, or a uniform scalar."""
    src = take.src[0]
    base, chain = movement_chain(src)
    scalar = None
    if base.op in ("const", "param"):
        r = m.refs.get(base)
        if r is None:
            r = m.refs[base] = _new_ref(m, base, inputs, "full")
        scalar = r.name
    elif base.op != "buffer" and base not in inputs:
        raise CodegenError(
            f"{m.kernel.name}: {take!r} gathers from {base!r}, a value computed in this kernel;"
            " only memory holds it at other positions (the planner should have stored it)"
        )
    a = Access(len(m.accesses), src, base, tuple(chain), "gather", scalar)
    m.accesses.append(a)
    return a


def _scatter_model(m: KernelModel) -> KernelModel:
    """A scatter kernel: its operands (old array, 1-D index, values) are all read from memory
    (or are uniform scalars); its one output is the updated copy."""
    k = m.kernel
    # the store's value, not the first scatter in nodes: the old array may be an earlier
    # kernel's scatter (x[i] = a; x[j] = b)
    n = k.stores[0].value if len(k.stores) == 1 else None
    if n is None or n.kind is not Kind.SCATTER or n.src[1].ndim != 1:
        raise CodegenError(f"{k.name}: a scatter kernel needs one scatter node with a 1-D index")
    m.scatter = n
    inputs = set(k.inputs)
    for s in n.src:
        if s not in m.refs:
            m.refs[s] = _new_ref(m, s, inputs, "full")
    m.outputs.append(Output(0, k.stores[0], "full"))
    return m


def _new_ref(m: KernelModel, s: Node, inputs: set[Node], level: str) -> Ref:
    kernel = m.kernel
    if s.op == "const":
        m.consts.append(s)
        return Ref("const", f"c{len(m.consts) - 1}", s)
    if s.op == "param":
        m.params.append(s)
        return Ref("param", f"p{len(m.params) - 1}", s)
    if s in inputs or s.op == "buffer":
        return _access(m, s, s, ())
    if s.kind is Kind.MOVEMENT:
        base, chain = movement_chain(s)
        if base.op == "const" or base.op == "param":
            r = m.refs.get(base)
            if r is None:
                r = _new_ref(m, base, inputs, level)
                m.refs[base] = r
            if any(c.op == "pad" for c in chain):
                return _access(m, s, base, tuple(chain), scalar=r.name)
            return r
        if base.op == "buffer" or base in inputs:
            return _access(m, s, base, tuple(chain))
        if (
            base in m.level
            and m.level[base] == "row"
            and m.is_reduce
            and not any(c.op == "pad" for c in chain)
        ):
            # a row value re-addressed: a broadcast over the reduced axes (read at full level)
            # or a reshape (read at row level) both mean "this row's value"
            return m.refs[base]
        raise CodegenError(
            f"{kernel.name}: {s!r} re-addresses {base!r}, a value computed in the"
            " kernel at full level; the planner should have materialised it"
        )
    raise CodegenError(f"{kernel.name}: cannot read {s!r}")


def _access(
    m: KernelModel, head: Node, base: Node, chain: tuple[Node, ...], scalar: str | None = None
) -> Ref:
    level = "full"
    if m.is_reduce and head.shape != m.space:
        level = "row"
        if head.size != math.prod(m.kernel.rows):
            raise CodegenError(
                f"{m.kernel.name}: {head!r} is neither full-level nor one value per row"
            )
    a = Access(len(m.accesses), head, base, chain, level, scalar)
    m.accesses.append(a)
    return Ref("access", a.name, head)


def _assign_stages(m: KernelModel, reductions: set[Node]) -> None:
    """stage(r): the pass computing reduction r; row_stage(n): passes row node n waits for."""
    for n in m.computed:
        if n in reductions:
            m.stage[n] = max(
                (_row_stage_of(m, d) for d in _row_reads(m, n.src[0], reductions)), default=0
            )
            m.row_stage[n] = m.stage[n] + 1
        elif m.level[n] == "row":
            m.row_stage[n] = max((_row_stage_of(m, s) for s in m.deps(n)), default=0)


def _row_stage_of(m: KernelModel, s: Node) -> int:
    r = m.refs.get(s)
    if r is None or r.kind != "temp":
        return 0
    return m.row_stage.get(r.node, 0)


def _row_reads(m: KernelModel, root: Node, reductions: set[Node]) -> set[Node]:
    """Row-level values the full-level cone of ``root`` reads."""
    out, seen, todo = set(), set(), [root]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        r = m.refs.get(n)
        if r is None or r.kind != "temp":
            continue
        node = r.node
        if m.level.get(node) == "row":
            out.add(node)
            continue
        todo.extend(m.deps(node))
    return out


def access_heads(m: KernelModel, keep) -> list[Node]:
    """The heads in ``keep`` of ``m``'s accesses, in access order, each once: one buffer can be
    two accesses (read in full and as a take's source), and caches and reused values are kept
    per head."""
    return list(dict.fromkeys(a.head for a in m.accesses if a.head in keep))


def full_cone(
    m: KernelModel, roots: list[Node], stop: frozenset = frozenset()
) -> tuple[list[Node], list[Access], list[Node]]:
    """What evaluating ``roots`` at full level needs: computed nodes (node order), accesses to
    load, and the ``stop`` values (already at hand, e.g. cached by an earlier pass) it reaches.

    ``stop`` holds computed nodes and access heads; the walk does not go below them.
    """
    nodes, accesses, reused, seen, todo = set(), set(), set(), set(), list(roots)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        r = m.refs[n]
        if r.kind == "access":
            a = m.accesses[int(r.name[1:])]
            if a.head in stop:
                reused.add(a.head)
            else:
                accesses.add(a.index)
        elif r.kind == "temp" and m.level.get(r.node) == "full":
            if r.node in stop:
                reused.add(r.node)
                continue
            nodes.add(r.node)
            todo.extend(m.deps(r.node))
    order = [n for n in m.computed if n in nodes]
    reused_order = access_heads(m, reused) + [n for n in m.computed if n in reused]
    return order, [m.accesses[i] for i in sorted(accesses)], reused_order


# ---------------------------------------------------------------------------------------------
# layouts: the per-call addressing of each access
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """How one access is addressed in one call.

    ``cls`` goes into the source (and the compile key); ``ints`` are kernel arguments; ``offset``
    is the element offset folded into the pointer; ``extent`` bounds every offset and position the
    kernel computes for it (to choose 32- or 64-bit indexing). ``masks`` lists the views of the
    stack that carry a mask (a padded view reads zero outside it), as (position from the top,
    rank); their bounds (all ``lo`` then all ``hi`` per view) end ``ints``. Masks are part of
    the source too.
    """

    cls: tuple
    ints: tuple[int, ...]
    offset: int
    extent: int
    masks: tuple[tuple[int, int], ...] = ()


def _span(view: View) -> int:
    lo = hi = view.offset
    for n, s in zip(view.shape, view.strides):
        if n > 1:
            if s < 0:
                lo += (n - 1) * s
            else:
                hi += (n - 1) * s
    return max(abs(lo), abs(hi), view.size)


def _linear_stride(shape, strides) -> int | None:
    """s when the view over ``shape`` is C-contiguous up to a factor s (0: uniform), else None."""
    cs = c_strides(shape)
    s = None
    for n, st, c in zip(shape, strides, cs):
        if n == 1:
            continue
        if s is None:
            if st % c:
                return None
            s = st // c
        if st != s * c:
            return None
    return 0 if s is None else s


def _stack_ints(views: tuple[View, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Ranks of the views below the top, and their (shape, strides, offset) numbers, top-down;
    the innermost view's offset is folded into the pointer instead."""
    ranks, ints = [], []
    for k in range(len(views) - 2, -1, -1):
        v = views[k]
        ranks.append(len(v.shape))
        ints.extend(v.shape)
        ints.extend(v.strides)
        if k > 0:
            ints.append(v.offset)
    return tuple(ranks), tuple(ints)


def _masks(views: tuple[View, ...]) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """((position from the top, rank), ...) of the masked views, and their bounds."""
    masks, ints = [], []
    for pos, v in enumerate(reversed(views)):
        if getattr(v, "mask", None) is not None:
            masks.append((pos, len(v.shape)))
            ints.extend(lo for lo, _ in v.mask)
            ints.extend(hi for _, hi in v.mask)
    return tuple(masks), tuple(ints)


def _top_masked(views: tuple[View, ...]) -> bool:
    return getattr(views[-1], "mask", None) is not None


def flat_layout(views: tuple[View, ...]) -> Layout:
    """Addressing over an elementwise kernel's flat index i (the top view has the space's shape).

    Classes: ("c",) contiguous: offset i; ("u",) uniform: offset 0; ("s",) strided: the unravelled
    index dotted with strides; ("v", ranks) a stack: the top view's position unravelled through
    each view below. A masked top view is always addressed as strided (its mask needs the
    coordinates).
    """
    top = views[-1]
    extent = max(_span(v) for v in views)
    masks, mask_ints = _masks(views)
    if len(views) == 1:
        if not masks and top.is_uniform():
            return Layout(("u",), (), top.offset, extent)
        if not masks and top.is_contiguous():
            return Layout(("c",), (), top.offset, extent)
        return Layout(("s",), (*top.strides, *mask_ints), top.offset, extent, masks)
    ranks, ints = _stack_ints(views)
    return Layout(
        ("v", ranks), (*top.strides, top.offset, *ints, *mask_ints), views[0].offset, extent, masks
    )


def split_layout(views: tuple[View, ...], axes: tuple[int, ...]) -> Layout:
    """Addressing of a full-level access of a reduction: offset = row part(r) + reduced part(j).

    Each part is ("1") unit: r (or j), ("l") linear: r * s (or j * s), or ("s") strided: the
    row's (or the reduced index's) unravelled coordinates dotted with strides; a reduced part
    may also be ("0"): the access does not move along the reduced axes (``(m * w).sum(axis=0)``
    reads w once per row), so its load is the same at every j and leaves the loop. A stack adds
    ("v", ranks) descents. Unit parts are compiled in (contiguous rows are the common case):
    their address arithmetic folds into immediate offsets, where a run-time stride costs a
    multiply and a register per element of a row kernel's unrolled loops.
    """
    top = views[-1]
    nd = len(top.shape)
    kept = [d for d in range(nd) if d not in axes]
    red = list(axes)
    masks, mask_ints = _masks(views)
    parts, ints = [], []
    for dims in (kept, red):
        shape = [top.shape[d] for d in dims]
        strides = [top.strides[d] for d in dims]
        s = None if _top_masked(views) else _linear_stride(shape, strides)
        if s is None:
            parts.append("s")
            ints.extend(strides)
        elif s == 1:
            parts.append("1")
        elif s == 0 and dims is red:
            parts.append("0")
        else:
            parts.append("l")
            ints.append(s)
    extent = max(_span(v) for v in views)
    if len(views) == 1:
        return Layout(("x", *parts), (*ints, *mask_ints), top.offset, extent, masks)
    ranks, more = _stack_ints(views)
    return Layout(
        ("v", *parts, ranks), (*ints, top.offset, *more, *mask_ints), views[0].offset, extent, masks
    )


def row_layout(views: tuple[View, ...]) -> Layout:
    """Addressing of a row-level access at row r (its top view's shape has one element per row):
    ("l") r * s, or ("s", rank) r unravelled over the head's own shape; stacks add descents."""
    top = views[-1]
    masks, mask_ints = _masks(views)
    s = None if _top_masked(views) else _linear_stride(top.shape, top.strides)
    if s is not None:
        head = ("l",)
        ints: tuple[int, ...] = (s,)
    else:
        head = ("s", len(top.shape))
        ints = (*top.shape, *top.strides)
    extent = max(_span(v) for v in views)
    if len(views) == 1:
        return Layout(("r", *head), (*ints, *mask_ints), top.offset, extent, masks)
    ranks, more = _stack_ints(views)
    return Layout(
        ("rv", *head, ranks), (*ints, top.offset, *more, *mask_ints), views[0].offset, extent, masks
    )


def access_views(access: Access, value) -> tuple[View, ...]:
    """The view stack of ``access`` over array ``value`` (NumPy or device array; None for a
    constant or parameter, which reads as a 0-d array)."""
    base = View((), (), 0) if value is None else buffer_view(value)
    return fold(base, list(access.chain))


def gather_layout(views: tuple[View, ...]) -> Layout:
    """Addressing of a take's source at coordinates (wrapped index, trailing coordinates...):
    ("g", rank) the top view's shape (its first extent bounds the index, the others unravel a
    row-level take's row) and strides; ("gv", rank, ranks) adds its offset and the views below
    it, as ``flat_layout``'s stacks."""
    top = views[-1]
    rank = len(top.shape)
    extent = max(_span(v) for v in views)
    masks, mask_ints = _masks(views)
    if len(views) == 1:
        return Layout(
            ("g", rank), (*top.shape, *top.strides, *mask_ints), top.offset, extent, masks
        )
    ranks, ints = _stack_ints(views)
    return Layout(
        ("gv", rank, ranks),
        (*top.shape, *top.strides, top.offset, *ints, *mask_ints),
        views[0].offset,
        extent,
        masks,
    )


def layout_for(m: KernelModel, access: Access, views: tuple[View, ...]) -> Layout:
    if access.level == "gather":
        return gather_layout(views)
    if not m.is_reduce:
        return flat_layout(views)
    if access.level == "row":
        return row_layout(views)
    return split_layout(views, m.axes)


def store_layout(m: KernelModel, out: Output) -> Layout:
    """Stores write C-contiguous targets (or a region of one, for concatenate pieces)."""
    region = out.store.region
    if m.scatter is not None:
        # a scatter's write pass runs over all its values, which may outnumber the elements
        lay = flat_layout((View.contiguous(m.space),))
        extent = max(lay.extent, m.launch_elements(math.prod(m.space)))
        return Layout(lay.cls, lay.ints, lay.offset, extent)
    if not m.is_reduce:
        view = region if region is not None else View.contiguous(m.space)
        return flat_layout((view,))
    if region is not None:
        raise CodegenError(f"{m.kernel.name}: a region store in a reduction kernel")
    if out.level == "row":
        # one element per row, C order: the kernel writes o[r]
        return Layout(("row",), (), 0, math.prod(m.kernel.rows))
    return split_layout((View.contiguous(m.space),), m.axes)

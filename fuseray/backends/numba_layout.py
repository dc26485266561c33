"""How a kernel's loops address memory on this call: the layout half of the numba backend.

Stage: backends (numba), between the plan and the code generator. ``analyse(kernel, env)`` looks
at the kernel and at the arrays it reads on this call and returns a :class:`Layout`: a hashable
``spec`` (everything the generated source depends on) and the run-time ``args`` (arrays, sizes,
strides, offsets, scalars) in the order the generated function takes them.

The iteration space S is split into *rows* (the axes that are not reduced; none for an
elementwise kernel) and *q* (the reduced axes; all of S for an elementwise kernel). Each side is
simplified before code is generated: size-1 dims are dropped and neighbouring dims are merged
when every access allows it (``stride[d] == stride[d+1] * size[d+1]``), so a contiguous array of
any rank becomes one flat loop and a transposed one a 2-D loop. Specialisation is on the number
of merged dims and on each access's innermost stride class (``u`` unit, ``z`` zero, ``g`` any);
sizes and strides are arguments, so a new size of the same structure reuses the compiled loop.

Invariants:
- every memory access is one affine *top* view over the merged dims, plus, rarely, lower views
  that the generated code unravels (a reshape NumPy would copy), plus optional masks (``pad``):
  a masked dim is never merged, and a masked-out index reads zero;
- a ``take`` reads through a *gather* access: its source's view with zero strides over the
  index's axes J (S = J + R), to which the loop adds ``index * stride`` (``Access.gather``); the
  index, and what computes it, has shape J and is read broadcast over R;
- element offsets are into a flat 1-D view of the array's memory starting at its lowest address,
  so they are never negative (the generated code indexes with unsigned integers: no wraparound
  checks, which would stop vectorisation);
- an access whose every index reads the same element is read here and passed as a scalar;
- a layout depends only on the kernel and on its inputs' shapes, strides and dtypes
  (``signature``): ``Layout.template`` keeps it without arrays or values, and ``bind`` fills in
  a later call's arrays, parameters and fresh outputs (from ``numba_pool``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..fusion import Kernel
from ..graph import Node
from ..ops import Kind
from ..views import View, c_strides, fold, movement_chain
from . import numba_pool

F16 = np.dtype(np.float16)


class Unsupported(Exception):
    """The kernel uses a shape of addressing this backend does not generate (falls back)."""


@dataclass
class Access:
    """One affine access (a read of an input, or a store) over the merged row and q dims."""

    kind: str  # "read" | "store"
    level: str  # "full" | "row"
    dtype: np.dtype
    offset: int
    row: list[int]  # strides over the original row dims (merged later)
    q: list[int]  # strides over the original q dims
    lower: tuple[View, ...] = ()  # views below the top one, outermost first
    row_mask: list = field(default_factory=list)  # (lo, hi) per original row dim, or None
    q_mask: list = field(default_factory=list)
    array: object = None  # the flat array the offsets index
    source: tuple = ()  # where ``array`` comes from on a later call (see Layout.bind)
    inner: str = "g"  # innermost q stride class after merging: u, z, g
    masked_dims: tuple = ()  # (side, merged dim) pairs that carry a mask
    gather: tuple = ()  # kind "gather": (size, stride) of the axis the take's index picks


@dataclass
class Layout:
    spec: tuple  # what the generated source depends on (no sizes)
    args: list  # accesses and scalars, in the generated function's parameter order
    outputs: dict  # store target -> allocated array (its full shape)
    empty: bool  # nothing to iterate: the outputs are allocated, nothing is launched
    sizes: tuple  # (rows, merged row dims, q, merged q dims)
    # (argument position, source) for every argument that changes from call to call
    dynamic: list = field(default_factory=list)

    def template(self) -> Layout:
        """This layout without its arrays and values (what ``_memo`` keeps between calls)."""
        args = list(self.args)
        for pos, _ in self.dynamic:
            args[pos] = None
        return Layout(self.spec, args, {}, self.empty, self.sizes, self.dynamic)

    def bind(self, kernel: Kernel, env: dict) -> Layout:
        """This template's layout for a call whose inputs have the same shapes and strides."""
        args = list(self.args)
        outputs: dict[Node, np.ndarray] = {}
        flats: dict[Node, np.ndarray] = {}
        for pos, src in self.dynamic:
            kind, node = src[0], src[1]
            if kind == "in":
                if node not in flats:
                    flats[node] = flat_of(_value(node, env))[0]
                args[pos] = flats[node]
            elif kind == "param":
                args[pos] = _scalar(env[node], node.dtype)
            elif kind == "param_arr":
                args[pos] = flat_of(np.asarray(env[node], node.dtype))[0]
            elif kind == "uni":
                if node not in flats:
                    flats[node] = flat_of(_value(node, env))[0]
                val = flats[node][src[2]]
                if node.dtype == F16:
                    val = np.uint16(val).view(np.float16)
                args[pos] = _scalar(val, node.dtype)
            else:  # "out"
                out = outputs.get(node)
                if out is None:
                    out = env.get(node) if src[2] else None
                    if out is None:
                        out = numba_pool.empty(node.shape, node.dtype)
                    outputs[node] = out
                flat = out.reshape(-1)
                args[pos] = flat.view(np.uint16) if out.dtype == F16 else flat
        return Layout(self.spec, args, outputs, self.empty, self.sizes, self.dynamic)


def _value(base: Node, env: dict) -> np.ndarray:
    value = env[base] if base in env else base.value
    return value if isinstance(value, np.ndarray) else np.asarray(value)


def signature(kernel: Kernel, env: dict) -> tuple:
    """What a layout depends on besides the kernel: the shapes and strides of its inputs."""
    out = []
    for base in kernel.inputs:
        v = _value(base, env)
        out.append((v.shape, v.strides, v.dtype.str))
    return tuple(out)


def flat_of(value: np.ndarray) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """(1-D array over value's memory from its lowest address, element offset of value[0...],
    element strides). float16 memory is viewed as uint16 (numba has no CPU float16)."""
    item = value.dtype.itemsize
    if any(s % item for s in value.strides):
        value = np.ascontiguousarray(value)
    strides = tuple(s // item for s in value.strides)
    if value.size == 0:
        flat = np.zeros(1, value.dtype)
        return (flat.view(np.uint16) if value.dtype == F16 else flat), 0, strides
    if value.flags.c_contiguous:
        flat, shift = value.reshape(-1), 0
    else:
        shift = sum((n - 1) * -s for n, s in zip(value.shape, strides) if s < 0)
        span = 1 + sum((n - 1) * abs(s) for n, s in zip(value.shape, strides))
        low = value[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in strides)]
        flat = np.lib.stride_tricks.as_strided(low, (span,), (item,))
    if value.dtype == F16:
        flat = flat.view(np.uint16)
    return flat, shift, strides


def merge_dims(sizes: list[int], accesses: list[list[int]], pinned: set[int]):
    """Drop size-1 dims and merge neighbours that every access walks as one.

    Returns (merged sizes, per access merged strides, original dim -> merged dim or None)."""
    out_sizes: list[int] = []
    out_strides: list[list[int]] = [[] for _ in accesses]
    where: dict[int, int | None] = {}
    prev_pinned = False
    for d, n in enumerate(sizes):
        if n == 1 and d not in pinned:
            where[d] = None
            continue
        mergeable = out_sizes and not prev_pinned and d not in pinned and all(
            st[-1] == a[d] * n for st, a in zip(out_strides, accesses)
        )
        if mergeable:
            out_sizes[-1] *= n
            for st, a in zip(out_strides, accesses):
                st[-1] = a[d]
        else:
            out_sizes.append(n)
            for st, a in zip(out_strides, accesses):
                st.append(a[d])
        where[d] = len(out_sizes) - 1
        prev_pinned = d in pinned
    return out_sizes, out_strides, where


def _scalar(value, dtype: np.dtype):
    """A kernel argument for one value of ``dtype`` (float16 travels as float32)."""
    if dtype == F16:
        return np.float32(np.float16(value))
    return dtype.type(value)


def _element(views: tuple[View, ...], index: tuple[int, ...]) -> int | None:
    """Element offset of ``index`` through the view stack, or None where a mask reads zero."""
    pos = None
    for k in range(len(views) - 1, -1, -1):
        v = views[k]
        if pos is not None:
            index = tuple(int(i) for i in np.unravel_index(pos, v.shape)) if v.shape else ()
        if not v.valid(index):
            return None
        pos = v.offset + sum(i * s for i, s in zip(index, v.strides))
    return pos


class Analysis:
    """Classify every value the kernel's code refers to, and build its accesses."""

    def __init__(self, kernel: Kernel, env: dict):
        self.kernel = kernel
        self.env = env
        space = kernel.space
        self.elementwise = kernel.kind == "elementwise"
        axes = set(kernel.axes)
        self.row_axes = [] if self.elementwise else [d for d in range(len(space)) if d not in axes]
        self.q_axes = list(range(len(space))) if self.elementwise else sorted(axes)
        self.rows_shape = tuple(space[d] for d in self.row_axes)
        self.inputs = set(kernel.inputs)
        self.computed = {
            n: i for i, n in enumerate(kernel.nodes)
            if n.kind in (Kind.ELEMENTWISE, Kind.REDUCE, Kind.GATHER) and n not in self.inputs
        }
        self.row_level = kernel.row_level
        self.refs: dict[tuple[Node, str], tuple] = {}  # (node, level) -> reference
        self.reads: list[Access] = []
        self.read_slot: dict[tuple[Node, str], int] = {}
        self.scalars: list = []  # values of consts, params and uniform reads
        self.scalar_dtypes: list = []
        self.scalar_src: list = []  # per scalar: None (fixed) or its source on later calls
        self.scalar_slot: dict = {}
        self.flats: dict[Node, tuple] = {}
        self.gather_slot: dict[Node, int] = {}  # take node -> its gather access in ``reads``

    def level(self, node: Node) -> str:
        return "row" if node in self.row_level else "full"

    # -- references ---------------------------------------------------------------------------
    def ref(self, node: Node, level: str) -> tuple:
        key = (node, level)
        if key not in self.refs:
            self.refs[key] = self._ref(node, level)
        return self.refs[key]

    def _ref(self, node: Node, level: str) -> tuple:
        if node in self.computed:
            return ("t", self.computed[node])
        base, chain = movement_chain(node)
        if base in self.computed:
            if self.level(base) != "row":
                raise Unsupported("a full-level value read through a view in its own kernel")
            return ("t", self.computed[base])
        if base.op in ("const", "param"):
            value = base.arg[0] if base.op == "const" else self.env[base]
            if any(m.op == "pad" for m in chain):  # reads zero outside the pad's mask
                return self._read(node, base, chain, level, np.asarray(value, base.dtype))
            src = None if base.op == "const" else ("param", base)
            return self._scalar_ref((base.op, base), value, base.dtype, src)
        return self._read(node, base, chain, level)

    def _over_space(self, top: View) -> View:
        """A full-level view over S. A take's index (and what computes it) has the shape of a
        prefix J of S = J + R: it is read at every element of S, broadcast over R."""
        space = self.kernel.space
        m = len(top.shape)
        if top.shape == space:
            return top
        if m >= len(space) or space[:m] != top.shape:
            raise Unsupported(f"a full-level read of shape {top.shape}")
        extra = len(space) - m
        mask = None if top.mask is None else (*top.mask, *((0, n) for n in space[m:]))
        return View(space, (*top.strides, *(0,) * extra), top.offset, mask)

    def gather(self, node: Node, level: str) -> int:
        """The access that ``take`` node ``node`` reads its source through: the source's view
        with the index axis replaced by zero strides over J (the generated code adds
        ``index * stride``), so ``take(x, i)[j, r] = x[i[j], r]``."""
        if node in self.gather_slot:
            return self.gather_slot[node]
        base, chain = movement_chain(node.src[0])
        if base in self.computed or base.op not in ("buffer", "const", "param") \
                and base not in self.inputs:
            raise Unsupported("a take from a value computed in its own kernel")
        value = None
        if base.op in ("const", "param"):
            value = np.asarray(base.arg[0] if base.op == "const" else self.env[base], base.dtype)
        if base not in self.flats:
            self.flats[base] = flat_of(_value(base, self.env) if value is None else value)
        flat, shift, strides = self.flats[base]
        views = fold(View(tuple(base.shape), strides, 0), chain)
        views = (View(views[0].shape, views[0].strides, views[0].offset + shift, views[0].mask),
                 *views[1:])
        top = views[-1]
        if top.mask is not None:
            raise Unsupported("a take from a padded view")
        j = len(node.shape) - len(top.shape) + 1  # rank of the index
        picked = View(node.shape, (0,) * j + top.strides[1:], top.offset)
        if level == "full":
            picked = self._over_space(picked)
            row = [picked.strides[d] for d in self.row_axes]
            q = [picked.strides[d] for d in self.q_axes]
        else:
            if picked.shape != self.rows_shape:
                picked = picked.reshape(self.rows_shape)
                if picked is None:
                    raise Unsupported("a row-level take that is not a view of its rows")
            row, q = list(picked.strides), [0] * len(self.q_axes)
        if value is None:
            source = ("in", base)
        else:
            source = ("param_arr", base) if base.op == "param" else ()
        slot = len(self.reads)
        self.reads.append(Access("gather", level, base.dtype, picked.offset, row, q, views[:-1],
                                 [None] * len(row), [None] * len(q), flat, source=source,
                                 gather=(top.shape[0], top.strides[0])))
        self.gather_slot[node] = slot
        return slot

    def check_prefix_reads(self) -> None:
        """A full-level value of shape J != S that reads a row value of this kernel directly:
        right only when J is the row space (S = J + reduced axes), as in ``y[x.argmax(1)]``."""
        space, axes = self.kernel.space, tuple(self.kernel.axes)
        for n in self.computed:
            if n.kind is Kind.REDUCE or self.level(n) != "full":
                continue
            for s in (n.src[1],) if n.kind is Kind.GATHER else n.src:
                if s in self.computed and self.level(s) == "row" and s.shape != space:
                    m = len(s.shape)
                    if space[:m] != s.shape or axes != tuple(range(m, len(space))):
                        raise Unsupported("a take index computed at row level over other axes")

    def _scalar_ref(self, key, value, dtype: np.dtype, source=None) -> tuple:
        if key not in self.scalar_slot:
            self.scalar_slot[key] = len(self.scalars)
            self.scalars.append(_scalar(value, dtype))
            self.scalar_dtypes.append(dtype)
            self.scalar_src.append(source)
        return ("s", self.scalar_slot[key])

    def _read(self, head: Node, base: Node, chain: list[Node], level: str, value=None) -> tuple:
        if base not in self.flats:
            self.flats[base] = flat_of(_value(base, self.env) if value is None else value)
        flat, shift, strides = self.flats[base]
        value_shape = base.shape
        views = fold(View(tuple(value_shape), strides, 0), chain)
        views = (View(views[0].shape, views[0].strides, views[0].offset + shift, views[0].mask),
                 *views[1:])
        top = views[-1]
        if level == "full":
            top = self._over_space(top)
            views = (*views[:-1], top)
            row = [top.strides[d] for d in self.row_axes]
            q = [top.strides[d] for d in self.q_axes]
            mask = top.mask
            row_mask = [mask[d] if mask else None for d in self.row_axes]
            q_mask = [mask[d] if mask else None for d in self.q_axes]
        else:
            if math.prod(top.shape) != math.prod(self.rows_shape):
                raise Unsupported(f"a row-level read of shape {top.shape}")
            if top.shape != self.rows_shape:
                merged = top.reshape(self.rows_shape)
                views = (*views[:-1], merged) if merged is not None else (
                    *views, View.contiguous(self.rows_shape))
                top = views[-1]
            row = list(top.strides)
            q = [0] * len(self.q_axes)
            row_mask = list(top.mask) if top.mask else [None] * len(row)
            q_mask = [None] * len(q)
        # every index reads the same element: read it now, pass a scalar
        sizes = top.shape
        uniform = all(n == 1 or s == 0 for n, s in zip(sizes, top.strides)) and (
            top.mask is None or all(lo == 0 and hi >= n for (lo, hi), n in zip(top.mask, sizes)))
        if uniform or math.prod(sizes) == 0:
            off = _element(views, (0,) * len(sizes)) if math.prod(sizes) else None
            val = 0 if off is None else flat[off]
            if base.dtype == F16 and off is not None:
                val = np.uint16(val).view(np.float16)
            src = ("uni", base, off) if off is not None and value is None else None
            if off is not None and value is not None and base.op == "param":
                src = ("param", base)
            return self._scalar_ref(("u", head, level), val, base.dtype, src)
        key = (head, level)
        if key not in self.read_slot:
            self.read_slot[key] = len(self.reads)
            if value is None:
                source = ("in", base)
            else:
                source = ("param_arr", base) if base.op == "param" else ()
            self.reads.append(Access("read", level, base.dtype, top.offset, row, q, views[:-1],
                                     row_mask, q_mask, flat, source=source))
        return ("r", self.read_slot[key])


def _drop_full_masks(mask, sizes):
    """None for dims whose mask covers the whole dim."""
    return [None if m is None or (m[0] <= 0 and m[1] >= n) else m for m, n in zip(mask, sizes)]


def analyse(kernel: Kernel, env: dict) -> Layout:
    """Build the accesses, merge dims and allocate the outputs of ``kernel`` for this call."""
    a = Analysis(kernel, env)
    # references of every consumer, in node order (so slots are deterministic)
    for n in kernel.nodes:
        if n not in a.computed:
            continue
        level = "full" if n.kind is Kind.REDUCE else a.level(n)
        if n.kind is Kind.GATHER:
            a.gather(n, level)
        for s in _operands(n):
            a.ref(s, level)
    a.check_prefix_reads()
    stores: list[Access] = []
    outputs: dict[Node, np.ndarray] = {}
    space = kernel.space
    for st in kernel.stores:
        level = a.level(st.value)
        a.ref(st.value, level)
        target = st.target
        out = outputs.get(target)
        if out is None and st.region is not None:
            out = env.get(target)
        if out is None:
            out = numba_pool.empty(target.shape, target.dtype)
        outputs[target] = out
        flat = out.reshape(-1)
        flat = flat.view(np.uint16) if out.dtype == F16 else flat
        nr, nq = len(a.row_axes), len(a.q_axes)
        source = ("out", target, st.region is not None)
        if level == "row":
            stores.append(Access("store", "row", out.dtype, 0, list(c_strides(a.rows_shape)),
                                 [0] * nq, (), [None] * nr, [None] * nq, flat, source=source))
        else:
            region = st.region or View.contiguous(space)
            stores.append(Access("store", "full", out.dtype, region.offset,
                                 [region.strides[d] for d in a.row_axes],
                                 [region.strides[d] for d in a.q_axes], (),
                                 [None] * nr, [None] * nq, flat, source=source))
    row_sizes = list(a.rows_shape)
    q_sizes = [space[d] for d in a.q_axes]
    n_rows, n_q = math.prod(row_sizes), math.prod(q_sizes)
    accesses = a.reads + stores
    for acc in accesses:
        acc.row_mask = _drop_full_masks(acc.row_mask, row_sizes)
        acc.q_mask = _drop_full_masks(acc.q_mask, q_sizes)
    row_pinned = {d for acc in accesses for d, m in enumerate(acc.row_mask) if m is not None}
    q_pinned = {d for acc in accesses for d, m in enumerate(acc.q_mask) if m is not None}
    full = [acc for acc in accesses if acc.level == "full"]
    rsz, rstr, rwhere = merge_dims(row_sizes, [acc.row for acc in accesses], row_pinned)
    qsz, qstr, qwhere = merge_dims(q_sizes, [acc.q for acc in full], q_pinned)
    if not qsz:  # a reduction over no axes, or a 0-d elementwise kernel: one q position
        qsz, qstr = [1], [[0] for _ in full]
    for acc, st in zip(accesses, rstr):
        acc.row = st
    for acc, st in zip(full, qstr):
        acc.q = st
        acc.inner = "u" if st[-1] == 1 else ("z" if st[-1] == 0 else "g")
    for acc in accesses:
        if acc.level == "row":
            acc.q, acc.inner = [0] * len(qsz), "z"
        dims = [("r", rwhere[d], m) for d, m in enumerate(acc.row_mask) if m is not None]
        dims += [("q", qwhere[d], m) for d, m in enumerate(acc.q_mask) if m is not None]
        acc.masked_dims = tuple(dims)
    spec = (
        kernel.kind, len(rsz), len(qsz),
        tuple((n.op, n.dtype.str, a.level(n), a.gather_slot.get(n, _extra(n)),
               tuple(a.refs[(s, "full" if n.kind is Kind.REDUCE else a.level(n))]
                     for s in _operands(n)))
              for n in kernel.nodes if n in a.computed),
        tuple(a.computed[n] for n in kernel.nodes if n in a.computed),
        tuple(_access_key(acc) for acc in a.reads),
        tuple(_access_key(acc) for acc in stores),
        tuple(a.refs[(st.value, a.level(st.value))] for st in kernel.stores),
        tuple(d.str for d in a.scalar_dtypes),
    )
    args: list = []
    dynamic: list = []
    for acc in accesses:
        if acc.source:
            dynamic.append((len(args), acc.source))
        args.append(acc.array)
        args.append(acc.offset)
        args.extend(acc.row)
        args.extend(acc.q if acc.inner == "g" else acc.q[:-1])
        for v in acc.lower:
            args.append(v.offset)
            args.extend(v.shape)
            args.extend(v.strides)
            if v.mask is not None:
                args.extend(x for m in v.mask for x in m)
        for _, _, (lo, hi) in acc.masked_dims:
            args.extend((lo, hi))
        args.extend(acc.gather)
    for value, src in zip(a.scalars, a.scalar_src):
        if src is not None:
            dynamic.append((len(args), src))
        args.append(value)
    empty = n_rows == 0 or (n_q == 0 and kernel.kind != "reduce")
    return Layout(spec, args, outputs, empty, (n_rows, rsz, n_q, qsz), dynamic)


def _operands(node: Node) -> tuple[Node, ...]:
    """The sources a node's code refers to by value (a take reads its first through memory)."""
    return node.src[1:] if node.kind is Kind.GATHER else node.src


def _extra(node: Node):
    """The part of a node's argument that its generated code depends on."""
    if node.op == "round":
        return node.arg
    if node.op == "mean":
        return node.arg[2]  # ddof
    return None


def _access_key(acc: Access) -> tuple:
    return (acc.kind, acc.level, acc.dtype.str, acc.inner,
            tuple((len(v.shape), v.mask is not None) for v in acc.lower),
            tuple((side, d) for side, d, _ in acc.masked_dims))

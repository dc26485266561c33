"""CUDA C for reduce and row kernels (map-reduce with epilogues; softmax/layernorm-style rows).

Stage: backend (CUDA), the reduction half of the code generator (``codegen.py`` has the
elementwise half and the shared pieces).

Every reduce/row kernel has one shape: a loop over *row blocks*; each row (one index of the kept
axes, C order) is handled by a group of ``W`` threads (a power of two); inside a row each stage of
reductions is one pass over the reduced index ``j`` (C order over the reduced axes), combined
across the group (``fr_group_inner``/``fr_group_outer`` in ``fuseray_reduce.cuh``) so that every
thread holds the row's result; row-level epilogue nodes follow each stage; a row kernel then makes
one more pass writing its full-level outputs, and row-level outputs are written once per row.

- ``inner`` schedule (the innermost axis is reduced): a row's threads are consecutive lanes, so
  reads along the row coalesce; ``blockDim = (W, rows per block)``.
- ``outer`` schedule (the innermost axis is kept): neighbouring threads take neighbouring rows,
  so reads coalesce across rows; a row's threads are spread over ``threadIdx.y``.
- Multi-pass kernels keep their full-level inputs in registers (``Schedule.items`` per thread)
  when a row fits, and re-read them otherwise (a run-time test: the source is the same).
- A one-stage reduce kernel may split each row's reduced range over ``gridDim.y`` blocks: each
  writes its partial accumulators to a workspace; the last block to finish a row block (an
  integer atomic counter, reset by that block) combines them in a fixed order and runs the
  epilogue. Results are deterministic for a given launch shape; nothing uses float atomics.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from ... import dtypes
from ...graph import Node
from ...schedule import ROW_MIN_BLOCKS, Schedule
from .codegen import (
    Emitter,
    Generated,
    Param,
    access_value,
    c_type,
    dot,
    emit_nodes,
    emit_position,
    emit_unravel,
    header,
    idx_kind,
    layout_param_names,
    pointer_params,
    scalar_params,
    zero,
)
from .codegen_index import row_take
from .model import Access, KernelModel, Layout, Output, access_heads, full_cone

_OPS = {
    "sum": "FrSum",
    "prod": "FrProd",
    "max": "FrMax",
    "min": "FrMin",
    "any": "FrAny",
    "all": "FrAll",
    "argmax": "FrArgMax",
    "argmin": "FrArgMin",
}


def op_struct(r: Node) -> str:
    """The operator struct of reduce node ``r`` (``fuseray_reduce.cuh``)."""
    t = c_type(r.src[0].dtype)
    if r.op == "mean":
        return f"FrMean<{t}, {int(r.arg[2])}>"
    return f"{_OPS[r.op]}<{t}>"


def acc_bytes(r: Node) -> int:
    """sizeof(Op::acc) for reduce node ``r``, mirroring ``fuseray_reduce.cuh``."""
    dt = np.dtype(r.src[0].dtype)
    if r.op in ("argmax", "argmin"):
        return 16
    if r.op in ("any", "all"):
        return 1
    if dt == np.float16:
        return 4
    if r.op in ("sum", "prod", "mean") and dtypes.is_integer(dt):
        return 8 if dt.itemsize == 8 else 4
    return dt.itemsize


def reduce_passes(m: KernelModel) -> list[list[Node]]:
    """The roots of each pass over a row: every stage's reduction operands, then (row kernels)
    the full-level values stored."""
    passes = [[r.src[0] for r in m.kernel.reductions if m.stage[r] == s] for s in range(m.n_stages)]
    if m.full_stores:
        passes.append([o.store.value for o in m.full_stores])
    return passes


@dataclass
class CachePlan:
    """Register caching across the passes of a multi-pass kernel (when the row fits).

    ``cones[p]``: (nodes to compute, accesses to load, values taken from the cache) of pass p,
    where every value an earlier pass loaded is taken from the cache rather than re-read, and
    computed values are recomputed (softmax's last pass recomputes ``exp(x - max)`` from the
    cached ``x``). ``cached``: the access heads some later pass takes, each stored by the pass
    that loads it.
    """

    cones: list[tuple[list[Node], list[Access], list[Node]]]
    cached: list[Node]


def cache_plan(m: KernelModel) -> CachePlan:
    before: set[Node] = set()
    cones, cached = [], set()
    for roots in reduce_passes(m):
        nodes, accesses, reused = full_cone(m, roots, frozenset(before))
        cones.append((nodes, accesses, reused))
        cached.update(reused)
        # Only loaded values are kept; computed ones are recomputed by the pass that needs them.
        # Registers bound these kernels, not arithmetic: softmax caching exp(x - max) as well as
        # x took 125 registers (16 warps per SM) and ran at 40% of the copy bandwidth.
        before.update(a.head for a in accesses)
    return CachePlan(cones, access_heads(m, cached))


def cached_itemsizes(m: KernelModel) -> tuple[int, ...]:
    """Bytes per element of every value a multi-pass kernel keeps in registers."""
    if m.passes < 2:
        return ()
    return tuple(n.dtype.itemsize for n in cache_plan(m).cached)


def launch_bounds(schedule: Schedule) -> str:
    """``__launch_bounds__`` arguments: a kernel with a register cache also asks for
    ``ROW_MIN_BLOCKS`` resident blocks of ``max_threads``, which caps its registers (64 per
    thread for 2 x 512) so that enough warps stay resident to keep memory busy."""
    if schedule.items:
        return f"{schedule.max_threads}, {ROW_MIN_BLOCKS}"
    return str(schedule.max_threads)


_REDUCE = string.Template("""\
${header}
extern "C" __global__ void __launch_bounds__(${block}) ${name}(
    ${params}) {
  FR_WAIT_FOR_PRIOR_GRID();
  extern __shared__ __align__(16) unsigned char fr_smem[];
${body}
}
""")


def _along_row(lay: Layout) -> bool:
    """Whether an access of this layout is in memory at ``_r + j`` (contiguous along the
    reduced range) with no mask: what 16-byte vectors along a row need."""
    return lay.cls[0] == "x" and lay.cls[2] == "1" and not lay.masks


def _aligned(names: list[str], lanes: int, start: str) -> str:
    """The test that each array's row (from ``start``) begins on a whole vector of ``lanes``."""
    return " && ".join(f"fr_aligned<{lanes}>({n}_p + {n}_r{start})" for n in names)


class _Gen:
    def __init__(
        self, m: KernelModel, schedule: Schedule, layouts: list[Layout], store_layouts: list[Layout]
    ):
        self.m = m
        self.s = schedule
        self.layout = {a.index: lay for a, lay in zip(m.accesses, layouts)}
        self.store_layout = {o.index: lay for o, lay in zip(m.outputs, store_layouts)}
        self.nd = len(m.space)
        self.kept = list(m.kept)
        self.red = list(m.axes)
        self.inner = schedule.style == "inner"
        self.reductions = list(m.kernel.reductions)
        self.acc = {r: f"fr_acc{i}" for i, r in enumerate(self.reductions)}
        self.splittable = m.kernel.kind == "reduce" and m.n_stages == 1 and not m.full_stores
        self.full_accesses = [a for a in m.accesses if a.level == "full"]
        self.row_accesses = [a for a in m.accesses if a.level == "row"]
        self.cached = schedule.items > 0
        self.plan = cache_plan(m) if self.cached else None
        self.cached_set = set(self.plan.cached) if self.plan else set()
        self.pass_index = 0  # the cached pass being emitted (``passes`` restarts it per copy)
        # the slot test of the cached passes (None: every slot lies in the row), which loads and
        # accumulations select on, and the test stores are predicated on (None: unguarded)
        self.guard: str | None = None
        self.store_guard: str | None = None
        # lanes of the vectors the cached passes of the copy being emitted load and store (0:
        # single elements; ``cache_lanes``)
        self.lanes = 0
        # full-level takes read their sources at the element's coordinates
        self.gather_full = any(m.level[t] == "full" for t in m.gathers)
        self.take = row_take(m, self.layout, self.top_coords())

    # -- addressing ----------------------------------------------------------------------------
    def red_coords(self) -> list[str]:
        return [f"m{i}" for i in range(len(self.red))]

    def row_coords(self) -> list[str]:
        return [f"k{i}" for i in range(len(self.kept))]

    def needs_red_coords(self, layouts: list[Layout]) -> bool:
        return self.gather_full or any(
            lay.cls[0] in ("x", "v") and lay.cls[2] == "s" for lay in layouts
        )

    def row_part(self, prefix: str, lay: Layout) -> str:
        """The row's part of an element offset. An inactive row (past R, in the last row block)
        addresses row 0, so its loads stay in bounds without testing ``fr_active``; only its
        effects (stores, row results) are guarded."""
        if lay.cls[1] == "1":
            return "(fr_active ? r : 0)"
        if lay.cls[1] == "l":
            return f"(fr_active ? r : 0) * {prefix}_rl"
        return dot(self.row_coords(), [f"{prefix}_rs{i}" for i in range(len(self.kept))])

    def top_coords(self) -> list[str]:
        """Coordinates of the space at (r, j): kept axes from the row, reduced from j."""
        kept, red = iter(self.row_coords()), iter(self.red_coords())
        return [next(red) if d in self.red else next(kept) for d in range(self.nd)]

    def full_offset(self, em: Emitter, prefix: str, lay: Layout, j: str) -> tuple[str, str | None]:
        """(element offset, mask test or None) at reduced index ``j`` of the current row (the
        row part is precomputed)."""
        if lay.cls[2] == "0":  # the same element at every j
            pos = f"{prefix}_r"
        elif lay.cls[2] == "1":
            pos = f"{prefix}_r + {j}"
        elif lay.cls[2] == "l":
            pos = f"{prefix}_r + {j} * {prefix}_jl"
        else:
            red = dot(self.red_coords(), [f"{prefix}_js{i}" for i in range(len(self.red))])
            pos = f"{prefix}_r + {red}"
        if lay.cls[0] == "x":
            return emit_position(em, prefix, pos, lay, self.top_coords(), None)
        return emit_position(
            em, prefix, f"{pos} + {prefix}_off", lay, self.top_coords(), lay.cls[3]
        )

    def row_offset(self, em: Emitter, prefix: str, lay: Layout) -> tuple[str, str | None]:
        """(element offset, mask test or None) of a row-level access at row r."""
        coords: list[str] = []
        if lay.cls[1] == "l":
            pos = f"r * {prefix}_l"
        else:
            rank = lay.cls[2]
            coords = [f"{prefix}_h_{d}" for d in range(rank)]
            emit_unravel(em, "(fr_active ? r : 0)", [f"{prefix}_h{d}" for d in range(rank)], coords)
            pos = dot(coords, [f"{prefix}_hs{d}" for d in range(rank)])
        if lay.cls[0] == "r":
            return emit_position(em, prefix, pos, lay, coords, None)
        return emit_position(em, prefix, f"{pos} + {prefix}_off", lay, coords, lay.cls[-1])

    # -- one element of a pass -----------------------------------------------------------------
    def element(
        self,
        em: Emitter,
        j: str,
        nodes: list[Node],
        accesses: list[Access],
        values: dict[int, str],
        sink,
    ) -> None:
        """Load (or take from ``values``) the accesses at ``j``, evaluate ``nodes``, then
        ``sink(em, j)``."""
        loads = [a for a in accesses if a.index not in values]
        lays = [self.layout[a.index] for a in loads] + self.sink_layouts
        if self.needs_red_coords(lays):
            emit_unravel(em, j, [f"s{d}" for d in self.red], self.red_coords())
        for a in accesses:
            if a.index in values:
                em(f"const {c_type(a.dtype)} {a.name} = {values[a.index]};")
            else:
                off, ok = self.full_offset(em, a.name, self.layout[a.index], j)
                em(f"const {c_type(a.dtype)} {a.name} = {access_value(a, off, ok)};")
        emit_nodes(em, self.m, nodes, lambda s: self.m.refs[s].name, self.take)
        sink(em, j)

    def emit_pass(
        self,
        em: Emitter,
        roots: list[Node],
        sink,
        sink_layouts: list[Layout],
        cached: bool,
        full: bool = False,
        outs: list[Output] = (),
    ) -> None:
        """One pass over the row's reduced range, evaluating the cone of ``roots``: from the
        register cache (``cached``: the row fits it; ``full``: it fills every slot, so that no
        slot is tested; with ``self.lanes``, in vectors), or streaming from memory. ``outs``:
        the outputs ``sink`` stores."""
        self.sink_layouts = sink_layouts
        if not cached:
            nodes, accesses, _ = full_cone(self.m, roots)
            self.streaming(em, nodes, accesses, sink)
            return
        p = self.pass_index
        self.pass_index += 1
        preload = self.preload(p)
        if self.lanes:
            self.vector_pass(em, p, sink, preload, outs)
            return
        if preload:
            # every load of the row is issued before the first use: a warp has its whole row in
            # flight instead of one load per step of the reduction's dependency chain
            # (slots past the row hold zeros: computing on them is harmless and fast)
            em("#pragma unroll")
            with em.block(f"for (int k = 0; k < {self.s.items}; ++k)"):
                em("const fr_idx j = (fr_idx)fr_w + (fr_idx)k * fr_W;")
                # loads test only j (inactive rows address row 0, see row_part): also testing
                # fr_active here cost softmax 20% on the H200 (3167 -> 2551 GB/s)
                if self.needs_red_coords([self.layout[a.index] for a in preload]):
                    emit_unravel(em, "j", [f"s{d}" for d in self.red], self.red_coords())
                for a in preload:
                    off, ok = self.full_offset(em, a.name, self.layout[a.index], "j")
                    value = access_value(a, off, ok)
                    if not full:
                        value = f"k < fr_nk ? {value} : {zero(a.dtype)}"
                    em(f"{a.name}_c[k] = {value};")
        em("#pragma unroll")
        with em.block(f"for (int k = 0; k < {self.s.items}; ++k)"):
            em("const fr_idx j = (fr_idx)fr_w + (fr_idx)k * fr_W;")
            if self.m.gathers:  # a take must not see the values of elements past the row
                with em.block("if (fr_active)" if full else "if (fr_active && k < fr_nk)"):
                    self.cached_element(em, p, sink, preload)
            else:
                # every slot is computed (on zeros past the row) and only the effects are
                # guarded: a branch per element cost a reconvergence point each, and made
                # softmax issue-bound (ncu: 63% SM, 51% DRAM throughput). In a full row only
                # stores are guarded: an inactive row (addressing row 0) may accumulate.
                if full:
                    self.guard, self.store_guard = None, "fr_active"
                else:  # (testing k alone for the accumulations made ptxas spill in softmax)
                    em("const bool fr_in = fr_active && k < fr_nk;")
                    self.guard = self.store_guard = "fr_in"
                self.cached_element(em, p, sink, preload)
                self.guard = self.store_guard = None

    def cache_lanes(self) -> int:
        """Lanes of the vectors a full row's cached passes may move (0: none). Every full-level
        access and store must be in memory, contiguous along the row and unmasked, and the
        passes must not take; the lanes make the widest item 16 bytes, and must divide the
        slots. The kernel still tests each row's start for alignment (``vector_rows``)."""
        m = self.m
        if not self.cached or not self.inner or m.gathers or self.gather_full:
            return 0
        items = [(a, self.layout[a.index]) for a in self.full_accesses]
        items += [(o, self.store_layout[o.index]) for o in m.full_stores]
        if not items or any(getattr(x, "scalar", None) is not None for x, _ in items):
            return 0
        if not all(_along_row(lay) for _, lay in items):
            return 0
        lanes = min(8, 16 // max(x.dtype.itemsize for x, _ in items))
        return lanes if lanes > 1 and self.s.items % lanes == 0 else 0

    def vector_rows(self, lanes: int) -> str:
        """The test that the current row starts on a whole vector in every array it reads or
        writes at full level."""
        names = [a.name for a in self.full_accesses] + [o.name for o in self.m.full_stores]
        return _aligned(names, lanes, "")

    def vector_pass(self, em: Emitter, p: int, sink, preload: list[Access], outs) -> None:
        """Pass ``p`` of a full row in vectors: slot ``k = g * lanes + i`` of thread ``fr_w``
        holds element ``j = (fr_w + g * fr_W) * lanes + i``, so that a warp's ``g``-th vectors
        are contiguous. Preloads fill the cache vector by vector first (G3); then each group
        of slots loads its other accesses as vectors, computes its lanes and stores vectors."""
        m, v, groups = self.m, self.lanes, self.s.items // self.lanes
        vec = "const fr_idx fr_v = (fr_idx)fr_w + (fr_idx)g * fr_W;"
        if preload:
            em("#pragma unroll")
            with em.block(f"for (int g = 0; g < {groups}; ++g)"):
                em(vec)
                for a in preload:
                    t = c_type(a.dtype)
                    em(f"const fr_vec<{t}, {v}> {a.name}_w = "
                       f"fr_load_vec<{v}>({a.name}_p + {a.name}_r, fr_v);")
                    em("#pragma unroll")
                    em(f"for (int i = 0; i < {v}; ++i) {a.name}_c[g * {v} + i] = {a.name}_w.v[i];")
        nodes, accesses, reused = self.plan.cones[p]
        loads = [a for a in accesses if a not in preload]
        em("#pragma unroll")
        with em.block(f"for (int g = 0; g < {groups}; ++g)"):
            em(vec)
            for a in loads:
                em(f"const fr_vec<{c_type(a.dtype)}, {v}> {a.name}_w = "
                   f"fr_load_vec<{v}>({a.name}_p + {a.name}_r, fr_v);")
            for o in outs:
                em(f"fr_vec<{c_type(o.dtype)}, {v}> {o.name}_w;")
            em("#pragma unroll")
            with em.block(f"for (int i = 0; i < {v}; ++i)"):
                em(f"const int k = g * {v} + i;")
                em(f"const fr_idx j = fr_v * {v} + i;")
                for n in reused:
                    em(f"const {c_type(n.dtype)} {m.refs[n].name} = {m.refs[n].name}_c[k];")
                for a in preload:
                    em(f"const {c_type(a.dtype)} {a.name} = {a.name}_c[k];")
                for a in loads:
                    em(f"const {c_type(a.dtype)} {a.name} = {a.name}_w.v[i];")
                emit_nodes(em, m, nodes, lambda s: m.refs[s].name, self.take)
                sink(em, "j")
            for o in outs:
                em(f"if (fr_active) fr_store_vec<{v}>({o.name}_p + {o.name}_r, fr_v, {o.name}_w);")

    def preload(self, p: int) -> list[Access]:
        """The accesses pass ``p`` loads into the cache (for later passes)."""
        return [a for a in self.plan.cones[p][1] if a.head in self.cached_set]

    def cached_element(self, em: Emitter, p: int, sink, preloaded: list[Access]) -> None:
        """Element j of pass ``p`` in cached mode: earlier passes' values and this pass's
        ``preloaded`` accesses from registers (the preload loop filled the cache), other loads
        and nodes computed."""
        m = self.m
        nodes, accesses, reused = self.plan.cones[p]
        loads = [a for a in accesses if a not in preloaded]
        lays = [self.layout[a.index] for a in loads] + self.sink_layouts
        if self.needs_red_coords(lays):
            emit_unravel(em, "j", [f"s{d}" for d in self.red], self.red_coords())
        for n in reused:
            em(f"const {c_type(n.dtype)} {m.refs[n].name} = {m.refs[n].name}_c[k];")
        for a in preloaded:
            em(f"const {c_type(a.dtype)} {a.name} = {a.name}_c[k];")
        for a in loads:
            off, ok = self.full_offset(em, a.name, self.layout[a.index], "j")
            value = access_value(a, off, ok)
            if self.guard:
                value = f"{self.guard} ? {value} : {zero(a.dtype)}"
            em(f"const {c_type(a.dtype)} {a.name} = {value};")
        emit_nodes(em, m, nodes, lambda s: m.refs[s].name, self.take)
        sink(em, "j")

    def stream_vector(self, nodes, accesses) -> int:
        """Lanes of the 16-byte loads a streaming pass may use (0: none). Every access must be
        in memory, contiguous along the reduced range (offset ``a_r + j``) and of one item size,
        and the pass must only accumulate (stores and takes keep scalar loops)."""
        if not accesses or self.sink_layouts or self.m.gathers or not self.inner or self.guard:
            return 0
        sizes = {a.dtype.itemsize for a in accesses}
        if len(sizes) != 1 or any(a.scalar is not None for a in accesses):
            return 0
        if not all(_along_row(self.layout[a.index]) for a in accesses):
            return 0
        lanes = 16 // sizes.pop()
        return lanes if lanes > 1 else 0

    def streaming(self, em: Emitter, nodes, accesses, sink) -> None:
        """The pass over [fr_j0, fr_j1) straight from memory, ``unroll`` loads in flight: of
        16-byte vectors over the longest aligned span when every access allows it
        (``stream_vector``; NOTES.md G21), then of single elements."""
        u = self.s.unroll
        with em.block("if (fr_active)"):
            em("fr_idx fr_j = fr_j0 + fr_w;")
            lanes = self.stream_vector(nodes, accesses)
            if lanes:
                # the row's start must be a whole vector in every array (pointer and row offset);
                # then vectors cover [fr_j0, fr_jv) in spans of unroll x lanes x fr_W elements and
                # the scalar loops below take [fr_jv, fr_j1)
                aligned = _aligned([a.name for a in accesses], lanes, " + fr_j0")
                with em.block(f"if ({aligned})"):
                    em(f"const fr_idx fr_span = (fr_idx){u * lanes} * fr_W;")
                    em("const fr_idx fr_jv = fr_j0 + (fr_j1 - fr_j0) / fr_span * fr_span;")
                    loop = (
                        f"for (fr_idx fr_b = fr_j0 + (fr_idx){lanes} * fr_w; fr_b < fr_jv;"
                        " fr_b += fr_span)"
                    )
                    with em.block(loop):
                        for a in accesses:
                            em(f"fr_vec<{c_type(a.dtype)}, {lanes}> {a.name}_v[{u}];")
                        em("#pragma unroll")
                        with em.block(f"for (int u = 0; u < {u}; ++u)"):
                            em(f"const fr_idx fr_v = fr_b + (fr_idx)u * {lanes} * fr_W;")
                            for a in accesses:
                                em(f"{a.name}_v[u] = fr_load_vec<{lanes}>({a.name}_p + {a.name}_r"
                                   " + fr_v, 0);")
                        em("#pragma unroll")
                        with em.block(f"for (int u = 0; u < {u}; ++u)"):
                            em("#pragma unroll")
                            with em.block(f"for (int fr_k = 0; fr_k < {lanes}; ++fr_k)"):
                                em(f"const fr_idx j = fr_b + (fr_idx)u * {lanes} * fr_W + fr_k;")
                                values = {a.index: f"{a.name}_v[u].v[fr_k]" for a in accesses}
                                self.element(em, "j", nodes, accesses, values, sink)
                    em("fr_j = fr_jv + fr_w;")
            if accesses and u > 1:
                with em.block(
                    f"for (; fr_j + (fr_idx)({u - 1}) * fr_W < fr_j1; fr_j += (fr_idx){u} * fr_W)"
                ):
                    for a in accesses:
                        em(f"{c_type(a.dtype)} {a.name}_u[{u}];")
                    em("#pragma unroll")
                    with em.block(f"for (int u = 0; u < {u}; ++u)"):
                        em("const fr_idx j = fr_j + (fr_idx)u * fr_W;")
                        lays = [self.layout[a.index] for a in accesses]
                        if self.needs_red_coords(lays):
                            emit_unravel(em, "j", [f"s{d}" for d in self.red], self.red_coords())
                        for a in accesses:
                            off, ok = self.full_offset(em, a.name, self.layout[a.index], "j")
                            em(f"{a.name}_u[u] = {access_value(a, off, ok)};")
                    em("#pragma unroll")
                    with em.block(f"for (int u = 0; u < {u}; ++u)"):
                        em("const fr_idx j = fr_j + (fr_idx)u * fr_W;")
                        values = {a.index: f"{a.name}_u[u]" for a in accesses}
                        self.element(em, "j", nodes, accesses, values, sink)
            with em.block("for (; fr_j < fr_j1; fr_j += fr_W)"):
                em("const fr_idx j = fr_j;")
                self.element(em, "j", nodes, accesses, {}, sink)

    # -- the kernel ------------------------------------------------------------------------------
    def params(self) -> list[Param]:
        m, ik = self.m, idx_kind(self.s)
        params = pointer_params(m)
        if self.splittable:
            params.append(Param("void* __restrict__ fr_ws", "ptr", ("ws",)))
            params.append(Param("unsigned int* __restrict__ fr_counters", "ptr", ("counters",)))
        for what in ("R", "L", "chunk", "nrb"):
            params.append(Param(f"const fr_idx {what}", ik, ("size", what)))
        params += [Param(f"const fr_idx s{d}", ik, ("space", d)) for d in range(self.nd)]
        for prefix, tag, items in (("a", "a", m.accesses), ("o", "o", m.outputs)):
            for item in items:
                lay = self.layout[item.index] if tag == "a" else self.store_layout[item.index]
                names = layout_param_names(
                    f"{prefix}{item.index}",
                    lay.cls,
                    self.nd,
                    len(self.kept),
                    len(self.red),
                    lay.masks,
                )
                params += [
                    Param(f"const fr_idx {nm}", ik, ("ints", tag, item.index, i))
                    for i, nm in enumerate(names)
                ]
        return params + scalar_params(m)

    def body(self) -> str:
        em = Emitter()
        em.depth = 1
        if self.splittable:
            em("__shared__ int fr_last;")
        if self.inner:
            em("const int fr_W = blockDim.x, fr_w = threadIdx.x;")
            em("const int fr_rpb = blockDim.y, fr_ry = threadIdx.y;")
        else:
            em("const int fr_W = blockDim.y, fr_w = threadIdx.y;")
            em("const int fr_rpb = blockDim.x, fr_ry = threadIdx.x;")
        em("const fr_idx fr_j0 = (fr_idx)blockIdx.y * chunk;")
        em("const fr_idx fr_j1 = fr_j0 + chunk < L ? fr_j0 + chunk : L;")
        if self.cached:
            em(f"const bool fr_cached = L <= (fr_idx)fr_W * {self.s.items};")
            # the cache slots k of this thread that lie in the row (j = fr_w + k * fr_W < L): a
            # test of k against one number, where testing j costs its computation in every slot
            em("const int fr_nk = fr_w < L ? (int)((L - 1 - fr_w) / fr_W) + 1 : 0;")
            em(f"const bool fr_full = L == (fr_idx)fr_W * {self.s.items};")
        with em.block("for (fr_idx fr_rb = blockIdx.x; fr_rb < nrb; fr_rb += gridDim.x)"):
            em("const fr_idx r = fr_rb * fr_rpb + fr_ry;")
            em("const bool fr_active = r < R;")
            self.row_start(em)
            if self.cached:
                # One branch around all of a row's passes rather than one per pass, and rows
                # that fill every slot of the cache (a 1024-long row over 32 threads of 32 slots)
                # get a copy without slot tests: on an H100 softmax 2743 -> 2856 GB/s, layernorm
                # 2465 -> ~2690 (benchmarks/NOTES.md G10).
                # Where every full-level array allows it, full rows that start aligned move
                # 16-byte vectors instead (NOTES.md G22), and other full rows take the copy
                # with slot tests: three copies of the passes, not four.
                lanes = self.cache_lanes()
                full_test = f"fr_full && {self.vector_rows(lanes)}" if lanes else "fr_full"
                em.if_else(
                    "fr_cached",
                    lambda: em.if_else(
                        full_test,
                        lambda: self.cached_passes(em, full=True, lanes=lanes),
                        lambda: self.cached_passes(em, full=False),
                    ),
                    lambda: self.passes(em, cached=False),
                )
            else:
                self.passes(em, cached=False)
        return em.text()

    def cached_passes(self, em: Emitter, full: bool, lanes: int = 0) -> None:
        """The row's register cache, then its passes over it (in vectors of ``lanes``)."""
        for n in self.plan.cached:
            em(f"{c_type(n.dtype)} {self.m.refs[n].name}_c[{self.s.items}];")
        self.lanes = lanes
        try:
            self.passes(em, cached=True, full=full)
        finally:
            self.lanes = 0

    def passes(self, em: Emitter, cached: bool, full: bool = False) -> None:
        """A row's passes: each stage's reductions with their row-level epilogues, then (row
        kernels) the full-level stores, and the row-level stores."""
        m = self.m
        self.pass_index = 0
        for s in range(m.n_stages):
            reds = [r for r in self.reductions if m.stage[r] == s]
            for r in reds:
                op = op_struct(r)
                em(f"{op}::acc {self.acc[r]} = {op}::identity();")
            sink = self.combine_sink(reds)
            self.emit_pass(em, [r.src[0] for r in reds], sink, [], cached, full)
            group = "fr_group_inner" if self.inner else "fr_group_outer"
            for r in reds:
                op = op_struct(r)
                em(f"{self.acc[r]} = {group}<{op}>({self.acc[r]}, ({op}::acc*)fr_smem);")
            if self.splittable:
                self.split_combine(em, reds, group)
            for r in reds:
                final = f"{op_struct(r)}::final({self.acc[r]}, L)"
                em(f"const {c_type(r.dtype)} {m.temp(r)} = {final};")
            self.row_nodes(em, s + 1)
        if m.full_stores:
            outs = m.full_stores
            lays = [self.store_layout[o.index] for o in outs]
            self.emit_pass(em, [o.store.value for o in outs], self.store_sink(outs), lays, cached,
                           full, outs)
        if m.row_stores:
            with em.block("if (fr_active && fr_w == 0)"):
                for o in m.row_stores:
                    em(f"{o.name}_p[r] = {m.refs[o.store.value].name};")

    def row_start(self, em: Emitter) -> None:
        m = self.m
        lays = [self.layout[a.index] for a in self.full_accesses]
        lays += [self.store_layout[o.index] for o in m.full_stores]
        if self.gather_full or any(lay.cls[1] == "s" for lay in lays):
            emit_unravel(em, "(fr_active ? r : 0)", [f"s{d}" for d in self.kept], self.row_coords())
        for a in self.full_accesses:
            em(f"const fr_idx {a.name}_r = {self.row_part(a.name, self.layout[a.index])};")
        for o in m.full_stores:
            em(f"const fr_idx {o.name}_r = {self.row_part(o.name, self.store_layout[o.index])};")
        for a in self.row_accesses:
            off, ok = self.row_offset(em, a.name, self.layout[a.index])
            t = c_type(a.dtype)
            em(f"const {t} {a.name} = fr_active ? {access_value(a, off, ok)} : {zero(a.dtype)};")
        self.row_nodes(em, 0)

    def row_nodes(self, em: Emitter, stage: int) -> None:
        m = self.m
        nodes = [
            n
            for n in m.computed
            if m.level[n] == "row" and n not in self.acc and m.row_stage.get(n, 0) == stage
        ]
        emit_nodes(em, m, nodes, lambda s: m.refs[s].name, self.take)

    def combine_sink(self, reds: list[Node]):
        def sink(em: Emitter, j: str) -> None:
            for r in reds:
                op = op_struct(r)
                value = self.m.refs[r.src[0]].name
                update = f"{op}::combine({self.acc[r]}, {op}::lift({value}, {j}))"
                if self.guard:  # a select, not a branch: the accumulator skips guarded slots
                    update = f"{self.guard} ? {update} : {self.acc[r]}"
                em(f"{self.acc[r]} = {update};")

        return sink

    def store_sink(self, outs: list[Output]):
        def sink(em: Emitter, j: str) -> None:
            for o in outs:
                if self.lanes:  # the vector pass stores the vector
                    em(f"{o.name}_w.v[i] = {self.m.refs[o.store.value].name};")
                    continue
                off, _ = self.full_offset(em, o.name, self.store_layout[o.index], j)
                store = f"{o.name}_p[{off}] = {self.m.refs[o.store.value].name};"
                em(f"if ({self.store_guard}) {store}" if self.store_guard else store)

        return sink

    def split_combine(self, em: Emitter, reds: list[Node], group: str) -> None:
        """Partial accumulators to the workspace; the last block of the row block combines."""
        with em.block("if (gridDim.y > 1)"):
            em("unsigned char* fr_wsb = (unsigned char*)fr_ws;")
            for i, r in enumerate(reds):
                op = op_struct(r)
                em(f"{op}::acc* fr_ws{i} = ({op}::acc*)fr_wsb;")
                em(
                    f"fr_wsb += ((size_t)gridDim.y * (size_t)R * sizeof({op}::acc) + 15) & "
                    "~(size_t)15;"
                )
            # the writers' partials, then the block's arrival (fr_arrive: it releases them and,
            # for the last block, acquires everyone's; the barriers carry both across the block)
            with em.block("if (fr_active && fr_w == 0)"):
                for i, r in enumerate(reds):
                    em(f"fr_ws{i}[(long long)blockIdx.y * R + r] = {self.acc[r]};")
            em("__syncthreads();")
            with em.block("if (threadIdx.x == 0 && threadIdx.y == 0)"):
                em("fr_last = fr_arrive(&fr_counters[fr_rb]) == gridDim.y - 1u;")
            em("__syncthreads();")
            em("if (!fr_last) continue;")
            for r in reds:
                op = op_struct(r)
                em(f"{self.acc[r]} = {op}::identity();")
            with em.block("if (fr_active)"):
                with em.block("for (long long q = fr_w; q < (long long)gridDim.y; q += fr_W)"):
                    for i, r in enumerate(reds):
                        op = op_struct(r)
                        em(
                            f"{self.acc[r]} = {op}::combine({self.acc[r]}, "
                            f"fr_ldcg(&fr_ws{i}[q * R + r]));"
                        )
            for r in reds:
                op = op_struct(r)
                em(f"{self.acc[r]} = {group}<{op}>({self.acc[r]}, ({op}::acc*)fr_smem);")
            with em.block("if (threadIdx.x == 0 && threadIdx.y == 0)"):
                em("fr_counters[fr_rb] = 0u;  // ready for this stream's next split reduction")


def generate_reduce(
    m: KernelModel, schedule: Schedule, layouts: list[Layout], store_layouts: list[Layout]
) -> Generated:
    g = _Gen(m, schedule, layouts, store_layouts)
    params = g.params()
    source = _REDUCE.substitute(
        header="\n".join(header(m, schedule)),
        block=launch_bounds(schedule),
        name=m.kernel.name,
        params=",\n    ".join(p.decl for p in params),
        body=g.body(),
    )
    sizes = tuple(acc_bytes(r) for r in m.kernel.reductions)
    return Generated(
        m.kernel.name, source, tuple(params), schedule, max(sizes, default=0), sizes, g.splittable
    )

"""CUDA C for reads and writes at computed positions: ``take`` inside any kernel, and scatter
kernels.

Stage: backend (CUDA), a part of the code generator (``codegen.py`` and ``codegen_reduce.py``
call in here for takes; ``codegen.generate_flat`` hands scatter kernels over).

A take is one more node of the kernel body: its index (already evaluated at the take's point,
see ``model_index.py``) is checked against the source's first extent, wrapped when negative, and
the source is read at (index, trailing coordinates of the take's point) through its views. An
index outside ``-n <= i < n`` reads nothing (the value is 0) and is recorded in the device's bounds
record (``fr_index_ok`` in ``fuseray_index.cuh``), which the host turns into NumPy's IndexError at
the next synchronisation.

A scatter kernel (``out = old; out[i[j], r...] = v[j, r...]``, the last j writing a position
wins, as in NumPy) is one function launched twice on the same stream (``fr_phase``):

0. every thread copies ``old`` into ``out`` and, for each value j, claims its position p with
   ``atomicMax(&winner[p], j + 1)`` (the winner array is zeroed scratch, one slot per position of
   axis 0; bad indices are recorded, once, here);
1. for each (j, r...), only the winner of the position writes: ``winner[p] == j + 1``.

The kernel boundary orders the passes, so the result never depends on timing.
"""

from __future__ import annotations

import dataclasses
import string

from ...graph import Node
from ...schedule import Schedule
from .codegen import (
    Emitter,
    Generated,
    Param,
    access_value,
    c_type,
    dot,
    emit_position,
    emit_unravel,
    flat_offset,
    header,
    idx_kind,
    layout_param_names,
    pointer_params,
    scalar_params,
)
from .model import KernelModel, Layout, Ref


def emit_take(
    em: Emitter,
    m: KernelModel,
    node: Node,
    lay: Layout,
    trailing: list[str],
    active: str | None = None,
) -> None:
    """``const T tK = source[index, trailing...]`` for take ``node``, 0 for a bad index (which is
    recorded unless ``active``, a condition, says the thread has no element here)."""
    g = m.gathers[node]
    a, t = g.access, m.temp(node)
    n0 = f"(long long){a.name}_n0"
    em(f"const long long {t}_i = (long long)({m.refs[g.index].name});")
    check = f"fr_index_ok({t}_i, {n0}, fr_err)"
    em(f"const bool {t}_in = {f'{active} && ' if active else ''}{check};")
    em(f"const fr_idx {t}_k = {t}_in ? (fr_idx)fr_wrap_index({t}_i, {n0}) : (fr_idx)0;")
    coords = [f"{t}_k", *trailing]
    position = dot(coords, [f"{a.name}_s{d}" for d in range(len(coords))])
    if lay.cls[0] == "g":
        off, ok = emit_position(em, a.name, position, lay, coords, None)
    else:
        off, ok = emit_position(em, a.name, f"{position} + {a.name}_off", lay, coords, lay.cls[2])
    ok = f"{t}_in" if ok is None else f"{t}_in && {ok}"
    em(f"const {c_type(node.dtype)} {t} = {access_value(a, off, ok)};")


def row_take(m: KernelModel, layouts: dict[int, Layout], full_coords: list[str]):
    """The take emitter of a reduce/row kernel: a full-level take has the space's shape, so its
    trailing coordinates are the last of ``full_coords`` (the element's); a row-level take
    unravels its row over its own shape, whose trailing extents are its source's."""

    def take(em: Emitter, node: Node) -> None:
        a = m.gathers[node].access
        lay = layouts[a.index]
        rank = a.head.ndim
        if m.level[node] == "full":
            emit_take(em, m, node, lay, full_coords[len(full_coords) - rank + 1 :])
            return
        t = m.temp(node)
        names = [f"{t}_q", *(f"{t}_c{d}" for d in range(1, rank))]
        if rank > 1:
            extents = [f"{a.name}_n{d}" for d in range(rank)]
            emit_unravel(em, "(fr_active ? r : 0)", extents, names)
        emit_take(em, m, node, lay, names[1:], "fr_active")

    return take


# ---------------------------------------------------------------------------------------------
# scatter kernels
# ---------------------------------------------------------------------------------------------

_SCATTER = string.Template("""\
${header}
// A position's winner: 1 + the last value index j writing it (0: none). Zeroed by the launcher.
typedef ${win} fr_win;

extern "C" __global__ void __launch_bounds__(${block}) ${name}(
    ${params}) {
  FR_WAIT_FOR_PRIOR_GRID();
  const fr_idx fr_tid = (fr_idx)blockIdx.x * blockDim.x + threadIdx.x;
  const fr_idx fr_step = (fr_idx)gridDim.x * blockDim.x;
  if (fr_phase == 0) {
    // the copy of the old array, and each position's last writer
    const fr_idx fr_end = n > count ? n : count;
    for (fr_idx i = fr_tid; i < fr_end; i += fr_step) {
      if (i < n) {
${copy}
      }
      if (i < count) {
${claim}
      }
    }
  } else {
    // each position's winner writes its values
    const fr_idx fr_end = count * R;
    for (fr_idx i = fr_tid; i < fr_end; i += fr_step) {
${write}
    }
  }
}
""")


class _Scatter:
    """The three operands of a scatter kernel, each read at a flat index of its own shape."""

    def __init__(self, m: KernelModel, layouts: list[Layout]):
        self.m = m
        self.layouts = layouts
        self.nd = len(m.space)
        old, index, values = m.scatter.src
        self.old, self.index, self.values = (m.refs[s] for s in (old, index, values))

    def operand(self, em: Emitter, ref: Ref, var: str, ctype: str, flat: str, coords) -> None:
        """``ctype var`` = the operand at ``flat`` (coordinates ``coords``), its addressing
        scoped so that two reads of one access never clash."""
        if ref.kind != "access":
            em(f"const {ctype} {var} = ({ctype})({ref.name});")
            return
        a = self.m.accesses[int(ref.name[1:])]
        em(f"{ctype} {var};")
        with em.block(""):
            off, ok = flat_offset(em, a.name, self.layouts[a.index], coords, flat)
            em(f"{var} = ({ctype})({access_value(a, off, ok)});")

    def coords_needed(self, ref: Ref) -> bool:
        if ref.kind != "access":
            return False
        return self.layouts[int(ref.name[1:])].cls[0] not in ("c", "u")

    def copy(self) -> str:
        em, nd = Emitter(), self.nd
        em.depth = 4
        coords = [f"x{d}" for d in range(nd)]
        if self.coords_needed(self.old):
            emit_unravel(em, "i", [f"s{d}" for d in range(nd)], coords)
        t = c_type(self.m.scatter.dtype)
        self.operand(em, self.old, "fr_old", t, "i", coords)
        em("o0_p[i] = fr_old;")
        return em.text()

    def claim(self) -> str:
        em = Emitter()
        em.depth = 4
        self.operand(em, self.index, "fr_ix", "long long", "i", ["i"])
        with em.block("if (fr_index_ok(fr_ix, (long long)s0, fr_err))"):
            em("atomicMax(&fr_win_p[fr_wrap_index(fr_ix, (long long)s0)], (fr_win)(i + 1));")
        return em.text()

    def write(self) -> str:
        em, nd = Emitter(), self.nd
        em.depth = 3
        em("const fr_idx fr_j = i / R;")
        em("const fr_idx fr_r = i - fr_j * R;")
        self.operand(em, self.index, "fr_ix", "long long", "fr_j", ["fr_j"])
        # bad indices were recorded by the claim pass
        with em.block("if (fr_ix >= -(long long)s0 && fr_ix < (long long)s0)"):
            em("const fr_idx fr_k = (fr_idx)fr_wrap_index(fr_ix, (long long)s0);")
            with em.block("if (fr_win_p[fr_k] == (fr_win)(fr_j + 1))"):
                coords = ["fr_j", *(f"y{d}" for d in range(1, nd))]
                if self.coords_needed(self.values) and nd > 1:
                    emit_unravel(em, "fr_r", [f"s{d}" for d in range(1, nd)], coords[1:])
                t = c_type(self.m.scatter.dtype)
                self.operand(em, self.values, "fr_v", t, "i", coords)
                em("o0_p[fr_k * R + fr_r] = fr_v;")
        return em.text()

    def params(self, schedule: Schedule) -> list[Param]:
        m, ik = self.m, idx_kind(schedule)
        params = pointer_params(m)
        params.append(Param("fr_win* __restrict__ fr_win_p", "ptr", ("winners",)))
        params.append(Param("const int fr_phase", "int32", ("phase",)))
        params += [Param(f"const fr_idx {w}", ik, ("size", w)) for w in ("n", "count", "R")]
        params += [Param(f"const fr_idx s{d}", ik, ("space", d)) for d in range(self.nd)]
        for a, lay in zip(m.accesses, self.layouts):
            names = layout_param_names(a.name, lay.cls, a.head.ndim, 0, 0, lay.masks)
            params += [
                Param(f"const fr_idx {nm}", ik, ("ints", "a", a.index, i))
                for i, nm in enumerate(names)
            ]
        return params + scalar_params(m)


def winner_bytes(schedule: Schedule) -> int:
    """Bytes per slot of a scatter's winner array (``fr_win``)."""
    return 4 if schedule.index_bits == 32 else 8


def generate_scatter(m: KernelModel, schedule: Schedule, layouts: list[Layout]) -> Generated:
    # scalar loops only: positions are computed, so there is no contiguous vector path
    schedule = dataclasses.replace(schedule, vec=1, unroll=1)
    s = _Scatter(m, layouts)
    params = s.params(schedule)
    source = _SCATTER.substitute(
        header="\n".join(header(m, schedule)),
        win="unsigned int" if winner_bytes(schedule) == 4 else "unsigned long long",
        block=schedule.max_threads,
        name=m.kernel.name,
        params=",\n    ".join(p.decl for p in params),
        copy=s.copy(),
        claim=s.claim(),
        write=s.write(),
    )
    return Generated(m.kernel.name, source, tuple(params), schedule)

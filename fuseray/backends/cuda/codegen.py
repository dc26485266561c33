"""CUDA C for one fused kernel: ``KernelModel`` + ``Schedule`` + layouts -> source text.

Stage: backend (CUDA), after ``model.py``, before NVRTC. The fixed parts of every kernel are
``string.Template`` skeletons; the bodies come from a small line emitter. Output is deterministic:
temporaries ``t0, t1, ...`` follow the plan's node order, accesses are ``a0, a1, ...``, outputs
``o0, ...``, constants ``c0, ...`` and jit parameters ``p0, ...``; the kernel keeps the plan's name
(``fr_<kind>_<digest8>``); a comment at the top shows the fused subgraph.

Shape polymorphism: sizes, strides, offsets and constant values are kernel arguments. The source
depends only on dtypes, ranks, each access's addressing class (``model.Layout.cls``), view-stack
depth, the schedule (32/64-bit indexing among it) and the structure of the subgraph. A new array
size therefore finds the kernel already compiled.

Elementwise kernels are generated here (``reduce``/``row`` kernels in ``codegen_reduce.py``,
the take and scatter parts in ``codegen_index.py``): a grid-stride loop; when every access is
contiguous or uniform, a 16-byte vector path guarded by a run-time alignment test, with the scalar
loop finishing the tail; strided, broadcast, reversed and transposed reads in place, unravelling
the flat index once per element for all of them. A kernel with takes has no vector path: it reads
at computed positions, from the element's coordinates.
"""

from __future__ import annotations

import contextlib
import string
from dataclasses import dataclass

import numpy as np

from ... import dtypes
from ...graph import Node
from ...ops import Dtype
from ...schedule import Schedule
from .model import CodegenError, KernelModel, Layout
from .ranges import value_range

# infix templates whose integer forms must wrap (C++ signed overflow is undefined behaviour)
_WRAPPING = frozenset({"add", "subtract", "multiply", "negative", "square"})
# logical ops act on truth values: their infix templates (``!=`` for xor) assume bool operands
_LOGICAL = frozenset({"logical_and", "logical_or", "logical_xor", "logical_not"})


def c_type(dtype) -> str:
    return dtypes.c_name(np.dtype(dtype))


@dataclass(frozen=True)
class Param:
    """One kernel parameter: C declaration, driver packing kind, and where its value comes from.

    ``source`` is read by the launcher: ("in", k) / ("out", k) pointers, ("ws",) / ("counters",)
    split-reduction scratch, ("errors",) the device's bounds record (kernels with takes or
    scatters), ("winners",) / ("phase",) a scatter's scratch and pass, ("size", what) kernel-wide
    integers, ("space", d), ("ints", "a" | "o",
    k, i) the i-th layout number of access or output k, ("const", k), ("param", k).
    """

    decl: str
    kind: str
    source: tuple


@dataclass(frozen=True)
class Generated:
    name: str
    source: str
    params: tuple[Param, ...]
    schedule: Schedule
    acc_bytes: int = 0  # largest reduction accumulator (shared-memory sizing)
    ws_acc_bytes: tuple[int, ...] = ()  # per reduction, for the split workspace
    splittable: bool = False


class Emitter:
    """Lines of C with managed indentation."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, line: str = "") -> None:
        self.lines.append("  " * self.depth + line if line else "")

    @contextlib.contextmanager
    def block(self, head: str):
        self(f"{head} {{" if head else "{")
        self.depth += 1
        yield
        self.depth -= 1
        self("}")

    def if_else(self, cond: str, then, otherwise) -> None:
        """``if (cond) { then() } else { otherwise() }``: each branch emits its own lines."""
        for head, branch in ((f"if ({cond}) {{", then), ("} else {", otherwise)):
            self(head)
            self.depth += 1
            branch()
            self.depth -= 1
        self("}")

    @contextlib.contextmanager
    def unless_quick(self):
        """Lines emitted inside are left out of the quick tier's build (``tiers.py`` compiles it
        with ``-DFR_QUICK=1``). Only for a fast path whose general path computes the same bits
        for every element (an elementwise kernel's vector loop; not a reduction's, which sums
        in another order): the quick build runs for a fraction of a second, and NVRTC's time
        grows with every copy of the body (NOTES.md G25)."""
        self.lines.append("#if !FR_QUICK")
        yield
        self.lines.append("#endif")

    def text(self) -> str:
        return "\n".join(self.lines)


# ---------------------------------------------------------------------------------------------
# expressions
# ---------------------------------------------------------------------------------------------


# fr_sin_small's domain (kernels/fuseray_math.cuh): a polynomial checked on every float there
SIN_SMALL = 1.25


def op_expr(node: Node, args: list[str]) -> str:
    """The C expression of elementwise ``node`` over operand expressions ``args``.

    The op table's template is used as written, with three rules that keep NumPy's meaning:
    integer ``+ - *`` (and negation, squaring) run on the unsigned ``fr_u`` view and are cast back,
    so they wrap; logical ops get truth values; an infix template whose two operands have different
    C types (NumPy's mixed int64/uint64 comparison loops) uses the exact ``fr_<name>`` helper.
    ``cast`` converts with ``fr_cast``; ``round`` passes its decimals.
    """
    row = node.row
    ctype = c_type(node.dtype)
    if node.op == "cast":
        return f"fr_cast<{ctype}>({args[0]})"
    if node.op in _LOGICAL:
        args = [
            a if s.dtype == dtypes.BOOL else f"fr_cast<bool>({a})" for a, s in zip(args, node.src)
        ]
    template = row.template("cuda")
    infix = not template.startswith("fr_")
    if (
        infix
        and row.dtype_rule is Dtype.UFUNC
        and row.arity == 2
        and node.src[0].dtype != node.src[1].dtype
    ):
        template = f"fr_{node.op}({{0}}, {{1}})"
        infix = False
    if node.op == "round":
        return f"fr_round({args[0]}, {int(node.arg)})"
    if node.dtype == np.float32 and node.op in ("sqrt", "sin"):
        lo, hi = value_range(node.src[0])
        # an operand proven >= 2^-100 (abs(y) + 0.5) needs none of sqrt's special cases but +inf
        if node.op == "sqrt" and lo >= 2.0**-100:
            return f"fr_sqrt_normal({args[0]})"
        # one small enough for sin's polynomial needs no argument reduction
        if node.op == "sin" and -SIN_SMALL <= lo and hi <= SIN_SMALL:
            return f"fr_sin_small({args[0]})"
    if node.arg is not None:
        raise CodegenError(f"elementwise op {node.op} with an argument has no CUDA form")
    if infix and node.op in _WRAPPING and dtypes.is_integer(node.dtype):
        wrapped = template.format(*(f"fr_u({a})" for a in args))
        return f"({ctype})({wrapped})"
    return template.format(*args)


def emit_nodes(em: Emitter, m: KernelModel, nodes: list[Node], name_of, take=None) -> None:
    """``const T tK = ...;`` for each node, operands named by ``name_of(src_node)``; a take is
    emitted by ``take(em, node)`` (it reads memory: the caller knows the coordinates)."""
    for n in nodes:
        if n in m.gathers:
            take(em, n)
            continue
        args = [name_of(s) for s in n.src]
        em(f"const {c_type(n.dtype)} {m.temp(n)} = {op_expr(n, args)};")


def layout_param_names(
    prefix: str, cls: tuple, nd: int, nkept: int, nred: int, masks: tuple[tuple[int, int], ...] = ()
) -> list[str]:
    """Names of a layout's numbers, in the order ``model.*_layout`` produces them."""
    names: list[str] = []

    def stack(ranks) -> None:
        for j, rank in enumerate(ranks):
            names.extend(f"{prefix}_v{j}n{d}" for d in range(rank))
            names.extend(f"{prefix}_v{j}s{d}" for d in range(rank))
            if j < len(ranks) - 1:
                names.append(f"{prefix}_v{j}o")

    tag = cls[0]
    if tag in ("c", "u", "row"):
        pass
    elif tag in ("g", "gv"):  # a take's source: its own rank, not the space's
        names.extend(f"{prefix}_n{d}" for d in range(cls[1]))
        names.extend(f"{prefix}_s{d}" for d in range(cls[1]))
        if tag == "gv":
            names.append(f"{prefix}_off")
            stack(cls[2])
    elif tag == "s":
        names.extend(f"{prefix}_s{d}" for d in range(nd))
    elif tag == "v":
        if len(cls) == 2:  # flat stack: top strides, top offset
            names.extend(f"{prefix}_s{d}" for d in range(nd))
            names.append(f"{prefix}_off")
            stack(cls[1])
        else:  # split stack: row part, reduced part, top offset
            names.extend(_part_names(prefix, "r", cls[1], nkept))
            names.extend(_part_names(prefix, "j", cls[2], nred))
            names.append(f"{prefix}_off")
            stack(cls[3])
    elif tag == "x":
        names.extend(_part_names(prefix, "r", cls[1], nkept))
        names.extend(_part_names(prefix, "j", cls[2], nred))
    elif tag in ("r", "rv"):
        if cls[1] == "l":
            names.append(f"{prefix}_l")
        else:
            names.extend(f"{prefix}_h{d}" for d in range(cls[2]))
            names.extend(f"{prefix}_hs{d}" for d in range(cls[2]))
        if tag == "rv":
            names.append(f"{prefix}_off")
            stack(cls[-1])
    else:
        raise AssertionError(cls)
    for pos, rank in masks:
        names.extend(f"{prefix}_q{pos}lo{d}" for d in range(rank))
        names.extend(f"{prefix}_q{pos}hi{d}" for d in range(rank))
    return names


def mask_cond(prefix: str, pos: int, coords: list[str]) -> str:
    """True where ``coords`` of the view at ``pos`` lie inside its mask (else it reads zero)."""
    terms = [
        f"{prefix}_q{pos}lo{d} <= {c} && {c} < {prefix}_q{pos}hi{d}" for d, c in enumerate(coords)
    ]
    return "(" + " && ".join(terms) + ")" if terms else "true"


def access_value(a, offset: str, ok: str | None) -> str:
    """The value of access ``a`` at ``offset``; zero where the mask test ``ok`` fails."""
    src = a.scalar if a.scalar is not None else f"{a.name}_p[{offset}]"
    return src if ok is None else f"({ok} ? {src} : {zero(a.dtype)})"


def zero(dtype) -> str:
    """The zero of ``dtype`` in C (``T{}`` is no expression for two-word types: long long)."""
    return f"fr_zero<{c_type(dtype)}>()"


def _part_names(prefix: str, part: str, cls: str, n: int) -> list[str]:
    if cls in ("1", "0"):
        return []
    if cls == "l":
        return [f"{prefix}_{part}l"]
    return [f"{prefix}_{part}s{i}" for i in range(n)]


def emit_unravel(em: Emitter, index: str, extents: list[str], names: list[str]) -> None:
    """Coordinates ``names`` of flat C-order ``index`` over ``extents`` (one division per axis
    but the first)."""
    if not names:
        return
    if len(names) == 1:
        em(f"const fr_idx {names[0]} = {index};")
        return
    q = f"{names[0]}_q"
    em(f"fr_idx {q} = {index};")
    for d in range(len(names) - 1, 0, -1):
        em(f"const fr_idx {names[d]} = {q} % {extents[d]};")
        em(f"{q} /= {extents[d]};")
    em(f"const fr_idx {names[0]} = {q};")


def dot(coords: list[str], strides: list[str]) -> str:
    terms = [f"{c} * {s}" for c, s in zip(coords, strides)]
    return " + ".join(terms) if terms else "0"


def emit_descend(
    em: Emitter,
    prefix: str,
    var: str,
    ranks: tuple[int, ...],
    masks: tuple[tuple[int, int], ...] = (),
    ok: str | None = None,
) -> None:
    """Map position ``var`` through the views below a stack's top (see ``views.py``): unravel
    over each view's shape, dot with its strides, add its offset (the innermost one is folded
    into the pointer). Masked views below the top clear ``ok`` outside their masks."""
    masked = {pos for pos, _ in masks}
    for j, rank in enumerate(ranks):
        coords = [f"{prefix}_y{j}_{d}" for d in range(rank)]
        with em.block(""):
            emit_unravel(em, var, [f"{prefix}_v{j}n{d}" for d in range(rank)], coords)
            if j + 1 in masked:
                em(f"{ok} = {ok} && {mask_cond(prefix, j + 1, coords)};")
            offset = f" + {prefix}_v{j}o" if j < len(ranks) - 1 else ""
            em(f"{var} = {dot(coords, [f'{prefix}_v{j}s{d}' for d in range(rank)])}{offset};")


def emit_position(
    em: Emitter,
    prefix: str,
    position: str,
    lay,
    top_coords: list[str],
    ranks: tuple[int, ...] | None,
) -> tuple[str, str | None]:
    """(element offset, mask test or None) of an access whose top view maps to ``position``:
    the top view's mask is tested on ``top_coords``; a stack (``ranks``) descends further."""
    top_ok = mask_cond(prefix, 0, top_coords) if any(p == 0 for p, _ in lay.masks) else None
    if ranks is None:
        return position, top_ok
    var = f"{prefix}_e"
    em(f"fr_idx {var} = {position};")
    lower = tuple(m for m in lay.masks if m[0] > 0)
    if not lower:
        emit_descend(em, prefix, var, ranks)
        return var, top_ok
    ok = f"{prefix}_ok"
    em(f"bool {ok} = {top_ok or 'true'};")
    emit_descend(em, prefix, var, ranks, lower, ok)
    return var, ok


def header(m: KernelModel, schedule: Schedule) -> list[str]:
    k = m.kernel
    lines = [
        f"// {k.name}: fuseray {k.kind} kernel, generated; do not edit.",
        f"// space rank {len(k.space)}, reduced axes {k.axes}; schedule {schedule}",
    ]
    lines += [f"//   {line}" for line in m.describe()]
    half = any(n.dtype == np.float16 for n in k.nodes)
    lines += [
        f"#define FR_HALF {int(half)}",
        '#include "fuseray_index.cuh"',
        f"typedef {schedule.index_type} fr_idx;",
        "",
    ]
    return lines


def scalar_params(m: KernelModel) -> list[Param]:
    out = []
    for i, c in enumerate(m.consts):
        out.append(Param(f"const {c_type(c.dtype)} c{i}", c.dtype.name, ("const", i)))
    for i, p in enumerate(m.params):
        out.append(Param(f"const {c_type(p.dtype)} p{i}", p.dtype.name, ("param", i)))
    return out


def idx_kind(schedule: Schedule) -> str:
    return "int32" if schedule.index_bits == 32 else "int64"


# ---------------------------------------------------------------------------------------------
# elementwise kernels
# ---------------------------------------------------------------------------------------------

_FLAT = string.Template("""\
${header}
// One element of the space: loaded operands in, stored values out.
__device__ __forceinline__ void fr_point(${point_params}) {
${point_body}
}

extern "C" __global__ void __launch_bounds__(${block}) ${name}(
    ${params}) {
  FR_WAIT_FOR_PRIOR_GRID();
  const fr_idx fr_tid = (fr_idx)blockIdx.x * blockDim.x + threadIdx.x;
  const fr_idx fr_step = (fr_idx)gridDim.x * blockDim.x;
${uniform}  fr_idx fr_start = 0;
${vector}  for (fr_idx i = fr_start + fr_tid; i < n; i += fr_step) {
${scalar}
  }
}
""")


def generate_flat(
    m: KernelModel, schedule: Schedule, layouts: list[Layout], store_layouts: list[Layout]
) -> Generated:
    if m.scatter is not None:
        from .codegen_index import generate_scatter  # codegen_index builds on this module

        return generate_scatter(m, schedule, layouts)
    nd = len(m.space)
    ik = idx_kind(schedule)
    params: list[Param] = []
    params += pointer_params(m)
    params.append(Param("const fr_idx n", ik, ("size", "n")))
    # takes address their sources from the element's coordinates
    strided = bool(m.gathers) or any(lay.cls[0] in ("s", "v") for lay in (*layouts, *store_layouts))
    if strided:
        params += [Param(f"const fr_idx s{d}", ik, ("space", d)) for d in range(nd)]
    for prefix, tag, items in (("a", "a", layouts), ("o", "o", store_layouts)):
        for k, lay in enumerate(items):
            names = layout_param_names(f"{prefix}{k}", lay.cls, nd, 0, 0, lay.masks)
            params += [
                Param(f"const fr_idx {nm}", ik, ("ints", tag, k, i)) for i, nm in enumerate(names)
            ]
    params += scalar_params(m)

    # fr_point: operands by value, outputs by reference; takes' sources by pointer and layout
    loaded = [a for a in m.accesses if a.level != "gather"]
    point_params = [f"const {c_type(a.dtype)} {a.name}" for a in loaded]
    point_params += [p.decl for p in scalar_params(m)]
    point_params += [f"{c_type(o.dtype)}& {o.name}" for o in m.outputs]
    gather_decls = gather_point_params(m, params)
    point_params += gather_decls
    body = Emitter()
    body.depth = 1
    emit_nodes(body, m, m.computed, lambda s: m.refs[s].name, flat_take(m, layouts))
    for o in m.outputs:
        body(f"{o.name} = {m.refs[o.store.value].name};")
    scalars = [f"c{i}" for i in range(len(m.consts))] + [f"p{i}" for i in range(len(m.params))]

    # loads that do not depend on the element: uniform accesses
    uniform = Emitter()
    uniform.depth = 1
    for a, lay in zip(m.accesses, layouts):
        if lay.cls[0] == "u":
            uniform(f"const {c_type(a.dtype)} {a.name} = {access_value(a, '0', None)};")

    vector = Emitter()
    vector.depth = 1
    vec = schedule.vec
    all_simple = all(lay.cls[0] in ("c", "u") for lay in (*layouts, *store_layouts))
    # a 0-d space is one element: no vector path (NVRTC also took minutes to unroll a heavy body
    # over uniform operands there)
    if vec > 1 and all_simple and nd > 0:
        contiguous = [a for a, lay in zip(m.accesses, layouts) if lay.cls[0] == "c"]
        checks = [f"fr_aligned<{vec}>({a.name}_p)" for a in contiguous]
        checks += [f"fr_aligned<{vec}>({o.name}_p)" for o in m.outputs]
        with vector.unless_quick(), vector.block(f"if ({' && '.join(checks) or 'true'})"):
            vector(f"const fr_idx fr_nv = n / {vec};")
            u = schedule.unroll
            lanes = [
                f"{a.name}_v[u].v[k]" if lay.cls[0] == "c" else a.name
                for a, lay in zip(m.accesses, layouts)
            ]
            lanes += scalars + [f"{o.name}_v.v[k]" for o in m.outputs]
            with vector.block(f"for (fr_idx v0 = fr_tid; v0 < fr_nv; v0 += (fr_idx){u} * fr_step)"):
                # every vector of the step is loaded before any is used: u loads in flight
                for a in contiguous:
                    vector(f"fr_vec<{c_type(a.dtype)}, {vec}> {a.name}_v[{u}];")
                vector("#pragma unroll")
                with vector.block(f"for (int u = 0; u < {u}; ++u)"):
                    vector("const fr_idx v = v0 + (fr_idx)u * fr_step;")
                    with vector.block("if (v < fr_nv)"):
                        for a in contiguous:
                            vector(f"{a.name}_v[u] = fr_load_vec<{vec}>({a.name}_p, v);")
                vector("#pragma unroll")
                with vector.block(f"for (int u = 0; u < {u}; ++u)"):
                    vector("const fr_idx v = v0 + (fr_idx)u * fr_step;")
                    with vector.block("if (v < fr_nv)"):
                        for o in m.outputs:
                            vector(f"fr_vec<{c_type(o.dtype)}, {vec}> {o.name}_v;")
                        vector("#pragma unroll")
                        with vector.block(f"for (int k = 0; k < {vec}; ++k)"):
                            vector(f"fr_point({', '.join(lanes)});")
                        for o in m.outputs:
                            vector(f"fr_store_vec<{vec}>({o.name}_p, v, {o.name}_v);")
            vector(f"fr_start = fr_nv * {vec};")
        vector.lines.append("")

    scalar = Emitter()
    scalar.depth = 2
    coords = [f"x{d}" for d in range(nd)]
    if strided:
        emit_unravel(scalar, "i", [f"s{d}" for d in range(nd)], coords)
    for a, lay in zip(m.accesses, layouts):
        if lay.cls[0] == "u" or a.level == "gather":
            continue
        off, ok = flat_offset(scalar, a.name, lay, coords)
        scalar(f"const {c_type(a.dtype)} {a.name} = {access_value(a, off, ok)};")
    for o in m.outputs:
        scalar(f"{c_type(o.dtype)} {o.name};")
    call = [a.name for a in loaded] + scalars + [o.name for o in m.outputs]
    call += [decl.split()[-1] for decl in gather_decls]
    scalar(f"fr_point({', '.join(call)});")
    for o, lay in zip(m.outputs, store_layouts):
        scalar(f"{o.name}_p[{flat_offset(scalar, o.name, lay, coords)[0]}] = {o.name};")

    source = _FLAT.substitute(
        header="\n".join(header(m, schedule)),
        point_params=", ".join(point_params),
        point_body=body.text(),
        block=schedule.max_threads,
        name=m.kernel.name,
        params=",\n    ".join(p.decl for p in params),
        uniform=uniform.text() + "\n" if uniform.lines else "",
        vector=vector.text() + "\n" if vector.lines else "",
        scalar=scalar.text(),
    )
    return Generated(m.kernel.name, source, tuple(params), schedule)


def flat_offset(
    em: Emitter, prefix: str, lay: Layout, coords: list[str], flat: str = "i"
) -> tuple[str, str | None]:
    """(element offset, mask test or None) of flat index ``flat`` (whose coordinates are
    ``coords``) for an access or store."""
    tag = lay.cls[0]
    nd = len(coords)
    if tag == "c":
        return flat, None
    if tag == "u":
        return "0", None
    position = dot(coords, [f"{prefix}_s{d}" for d in range(nd)])
    if tag == "s":
        return emit_position(em, prefix, position, lay, coords, None)
    return emit_position(em, prefix, f"{position} + {prefix}_off", lay, coords, lay.cls[1])


def pointer_params(m: KernelModel) -> list[Param]:
    """Input pointers (accesses that read memory), then output pointers."""
    params = [
        Param(f"const {c_type(a.dtype)}* __restrict__ {a.name}_p", "ptr", ("in", a.index))
        for a in m.accesses
        if a.in_memory
    ]
    params += [
        Param(f"{c_type(o.dtype)}* __restrict__ {o.name}_p", "ptr", ("out", o.index))
        for o in m.outputs
    ]
    if m.bounds:
        params.append(Param("fr_bounds* fr_err", "ptr", ("errors",)))
    return params


def gather_point_params(m: KernelModel, params: list[Param]) -> list[str]:
    """What ``fr_point`` needs to read takes' sources: their pointers and layout numbers (the
    kernel's own parameters, under the same names), the coordinates and the bounds record."""
    if not m.gathers:
        return []
    sources = {g.access.index for g in m.gathers.values()}

    def wanted(source: tuple) -> bool:
        if source[0] == "in":
            return source[1] in sources
        return source[0] == "ints" and source[1] == "a" and source[2] in sources

    decls = [p.decl for p in params if wanted(p.source)]
    decls += [f"const fr_idx x{d}" for d in range(len(m.space))]
    return [*decls, "fr_bounds* fr_err"]


def flat_take(m: KernelModel, layouts: list[Layout]):
    """The take emitter of an elementwise kernel: a take has the space's shape, so its trailing
    coordinates are the element's last ones."""
    if not m.gathers:
        return None
    from .codegen_index import emit_take  # codegen_index builds on this module

    nd = len(m.space)

    def take(em: Emitter, node: Node) -> None:
        a = m.gathers[node].access
        rank = a.head.ndim
        emit_take(em, m, node, layouts[a.index], [f"x{d}" for d in range(nd - rank + 1, nd)])

    return take

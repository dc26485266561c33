"""``fr.explain`` and ``fr.show_graph``: what a computation will run, in words and as a picture.

Stage: entry point (reads plans; changes nothing). ``describe`` prints, per kernel, the ops it
fuses, its iteration space and reduced axes, what it reads and writes, the fewest bytes it must
move, and why any value had to be written to memory between kernels.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

from .fusion import Kernel, Plan
from .graph import Node
from .ops import Kind


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError


def _name(node: Node, labels: dict[Node, str]) -> str:
    return labels.get(node) or f"%{node.key[:6]}"


def _arr(node: Node, labels) -> str:
    return f"{_name(node, labels)}: {node.dtype.name}{list(node.shape)}"


def _ops_summary(k: Kernel) -> str:
    counts = Counter(k.ops())
    return ", ".join(f"{op}×{n}" if n > 1 else op for op, n in counts.items()) or "copy"


def _with_outputs(plan: Plan, labels: dict[Node, str] | None) -> dict[Node, str]:
    """Input labels plus ``out0``, ``out1``, ... for the plan's outputs."""
    labels = dict(labels or {})
    for i, r in enumerate(plan.roots):
        labels.setdefault(r, f"out{i}")
        if r.op == "copy":
            labels.setdefault(r.src[0], f"out{i}")
    return labels


def describe(plan: Plan, labels: dict[Node, str] | None = None) -> str:
    """The plan in words (``fr.explain`` prints this)."""
    labels = _with_outputs(plan, labels)
    total = sum(k.bytes_moved() for k in plan.kernels)
    lines = [f"fuseray plan: {len(plan.kernels)} kernel(s), {_fmt_bytes(total)} moved at least"]
    for i, k in enumerate(plan.kernels):
        over = f"over {list(k.space)}"
        if k.axes:
            over += f", reducing axes {list(k.axes)} ({len(k.reductions)} reduction(s))"
        lines.append(f"kernel {i}  {k.name}  {k.kind} {over}")
        lines.append(f"  fuses {len(k.ops())} op(s): {_ops_summary(k)}")
        lines.append("  reads  " + (", ".join(_arr(n, labels) for n in k.inputs) or "nothing"))
        lines.append("  writes " + ", ".join(_arr(s.target, labels) for s in k.stores))
        lines.append(f"  moves  {_fmt_bytes(k.bytes_moved())}")
    own_reasons = {"graph output", "graph output (as a view)"}
    splits = [(n, why) for n, why in plan.splits.items() if why not in own_reasons]
    if splits:
        lines.append("split points (values written to memory between kernels):")
        for n, why in splits:
            lines.append(f"  {_arr(n, labels)} ({n.op}): {why}")
    return "\n".join(lines)


def explain(f, *args, **kwargs) -> str:
    """Print the kernels that ``f(*args)`` runs (a function or a @jit function), or that
    computing the given lazy arrays runs; returns the text too."""
    from . import runtime
    from .array import ndarray, node_of
    from .jit import Jitted, jit

    if isinstance(f, ndarray):
        arrays = [f, *args]
        _, plan = runtime.prepare([node_of(a) for a in arrays])
        text = describe(plan)
        print(text)
        return text
    jitted = f if isinstance(f, Jitted) else jit(f)
    return jitted.explain(*args, **kwargs)


_PALETTE = ["#cfe2ff", "#d1e7dd", "#fff3cd", "#f8d7da", "#e2d9f3", "#d2f4ea", "#ffe5d0"]


def to_dot(plan: Plan, labels: dict[Node, str] | None = None) -> str:
    """The fused graph as Graphviz DOT: one coloured cluster per kernel."""
    labels = _with_outputs(plan, labels)
    ids: dict[Node, str] = {}

    def nid(n: Node) -> str:
        return ids.setdefault(n, f"n{len(ids)}")

    out = ["digraph fuseray {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    inputs = {n for k in plan.kernels for n in k.inputs}
    for n in inputs:
        out.append(f'  {nid(n)} [label="{_name(n, labels)}\\n{n.dtype.name}{list(n.shape)}",'
                   ' shape=cylinder];')
    for i, k in enumerate(plan.kernels):
        colour = _PALETTE[i % len(_PALETTE)]
        out.append(f"  subgraph cluster_{i} {{")
        out.append(f'    label="{k.name} ({k.kind})"; style=filled; color="{colour}";')
        for n in k.nodes:
            if n in inputs or n.kind is Kind.LEAF and n.op == "buffer":
                continue
            label = n.op if n.op != "const" else f"{n.arg[0]:.6g}"
            out.append(f'    {nid(n)} [label="{label}"];')
        out.append("  }")
        for n in k.nodes:
            for s in n.src:
                if s in ids:
                    out.append(f"  {nid(s)} -> {nid(n)};")
        for s in k.stores:
            out.append(f'  {nid(s.value)} -> {nid(s.target)}_out;')
            out.append(f'  {nid(s.target)}_out [label="{_name(s.target, labels)}", '
                       'shape=cylinder];')
    out.append("}")
    return "\n".join(out)


def show_graph(f, *args, filename: str | None = None, **kwargs) -> str:
    """Write the fused graph of ``f(*args)`` (or of lazy arrays) as DOT, and as SVG/PNG when
    ``filename`` ends in .svg/.png and Graphviz's ``dot`` is installed. Returns the DOT text."""
    from . import runtime
    from .array import ndarray, node_of
    from .jit import Jitted, jit

    if isinstance(f, ndarray):
        _, plan = runtime.prepare([node_of(a) for a in (f, *args)])
        labels = {}
    else:
        jitted = f if isinstance(f, Jitted) else jit(f)
        trace, inst, _ = jitted.lower(*args, **kwargs)
        plan, labels = inst.plan, trace.labels
    dot = to_dot(plan, labels)
    if filename is not None:
        path = Path(filename)
        fmt = path.suffix.lstrip(".")
        if fmt in ("svg", "png"):
            exe = shutil.which("dot")
            if exe is None:
                path = path.with_suffix(".dot")
                path.write_text(dot)
                raise RuntimeError(f"Graphviz 'dot' is not installed; wrote DOT to {path}")
            subprocess.run([exe, f"-T{fmt}", "-o", str(path)], input=dot.encode(), check=True)
        else:
            path.write_text(dot)
    return dot

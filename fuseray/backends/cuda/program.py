"""From a fusion kernel and the layouts of one call to CUDA source, without touching a GPU.

Stage: backend (CUDA). ``variant`` is the one place where a kernel's compile key is decided: the
model's structure, each access's layout class, and the index width select a ``Schedule`` and a
source text. ``generate`` and ``compile_plan_sources`` expose this to tests on machines without
a GPU (NVRTC still compiles to a CUBIN for any ``sm_XY``).

Invariant: everything here is a pure function of the kernel structure, the layout classes and the
index width; no size, stride or constant value reaches the source (a constant's value may choose
a helper: ``ranges.value_range``'s proof that a sqrt operand is normal or a sin operand small).
"""

from __future__ import annotations

import math

from ... import config
from ...fusion import Kernel, Plan
from ...schedule import Schedule, elementwise_schedule, index_bits, reduce_schedule
from ...views import View, fold
from .codegen import Generated, generate_flat
from .codegen_reduce import cached_itemsizes, generate_reduce
from .model import KernelModel, Layout, build_model, layout_for, store_layout


def choose_schedule(
    m: KernelModel, layouts: list[Layout], store_layouts: list[Layout], bits: int
) -> Schedule:
    if not m.is_reduce:
        vector_ok = all(lay.cls[0] in ("c", "u") for lay in (*layouts, *store_layouts))
        sizes = tuple(a.dtype.itemsize for a, lay in zip(m.accesses, layouts) if lay.cls[0] == "c")
        sizes += tuple(o.dtype.itemsize for o in m.outputs)
        return elementwise_schedule(sizes, vector_ok, bits)
    inner = (len(m.space) - 1) in m.axes
    return reduce_schedule(inner, cached_itemsizes(m), m.passes, bits)


def required_bits(m: KernelModel, layouts: list[Layout], store_layouts: list[Layout]) -> int:
    """64 when any extent, offset or loop bound of the kernel needs it."""
    extent = max((lay.extent for lay in (*layouts, *store_layouts)), default=0)
    return index_bits(max(extent, math.prod(m.space)))


def variant(m: KernelModel, layouts: list[Layout], store_layouts: list[Layout]) -> Generated:
    """The generated kernel for this model under these layouts."""
    bits = required_bits(m, layouts, store_layouts)
    schedule = choose_schedule(m, layouts, store_layouts, bits)
    if m.is_reduce:
        return generate_reduce(m, schedule, layouts, store_layouts)
    return generate_flat(m, schedule, layouts, store_layouts)


def compile_options() -> tuple[str, ...]:
    """NVRTC options beyond nvrtc.py's defaults (part of every cache key)."""
    # -minimal leaves out NVRTC's implicit CUDA headers (the kernels include what they use):
    # about 6 ms of every compile, on the new-kernel latency the benchmark reports. Fast math
    # keeps them: they are where --use_fast_math maps sinf & co. to their intrinsics (on the
    # H200's NVRTC 13.0, a -minimal kernel calling sinf compiled to the same CUBIN with and
    # without it, and fast-math chain20 ran no faster than precise).
    # -fmad=false: precise kernels round a * b + c as NumPy does, twice, rather than as one FMA
    # where NVVM chooses to contract; it also makes the quick and the optimised build of a
    # kernel compute the same bits (tiers.py), which contraction at different optimisation
    # levels would not.
    return ("--use_fast_math",) if config.fast_math else ("-minimal", "-fmad=false")


def assumed_layouts(
    m: KernelModel, force_bits: int | None = None
) -> tuple[list[Layout], list[Layout]]:
    """Layouts for a kernel seen without its call: buffers with values use their strides, inputs
    produced by earlier kernels are C-contiguous (as the backend allocates them)."""
    layouts = []
    for a in m.accesses:
        value = a.base.value if a.base.op == "buffer" else None
        if not a.in_memory:
            base = View((), (), 0)
        elif value is not None and hasattr(value, "strides"):
            item = value.dtype.itemsize
            base = View(tuple(value.shape), tuple(s // item for s in value.strides), 0)
        else:
            base = View.contiguous(a.base.shape)
        layouts.append(layout_for(m, a, fold(base, list(a.chain))))
    stores = [store_layout(m, o) for o in m.outputs]
    if force_bits == 64:
        layouts = [Layout(lay.cls, lay.ints, lay.offset, 2**40) for lay in layouts]
    return layouts, stores


def generate(kernel: Kernel, arch: str = "sm_90", index_bits: int | None = None) -> tuple[str, str]:
    """``(name, source)`` of ``kernel`` as the CUDA backend would compile it for ``arch``.

    CPU only: buffers' own strides decide their layouts; earlier kernels' outputs are taken as
    C-contiguous. ``index_bits=64`` forces 64-bit indexing (the source for huge arrays).
    """
    del arch  # the source does not depend on the target; the CUBIN does
    m = build_model(kernel)
    layouts, stores = assumed_layouts(m, index_bits)
    g = variant(m, layouts, stores)
    return g.name, g.source


def compile_plan_sources(
    plan: Plan,
    arch: str = "sm_90",
    cache=None,
    index_bits: int | None = None,
    extra_options: tuple[str, ...] = (),
) -> list[tuple[str, str]]:
    """Generate every kernel of ``plan`` and compile it with NVRTC to a CUBIN for ``arch``, with
    the backend's options plus ``extra_options`` (``tiers.QUICK_OPTIONS``: the quick tier's
    build).

    Returns ``[(name, source), ...]``; raises ``nvrtc.CompileError`` on the first failure. CUBINs
    go through ``cache`` (default: the process-wide ``KernelCache``).
    """
    from .cache import default_cache

    cache = cache if cache is not None else default_cache()
    out = []
    for kernel in plan.kernels:
        name, source = generate(kernel, arch, index_bits)
        cache.get_cubin(source, name, arch, (*compile_options(), *extra_options))
        out.append((name, source))
    return out

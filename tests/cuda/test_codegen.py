"""CUDA code generation without a GPU: every kernel the backend would build compiles with NVRTC.

Kernels are planned on the CPU (the NumPy reference backend), generated with
``fuseray.backends.cuda.generate`` and compiled to CUBINs (``BUILDS``: the optimised build for
sm_90, the quick tier's for sm_80): the benchmark
workloads, every elementwise op for every dtype its NumPy loop accepts, reductions over every
axis subset of 3-D shapes, views of every addressing class, concatenate, 64-bit indexing. Sources
must not depend on sizes or constant values, so that a new size never recompiles.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fuseray as fr
from fuseray import config, dtypes, runtime
from fuseray.array import node_of
from fuseray.backends.cuda import CodegenError, compile_plan_sources, generate, nvrtc, tiers
from fuseray.backends.cuda.cache import KernelCache
from fuseray.backends.cuda.codegen import SIN_SMALL, op_expr
from fuseray.backends.cuda.model import build_model, flat_layout, split_layout
from fuseray.backends.cuda.ranges import UNKNOWN, value_range
from fuseray.graph import Node
from fuseray.schedule import Schedule, elementwise_launch, reduce_launch
from fuseray.views import View

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import workloads  # noqa: E402
from harness import ufunc_loop_groups  # noqa: E402

# (arch, options added to the backend's): sm_90's optimised build, NVVM's full optimiser and
# ptxas, as an H100 or H200 loads it; for sm_80 the quick tier's build (tiers.QUICK_OPTIONS),
# which takes the same front end and ptxas (inline PTX checked for both architectures) at a
# tenth of the CPU time (a float16 reduction kernel: 0.3 s against 3.5 s). The full sm_80 build
# was half of this module's ~160 s in CI.
BUILDS = (("sm_80", tiers.QUICK_OPTIONS), ("sm_90", ()))


def _nvrtc_usable() -> bool:
    try:
        nvrtc.nvrtc_version()
        return True
    except Exception:  # noqa: BLE001 - no NVRTC library here: compile tests skip
        return False


needs_nvrtc = pytest.mark.skipif(not _nvrtc_usable(), reason="NVRTC is not installed")

# One memory-only cache for the module: a kernel shared by several tests compiles once.
CACHE = KernelCache(disk=False)


@pytest.fixture(autouse=True)
def on_cpu(monkeypatch):
    monkeypatch.setattr(config, "device", "cpu")
    monkeypatch.setattr(config, "cpu_backend", "numpy")


def plan_of(*arrays):
    _, plan = runtime.prepare([node_of(a) for a in arrays])
    return plan


def compile_all(plan, index_bits=None):
    sources = []
    for arch, options in BUILDS:
        sources = compile_plan_sources(plan, arch, cache=CACHE, index_bits=index_bits,
                                       extra_options=options)
    return sources


def workload_outputs(name: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ins = [fr.asarray(a) for a in workloads.inputs(name, n, rng)]
    kw = {"erf": fr.special.erf} if name == "black_scholes" else {}
    out = workloads.WORKLOADS[name](fr, *ins, **kw)
    return out if isinstance(out, tuple) else (out,)


# ---------------------------------------------------------------------------------------------
# workloads
# ---------------------------------------------------------------------------------------------


@needs_nvrtc
@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
def test_workload_kernels_compile(name):
    plan = plan_of(*workload_outputs(name, 4096))
    sources = compile_all(plan)
    assert len(sources) == len(plan.kernels) >= 1
    for (kname, source), kernel in zip(sources, plan.kernels):
        assert kname == kernel.name
        assert 'extern "C" __global__ void __launch_bounds__' in source
        assert kernel.name in source


@needs_nvrtc
@pytest.mark.parametrize("name", ["triad", "sumsq", "softmax", "layernorm", "colsum"])
def test_workload_kernels_compile_with_64_bit_indexing(name):
    plan = plan_of(*workload_outputs(name, 4096))
    for _name, source in compile_all(plan, index_bits=64):
        assert "typedef long long fr_idx;" in source


@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
def test_sources_do_not_depend_on_sizes(name):
    small = plan_of(*workload_outputs(name, 4096))
    large = plan_of(*workload_outputs(name, 4096 * 37, seed=1))
    assert [generate(k) for k in small.kernels] == [generate(k) for k in large.kernels]


@needs_nvrtc
def test_new_size_compiles_nothing():
    cache = KernelCache(disk=False)
    for n in (2048, 4096 * 5, 1024 * 1023):
        for name in ("triad", "softmax", "sumsq"):
            compile_plan_sources(plan_of(*workload_outputs(name, n)), "sm_90", cache=cache)
        if n == 2048:
            first = cache.stats.compiles
    assert cache.stats.compiles == first == 3


def test_constants_are_arguments():
    x = fr.asarray(np.arange(10, dtype=np.float32))
    a = generate(plan_of(x * 0.5 + 2).kernels[0])
    b = generate(plan_of(x * 0.25 + 7).kernels[0])
    assert a == b
    assert "const float c0" in a[1] and "0.25" not in b[1]


def test_sqrt_of_an_operand_proven_normal_skips_the_special_cases():
    x = fr.asarray(np.linspace(-3, 3, 10, dtype=np.float32))
    src = lambda y: generate(plan_of(y).kernels[0])[1]  # noqa: E731
    assert "fr_sqrt_normal(" in src(fr.sqrt(fr.abs(x) + 0.5))
    assert "fr_sqrt_normal(" in src(fr.sqrt(fr.maximum(x * x, x) + 2.0))
    for y in (fr.sqrt(fr.abs(x) - 0.5), fr.sqrt(x + 0.5), fr.sqrt(fr.abs(x) + 1e-35),
              fr.sqrt(fr.abs(x.astype(np.float64)) + 0.5), fr.sqrt(fr.abs(x) + np.nan)):
        assert "fr_sqrt_normal" not in src(y) and "fr_sqrt(" in src(y)
    nodes = {n.op: n for n in node_of(fr.exp(x) + fr.abs(x) * 2).src}
    assert value_range(nodes["exp"])[0] == 0.0 and value_range(nodes["multiply"])[0] <= 0.0


def test_sin_of_an_operand_proven_small_is_one_polynomial():
    x = fr.asarray(np.linspace(-3, 3, 10, dtype=np.float32))
    src = lambda y: generate(plan_of(y).kernels[0])[1]  # noqa: E731
    small = [
        fr.sin(fr.sqrt(fr.abs(fr.sin(x)) + 0.5) * 0.99 + 0.01),  # chain20's second sin
        fr.sin(fr.tanh(x)),
        fr.sin(fr.cos(x) * 1.2),
        fr.sin(fr.maximum(fr.minimum(x, 1.0), -1.0)),
        fr.sin(fr.where(x > 0, fr.special.erf(x), 0.5)),
    ]
    for y in small:
        assert "fr_sin_small(" in src(y), src(y)
    large = [
        fr.sin(x),
        fr.sin(fr.cos(x) * 1.3),  # past the polynomial's domain
        fr.sin(fr.tanh(x) + fr.tanh(x)),
        fr.sin(fr.sqrt(fr.abs(x))),
        fr.sin(fr.tanh(x.astype(np.float64))),  # float64: libm's sin
        fr.sin(fr.tanh(x) * np.nan),
    ]
    for y in large:
        assert "fr_sin_small" not in src(y) and "fr_sin(" in src(y), src(y)


@needs_nvrtc
def test_quick_build_leaves_out_the_elementwise_vector_loop():
    """tiers.QUICK_OPTIONS define FR_QUICK: an elementwise kernel's quick build is its scalar
    loop alone (the same bits per element, less for NVRTC to compile); reductions keep every
    path, since a vector pass sums in another order."""
    from fuseray.backends.cuda import tiers

    x = fr.asarray(np.linspace(-3, 3, 10, dtype=np.float32))
    name, source = generate(plan_of(fr.sin(x) * 2.0 + x).kernels[0])
    vector = source[source.index("#if !FR_QUICK"):source.index("#endif")]
    assert "fr_load_vec" in vector and "fr_load_vec" not in source.replace(vector, "")
    reduce_source = generate(plan_of((x * x).sum()).kernels[0])[1]
    assert "FR_QUICK" not in reduce_source
    base = ("-minimal", "-fmad=false", "-Ofc=max")
    quick = nvrtc.compile_cubin(source, name, "sm_90", (*base, *tiers.QUICK_OPTIONS))
    both = nvrtc.compile_cubin(source, name, "sm_90", base)
    assert "-DFR_QUICK=1" in tiers.QUICK_OPTIONS and len(quick) < len(both)


def test_sin_small_coefficients_are_about_an_ulp():
    """fr_sin_small's polynomial as kernels/fuseray_math.cuh writes it, evaluated with float32
    roundings and FMAs (products exact in float64) on every 64th float32 of its domain, against
    double sin. (The GPU test checks every float32 there on the device.)"""
    text = (REPO / "kernels" / "fuseray_math.cuh").read_text()
    body = text[text.index("FR_D float fr_sin_small(float x) {\n"):]
    body = body[: body.index("}")]
    c9, c7, c5, c3 = (np.float32(v) for v in re.findall(r"(-?\d\.\d+e[-+]\d+)f", body))
    f32, f64 = np.float32, np.float64

    def fma(a, b, c):
        return (np.asarray(a, f64) * np.asarray(b, f64) + np.asarray(c, f64)).astype(f32)

    top = int(np.float32(SIN_SMALL).view(np.uint32))
    x = np.arange(0, top + 1, 64, dtype=np.uint32).view(f32)
    s = (x * x).astype(f32)
    p = fma(fma(fma(c9, s, c7), s, c5), s, c3)
    got = np.copysign(fma((x * s).astype(f32), p, x), x)
    want = np.sin(x.astype(f64))
    ulp = np.spacing(np.abs(want).astype(f32)).astype(f64)
    assert np.max(np.abs(got - want) / ulp) <= 1.04


@pytest.mark.parametrize(
    ("expr", "lo", "hi"),
    [
        (lambda x: fr.abs(x) + 0.5, 0.5, np.inf),
        (lambda x: fr.sqrt(fr.abs(fr.sin(x)) + 0.5), np.sqrt(0.5), np.sqrt(1.5)),
        (lambda x: -fr.exp(fr.tanh(x)), -np.e, -1 / np.e),
        (lambda x: fr.tanh(x) * fr.tanh(x), 0.0, 1.0),
        (lambda x: 1.0 / (fr.exp(x) + 1.0), 0.0, 1.0),
        (lambda x: fr.maximum(fr.tanh(x), 0.25), 0.25, 1.0),
        (lambda x: fr.sin(x[:-2]).max(), -1.0, 1.0),  # the infinities give NaN
    ],
)
def test_value_ranges_bound_every_value(expr, lo, hi):
    """Proven ranges hold the exact range, a little wider (rounding), and every float32 value
    of the expression on inputs that reach its extremes."""
    x = np.concatenate([np.linspace(-100, 100, 20001, dtype=np.float32),
                        np.array([0.0, -0.0, 1e-30, -1e-30, 3e38, -3e38, np.inf, -np.inf],
                                 np.float32)])
    y = expr(fr.asarray(x))
    r_lo, r_hi = value_range(node_of(y))
    assert r_lo <= lo and r_hi >= hi
    assert (r_lo == -np.inf or r_lo > lo - 1e-4 * max(1, abs(lo))) and (
        r_hi == np.inf or r_hi < hi + 1e-4 * max(1, abs(hi)))
    with np.errstate(all="ignore"):
        values = np.asarray(fr.asnumpy(y), np.float64).ravel()
    values = values[~np.isnan(values)]
    assert values.size and values.min() >= r_lo and values.max() <= r_hi


def test_value_ranges_know_nothing_of_inputs_parameters_and_integers():
    x = fr.asarray(np.arange(5, dtype=np.float32))
    i = fr.asarray(np.arange(5, dtype=np.int32))
    for y in (x, x + 1.0, x * x * -1.0 + x, (i + 2).astype(np.float32), fr.exp(x * 1e30) * 0.0):
        r = value_range(node_of(y))
        assert r[0] == -np.inf or r == (0.0, np.inf) or r[1] == np.inf, r
    assert value_range(node_of(x)) == UNKNOWN
    # float32 overflow: exp of [0, 100] reaches +inf, not exp(100)
    assert value_range(node_of(fr.exp(fr.abs(fr.tanh(x)) * 100.0)))[1] == np.inf
    assert SIN_SMALL == 1.25


def test_source_is_deterministic_and_commented():
    x = fr.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    kernel = plan_of(fr.exp(x - x.max(axis=1, keepdims=True))).kernels[0]
    name, source = generate(kernel)
    assert (name, source) == generate(kernel)
    assert name == kernel.name and name.startswith("fr_row_")
    head = source.split('#include "fuseray_index.cuh"')[0]
    assert "t0 = max(a0)" in head and "t1 = subtract(a0, t0)" in head and "t2 = exp(t1)" in head


# ---------------------------------------------------------------------------------------------
# every elementwise op for every dtype NumPy's loops accept
# ---------------------------------------------------------------------------------------------


LOOPS = ufunc_loop_groups()
SCALAR_DTYPES = [d.name for d in dtypes.SUPPORTED]


def _array(dtype, shape=(6,)):
    rng = np.random.default_rng(0)
    return fr.asarray((rng.random(shape) * 4).astype(dtype))


def _ops_on(dtype_a: str, dtype_b: str | None):
    """Every unary op on a and binary op on (a, b) NumPy has a loop for."""
    a = _array(dtype_a)
    outs = []
    if dtype_b is None:
        for name in sorted(LOOPS.get((dtype_a,), ())):
            outs.append(getattr(fr, name)(a))
        for name in sorted(LOOPS.get((dtype_a, dtype_a), ())):
            outs.append(getattr(fr, name)(a, _array(dtype_a)))
    else:
        b = _array(dtype_b)
        for name in sorted(LOOPS[(dtype_a, dtype_b)]):
            outs.append(getattr(fr, name)(a, b))
    return outs


OP_GROUPS = [(d, None) for d in SCALAR_DTYPES] + [("int64", "uint64"), ("uint64", "int64")]


@needs_nvrtc
@pytest.mark.parametrize("dtype_a,dtype_b", OP_GROUPS)
def test_every_op_compiles_for_every_loop(dtype_a, dtype_b):
    outs = _ops_on(dtype_a, dtype_b)
    assert outs
    plan = plan_of(*outs)
    compile_all(plan)
    computed = {n.op for k in plan.kernels for n in build_model(k).computed}
    # the optimizer removes identities (positive; rounding an integer) before planning
    assert {node_of(o).op for o in outs} - computed <= {"positive", "floor", "ceil", "trunc"}


@needs_nvrtc
def test_special_where_round_update_and_casts_compile():
    f32, f64 = _array("float32"), _array("float64")
    outs = [
        getattr(fr.special, n)(x) for n in ("erf", "erfc", "expit", "logit") for x in (f32, f64)
    ]
    cond = _array("float32") > 1
    for d in SCALAR_DTYPES:
        outs.append(fr.where(cond, _array(d), _array(d)))
        if d != "bool":
            outs.append(fr.round(_array(d), -1))
        if dtypes.is_float(np.dtype(d)):
            outs.append(fr.round(_array(d), 2))
    upd = Node.make("update", (node_of(cond), node_of(f32), node_of(_array("float32"))))
    outs.append(fr.ndarray(upd))
    sources = _array("float32"), _array("float16"), _array("int64"), _array("bool")
    for src, d in itertools.product(sources, SCALAR_DTYPES):
        outs.append(src.astype(d) if src.dtype != np.dtype(d) else src.copy())
    compile_all(plan_of(*outs))
    for d in ("int8", "uint16", "bool", "float16"):
        compile_all(plan_of(*[_array(d).astype(t) for t in SCALAR_DTYPES if t != d]))


def test_infix_templates_keep_numpy_semantics():
    i32, f32, u64, i64 = (node_of(_array(d)) for d in ("int32", "float32", "uint64", "int64"))
    add = Node.make("add", (i32, i32), dtype=np.int32)
    assert op_expr(add, ["x", "y"]) == "(int)((fr_u(x) + fr_u(y)))"
    xor = Node.make("logical_xor", (f32, f32), dtype=np.bool_)
    assert op_expr(xor, ["x", "y"]) == "(fr_cast<bool>(x) != fr_cast<bool>(y))"
    eq = Node.make("equal", (i64, u64), dtype=np.bool_)
    assert op_expr(eq, ["x", "y"]) == "fr_equal(x, y)"
    cast = Node.make("cast", (f32,), dtype=np.float16)
    assert op_expr(cast, ["x"]) == "fr_cast<__half>(x)"
    rnd = Node.make("round", (f32,), 3, dtype=np.float32)
    assert op_expr(rnd, ["x"]) == "fr_round(x, 3)"


# ---------------------------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------------------------

AXIS_SETS = [None, 0, 1, 2, (0, 1), (0, 2), (1, 2), (0, 1, 2)]


def _reductions(x, axis, keepdims):
    outs = [
        x.sum(axis, keepdims=keepdims),
        x.max(axis, keepdims=keepdims),
        x.min(axis, keepdims=keepdims),
        x.any(axis, keepdims=keepdims),
        x.all(axis, keepdims=keepdims),
        x.prod(axis, keepdims=keepdims),
    ]
    if x.dtype != np.bool_:
        outs += [
            x.mean(axis, keepdims=keepdims),
            x.var(axis, ddof=1, keepdims=keepdims),
            x.std(axis, keepdims=keepdims),
        ]
    if axis is None or isinstance(axis, int):
        outs += [x.argmax(axis, keepdims=keepdims), x.argmin(axis, keepdims=keepdims)]
    return outs


@needs_nvrtc
@pytest.mark.parametrize("axis", AXIS_SETS, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_over_every_axis_subset_compile(axis, keepdims):
    x = _array("float32", (3, 4, 5))
    compile_all(plan_of(*_reductions(x, axis, keepdims)))


@needs_nvrtc
@pytest.mark.parametrize("dtype", ["float16", "float64", "int8", "uint32", "int64", "bool"])
@pytest.mark.parametrize("axis", [None, 1, (0, 2)], ids=str)
def test_reductions_over_other_dtypes_compile(dtype, axis):
    compile_all(plan_of(*_reductions(_array(dtype, (3, 4, 5)), axis, False)))


@needs_nvrtc
@pytest.mark.parametrize("dtype", SCALAR_DTYPES)
def test_split_reductions_compile_for_every_accumulator(dtype):
    # one pass, row-level results only: the kernel carries the split-and-combine path, whose
    # workspace loads and shuffles exist for every accumulator type
    x = _array(dtype, (3, 4, 5))
    outs = [
        x.sum(),
        x.prod(),
        x.max(),
        x.min(),
        x.any(),
        x.all(),
        x.argmax(),
        x.argmin(),
        x.max(axis=0),
        x.argmin(axis=2),
    ]
    plan = plan_of(*outs)
    sources = compile_all(plan)
    assert any("gridDim.y > 1" in src for _, src in sources)


@needs_nvrtc
def test_row_epilogues_and_row_reads_compile():
    m = _array("float32", (6, 8))
    b = _array("float32", (6,))
    g = _array("float32", (8,))
    outs = [
        m.sum(axis=1) * 2 + b,  # row-level epilogue reading a row-level buffer
        (m - m.mean(axis=1, keepdims=True)) * g + b[:, None],  # row kernel, broadcast reads
        fr.exp(m.T - m.T.max(axis=0)),  # a row kernel over axis 0: outer schedule
        m.std(axis=0, ddof=1),
    ]
    compile_all(plan_of(*outs))


# ---------------------------------------------------------------------------------------------
# addressing classes, joins, stacks
# ---------------------------------------------------------------------------------------------


@needs_nvrtc
def test_views_of_every_class_compile():
    x = _array("float32", (6, 8))
    v = _array("float32", (8,))
    cases = [
        x + v,  # broadcast row vector
        x + x[:, :1],  # broadcast column
        x.T + 1,  # transposed
        x[::-1, ::-2] * 2,  # negative strides
        x[1:5, 2:6] - 3,  # sliced: offset
        x[1:] * 2,  # offset only: contiguous but (maybe) misaligned
        x.T.reshape(-1) + 1,  # a reshape NumPy would copy: a stack of two views
        (x.T.reshape(4, 12) * 2).sum(axis=1),  # the stack inside a reduction
        (x * v).sum(axis=0),  # a read that does not move along the reduced axis
        (x * x[:, :1]).sum(axis=1),  # the same, inner
        (x * x.T.reshape(-1)[:6].reshape(6, 1)).max(axis=1),  # the same, through a stack
        fr.concatenate([x, x * 2, x.T.reshape(6, 8)], axis=0),
        fr.concatenate([x, x[:, ::-1]], axis=1),
        fr.stack([v, v * 2, v + 1]),
        fr.full((3, 4), 2.5) * x[:3, :4],
        x[2, 3] + x,  # a 0-d read broadcast
    ]
    for case in cases:
        compile_all(plan_of(case))


@needs_nvrtc
def test_writes_through_masked_views_compile():
    x = _array("float32", (5, 8))
    x[1:3, 2:6] = 7.0
    x[:, 1] += 3
    x[::2, ::3] = -1
    x[4] = x[0] * 2
    compile_all(plan_of(x, x.sum(axis=1), x.T.reshape(-1).sum()))


def test_layout_classes():
    assert flat_layout((View.contiguous((4, 5)),)).cls == ("c",)
    assert flat_layout((View((4, 5), (0, 0), 3),)).cls == ("u",)
    t = flat_layout((View((5, 4), (1, 5), 0),))
    assert t.cls == ("s",) and t.ints == (1, 5)
    neg = flat_layout((View((4,), (-1,), 3),))
    assert neg.cls == ("s",) and neg.offset == 3
    inner = split_layout((View.contiguous((6, 8)),), (1,))
    assert inner.cls == ("x", "l", "1") and inner.ints == (8,)  # unit strides are compiled in
    col = split_layout((View.contiguous((6, 8)),), (0,))
    assert col.cls == ("x", "1", "l") and col.ints == (8,)
    mid = split_layout((View.contiguous((3, 4, 5)),), (1,))
    assert mid.cls == ("x", "s", "l") and mid.ints == (20, 1, 5)
    bcast = split_layout((View((6, 8), (0, 1), 0),), (1,))
    assert bcast.cls == ("x", "l", "1") and bcast.ints == (0,)
    strided = split_layout((View((6, 8), (16, 2), 0),), (1,))
    assert strided.cls == ("x", "l", "l") and strided.ints == (16, 2)
    # a weight broadcast over the reduced axis is read once per row, outside the loop
    weight = split_layout((View((6, 8), (0, 1), 0),), (0,))
    assert weight.cls == ("x", "1", "0") and weight.ints == ()


def test_masked_views_are_strided_with_bounds():
    masked = View((6,), (1,), -1, ((1, 5),))
    lay = flat_layout((masked,))
    assert lay.cls == ("s",) and lay.masks == ((0, 1),) and lay.ints == (1, 1, 5)


def test_unsupported_kernels_raise_codegen_error():
    x = fr.asarray(np.arange(6, dtype=np.float32))
    kernel = plan_of(x * 2).kernels[0]
    odd = type(kernel)(**{**kernel.__dict__, "kind": "scatter"})
    with pytest.raises(CodegenError, match="scatter"):
        build_model(odd)


# ---------------------------------------------------------------------------------------------
# gathers (take) and scatters
# ---------------------------------------------------------------------------------------------


def _index(values):
    return fr.asarray(np.asarray(values, dtype=np.int64))


def _gathers():
    x = _array("float32", (6, 8))
    x3 = _array("float64", (4, 5, 3))
    i, j = _index([3, -1, 0, 5]), _index([[1, 2], [0, -6]])
    return [
        x[i],
        x[j],  # a 2-D index
        x3[i % 4],
        x[:, j],  # an axis other than the first: a permuted source
        x[i, _index([1, 2, 3, -4])],  # index pairs: one linear index over merged axes
        fr.sin(x[(i * 7) % 6]) * 2 + x[i % 6],  # fused with its index and its consumers
        x.T[i],
        x[::-1, 1:][i],  # reversed, offset
        x.T.reshape(-1)[i],  # a source that is a stack of two views
        x[_index([1, 2])[_index([0, 1, 1])]],  # a take in a take's index: broadcast
        x3[i % 4, :, 1],
        fr.take(x, i, axis=1),
        _array("float16", (6,))[i],
        _array("bool", (6, 8))[j],
        _array("int8", (6, 8))[_index(2)],  # a 0-d index
        fr.full((6, 3), 2.5)[i],  # a uniform source: nothing to read, bounds still checked
    ]


def _gathers_in_reductions():
    x = _array("float32", (6, 8))
    i = _index([3, -1, 0, 5])
    xi = x[i]
    return [
        xi.sum(axis=1),  # the index is one value per row
        x[(i * 3) % 6].sum(axis=0),  # outer schedule: the index varies along the reduced axis
        xi.max(),
        fr.exp(xi - xi.max(axis=1, keepdims=True)),  # a row kernel: the take in every pass
        xi.std(axis=1),
        xi.argmax(axis=1),
        _array("float32", (8,))[(x.sum(axis=1) > 2).astype(np.int64)],  # a row-level take
    ]


def _scatters(dtype):
    a = _array(dtype, (6, 4))
    a[_index([1, 1, -2])] = _array(dtype, (3, 4))  # rows, a repeated position
    b = _array(dtype, (7,))
    b[_index([0, 6, 0])] = 1  # a scalar
    c = _array(dtype, (5, 3))
    c[::-1][_index([0, 2])] = _array(dtype, (3, 2)).T  # a reversed target, transposed values
    d = _array(dtype, (5, 3))
    d[:, _index([0, 2])] = _array(dtype, (5, 2))
    e = _array(dtype, (4, 5))
    e[_index([0, 3]), _index([4, -1])] = _array(dtype, (2,))  # index pairs
    return [a, b, c, d, e]


@needs_nvrtc
def test_gathers_compile():
    plan = plan_of(*_gathers())
    sources = compile_all(plan)
    takes = sum(len(build_model(k).gathers) for k in plan.kernels)
    assert takes >= len(_gathers())  # the take of a take's index is a take too
    assert sum(src.count("fr_index_ok(") for _, src in sources) == takes


@needs_nvrtc
def test_gathers_inside_reductions_compile():
    sources = compile_all(plan_of(*_gathers_in_reductions()))
    assert any(name.startswith("fr_row_") and "fr_index_ok(" in src for name, src in sources)


@needs_nvrtc
@pytest.mark.parametrize("dtype", SCALAR_DTYPES)
def test_scatters_compile(dtype):
    plan = plan_of(*_scatters(dtype))
    sources = compile_all(plan)
    scatters = [src for name, src in sources if name.startswith("fr_scatter_")]
    assert len(scatters) == 5
    assert all("atomicMax(&fr_win_p[" in src for src in scatters)


@needs_nvrtc
def test_gathers_and_scatters_compile_with_64_bit_indexing():
    outs = [*_gathers()[:6], *_gathers_in_reductions()[:3], *_scatters("float32")[:2]]
    for _name, source in compile_all(plan_of(*outs), index_bits=64):
        assert "typedef long long fr_idx;" in source


def test_gather_and_scatter_sources_do_not_depend_on_sizes():
    def sources(n: int):
        x = _array("float32", (n, 5))
        i = _index(np.arange(n) % 3 - 1)
        y = _array("float32", (n, 5))
        y[i] = x[:n] * 2
        outs = [x[i], x[(i * 2) % n].sum(axis=1), x[i].sum(axis=0), y]
        return [generate(k) for k in plan_of(*outs).kernels]

    assert sources(7) == sources(1031)


def test_only_indexing_kernels_take_the_bounds_record():
    x = _array("float32", (6, 8))
    i = _index([3, -1])
    plain = plan_of(x * 2, x.sum(axis=1))
    indexed = plan_of(x[i] * 2, x[i].sum(axis=1))
    assert not any("fr_err" in generate(k)[1] for k in plain.kernels)
    assert all("fr_bounds* fr_err" in generate(k)[1] for k in indexed.kernels)


def test_take_index_is_evaluated_at_the_takes_shape():
    x = _array("float32", (6, 8))
    i = _index([3, -1, 0, 5])
    m = build_model(plan_of(x[(i * 7) % 6]).kernels[0])
    (take,) = m.gathers
    index = m.gathers[take].index
    assert index.shape == take.shape == (4, 8)  # (i * 7) % 6 rebuilt over the trailing axis
    assert [n.shape for n in m.computed] == [(4, 8)] * 3


# ---------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------


def test_elementwise_launch_fills_the_device_then_strides():
    s = Schedule("flat", vec=4, unroll=1)
    assert elementwise_launch(s, 4096, 132, 2048).grid == (4, 1)
    big = elementwise_launch(s, 2**26, 132, 2048)
    assert big.grid[0] == 2**26 // (256 * 4) and big.block == (256, 1)  # a vector per thread
    huge = elementwise_launch(s, 2**31, 132, 2048)
    assert huge.grid[0] * 256 <= 2**25  # a grid-stride step stays inside 32-bit headroom


def test_reduce_launch_splits_long_rows_only():
    inner = Schedule("inner", max_threads=512)
    full = reduce_launch(inner, 1, 2**26, 4, True, 132, 2048)
    assert full.splits > 100 and full.chunk % full.block[0] == 0
    assert full.chunk * full.splits >= 2**26 > full.chunk * (full.splits - 1)
    rows = reduce_launch(inner, 65536, 1024, 4, True, 132, 2048)
    assert rows.splits == 1 and rows.block[0] * rows.block[1] <= 512
    outer = Schedule("outer", max_threads=512)
    col = reduce_launch(outer, 1024, 65536, 4, True, 132, 2048)
    assert col.block[0] == 32 and col.splits > 1
    cached = Schedule("inner", max_threads=512, items=32)
    row = reduce_launch(cached, 65536, 1024, 4, False, 132, 2048)
    assert row.block[0] == 32 and row.splits == 1


def test_importing_the_backend_initialises_nothing():
    script = (
        "import json, fuseray.backends.cuda as c\n"
        "from fuseray.backends.cuda import driver, nvrtc\n"
        "print(json.dumps([driver._available, nvrtc.nvrtc_version.cache_info().currsize,"
        " len(driver._contexts)]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [None, 0, 0]


def test_kernel_sizes_are_arguments_not_literals():
    x = fr.asarray(np.arange(3 * 1021, dtype=np.float32).reshape(3, 1021))
    _, source = generate(plan_of(x.sum(axis=1)).kernels[0])
    body = source.split("extern")[1]
    for n in (3, 1021, 3 * 1021):
        assert str(n) not in body.replace("fr_idx", "")
    assert math.prod(x.shape) == 3063


@pytest.mark.parametrize("fast", [False, True])
def test_fast_math_maps_libm_calls_to_intrinsics(monkeypatch, fast):
    """fr.config.fast_math compiles with --use_fast_math and the CUDA headers that map sinf to
    __sinf (-minimal leaves them out); the default stays precise."""
    from fuseray.backends.cuda import nvrtc, program

    monkeypatch.setattr(config, "fast_math", fast)
    x = fr.asarray(np.ones(64, np.float32))
    _, plan = runtime.prepare([(fr.sin(x) * 2 + fr.exp(x))._node])
    name, src = program.generate(plan.kernels[0])
    options = program.compile_options()
    assert ("--use_fast_math" in options) is fast and ("-minimal" in options) is not fast
    ptx = nvrtc.compile_ptx(src, name, "compute_90", options).decode()
    assert ("sin.approx" in ptx) is fast


def test_every_kernel_waits_for_the_grid_ahead_before_touching_memory():
    """Every kind of generated kernel (flat, row, reduce, scatter) starts with
    ``FR_WAIT_FOR_PRIOR_GRID()``: a dependent launch (driver.Function.dependent) may start it
    before the grid ahead of it in the stream has finished."""
    x = fr.asarray(np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32))
    m = x - x.max(axis=1, keepdims=True)
    plan = plan_of(x * 2 + 1, m / m.sum(axis=1, keepdims=True), (x * x).sum(),
                   x.sum(axis=0), *_scatters("float32")[:1], *_gathers()[:1])
    kinds = set()
    for kernel in plan.kernels:
        name, source = generate(kernel)
        kinds.add(name.split("_")[1])
        signature = source.index("__global__")
        body = source[source.index(") {\n", signature) + len(") {\n"):]
        assert body.lstrip().startswith("FR_WAIT_FOR_PRIOR_GRID();"), name
    assert {"elementwise", "reduce", "scatter"} <= kinds, kinds

"""The random expression graphs of test_hypothesis.py, run on the numba backend: every graph
gives the NumPy interpreter's dtypes, shapes and values. Fewer examples than the interpreter's
test (each new graph costs numba compiles); ``FUSERAY_NUMBA_HYPOTHESIS_EXAMPLES`` sets how many."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from test_hypothesis import apply_step, comparable, make_leaf, programs, step_operands

import fuseray as fr
from fuseray import config
from harness import assert_same

numba_backend = pytest.importorskip("fuseray.backends.numba")


def build(leaves, steps):
    """The program's values as lazy fuseray arrays (steps NumPy refuses are left out), and which
    of them two backends must agree on (``test_hypothesis.comparable``)."""
    np_values = [make_leaf(*leaf) for leaf in leaves]
    values = [fr.asarray(v) for v in np_values]
    sources = [(None, ())] * len(values)
    for step in steps:
        with np.errstate(all="ignore"):
            try:
                expected = apply_step(np, step, np_values)
                got = apply_step(fr, step, values)
            except Exception:  # noqa: BLE001 - the interpreter test checks the error kinds
                continue
        if np.asarray(expected).size > 10_000:
            continue
        sources.append((step[1], step_operands(step, len(values))))
        np_values.append(np.asarray(expected))
        values.append(got)
    return values, comparable(sources, np_values)


def compute_on(backend: str, leaves, steps) -> list[np.ndarray | None] | None:
    old = config.cpu_backend, config.device, numba_backend.SMALL_KERNEL
    config.cpu_backend, config.device, numba_backend.SMALL_KERNEL = backend, "cpu", 0
    try:
        values, ok = build(leaves, steps)
        with np.errstate(all="ignore"):
            try:
                fr.compute(*values)
            except (IndexError, ValueError, ArithmeticError):
                return None  # data-dependent errors: test_hypothesis checks them
        return [v.get() if k else None for v, k in zip(values, ok)]
    finally:
        config.cpu_backend, config.device, numba_backend.SMALL_KERNEL = old


@settings(max_examples=int(os.environ.get("FUSERAY_NUMBA_HYPOTHESIS_EXAMPLES", "15")))
@given(programs())
def test_random_graphs_on_numba_match_the_interpreter(program):
    leaves, steps = program
    assert_same_values(compute_on("numpy", leaves, steps), compute_on("numba", leaves, steps))


def assert_same_values(want: list | None, got: list | None) -> None:
    """A program's values on the interpreter (``want``) and another backend: both raised a
    data-dependent error (None), or they agree within float tolerances (where they must: a
    value left out is None in both)."""
    if want is None:
        assert got is None, "the interpreter raised, the backend did not"
        return
    assert got is not None, "the backend raised where the interpreter did not"
    for w, g in zip(want, got, strict=True):
        if w is None:
            continue
        f16 = w.dtype == np.float16
        assert_same(w, g, rtol=3e-3 if f16 else 1e-5, atol=1e-3 if f16 else 1e-6)

"""The random expression graphs of test_hypothesis.py on the GPU: every graph gives the NumPy
interpreter's dtypes, shapes and values. ``FUSERAY_GPU_HYPOTHESIS_EXAMPLES`` sets how many (each
new graph costs NVRTC compiles). Marked ``gpu``; skipped without one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings

import fuseray as fr
from fuseray import config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_backend_gpu import _gpu  # noqa: E402
from test_hypothesis import VAR_PLUS_TAKE_OF_ITS_INPUT, programs  # noqa: E402
from test_numba_hypothesis import assert_same_values, build  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _gpu(), reason="needs an NVIDIA GPU, driver and NVRTC"),
]


def compute_on(device: str, leaves, steps) -> list[np.ndarray | None] | None:
    old = config.device, config.cpu_backend
    config.device, config.cpu_backend = device, "numpy"
    try:
        values, ok = build(leaves, steps)
        with np.errstate(all="ignore"):
            try:
                fr.compute(*values)
                return [fr.asnumpy(v) if k else None for v, k in zip(values, ok)]
            except (IndexError, ValueError, ArithmeticError):
                return None  # data-dependent errors: test_hypothesis checks them
    finally:
        config.device, config.cpu_backend = old


@settings(max_examples=int(os.environ.get("FUSERAY_GPU_HYPOTHESIS_EXAMPLES", "60")),
          deadline=None, suppress_health_check=list(HealthCheck))
@given(programs())
@example(VAR_PLUS_TAKE_OF_ITS_INPUT[0])
@example(VAR_PLUS_TAKE_OF_ITS_INPUT[1])
def test_random_graphs_on_the_gpu_match_the_interpreter(program):
    leaves, steps = program
    assert_same_values(compute_on("cpu", leaves, steps), compute_on("cuda", leaves, steps))

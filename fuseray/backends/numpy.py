"""The reference backend: execute a fusion plan kernel by kernel with NumPy.

Stage: backends. Each kernel's nodes are evaluated in order with ``reference.evaluate`` (NumPy
itself), so this backend gives NumPy's answers by definition; every other backend is tested
against it. It keeps the plan's structure (same kernels, same stores) so that a plan bug shows up
here too, not only on the GPU.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import reference
from ..fusion import Kernel, Plan
from ..graph import Node


def run(plan: Plan, env: dict[Node, np.ndarray]) -> None:
    for kernel in plan.kernels:
        run_kernel(kernel, env)


def run_kernel(kernel: Kernel, env: dict[Node, np.ndarray]) -> None:
    local: dict[Node, np.ndarray] = {}
    for n in kernel.nodes:
        if n in env:
            local[n] = env[n]
        elif n.op == "buffer":
            local[n] = n.value
        elif n.op == "param":
            local[n] = env[n]
        else:
            local[n] = reference.evaluate(n, [local[s] for s in n.src])
    for store in kernel.stores:
        value = local[store.value]
        if store.region is None:
            env[store.target] = np.array(value, dtype=store.target.dtype, order="C", copy=True)
            continue
        target = env.get(store.target)
        if target is None:
            target = env[store.target] = np.empty(store.target.shape, store.target.dtype)
        region, item = store.region, target.dtype.itemsize
        flat = target.reshape(-1)[region.offset:]
        view = as_strided(flat, region.shape, tuple(s * item for s in region.strides))
        view[...] = value

"""CUDA backend: fused kernels compiled with NVRTC and run through the CUDA driver API.

Stage: the last one. The code generator reads a fusion plan kernel by kernel: ``model.py`` (what
a kernel reads, computes and writes; each access's layout in one call; ``model_index.py`` for
takes), ``program.py`` (schedule and source for those layouts), ``codegen.py`` /
``codegen_reduce.py`` / ``codegen_index.py`` (the CUDA C) and ``launch.py`` (``run``: bind, compile
once, allocate, launch; ``launch_index.py``: scatter launches and the bounds record that turns a
bad index into an IndexError at synchronisation). The runtime layer beneath it is
``nvrtc.py`` (source to CUBIN), ``cache.py`` (memory and disk kernel cache), ``driver.py`` (init,
devices, contexts, modules, launches), ``streams.py`` (current device and stream) and
``memory.py`` (stream-ordered device memory, ``DeviceArray``, host transfers and zero-copy
interop). Importing this package initialises nothing: CUDA is touched on first use only, and
``available()`` is the one probe.

API for ``runtime.py``: ``available``, ``run(plan, env)``, ``direct(plan, roots, placeholders)``
(a runner for cached ``@jit`` calls of one-kernel plans), ``place(obj, dtype)``, ``to_numpy``,
``foreign_to_numpy``, ``current_device``, ``synchronize``. Without a GPU (tests):
``generate(kernel, arch)`` and ``compile_plan_sources(plan, arch)``.
"""

from __future__ import annotations

import functools
import warnings

from .launch import (
    current_device,
    direct,
    foreign_to_numpy,
    place,
    run,
    synchronize,
    to_numpy,
)
from .model import CodegenError
from .program import compile_plan_sources, generate

__all__ = [
    "CodegenError",
    "available",
    "compile_plan_sources",
    "current_device",
    "direct",
    "foreign_to_numpy",
    "generate",
    "place",
    "run",
    "synchronize",
    "to_numpy",
]


@functools.cache
def available() -> bool:
    """Whether a GPU, its driver and NVRTC are all usable (probed once; warns once if not)."""
    from . import driver, nvrtc

    if not driver.available():  # warns once, naming the reason
        return False
    try:
        nvrtc.nvrtc_version()
    except Exception as exc:  # noqa: BLE001 - any loader failure means the same: no compiler
        warnings.warn(
            f"fuseray: NVRTC could not be loaded ({exc}); running on the CPU.",
            driver.CUDAUnavailableWarning,
            stacklevel=2,
        )
        return False
    return True

"""Run-time settings, read once from the environment and changeable in code.

Stage: shared. ``fr.config.debug = True`` verifies the graph after every pass;
``FUSERAY_DEVICE`` (``cpu`` or ``cuda``) forces where new arrays live; ``FUSERAY_CPU_BACKEND``
(``numba`` or ``numpy``) picks the CPU executor; ``max_kernel_ops`` bounds how many ops one fused
kernel may hold (longer chains are cut, and ``explain`` says where); ``fast_math`` lets the CUDA
backend use approximate intrinsics (off: results match NumPy within float tolerances);
``tiered_compile`` (``FUSERAY_TIERED_COMPILE=0`` turns it off) lets a new CUDA kernel start on a
quick build while the optimised one compiles in the background (``backends/cuda/tiers.py``);
``compiled_calls`` (``FUSERAY_COMPILED_CALLS=0`` turns it off) runs cached one-kernel ``@jit``
calls through the C call site (``backends/cuda/_callsite.c``) where it is built;
``dependent_launch`` (``FUSERAY_DEPENDENT_LAUNCH=1`` turns it on) lets a generated kernel's grid
start, on a GPU of compute capability 9.0 or later, while the grid ahead of it in the stream
finishes (programmatic dependent launch; read when a kernel is loaded). Off by default until
the GPU tests have run with it on (benchmarks/NOTES.md G39).
"""

from __future__ import annotations

import os

debug: bool = os.environ.get("FUSERAY_DEBUG", "") not in ("", "0")
device: str | None = os.environ.get("FUSERAY_DEVICE") or None
cpu_backend: str = os.environ.get("FUSERAY_CPU_BACKEND", "numba")
max_kernel_ops: int = int(os.environ.get("FUSERAY_MAX_KERNEL_OPS", "512"))
fast_math: bool = os.environ.get("FUSERAY_FAST_MATH", "") not in ("", "0")
tiered_compile: bool = os.environ.get("FUSERAY_TIERED_COMPILE", "1").strip() != "0"
compiled_calls: bool = os.environ.get("FUSERAY_COMPILED_CALLS", "1").strip() != "0"
dependent_launch: bool = os.environ.get("FUSERAY_DEPENDENT_LAUNCH", "0").strip() not in ("", "0")

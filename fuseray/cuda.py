"""``fr.cuda``: devices, streams, errors and memory of the CUDA backend, named as CuPy names them.

Public surface only (re-exports from ``backends/cuda``). Importing it never initialises CUDA, so
it is safe on machines without a GPU; ``is_available()`` says whether fuseray runs kernels there.
"""

from .backends.cuda.driver import CUDAError, CUDAUnavailableError  # noqa: F401
from .backends.cuda.memory import OutOfMemoryError  # noqa: F401
from .backends.cuda.nvrtc import CompileError  # noqa: F401
from .backends.cuda.streams import (  # noqa: F401
    Device,
    ExternalStream,
    Stream,
    get_current_device,
    get_current_stream,
)


def is_available() -> bool:
    """True when a driver and a GPU are present and fuseray runs its kernels there."""
    from . import runtime

    return runtime.cuda_backend() is not None


def kernel_cache_stats() -> dict[str, int]:
    """Counters of the kernel cache (memory hits, disk hits, NVRTC compiles, ...): a new array
    size, for instance, adds no compile. Works without a GPU (the counters stay at zero)."""
    import dataclasses

    from .backends.cuda.cache import default_cache

    return dataclasses.asdict(default_cache().stats)


def wait_for_compiles(timeout: float | None = None) -> bool:
    """Block until every kernel that started on a quick build runs its optimised build
    (``fr.config.tiered_compile``); False if ``timeout`` seconds passed first. Results do not
    depend on it: both builds compute the same bits. Benchmarks call it before timing."""
    from .backends.cuda import tiers

    return tiers.wait(timeout)


def peak_memory(device=None) -> int:
    """Bytes of device memory fuseray held at most at once (its pool's high-water mark) on
    ``device`` (default: the current one) since ``reset_peak_memory``."""
    from .backends.cuda import memory

    return memory.peak_bytes(Device(device).id)


def reset_peak_memory(device=None) -> None:
    from .backends.cuda import memory

    memory.reset_peak(Device(device).id)

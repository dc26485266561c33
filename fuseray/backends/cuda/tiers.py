"""Tiered compilation: a new kernel starts on a quick build while the optimised one compiles in
the background.

Stage: backend (CUDA), between ``launch.Program`` and the ``KernelCache``. A kernel that no cache
level holds is compiled twice from the same source: first with NVRTC's fastest optimisation
level (``QUICK_OPTIONS``, about half the time of a full build: NOTES.md G19), which the call
that needed it launches at once; then, on a worker thread, with the normal options, whose
function replaces the quick one for every later launch. NVRTC releases the GIL while it
compiles, so the caller goes on running Python meanwhile.

Invariants:

* Both builds compute the same bits. They differ only in ``-Ofc=max`` and in the quick build
  leaving out elementwise kernels' vector loops (``-DFR_QUICK=1``; the scalar loop computes each
  element the same way), and tiers are used only when FMA contraction is off (``-fmad=false``,
  the precise mode's option): at the quick level NVVM neither inlines nor contracts
  ``a * b + c``, so with contraction allowed the two builds would round differently. A GPU
  test compares the two builds bit for bit on every workload.
* Only the optimised CUBIN is cached, in memory and on disk: a process that finds it there never
  runs a quick build, and the quick build never shadows a full one.
* The swap is one attribute store (``Program.function``); a launch reads the attribute once. The
  quick build's module stays loaded, as every module does, so kernels in flight are unaffected.
* A failed optimised build warns once and leaves the kernel on its (correct) quick build.
* ``wait()`` drains the queue. At interpreter exit pending builds still run (their CUBINs reach
  the disk cache for the next process) for at most ``EXIT_WAIT_S``, without loading modules.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import time
import warnings

from ... import config
from . import driver

__all__ = ["QUICK_OPTIONS", "enabled", "pending", "schedule_upgrade", "wait"]

# NVRTC's fastest level, and the source without its vector loops (codegen.Emitter.unless_quick)
QUICK_OPTIONS = ("-Ofc=max", "-DFR_QUICK=1")
EXIT_WAIT_S = 10.0

_cond = threading.Condition()
_jobs: collections.deque = collections.deque()
_state = {"pending": 0, "thread": None, "exiting": False, "warned": False, "atexit": False}


def enabled(options: tuple[str, ...]) -> bool:
    """Whether a kernel compiled with ``options`` may start on a quick build."""
    return config.tiered_compile and "-fmad=false" in options


def schedule_upgrade(program, device_id: int, arch: str, options: tuple[str, ...]) -> None:
    """Compile ``program``'s source with ``options`` on the worker and swap its function."""
    with _cond:
        _jobs.append((program, device_id, arch, options))
        _state["pending"] += 1
        if _state["thread"] is None:
            thread = threading.Thread(target=_work, name="fuseray-compile", daemon=True)
            _state["thread"] = thread
            thread.start()
            if not _state["atexit"]:
                _state["atexit"] = True
                atexit.register(_at_exit)
        _cond.notify_all()


def pending() -> int:
    """Optimised builds queued or compiling."""
    with _cond:
        return _state["pending"]


def wait(timeout: float | None = None) -> bool:
    """Block until every queued optimised build is done; False if ``timeout`` seconds passed
    first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _cond:
        while _state["pending"]:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            _cond.wait(left)
    return True


def _work() -> None:
    while True:
        with _cond:
            while not _jobs:
                _cond.wait()
            job = _jobs.popleft()
        try:
            _upgrade(*job)
        except Exception as exc:  # noqa: BLE001 - the quick build keeps the kernel working
            _warn(job[0], exc)
        finally:
            with _cond:
                _state["pending"] -= 1
                _cond.notify_all()


def _upgrade(program, device_id: int, arch: str, options: tuple[str, ...]) -> None:
    from .cache import default_cache

    gen = program.generated
    cubin = default_cache().get_cubin(gen.source, gen.name, arch, options)
    if _state["exiting"]:  # the disk cache has it; no module loads while Python shuts down
        return
    program.function = driver.load_function(device_id, cubin, gen.name,
                                            driver.dependent_launch(device_id))
    program.quick = False


def _warn(program, exc: Exception) -> None:
    with _cond:
        if _state["warned"]:
            return
        _state["warned"] = True
    warnings.warn(
        f"fuseray: the optimised build of kernel {program.generated.name} failed "
        f"({type(exc).__name__}: {exc}); it keeps running its quick build, which computes the "
        "same results more slowly. Further failures are not reported.",
        RuntimeWarning,
        stacklevel=2,
    )


def _at_exit() -> None:
    _state["exiting"] = True
    wait(EXIT_WAIT_S)


def _after_fork() -> None:
    # the worker thread does not exist in a forked child: start over empty
    global _cond
    _cond = threading.Condition()
    _jobs.clear()
    _state.update(pending=0, thread=None, exiting=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)

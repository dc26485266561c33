"""pytest plugin: the numba op tables compile in a child process while the other tests run.

test_numba_backend's op tables are the session's longest compiles: one kernel of about 80 ops per
dtype, 15 of them, 20-35 s each on a 2-core VM (numba's typing and lowering are single-threaded
Python), about 400 s of a 20-minute CI run on a slow day. The test process can only compile them
one after another, while the second core is mostly idle (compile_all's NVRTC workers use about a
third of it). So after collection a child process compiles the selected op tables into the
session's numba disk cache (the one test_numba_backend's ``cache_dir`` fixture uses), and the
tests, which start minutes later, load them from disk.

The tests are unchanged: they plan, generate and load the very kernels a user's process would,
and they still compare every output with the NumPy interpreter. A kernel the child has not
finished (or could not compile) the test compiles itself, as without this plugin; numba_cache
writes every file atomically, so the two processes never see half a file. The child prints
nothing and runs at a lower priority than the tests (above compile_all's workers).

Stopped and joined when the session ends, every way out, with its cache directory.
``FUSERAY_WARM_NUMBA=0`` turns it off.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile

# test functions whose kernels the child compiles, with the dtype parameter of each item
WARMED = ("test_op_table", "test_op_table_strided")

_state: dict = {"process": None, "dir": None}


def cache_dir() -> str | None:
    """The session's numba cache directory if the child was started (else None)."""
    return _state["dir"]


def _warm(directory: str, jobs: list[tuple[str, str]]) -> None:
    """The child: compile each ``(test, dtype)``'s kernel as the test's numba evaluation does,
    last first: the tests take them first to last, so where they catch up with the child (a
    run of test_numba_backend alone starts both at once) the two meet in the middle instead of
    compiling the same kernels side by side."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.nice(10)
    os.environ["FUSERAY_CACHE_DIR"] = directory
    import warnings

    warnings.simplefilter("ignore")
    import numpy as np
    import test_numba_backend as t

    from fuseray import config
    from fuseray.backends import numba as numba_backend

    config.device, config.cpu_backend = "cpu", "numba"
    numba_backend.SMALL_KERNEL = 0  # as the tests' ``cpu`` fixture
    for test, dtype in reversed(jobs):
        build, inputs, _ = t.op_table_case(test, np.dtype(dtype))
        try:
            t.evaluate(build, inputs, "numba")
        except Exception:  # noqa: BLE001 - the test compiles it again and reports
            pass


def pytest_collection_finish(session):
    if os.environ.get("FUSERAY_WARM_NUMBA", "1") == "0" or session.config.option.collectonly:
        return
    jobs = [(item.originalname, str(item.callspec.params["dtype"])) for item in session.items
            if item.path.name == "test_numba_backend.py" and item.originalname in WARMED]
    if not jobs:
        return
    _state["dir"] = tempfile.mkdtemp(prefix="fuseray-numba-warm-")
    process = multiprocessing.get_context("spawn").Process(
        target=_warm, args=(_state["dir"], jobs), name="fuseray-numba-warm", daemon=True)
    process.start()
    _state["process"] = process


def pytest_unconfigure(config):
    process, directory = _state["process"], _state["dir"]
    _state["process"] = _state["dir"] = None
    if process is not None:
        process.terminate()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)

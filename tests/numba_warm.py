"""pytest plugin: test_numba_backend's heaviest tests run once more, ahead, in a child process.

numba compiles each new loop in single-threaded Python: test_numba_backend's op tables (one kernel
of about 80 ops per dtype, 15 of them) take 20-35 s each on a 2-core VM, and its reductions,
takes, scatters and stencils 5-30 s more each, one after another in the test process, while
the second core is mostly idle (compile_all's NVRTC workers use about a third of it). So after
collection a child process runs the selected ones of ``WARMED`` (value comparisons with no
fixture of their own) against the session's numba disk cache (the one the module's
``cache_dir`` fixture uses), last first, and throws their outcomes away. The test process
reaches them minutes later and loads most of their kernels from disk; where it catches up
with the child (a run of the module alone starts both at once) the two meet in the middle.

The tests are unchanged and still decide: they plan, generate and load the very kernels a
user's process would and compare every output with the NumPy interpreter; a kernel the child
has not finished (or could not compile) the test compiles itself. numba_cache writes every file
atomically, so the two processes never see half a file. The child prints nothing and runs at a
lower priority than the tests (above compile_all's workers). Stopped and joined when the
session ends, every way out, with its cache directory. ``FUSERAY_WARM_NUMBA=0`` turns it off.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import tempfile

# test_numba_backend's tests the child runs: value comparisons whose only fixture is the module's
# autouse ``cpu`` (which the child sets up itself). Tests of the cache, of fallbacks, of threads
# and of compile counts are left to the test process alone.
WARMED = (
    "test_op_table", "test_op_table_strided", "test_layouts", "test_reductions_all_axes",
    "test_reductions_of_views", "test_arg_reductions", "test_reduction_dtypes",
    "test_split_reductions_are_deterministic_and_right", "test_workloads",
    "test_masked_reads_from_updates", "test_indexing_and_update_programs",
    "test_take_reads_every_rank_and_dtype", "test_take_fuses_into_elementwise_and_reductions",
    "test_scatter_writes_last_wins_and_masks",
)

_state: dict = {"process": None, "dir": None}


def cache_dir() -> str | None:
    """The session's numba cache directory if the child was started (else None)."""
    return _state["dir"]


def _warm(directory: str, jobs: list[tuple[str, bytes]]) -> None:
    """The child: run each ``(test, pickled parameters)``, last first, outcomes thrown away."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.nice(10)
    os.environ["FUSERAY_CACHE_DIR"] = directory
    import warnings

    warnings.simplefilter("ignore")
    import test_numba_backend as t

    from fuseray import config
    from fuseray.backends import numba as numba_backend

    config.device, config.cpu_backend = "cpu", "numba"  # the module's ``cpu`` fixture
    numba_backend.SMALL_KERNEL = 0
    for test, params in reversed(jobs):
        try:
            getattr(t, test)(**pickle.loads(params))
        except BaseException:  # noqa: BLE001 - failures, skips: the test process decides
            pass


def _job(item) -> tuple[str, bytes] | None:
    """``(test name, pickled parameters)`` of a WARMED item, or None."""
    if item.path.name != "test_numba_backend.py" or item.originalname not in WARMED:
        return None
    callspec = getattr(item, "callspec", None)
    try:
        return item.originalname, pickle.dumps(dict(callspec.params) if callspec else {})
    except Exception:  # noqa: BLE001 - a parameter that does not pickle: not warmed
        return None


def pytest_collection_finish(session):
    if os.environ.get("FUSERAY_WARM_NUMBA", "1") == "0" or session.config.option.collectonly:
        return
    jobs = [job for job in map(_job, session.items) if job is not None]
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

"""pytest plugin: compile, with NVRTC, every CUDA kernel the whole test session plans.

The core test suite runs on the CPU, but every plan it makes is a plan the CUDA backend could be
handed. This plugin registers a hook in ``fuseray.runtime.PLAN_HOOKS`` that generates the CUDA
source of every kernel of every plan (deduplicated by source text), and at the end of the session
compiles each distinct source to a CUBIN for sm_80 and sm_90. A kernel NVRTC rejects
(``CompileError``) fails the session, with the kernel's name, the test that planned it and the
compiler's log in the terminal summary; kernels the code generator refuses (``CodegenError``, a
kind it has no form for yet) are listed, and fail the session too with
``FUSERAY_COMPILE_ALL_STRICT=1``.

Enable it from ``tests/conftest.py``::

    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).parent / "cuda"))
    pytest_plugins = ["compile_all"]

or for one run: ``PYTHONPATH=tests/cuda pytest -p compile_all``. Settings (environment):
``FUSERAY_COMPILE_ALL=0`` turns it off; ``FUSERAY_COMPILE_ARCHS`` (default ``sm_80,sm_90``);
CUBINs go through the disk ``KernelCache`` (``FUSERAY_CACHE_DIR``), so a rerun compiles only what
changed. Machines without NVRTC skip the compile step with a warning.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

_STATE: dict = {}


def _enabled() -> bool:
    return os.environ.get("FUSERAY_COMPILE_ALL", "1").strip() not in ("0", "")


def pytest_configure(config):
    if not _enabled():
        return
    from fuseray import runtime

    state = {"sources": {}, "refused": {}, "test": None, "lock": threading.Lock()}
    _STATE.update(state)

    def hook(plan):
        from fuseray.backends.cuda import CodegenError, generate

        for kernel in plan.kernels:
            try:
                name, source = generate(kernel)
            except CodegenError as exc:
                _STATE["refused"].setdefault(kernel.name, (str(exc), _STATE["test"]))
                continue
            with _STATE["lock"]:
                _STATE["sources"].setdefault(source, (name, _STATE["test"]))

    _STATE["hook"] = hook
    runtime.PLAN_HOOKS.append(hook)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if _STATE:
        _STATE["test"] = item.nodeid
    yield


def _compile(source: str, name: str, arch: str, cache):
    from fuseray.backends.cuda import nvrtc
    from fuseray.backends.cuda.program import compile_options

    try:
        cache.get_cubin(source, name, arch, compile_options())
    except nvrtc.CompileError as exc:
        return exc
    return None


def pytest_sessionfinish(session, exitstatus):
    if not _STATE:
        return
    from fuseray import runtime

    if _STATE.get("hook") in runtime.PLAN_HOOKS:
        runtime.PLAN_HOOKS.remove(_STATE["hook"])
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    sources = _STATE["sources"]
    refused = [
        f"{name} (planned by {test}): {msg}" for name, (msg, test) in _STATE["refused"].items()
    ]
    strict = os.environ.get("FUSERAY_COMPILE_ALL_STRICT", "").strip() not in ("", "0")
    failures = list(refused) if strict else []
    if refused and not strict:
        say(
            f"compile_all: {len(refused)} kernels the CUDA code generator refuses (not failing;"
            " FUSERAY_COMPILE_ALL_STRICT=1 fails on them):"
        )
        for r in refused:
            say(f"  {r[:400]}")
    try:
        from fuseray.backends.cuda import nvrtc
        from fuseray.backends.cuda.cache import KernelCache

        nvrtc.nvrtc_version()
    except Exception as exc:  # noqa: BLE001 - no NVRTC here: report and skip the compiles
        say(f"compile_all: NVRTC unavailable ({exc}); {len(sources)} kernels not compiled")
        sources = {}
    archs = [
        a.strip()
        for a in os.environ.get("FUSERAY_COMPILE_ARCHS", "sm_80,sm_90").split(",")
        if a.strip()
    ]
    start = time.perf_counter()
    if sources:
        cache = KernelCache()
        jobs = [(src, name, test, arch) for src, (name, test) in sources.items() for arch in archs]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = list(pool.map(lambda j: _compile(j[0], j[1], j[3], cache), jobs))
        for (_, name, test, arch), err in zip(jobs, results):
            if err is not None:
                failures.append(f"{name} for {arch} (planned by {test}):\n{err}")
    say(
        f"compile_all: {len(sources)} distinct CUDA kernels x {len(archs)} architectures"
        f" compiled in {time.perf_counter() - start:.1f} s; {len(failures)} failed"
    )
    for f in failures:
        say(f"compile_all FAILED: {f[:4000]}")
    if failures:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

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
It is opt-in: ``FUSERAY_COMPILE_ALL=1`` turns it on; ``FUSERAY_COMPILE_ARCHS`` (default ``sm_80,sm_90``);
``FUSERAY_COMPILE_ALL_LIMIT`` (default 1000, 0 for no limit) bounds how many distinct kernels
are compiled, chosen deterministically (see ``pytest_sessionfinish``);
Kernels are compiled 64 to an NVRTC program (each in its own namespace, the headers parsed
once), in worker processes; a batch that fails is compiled kernel by kernel to name the failing
ones. Machines without NVRTC skip the compile step with a warning.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

_STATE: dict = {}


def _enabled() -> bool:
    # opt-in: generating and compiling every planned kernel costs more than the suite itself
    # (tens of minutes for the op grid); CI's compile check is tests/cuda/test_codegen.py
    return os.environ.get("FUSERAY_COMPILE_ALL", "0").strip() not in ("0", "")


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


BATCH = 64  # kernels per NVRTC program: parsing the headers once per batch, not per kernel


def _batch_source(sources: list[str]) -> str:
    """One translation unit holding every kernel of ``sources``, each in its own namespace (their
    helpers and typedefs share names); the headers are included once, with float16 enabled."""
    parts = ["#define FR_HALF 1", '#include "fuseray_index.cuh"']
    for i, src in enumerate(sources):
        body = "\n".join(
            line for line in src.splitlines()
            if not line.startswith(("#define FR_HALF", "#include"))
        )
        parts.append(f"namespace fr_batch_{i} {{\n{body}\n}}")
    return "\n".join(parts)


def _compile_batch(job) -> list[tuple[int, str]]:
    """Compile one batch for one arch (in a worker process); on an error, compile its kernels
    one by one to name the failing ones. Returns (index, log) per failing kernel."""
    indices, sources, names, arch = job
    from fuseray.backends.cuda import nvrtc
    from fuseray.backends.cuda.program import compile_options

    options = compile_options()
    try:
        nvrtc.compile_cubin(_batch_source(sources), f"fr_batch_{indices[0]}", arch, options)
        return []
    except nvrtc.CompileError:
        pass
    failures = []
    for i, src, name in zip(indices, sources, names):
        try:
            nvrtc.compile_cubin(src, name, arch, options)
        except nvrtc.CompileError as exc:
            failures.append((i, str(exc)))
    return failures


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
    limit = int(os.environ.get("FUSERAY_COMPILE_ALL_LIMIT", "1000"))
    if sources:
        # The op-table grid alone plans thousands of layout variants (about 90 ms of NVRTC each);
        # a bounded, deterministic selection keeps CI short: every kernel planned outside
        # test_ops.py first, then the grid's in digest order. FUSERAY_COMPILE_ALL_LIMIT=0 compiles
        # every one (the full check, about half an hour on two cores).
        items = sorted(sources.items(), key=lambda kv: ("test_ops.py" in str(kv[1][1]),
                                                          hashlib.sha256(kv[0].encode()).digest()))
        if limit and len(items) > limit:
            say(f"compile_all: compiling {limit} of {len(items)} distinct kernels"
                " (FUSERAY_COMPILE_ALL_LIMIT=0 for all)")
            items = items[:limit]
        jobs = []
        for arch in archs:
            for k in range(0, len(items), BATCH):
                chunk = items[k:k + BATCH]
                jobs.append((list(range(k, k + len(chunk))), [src for src, _ in chunk],
                             [name for _, (name, _) in chunk], arch))
        # NVRTC runs in worker processes (spawned: the parent may hold a CUDA context)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1, mp_context=context) as pool:
            for job, failed in zip(jobs, pool.map(_compile_batch, jobs)):
                for i, log in failed:
                    _, (name, test) = items[i]
                    failures.append(f"{name} for {job[3]} (planned by {test}):\n{log}")
    say(
        f"compile_all: {min(len(sources), limit or len(sources))} distinct CUDA kernels x"
        f" {len(archs)} architectures"
        f" compiled in {time.perf_counter() - start:.1f} s; {len(failures)} failed"
    )
    for f in failures:
        say(f"compile_all FAILED: {f[:4000]}")
    if failures:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

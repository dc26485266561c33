"""pytest plugin: every CUDA kernel the test session plans is compiled by NVRTC for sm_80 and sm_90.

The suite runs on the CPU, but every plan it makes is a plan the CUDA backend could be handed, so
a code generation error must fail CI even on a machine without a GPU. A hook in
``fuseray.runtime.PLAN_HOOKS`` generates the CUDA source of every kernel of every plan (the
op-table grid, the hypothesis graphs and the benchmark workloads included), and worker processes
compile them while the tests run:

* Sources identical apart from the kernel's name and comments are compiled once.
* Kernels go to NVRTC ``BATCH`` to a program (``nvrtc.compile_batch``: headers parsed once, each
  kernel in its own namespace under a name unique in the batch). A batch NVRTC rejects is compiled
  kernel by kernel, with the kernels' own sources and names, to name the failing ones and give
  their logs.
* Each batch is compiled for every architecture of ``FUSERAY_COMPILE_ARCHS`` (default
  ``sm_90,compute_80``, see ``ARCHS``), at the level ``FUSERAY_COMPILE_LEVEL`` names (default
  ``quick``, see ``LEVELS``): a CUBIN for sm_90 built exactly as the backend's first, quick
  tier builds it (front end, NVVM, ptxas), and the front end alone for sm_80. ``full`` builds
  what the optimised tier loads (8x the CPU time); tests/cuda/test_codegen.py builds its
  kernels (every op, loop kind, reduction layout and workload) that way for sm_90, and as the
  quick tier does for sm_80 (its ``BUILDS``).
* The workers (spawned, one per CPU, at the lowest priority so that the test process keeps its
  core) start with the session; whatever is left is compiled when the tests are done.

The result is the last test item, ``tests/cuda/compile_all.py::every_planned_kernel_compiles``: it
fails naming each kernel NVRTC rejects, the test that planned it and NVRTC's log. A kernel the
code generator refuses (``CodegenError``) fails it too, unless it is one of the documented
limitations in ``KNOWN_LIMITATIONS``. Waiting for the workers is bounded
(``FUSERAY_COMPILE_ALL_TIMEOUT`` seconds, default 1200); on timeout, and on every other way out
of the session, the workers are stopped and joined, so no process outlives pytest.

On by default; ``FUSERAY_COMPILE_ALL=0`` turns it off (quick local runs). Without NVRTC the
sources are still generated (a generator error still fails) and the compile step is skipped with
a message.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import multiprocessing
import os
import re
import threading
import time

import pytest

# Kernels per NVRTC program. Setting up a program and parsing the headers cost about as much as
# compiling a typical kernel; measured (CPU ms a kernel for sm_80 CUBIN, compute_90 PTX, -minimal):
# alone 45 / 31, 8 a program 32 / 19, 32 a program 30 / 18, 128 a program 30 / 18. 32 keeps jobs
# short (about a second) so that the last ones finish together.
BATCH = 32

ITEM_NAME = "every_planned_kernel_compiles"

# What each kernel is compiled to: ``sm_XY`` a CUBIN (NVRTC's front end, NVVM and ptxas, as the
# backend loads on such a GPU), ``compute_XY`` the same program for a virtual architecture. The
# front end is where a code generation error shows, and it runs for both architectures
# (``__CUDA_ARCH__`` 800 and 900); ptxas, which is what reads inline PTX, runs for sm_90, the GPU
# the benchmarks run on. FUSERAY_COMPILE_ARCHS=sm_80,sm_90 asks for both CUBINs.
ARCHS = "sm_90,compute_80"

# How far each architecture's build goes, by FUSERAY_COMPILE_LEVEL: options added to the
# backend's own for a real (``sm_XY``) and for a virtual (``compute_XY``) architecture.
# ``quick``: the CUBIN the backend's quick tier launches first (tiers.QUICK_OPTIONS), and the
# front end alone (``-fdevice-syntax-only``) for the virtual one. ``full``: the optimised builds.
# CPU ms a kernel, this suite's kernels, batches of 32 (2-core VM, 2026-12-04): sm_90 full 247,
# quick 31; compute_80 full 75, syntax only 2.8. The full level made CI's compile step about
# 1,200 s of CPU for 12,000 kernels, which took CI past 15 minutes.
LEVELS = ("quick", "full")

# Test modules that plan most of the session's kernels run first, so that the workers compile
# while the slower, kernel-light modules (numba) run, instead of after the last test.
EARLY_MODULES = ("test_ops.py", "test_reductions.py")

# A CodegenError fails the check unless the kernel is one of the CUDA backend's documented
# limitations: ``(why, predicate on the fusion kernel)``, as in
# ``("scatter kernels have no CUDA form yet", lambda k: k.kind == "scatter")`` before take and
# scatter were generated. None today: every kernel the planner makes must compile.
KNOWN_LIMITATIONS: tuple = ()

_COMMENT_LINE = re.compile(r"^[ \t]*//[^\n]*\n", re.MULTILINE)


def _enabled() -> bool:
    return os.environ.get("FUSERAY_COMPILE_ALL", "1").strip() not in ("0", "")


def _archs() -> list[str]:
    raw = os.environ.get("FUSERAY_COMPILE_ARCHS", ARCHS)
    return [a.strip() for a in raw.split(",") if a.strip()]


def _level() -> str:
    level = os.environ.get("FUSERAY_COMPILE_LEVEL", "quick").strip() or "quick"
    if level not in LEVELS:
        raise pytest.UsageError(
            f"FUSERAY_COMPILE_LEVEL={level!r}: expected one of {', '.join(LEVELS)}"
        )
    return level


def _arch_options(arch: str, options: tuple[str, ...], level: str) -> tuple[str, ...]:
    """The backend's ``options`` plus what ``level`` adds for ``arch``."""
    if level == "full":
        return options
    if arch.startswith("compute_"):
        return (*options, "-fdevice-syntax-only")
    from fuseray.backends.cuda import tiers

    return (*options, *tiers.QUICK_OPTIONS)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------
# worker side (runs in the spawned processes)
# ---------------------------------------------------------------------------------------------


def _worker_init() -> None:
    # The test process keeps its core; compiles use what it leaves idle.
    try:
        os.nice(19)
    except (AttributeError, OSError):
        pass
    # A worker must not outlive pytest, however pytest ends (SIGTERM and SIGKILL run no cleanup,
    # and a pool worker holds its own queue's write end, so it would wait for work forever).
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _warm() -> bool:
    """Load NVRTC in a worker; False when it is not available here."""
    from fuseray.backends.cuda import nvrtc

    try:
        nvrtc.nvrtc_version()
        nvrtc.include_dirs()
    except Exception:  # noqa: BLE001 - any loader failure means the same: no compiler here
        return False
    return True


def _compile_job(job) -> tuple[list[tuple[int, str]], float] | None:
    """Compile one batch for one arch: ``([(index in batch, log), ...], CPU seconds)``, the log of
    each kernel that fails; None when this machine has no NVRTC.

    ``job`` is ``(arch, options, [(name, source), ...])``. The batch holds each kernel under a
    name unique in it (distinct sources may share a kernel name: layouts are not in the name);
    when the batch fails, each kernel is compiled alone, as the backend would, for its log.
    """
    arch, options, kernels = job
    from fuseray.backends.cuda import nvrtc

    if not _warm():
        return None
    start = time.process_time()
    renamed = [
        re.sub(rf"\b{re.escape(name)}\b", f"{name}_b{i}", source)
        for i, (name, source) in enumerate(kernels)
    ]
    try:
        nvrtc.compile_batch(renamed, f"fr_batch_{kernels[0][0]}", arch, options)
        return [], time.process_time() - start
    except nvrtc.CompileError:
        pass
    failures = []
    to_binary = nvrtc.compile_ptx if arch.startswith("compute_") else nvrtc.compile_cubin
    for i, (name, source) in enumerate(kernels):
        try:
            to_binary(source, name, arch, options)
        except nvrtc.CompileError as exc:
            failures.append((i, str(exc)))
    return failures, time.process_time() - start


# ---------------------------------------------------------------------------------------------
# test-process side
# ---------------------------------------------------------------------------------------------


class KernelsFailed(Exception):
    """Raised by the compile item; ``str()`` is the whole report."""


class Compiler:
    """Collects the session's kernels and feeds batches to a process pool as they fill."""

    def __init__(self) -> None:
        self.archs = _archs()
        self.level = _level()
        self.lock = threading.Lock()
        self.test = "(collection)"
        self.seen: set[bytes] = set()  # digests of the normalised sources already queued
        self.pending: dict[tuple, list[tuple[str, str, str]]] = {}  # group -> [(name, src, test)]
        self.jobs: list[tuple[cf.Future, str, list[tuple[str, str]]]] = []  # arch, [(name, test)]
        self.refused: dict[str, tuple[str, str]] = {}  # kernel name -> (message, test)
        self.limited: dict[str, int] = {}  # known limitation -> kernels refused for it
        self.planned = 0
        self.by_module: dict[str, int] = {}  # test module -> distinct sources it planned first
        self.gen_seconds = 0.0
        self.pool: cf.ProcessPoolExecutor | None = None
        self.nvrtc = True
        self.closed = False
        self.summary = ""

    # -- pool ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers now, before any test can change the environment or directory."""
        workers = _cpus()
        self.pool = cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),  # never fork a process with threads
            initializer=_worker_init,
        )
        # spawned on demand: ask for every worker now, while the environment is the session's
        for _ in range(workers):
            self.pool.submit(_warm)

    def stop(self) -> None:
        """Stop and join every worker (idempotent). Idle workers exit on their own; busy ones (a
        timeout, an interrupted session) are killed rather than waited for."""
        if self.pool is None:
            return
        pool, self.pool = self.pool, None
        busy = any(not future.done() for future, _, _ in self.jobs)
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        if busy:
            for p in processes:
                if p.is_alive():
                    p.kill()
        for p in processes:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join()
        pool.shutdown(wait=True)

    def _unnice(self) -> None:
        """The tests are done: give the workers normal priority back where that is allowed (it
        matters only on a machine shared with other work; unprivileged, it fails harmlessly)."""
        for p in list((getattr(self.pool, "_processes", None) or {}).values()):
            try:
                os.setpriority(os.PRIO_PROCESS, p.pid, 0)
            except (AttributeError, OSError):
                pass

    # -- collecting ----------------------------------------------------------------------------

    def hook(self, plan) -> None:
        from fuseray.backends.cuda import CodegenError, generate, nvrtc
        from fuseray.backends.cuda.program import compile_options

        if self.closed:
            return
        start = time.perf_counter()
        options = compile_options()
        for kernel in plan.kernels:
            self.planned += 1
            try:
                name, source = generate(kernel)
            except CodegenError as exc:
                self._refused(kernel, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a generator crash fails the check, not the test
                self._refused(kernel, f"the code generator crashed: {exc!r}")
                continue
            # sizes are arguments already; a kernel's name and comments do not change its code
            normal = _COMMENT_LINE.sub("", source.replace(name, "fr_kernel"))
            key = hashlib.blake2b(normal.encode(), digest_size=16).digest()
            group = (options, nvrtc.preamble(source))  # a batch shares its #define and #include
            with self.lock:
                if key in self.seen:
                    continue
                self.seen.add(key)
                module = self.test.split("::")[0]
                self.by_module[module] = self.by_module.get(module, 0) + 1
                batch = self.pending.setdefault(group, [])
                batch.append((name, source, self.test))
                if len(batch) >= BATCH:
                    self._submit(group, self.pending.pop(group))
        self.gen_seconds += time.perf_counter() - start

    def _refused(self, kernel, exc: Exception | str) -> None:
        for why, applies in KNOWN_LIMITATIONS:
            if applies(kernel):
                with self.lock:
                    self.limited[why] = self.limited.get(why, 0) + 1
                return
        with self.lock:
            self.refused.setdefault(kernel.name, (str(exc), self.test))

    def _submit(self, group, batch) -> None:
        if self.pool is None or not self.nvrtc:
            return
        kernels = [(name, source) for name, source, _ in batch]
        names = [(name, test) for name, _, test in batch]
        for arch in self.archs:
            try:
                options = _arch_options(arch, group[0], self.level)
                future = self.pool.submit(_compile_job, (arch, options, kernels))
            except RuntimeError as exc:  # a broken pool (a worker died): reported, never raised
                future = cf.Future()
                future.set_exception(exc)
            self.jobs.append((future, arch, names))

    # -- the result ----------------------------------------------------------------------------

    def finish(self, timeout: float) -> tuple[list[str], str]:
        """Compile what is left, wait for every batch, stop the pool: (failures, summary)."""
        self._unnice()
        with self.lock:
            self.closed = True
            for group, batch in self.pending.items():
                self._submit(group, batch)
            self.pending.clear()
        failures = [
            f"{name}: the CUDA code generator refuses it (planned by {test}):\n{msg}"
            for name, (msg, test) in self.refused.items()
        ]
        start = time.perf_counter()
        deadline = start + timeout
        compiled = 0
        cpu = 0.0
        try:
            for future, arch, batch in self.jobs:
                try:
                    failed = future.result(max(0.0, deadline - time.perf_counter()))
                except cf.TimeoutError:
                    failures.append(
                        f"compiling timed out after {timeout:.0f} s"
                        " (FUSERAY_COMPILE_ALL_TIMEOUT); the remaining batches were not checked"
                    )
                    break
                except Exception as exc:  # noqa: BLE001 - a crashed worker fails its batch
                    names = ", ".join(name for name, _ in batch)
                    failures.append(f"compiling a batch for {arch} failed ({exc!r}): {names}")
                    continue
                if failed is None:
                    self.nvrtc = False
                    continue
                failed, seconds = failed
                cpu += seconds
                compiled += len(batch)
                for i, log in failed:
                    name, test = batch[i]
                    failures.append(f"{name} for {arch} (planned by {test}):\n{log}")
        finally:
            self.stop()
        distinct = len(self.seen)
        summary = (
            f"compile_all: {self.planned} planned kernels, {distinct} distinct sources"
            f" (generated in {self.gen_seconds:.0f} s)"
        )
        if self.nvrtc:
            summary += (
                f", {compiled // max(len(self.archs), 1)} compiled for {', '.join(self.archs)}"
                f" ({self.level})"
                f" ({cpu:.1f} s of NVRTC; {time.perf_counter() - start:.0f} s waited after the"
                " tests)"
            )
        else:
            summary += "; NVRTC is not available here, nothing was compiled"
        for why, count in self.limited.items():
            summary += f"; {count} not generated: {why}"
        top = sorted(self.by_module.items(), key=lambda kv: -kv[1])[:6]
        if top:  # where CI's compile time goes
            summary += "; most distinct sources: " + ", ".join(f"{m} {n}" for m, n in top)
        return failures, summary


_COMPILER: list[Compiler] = []


class CompileItem(pytest.Item):
    """The session's last test: every kernel planned before it compiles."""

    def runtest(self) -> None:
        from fuseray import runtime

        compiler = _COMPILER[0]
        if compiler.hook in runtime.PLAN_HOOKS:
            runtime.PLAN_HOOKS.remove(compiler.hook)
        timeout = float(os.environ.get("FUSERAY_COMPILE_ALL_TIMEOUT", "1200"))
        failures, compiler.summary = compiler.finish(timeout)
        if failures:
            raise KernelsFailed(
                f"{len(failures)} planned CUDA kernels do not compile:\n\n"
                + "\n\n".join(f[:6000] for f in failures)
            )

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, KernelsFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, ITEM_NAME


def pytest_configure(config):
    if not _enabled():
        return
    from fuseray import runtime

    compiler = Compiler()
    _COMPILER.append(compiler)
    runtime.PLAN_HOOKS.append(compiler.hook)


def pytest_sessionstart(session):
    if _COMPILER and not session.config.option.collectonly:
        _COMPILER[0].start()


def pytest_collectstart(collector):
    if _COMPILER:
        _COMPILER[0].test = f"(collecting {collector.nodeid or 'the session'})"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    if _COMPILER and items:
        items.sort(key=lambda item: item.path.name not in EARLY_MODULES)  # stable
        items.append(
            CompileItem.from_parent(
                session, name=ITEM_NAME, nodeid=f"tests/cuda/compile_all.py::{ITEM_NAME}"
            )
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _COMPILER:
        _COMPILER[0].test = item.nodeid
    yield


def pytest_terminal_summary(terminalreporter):
    if _COMPILER and _COMPILER[0].summary:
        terminalreporter.write_line(_COMPILER[0].summary)


def pytest_unconfigure(config):
    # every way out (an interrupted session, -x, a crash in a test) stops and joins the workers
    while _COMPILER:
        compiler = _COMPILER.pop()
        from fuseray import runtime

        if compiler.hook in runtime.PLAN_HOOKS:
            runtime.PLAN_HOOKS.remove(compiler.hook)
        compiler.stop()

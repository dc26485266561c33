"""The fused CPU backend: every kernel of a plan runs as one parallel numba loop nest.

Stage: backends, the default CPU executor when numba imports (``FUSERAY_CPU_BACKEND=numba``;
``numpy`` selects the reference interpreter). ``run(plan, env)`` has the contract of every
backend (``docs/internals.md``) and gives the NumPy interpreter's answers: same dtypes, NaN and
infinity handling, integer wrapping, division by zero, reduction semantics.

The launch path, per kernel: ``numba_layout.analyse`` (addressing for this call: merged dims,
strides, outputs from ``numba_pool``; memoised per kernel and input layout, so a jit call only
rebinds arrays) -> pick a loop variant from the sizes -> look up ``(spec, variant)`` in the
table of compiled loops -> on a miss, ``numba_codegen.generate`` and ``numba_cache.load`` (from
disk when another process compiled it) -> call on at most as many threads as it has tasks.
Sizes and strides are arguments, so a new size of a known structure compiles nothing.
A ``take`` is part of the loop nest (a gather access, ``numba_layout``); a ``scatter`` kernel
runs the fixed loop of ``numba_scatter``. Bad indices raise NumPy's ``IndexError`` after the
loop, which never reads or writes outside an array.

Fallback, never a wrong answer: without numba, the whole backend defers to the NumPy
interpreter; a kernel this backend cannot generate or numba cannot compile runs in the
interpreter, with one warning per kernel structure. Kernels of very few elements also run in the
interpreter, where they are faster than a parallel launch.
"""

from __future__ import annotations

import math
import threading
import warnings
import weakref

import numpy as np

from ..fusion import Kernel, Plan
from . import numpy as numpy_backend
from .numba_layout import analyse, signature

try:
    import numba as _numba
except ImportError as e:  # pragma: no cover - exercised by tests that hide numba
    _numba = None
    _IMPORT_ERROR: Exception | None = e
else:
    _IMPORT_ERROR = None

# tasks and chunk sizes; thread counts never change a result (see SPLIT_CHUNK, SPLIT_ROWS)
TASKS_PER_THREAD = 8  # elementwise chunks per thread: load balance on a noisy machine
MIN_WORK = 32768  # elements per task at least: a task's thread may need waking (tens of us on
#                   a quiet machine, a scheduler slice when another process holds the core)
SPLIT_CHUNK = 65536  # q positions per partial of a split reduction: fixed, so results do not
#                      depend on the thread count
SPLIT_ROWS = 8  # reductions with fewer rows than this (and long ones) split each row in chunks
CACHE_MAX = 65536  # rows longer than this keep no per-row value buffers
# Elementwise kernels with at most this many (elements x ops) run in the NumPy interpreter.
# Measured (benchmarks/NOTES.md): a cached numba launch costs ~45 us of Python and dispatch, a
# NumPy ufunc call ~5-10 us; triad on 4096 elements takes 23 us interpreted and 48 us here,
# while reductions and longer chains win here even when tiny.
SMALL_KERNEL = 8192

_FALLBACK = object()
_compiled: dict[tuple, object] = {}
_lock = threading.RLock()  # re-entered by _fallback from _build and _recompile
_launch_lock = threading.Lock()  # used only under numba's non-threadsafe workqueue layer
_warned: list[bool] = []


def available() -> bool:
    """True when numba imports; otherwise warn once and let the caller use the interpreter."""
    if _numba is None:
        if not _warned:
            _warned.append(True)
            warnings.warn(f"fuseray: numba is not usable ({_IMPORT_ERROR}); running on the CPU"
                          " with the NumPy interpreter", RuntimeWarning, stacklevel=3)
        return False
    return True


def run(plan: Plan, env: dict) -> None:
    for kernel in plan.kernels:
        run_kernel(kernel, env)


def run_kernel(kernel: Kernel, env: dict) -> None:
    if kernel.kind in ("elementwise", "scatter") and \
            math.prod(kernel.space) * len(kernel.ops()) <= SMALL_KERNEL:
        numpy_backend.run_kernel(kernel, env)
        return
    if kernel.kind == "scatter":
        _scatter(kernel, env)
        return
    try:
        layout = _layout(kernel, env)
    except Exception as e:  # Unsupported, or a layout this analysis did not foresee
        _fallback(kernel, ("layout", kernel.name), e, env)
        return
    if layout.empty:
        env.update(layout.outputs)
        return
    variant, sched = choose(kernel, layout.sizes)
    key = (layout.spec, variant)
    fn = _compiled.get(key)
    if fn is None:
        fn = _build(kernel, key)
    if fn is _FALLBACK:
        numpy_backend.run_kernel(kernel, env)
        return
    n_rows, rsz, n_q, qsz = layout.sizes
    err = np.zeros(2, np.int64)  # flags: [0] a negative integer power, [1] an index out of range
    args = (n_rows, *rsz, n_q, *qsz, *sched, *layout.args, err)
    ns, _, rows_per_task = sched
    tasks = n_rows * ns if variant == "split" else -(-n_rows // rows_per_task)
    try:
        _launch(fn, args, tasks)
    except Exception as e:  # numba compiles on the first call: typing/lowering errors land here
        fn = _recompile(kernel, key, fn, args, e)
        if fn is _FALLBACK:
            numpy_backend.run_kernel(kernel, env)
            return
    if err[1]:
        # which index NumPy names (the first in C order) is not known to the parallel loop: the
        # interpreter evaluates the kernel again and raises exactly NumPy's IndexError
        numpy_backend.run_kernel(kernel, env)
        raise IndexError(f"index out of bounds in {kernel.name}")  # the interpreter raised
    if err[0]:
        raise ValueError("Integers to negative integer powers are not allowed.")
    env.update(layout.outputs)


_memo: dict[int, tuple] = {}  # id(kernel) -> (weakref to it, {input signature: template})


def _layout(kernel: Kernel, env: dict):
    """The kernel's layout for this call; analysed once per kernel and input layout (a jit
    function reuses its plan's kernels, so its calls skip the analysis)."""
    sig = signature(kernel, env)
    entry = _memo.get(id(kernel))
    if entry is not None and entry[0]() is kernel:
        template = entry[1].get(sig)
        if template is not None:
            return template.bind(kernel, env)
    layout = analyse(kernel, env)
    if entry is None or entry[0]() is not kernel:
        key = id(kernel)
        # the callback runs when the kernel dies, before its id can be reused
        entry = (weakref.ref(kernel, lambda _, key=key: _memo.pop(key, None)), {})
        _memo[key] = entry
    if len(entry[1]) < 64:
        entry[1][sig] = layout.template()
    return layout


def _launch(fn, args, tasks: int | None = None):
    """Call a compiled loop on at most ``tasks`` threads (waking a thread that has no task
    costs a scheduler wake-up, milliseconds when another process holds its core)."""
    threads = _numba.get_num_threads()
    if tasks is not None and tasks < threads:
        _numba.set_num_threads(max(tasks, 1))  # thread-local in numba: other threads unaffected
        try:
            return _call(fn, args)
        finally:
            _numba.set_num_threads(threads)
    return _call(fn, args)


_layer: list[str] = []  # numba's threading layer, once a parallel region has chosen it


def _call(fn, args):
    """Serialised only under numba's workqueue layer, which aborts the process on concurrent
    parallel launches (the omp and tbb layers are thread-safe)."""
    if not _layer:
        try:
            _layer.append(_numba.threading_layer())
        except ValueError:  # no parallel region has run yet: the layer is not chosen
            with _launch_lock:
                return fn(*args)
    if _layer[0] == "workqueue":
        with _launch_lock:
            return fn(*args)
    return fn(*args)


def _scatter(kernel: Kernel, env: dict) -> None:
    """A scatter kernel: one fixed loop (``numba_scatter``); the interpreter if it fails to
    compile (an IndexError for a bad index is the answer, not a failure)."""
    from . import numba_scatter

    key = ("scatter", kernel.stores[0].target.dtype.str)
    if _compiled.get(key) is _FALLBACK:
        numpy_backend.run_kernel(kernel, env)
        return
    try:
        numba_scatter.run(kernel, env, _launch)
    except IndexError:
        raise
    except Exception as e:  # numba typing or lowering: a dtype the loop cannot handle
        _fallback(kernel, key, e, env)


def choose(kernel: Kernel, sizes) -> tuple[str, tuple[int, int, int]]:
    """Loop variant and (tasks per row, q chunk, rows per task) for these sizes."""
    n_rows, _, n_q, _ = sizes
    threads = _numba.get_num_threads()
    if kernel.kind == "elementwise":
        chunk = max(MIN_WORK, -(-n_q // (TASKS_PER_THREAD * threads)))
        chunk = -(-chunk // 64) * 64  # whole cache lines per task
        return "split", (max(1, -(-n_q // chunk)), chunk, 1)
    # the choice must not depend on the thread count: the two variants sum in different orders
    if n_rows >= SPLIT_ROWS or n_q <= SPLIT_CHUNK:
        rows_per_task = max(1, -(-n_rows // (TASKS_PER_THREAD * threads)),
                            -(-MIN_WORK // max(n_q, 1)))
        variant = "rows_cached" if kind_has_full_stores(kernel) and n_q <= CACHE_MAX else "rows"
        return variant, (1, max(n_q, 1), rows_per_task)
    return "split", (max(1, -(-n_q // SPLIT_CHUNK)), SPLIT_CHUNK, 1)


def kind_has_full_stores(kernel: Kernel) -> bool:
    return kernel.kind == "row"


def _build(kernel: Kernel, key: tuple):
    from . import numba_cache
    from .numba_codegen import Generator

    with _lock:
        fn = _compiled.get(key)
        if fn is not None:
            return fn
        spec, variant = key
        try:
            gen = Generator("fr_kernel", spec, variant)
            if variant == "rows_cached" and not gen.cached:
                gen = Generator("fr_kernel", spec, "rows")  # same loop as without a cache
            body = gen.generate()
            name = _function_name(kernel.kind, body)
            source = body.replace("fr_kernel", name)
            fn, modname = numba_cache.load(name, source)
            fn.__fuseray_module__ = modname
        except Exception as e:
            _fallback(kernel, key, e, None)
            return _FALLBACK
        _compiled[key] = fn
        return fn


def _function_name(kind: str, body: str) -> str:
    import hashlib

    return f"fr_{kind}_{hashlib.blake2b(body.encode(), digest_size=4).hexdigest()}"


def _recompile(kernel: Kernel, key: tuple, fn, args, error: Exception):
    """The first call failed: drop numba's disk entry and compile afresh, else fall back."""
    from . import numba_cache

    if fn.signatures:  # it had compiled: a genuine run-time error, not ours to hide
        raise error
    with _lock:
        modname = getattr(fn, "__fuseray_module__", None)
        if modname is not None:
            numba_cache.purge(modname)
        try:
            fresh = _numba.njit(cache=False, **numba_cache.FLAGS)(fn.py_func)
            _launch(fresh, args)
        except Exception as e:
            _fallback(kernel, key, e, None)
            _compiled[key] = _FALLBACK
            return _FALLBACK
        _compiled[key] = fresh
        return fresh


def _fallback(kernel: Kernel, key, error: Exception, env) -> None:
    """Warn once for this kernel structure; run the kernel in the interpreter if ``env``."""
    with _lock:
        first = _compiled.get(key) is not _FALLBACK
        _compiled[key] = _FALLBACK
    if first:
        text = str(error).strip().splitlines()
        warnings.warn(
            f"fuseray: the numba backend could not compile {kernel.name} ({type(error).__name__}"
            f": {text[0] if text else ''}); this kernel runs in the NumPy interpreter",
            RuntimeWarning, stacklevel=4)
    if env is not None:
        numpy_backend.run_kernel(kernel, env)

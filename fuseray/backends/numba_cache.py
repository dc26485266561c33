"""Compiled numba loops, kept in memory and on disk across processes.

Stage: backends (numba), between the code generator and the launch. ``load(name, source)``
returns a numba dispatcher for the function ``name`` defined by ``source``.

numba cannot cache functions made with ``exec``: it locates a function's cache by its source
file. So each generated module is written as a real file, ``<cache dir>/numba/<module>.py``,
imported with importlib (and registered in ``sys.modules``, which numba's cache needs to find
the function's globals), and compiled with ``njit(cache=True)``; numba keeps the machine code
beside it in ``__pycache__``, where a new process finds it in milliseconds.

Invariants:
- the module name is a digest of the source, numba's version, the compile flags and the source
  of every helper module the generated code inlines, so a changed helper or numba never loads a
  stale binary; files are content-addressed and written atomically (temporary file, then
  ``os.replace``), so concurrent processes see no file or a whole one;
- the disk is an optimisation: an unwritable cache directory (or ``FUSERAY_DISK_CACHE=0``) keeps
  modules in a per-process temporary directory without numba's cache; a corrupted cache entry
  is deleted and the loop recompiled (``compile_call``);
- thread-safe: one lock guards the in-memory table and module creation; numba serialises its
  own compilation.

Cache directory: ``FUSERAY_CACHE_DIR`` (default ``~/.cache/fuseray``), subdirectory ``numba/``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from pathlib import Path

import numba

# what a compiled loop depends on besides its own source
FLAGS = {"parallel": True, "error_model": "numpy", "nogil": True, "boundscheck": False}
_HELPERS = ("numba_math.py", "numba_vecmath.py", "numba_intrinsics.py", "numba_reduce.py")

_lock = threading.RLock()
_dirs: list[tuple[Path, bool]] = []  # [(directory, numba disk cache on)] once decided


def _helper_digest() -> str:
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in _HELPERS:
        h.update((here / name).read_bytes())
    return h.hexdigest()


_FINGERPRINT = f"numba {numba.__version__}|{sorted(FLAGS.items())}|{_helper_digest()}"


def cache_dir() -> tuple[Path, bool]:
    """(directory for generated modules, whether numba may cache there); decided once."""
    with _lock:
        if _dirs:
            return _dirs[0]
        chosen: tuple[Path, bool] | None = None
        if os.environ.get("FUSERAY_DISK_CACHE", "1") not in ("0", ""):
            root = os.environ.get("FUSERAY_CACHE_DIR") or os.path.join(
                os.path.expanduser("~"), ".cache", "fuseray")
            path = Path(root) / "numba"
            try:
                path.mkdir(parents=True, exist_ok=True)
                probe = path / f".probe-{os.getpid()}-{threading.get_ident()}"
                probe.write_text("ok")
                probe.unlink()
                chosen = (path, True)
            except OSError:
                chosen = None
        if chosen is None:
            chosen = (Path(tempfile.mkdtemp(prefix="fuseray-numba-")), False)
        _dirs.append(chosen)
        return chosen


def reset_cache_dir() -> None:
    """Forget the chosen directory (tests change ``FUSERAY_CACHE_DIR`` within a process)."""
    with _lock:
        _dirs.clear()


def module_name(name: str, source: str) -> str:
    digest = hashlib.sha256(f"{_FINGERPRINT}\n{source}".encode()).hexdigest()[:16]
    return f"{name}_{digest}"


def _write(path: Path, source: str) -> None:
    try:
        if path.exists() and path.read_text() == source:
            return
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(name: str, source: str, disk: bool = True):
    """A numba dispatcher for ``name`` in ``source`` (compiled lazily, on its first call)."""
    with _lock:
        modname = module_name(name, source)
        mod = sys.modules.get(modname)
        if mod is None:
            directory, numba_cache = cache_dir()
            path = directory / f"{modname}.py"
            try:
                _write(path, source)
            except OSError:
                directory, numba_cache = Path(tempfile.mkdtemp(prefix="fuseray-numba-")), False
                path = directory / f"{modname}.py"
                _write(path, source)
            spec = importlib.util.spec_from_file_location(modname, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[modname] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                del sys.modules[modname]
                raise
            mod.__fuseray_disk__ = numba_cache
        use_disk = disk and mod.__fuseray_disk__
        return numba.njit(cache=use_disk, **FLAGS)(getattr(mod, name)), modname


def purge(modname: str) -> None:
    """Delete numba's cache files for one generated module (after they failed to load)."""
    directory, _ = cache_dir()
    pycache = directory / "__pycache__"
    try:
        for f in pycache.glob(f"{modname}.*"):
            f.unlink(missing_ok=True)
    except OSError:
        pass

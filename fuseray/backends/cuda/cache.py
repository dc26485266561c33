"""Kernel binary cache: compile a CUDA source once per machine, not once per call or process.

Stage: backend, between the code generator and NVRTC. ``KernelCache.get_cubin`` returns a CUBIN
from memory, else from disk, else compiles it with ``nvrtc.compile_cubin`` and stores it in both.

Environment:

* ``FUSERAY_CACHE_DIR``: directory for the on-disk cache (default ``~/.cache/fuseray``). CUBINs
  live in its ``cubin-v1/`` subdirectory, one file per key.
* ``FUSERAY_DISK_CACHE=0``: keep the cache in memory only.

Invariants:

* The key is a sha256 over everything that can change the binary: source, program name, NVRTC
  options, NVRTC version, target architecture and the digest of our ``kernels/*.cuh`` headers.
  Sizes and strides are kernel arguments, never part of the source, so a new size compiles
  nothing.
* A disk entry is ``MAGIC | key | payload length | sha256(payload) | payload``. It is written to a
  temporary file in the same directory and renamed into place with ``os.replace``, so readers in
  other processes see either no file or a whole one. An entry that fails any check (truncated,
  corrupted, foreign) is deleted and rebuilt, never loaded.
* The disk is an optimisation. Failing to write (full disk, read-only directory) warns once per
  cache and the compiled CUBIN is still returned.
* Thread-safe; concurrent requests for one key in one process compile it once.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from fuseray.backends.cuda import nvrtc

__all__ = ["CacheStats", "KernelCache", "default_cache"]

MAGIC = b"FRCUBIN\x01"
# magic, key digest, payload length, payload sha256
_HEADER = struct.Struct("<8s32sQ32s")
_SUBDIR = "cubin-v1"


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since the cache was created.

    ``hits``: lookups served from memory. ``misses``: the others; each ends as a ``disk_hits``, a
    ``compiles``, or (under concurrency) a wait for another thread compiling the same key.
    ``discarded``: disk entries that failed validation and were deleted. ``quick_compiles``:
    quick builds (``tiers``), which are never cached.
    """

    hits: int = 0
    misses: int = 0
    disk_hits: int = 0
    compiles: int = 0
    discarded: int = 0
    quick_compiles: int = 0


def cache_key(source: str, name: str, arch: str, options: tuple[str, ...]) -> bytes:
    """sha256 identifying the CUBIN that ``nvrtc.compile_cubin`` would produce."""
    major, minor = nvrtc.nvrtc_version()
    parts = (
        "fuseray-cubin-v1",
        source,
        name,
        arch,
        "\0".join(options),
        f"nvrtc-{major}.{minor}",
        nvrtc.headers_digest(),
    )
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode()
        # Length-prefixed, so that no two different tuples hash the same bytes.
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.digest()


def _default_dir() -> Path | None:
    if os.environ.get("FUSERAY_DISK_CACHE", "1").strip() == "0":
        return None
    root = os.environ.get("FUSERAY_CACHE_DIR") or Path.home() / ".cache" / "fuseray"
    return Path(root).expanduser() / _SUBDIR


def encode_entry(key: bytes, payload: bytes) -> bytes:
    """Serialise one disk entry (header + payload)."""
    return _HEADER.pack(MAGIC, key, len(payload), hashlib.sha256(payload).digest()) + payload


def decode_entry(key: bytes, blob: bytes) -> bytes | None:
    """The payload of a disk entry for ``key``, or None when the entry is not intact."""
    if len(blob) < _HEADER.size:
        return None
    magic, stored_key, length, checksum = _HEADER.unpack_from(blob)
    payload = blob[_HEADER.size :]
    if magic != MAGIC or stored_key != key or length != len(payload):
        return None
    if hashlib.sha256(payload).digest() != checksum:
        return None
    return payload


class KernelCache:
    """Memory + disk cache of CUBINs.

    ``directory`` overrides the environment; pass ``disk=False`` for a memory-only cache.
    """

    def __init__(self, directory: str | os.PathLike | None = None, *, disk: bool = True) -> None:
        if not disk:
            self.directory = None
        elif directory is not None:
            self.directory = Path(directory)
        else:
            self.directory = _default_dir()
        self._memory: dict[bytes, bytes] = {}
        self._key_locks: dict[bytes, threading.Lock] = {}
        self._lock = threading.Lock()
        self._warned = False
        self._hits = self._misses = self._disk_hits = self._compiles = self._discarded = 0
        self._quick_compiles = 0

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits,
                self._misses,
                self._disk_hits,
                self._compiles,
                self._discarded,
                self._quick_compiles,
            )

    def path_for(self, key: bytes) -> Path | None:
        """Where the disk entry for ``key`` lives (None without a disk cache)."""
        return None if self.directory is None else self.directory / f"{key.hex()}.cubin"

    def get_cubin(self, source: str, name: str, arch: str, options: tuple[str, ...] = ()) -> bytes:
        """CUBIN for ``source`` on ``arch``, compiling only when no cache level has it.

        Same arguments as ``nvrtc.compile_cubin``; a ``CompileError`` propagates and nothing is
        cached for it.
        """
        options = tuple(options)
        key = cache_key(source, name, arch, options)
        with self._lock:
            cubin = self._memory.get(key)
            if cubin is not None:
                self._hits += 1
                return cubin
            self._misses += 1
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        # One thread per key loads or compiles; others wait here and then find it in memory.
        try:
            with key_lock:
                with self._lock:
                    cubin = self._memory.get(key)
                if cubin is None:
                    cubin = self._load_or_compile(key, source, name, arch, options)
                    with self._lock:
                        self._memory[key] = cubin
        finally:
            with self._lock:
                self._key_locks.pop(key, None)
        return cubin

    def find(
        self, source: str, name: str, arch: str, options: tuple[str, ...] = ()
    ) -> bytes | None:
        """The CUBIN ``get_cubin`` would return, if memory or disk has it; never compiles."""
        key = cache_key(source, name, arch, tuple(options))
        with self._lock:
            cubin = self._memory.get(key)
            if cubin is not None:
                self._hits += 1
                return cubin
        cubin = self._load_counted(key)
        if cubin is not None:
            with self._lock:
                self._misses += 1
                self._memory[key] = cubin
        return cubin

    def compile_quick(
        self, source: str, name: str, arch: str, options: tuple[str, ...], quick: tuple[str, ...]
    ) -> bytes:
        """A quick build: ``options`` plus ``quick``, compiled now and cached nowhere."""
        cubin = nvrtc.compile_cubin(source, name, arch, (*options, *quick))
        with self._lock:
            self._quick_compiles += 1
        return cubin

    def _load_or_compile(
        self, key: bytes, source: str, name: str, arch: str, options: tuple[str, ...]
    ) -> bytes:
        cubin = self._load_counted(key)
        if cubin is not None:
            return cubin
        cubin = nvrtc.compile_cubin(source, name, arch, options)
        with self._lock:
            self._compiles += 1
        self._store(key, cubin)
        return cubin

    def _load_counted(self, key: bytes) -> bytes | None:
        """``_load``, counting a disk hit."""
        cubin = self._load(key)
        if cubin is not None:
            with self._lock:
                self._disk_hits += 1
        return cubin

    def clear_memory(self) -> None:
        """Forget in-memory entries (the disk cache is kept)."""
        with self._lock:
            self._memory.clear()

    def _load(self, key: bytes) -> bytes | None:
        path = self.path_for(key)
        if path is None:
            return None
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._warn(f"cannot read {path}: {exc}")
            return None
        payload = decode_entry(key, blob)
        if payload is None:
            with self._lock:
                self._discarded += 1
            # Another process may be replacing it right now; losing that race only costs a rebuild.
            try:
                path.unlink()
            except OSError:
                pass
        return payload

    def _store(self, key: bytes, cubin: bytes) -> None:
        path = self.path_for(key)
        if path is None:
            return
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Unique temporary in the same directory: os.replace is only atomic within a file
            # system, and concurrent writers of one key must not share a temporary. No fsync: a
            # torn write after a crash fails the checksum and is rebuilt.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(encode_entry(key, cubin))
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            self._warn(f"cannot write {path}: {exc}")
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def _warn(self, message: str) -> None:
        with self._lock:
            if self._warned:
                return
            self._warned = True
        warnings.warn(
            f"fuseray's kernel disk cache failed ({message}); compiled kernels are kept in memory "
            "only and further failures are not reported. Set FUSERAY_CACHE_DIR to a writable "
            "directory, or FUSERAY_DISK_CACHE=0 to silence this.",
            RuntimeWarning,
            stacklevel=4,
        )


_default: KernelCache | None = None
_default_lock = threading.Lock()


def default_cache() -> KernelCache:
    """The process-wide cache, created on first use so that environment changes made before any
    kernel is compiled take effect."""
    global _default
    with _default_lock:
        if _default is None:
            _default = KernelCache()
        return _default

"""Kernel cache: memory and disk levels, integrity, concurrency, failure tolerance (no GPU)."""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("cuda.bindings.nvrtc")

from fuseray.backends.cuda import cache as cache_mod  # noqa: E402
from fuseray.backends.cuda import nvrtc  # noqa: E402
from fuseray.backends.cuda.cache import KernelCache, cache_key, decode_entry  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

SOURCE = r"""
#include <cuda_fp16.h>
extern "C" __global__ void fr_cache_test(__half* out, const float* x, long long n)
{
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2half(x[i] * 3.0f);
}
"""
NAME = "fr_cache_test"
ARCH = "sm_90"


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.cubin"))


def only_entry(cache: KernelCache) -> Path:
    (path,) = entries(cache.directory)
    return path


def test_memory_hit_compiles_once(tmp_path):
    cache = KernelCache(tmp_path)
    first = cache.get_cubin(SOURCE, NAME, ARCH)
    second = cache.get_cubin(SOURCE, NAME, ARCH)
    assert first is second
    stats = cache.stats
    assert (stats.compiles, stats.hits, stats.misses, stats.disk_hits) == (1, 1, 1, 0)


def test_disk_hit_after_memory_is_cleared(tmp_path):
    cache = KernelCache(tmp_path)
    cubin = cache.get_cubin(SOURCE, NAME, ARCH)
    cache.clear_memory()
    assert cache.get_cubin(SOURCE, NAME, ARCH) == cubin
    assert cache.stats.compiles == 1 and cache.stats.disk_hits == 1


def run_in_new_process(cache_dir: Path) -> dict:
    script = (
        "import hashlib, json, sys\n"
        "from fuseray.backends.cuda.cache import default_cache\n"
        f"src = {SOURCE!r}\n"
        "cache = default_cache()\n"
        f"cubin = cache.get_cubin(src, {NAME!r}, {ARCH!r})\n"
        "s = cache.stats\n"
        "print(json.dumps({'sha': hashlib.sha256(cubin).hexdigest(), 'compiles': s.compiles,"
        " 'disk_hits': s.disk_hits, 'dir': str(cache.directory)}))\n"
    )
    env = {**os.environ, "FUSERAY_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(REPO)}
    env.pop("FUSERAY_DISK_CACHE", None)
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_disk_hit_in_a_new_process(tmp_path):
    first = run_in_new_process(tmp_path)
    second = run_in_new_process(tmp_path)
    assert first["dir"] == str(tmp_path / "cubin-v1")
    assert (first["compiles"], first["disk_hits"]) == (1, 0)
    assert (second["compiles"], second["disk_hits"]) == (0, 1)
    assert first["sha"] == second["sha"]


def corrupt_flip_payload_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))


def corrupt_truncate(path: Path) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def corrupt_header_only(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:20])


def corrupt_empty(path: Path) -> None:
    path.write_bytes(b"")


def corrupt_bad_magic(path: Path) -> None:
    path.write_bytes(b"NOTMAGIC" + path.read_bytes()[8:])


@pytest.mark.parametrize(
    "corrupt",
    [
        corrupt_flip_payload_byte,
        corrupt_truncate,
        corrupt_header_only,
        corrupt_empty,
        corrupt_bad_magic,
    ],
)
def test_damaged_entries_are_discarded_and_rebuilt(tmp_path, corrupt):
    good = KernelCache(tmp_path).get_cubin(SOURCE, NAME, ARCH)
    path = only_entry(KernelCache(tmp_path))
    corrupt(path)
    cache = KernelCache(tmp_path)
    assert cache.get_cubin(SOURCE, NAME, ARCH) == good
    stats = cache.stats
    assert (stats.discarded, stats.compiles, stats.disk_hits) == (1, 1, 0)
    key = cache_key(SOURCE, NAME, ARCH, ())
    assert decode_entry(key, path.read_bytes()) == good  # rebuilt in place, intact


def test_entry_stored_under_the_wrong_key_is_not_loaded(tmp_path):
    cache = KernelCache(tmp_path)
    cache.get_cubin(SOURCE, NAME, ARCH)
    other_source = SOURCE.replace("3.0f", "4.0f")
    other_path = cache.path_for(cache_key(other_source, NAME, ARCH, ()))
    only_entry(cache).rename(other_path)  # right format, wrong key
    fresh = KernelCache(tmp_path)
    fresh.get_cubin(other_source, NAME, ARCH)
    assert fresh.stats.discarded == 1 and fresh.stats.compiles == 1


def compile_in_worker(args: tuple[str, int]) -> str:
    directory, delay_ms = args
    time.sleep(delay_ms / 1000)
    cubin = KernelCache(directory).get_cubin(SOURCE, NAME, ARCH)
    return hashlib.sha256(cubin).hexdigest()


def test_concurrent_writer_processes_share_one_directory(tmp_path):
    context = multiprocessing.get_context("spawn")
    jobs = [(str(tmp_path), delay) for delay in (0, 0, 0, 0, 5, 10, 20, 40)]
    with context.Pool(4) as pool:
        digests = pool.map(compile_in_worker, jobs)
    assert len(set(digests)) == 1
    (path,) = entries(tmp_path)
    assert decode_entry(cache_key(SOURCE, NAME, ARCH, ()), path.read_bytes()) is not None
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))
    assert compile_in_worker((str(tmp_path), 0)) == digests[0]


def test_concurrent_threads_compile_a_key_once(tmp_path, monkeypatch):
    calls = []
    real_compile = nvrtc.compile_cubin

    def slow_compile(*args, **kwargs):
        calls.append(args)
        time.sleep(0.2)  # keep the other threads waiting on this key
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(nvrtc, "compile_cubin", slow_compile)
    cache = KernelCache(tmp_path)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_cubin(SOURCE, NAME, ARCH)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 8 and len(set(results)) == 1
    assert cache.stats.compiles == 1


BASE = (SOURCE, NAME, ARCH, ())


@pytest.mark.parametrize(
    "changed",
    [
        (SOURCE + "\n// edited", NAME, ARCH, ()),
        (SOURCE, "fr_other_name", ARCH, ()),
        (SOURCE, NAME, "sm_80", ()),
        (SOURCE, NAME, ARCH, ("-lineinfo",)),
        (SOURCE, NAME, ARCH, ("--use_fast_math",)),
        (SOURCE, NAME, ARCH, ("-lineinfo", "--use_fast_math")),
    ],
    ids=["source", "name", "arch", "option", "other-option", "two-options"],
)
def test_key_changes_with_every_input(changed):
    assert cache_key(*changed) != cache_key(*BASE)


def test_key_separates_option_boundaries():
    assert cache_key(SOURCE, NAME, ARCH, ("-DA", "B")) != cache_key(SOURCE, NAME, ARCH, ("-DAB",))


def test_key_changes_with_headers_digest(monkeypatch):
    before = cache_key(*BASE)
    monkeypatch.setattr(nvrtc, "headers_digest", lambda: "0" * 64)
    assert cache_key(*BASE) != before


def test_key_changes_with_nvrtc_version(monkeypatch):
    before = cache_key(*BASE)
    monkeypatch.setattr(nvrtc, "nvrtc_version", lambda: (99, 9))
    assert cache_key(*BASE) != before


def test_header_change_recompiles(tmp_path, monkeypatch):
    cache = KernelCache(tmp_path)
    cache.get_cubin(SOURCE, NAME, ARCH)
    monkeypatch.setattr(nvrtc, "headers_digest", lambda: "f" * 64)
    cache.get_cubin(SOURCE, NAME, ARCH)
    assert cache.stats.compiles == 2
    assert len(entries(tmp_path)) == 2


def test_compile_errors_are_not_cached(tmp_path):
    cache = KernelCache(tmp_path)
    for _ in range(2):
        with pytest.raises(nvrtc.CompileError):
            cache.get_cubin("this is not C++", NAME, ARCH)
    assert cache.stats.compiles == 0
    assert not entries(tmp_path)


def test_directory_that_is_a_file_keeps_working_and_warns_once(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cache = KernelCache(blocker / "cubins")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = cache.get_cubin(SOURCE, NAME, ARCH)
        b = cache.get_cubin(SOURCE.replace("3.0f", "5.0f"), NAME, ARCH)
    assert a != b and a[:4] == b"\x7fELF"
    assert cache.stats.compiles == 2
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    assert "disk cache" in str(caught[0].message)


def test_full_disk_keeps_working_and_leaves_no_temporaries(tmp_path, monkeypatch):
    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.os, "replace", no_space)
    cache = KernelCache(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for scale in ("3.0f", "6.0f", "7.0f"):
            cache.get_cubin(SOURCE.replace("3.0f", scale), NAME, ARCH)
    assert len(caught) == 1 and "No space left" in str(caught[0].message)
    assert cache.stats.compiles == 3
    assert not any(tmp_path.iterdir())


def test_disk_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSERAY_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("FUSERAY_DISK_CACHE", "0")
    cache = KernelCache()
    assert cache.directory is None
    cache.get_cubin(SOURCE, NAME, ARCH)
    assert not any(tmp_path.iterdir())
    assert KernelCache(tmp_path, disk=False).directory is None


def test_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSERAY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("FUSERAY_DISK_CACHE", raising=False)
    cache = KernelCache()
    assert cache.directory == tmp_path / "cubin-v1"
    cache.get_cubin(SOURCE, NAME, ARCH)
    assert len(entries(tmp_path / "cubin-v1")) == 1


def test_default_location_is_under_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("FUSERAY_CACHE_DIR", raising=False)
    monkeypatch.delenv("FUSERAY_DISK_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert KernelCache().directory == tmp_path / ".cache" / "fuseray" / "cubin-v1"


def test_public_stats_count_compiles_but_not_new_sizes(tmp_path, monkeypatch):
    """fr.cuda.kernel_cache_stats() counts NVRTC compiles: a plan for a new size adds none."""
    import numpy as np

    import fuseray as fr
    from fuseray import runtime
    from fuseray.array import node_of
    from fuseray.backends.cuda import program

    monkeypatch.setattr(cache_mod, "_default", KernelCache(tmp_path))
    keys = {"hits", "misses", "disk_hits", "compiles", "discarded", "quick_compiles"}
    assert set(fr.cuda.kernel_cache_stats()) == keys

    def compile_for(n):
        x = fr.asarray(np.arange(n, dtype=np.float32))
        _, plan = runtime.prepare([node_of(fr.cos(x) * 3.25 + x)])
        program.compile_plan_sources(plan, "sm_90")

    compile_for(1000)
    before = fr.cuda.kernel_cache_stats()
    assert before["compiles"] >= 1
    compile_for(123457)
    after = fr.cuda.kernel_cache_stats()
    assert after["compiles"] == before["compiles"] and after["hits"] > before["hits"]

"""Tiered compilation without a GPU: NVRTC compiles for real (it needs no driver), module loading
is faked, so these tests check which builds a new kernel gets, what is cached where, the swap to
the optimised build, and that failures on either side leave a working kernel.

The GPU side (both builds compute the same bits on every workload) is in test_backend_gpu.py."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

pytest.importorskip("cuda.bindings.nvrtc")

import fuseray as fr  # noqa: E402
from fuseray import config, runtime  # noqa: E402
from fuseray.array import node_of  # noqa: E402
from fuseray.backends.cuda import cache as cache_mod  # noqa: E402
from fuseray.backends.cuda import driver, launch, program, tiers  # noqa: E402
from fuseray.backends.cuda.model import build_model  # noqa: E402
from fuseray.backends.cuda.nvrtc import CompileError  # noqa: E402


class FakeProps:
    arch = "sm_90"
    compute_capability = (9, 0)


@pytest.fixture
def loads(monkeypatch, tmp_path):
    """A fresh disk cache under tmp_path, and a record of every module load: (cubin, name)."""
    loaded = []

    def load_function(device_id, cubin, name, dependent=False):
        assert dependent  # an sm_90 GPU: both builds wait for the grid ahead
        loaded.append((cubin, name))
        return ("function", len(loaded))

    monkeypatch.setattr(driver, "device_props", lambda device_id: FakeProps)
    monkeypatch.setattr(driver, "load_function", load_function)
    monkeypatch.setattr(cache_mod, "_default", cache_mod.KernelCache(tmp_path / "cache"))
    monkeypatch.setattr(config, "fast_math", False)
    monkeypatch.setattr(config, "tiered_compile", True)
    monkeypatch.setattr(config, "dependent_launch", True)
    monkeypatch.setitem(tiers._state, "warned", False)
    yield loaded
    assert tiers.wait(120), "an optimised build was still running when the test ended"


def generated(steps: int):
    """The generated kernel of ``steps`` sin steps: each test compiles a source of its own."""
    x = fr.asarray(np.arange(8, dtype=np.float32))
    y = x
    for _ in range(steps):
        y = fr.sin(y) * 1.5 + x
    _, plan = runtime.prepare([node_of(y)])
    m = build_model(plan.kernels[0])
    layouts, stores = program.assumed_layouts(m)
    return program.variant(m, layouts, stores)


def test_precise_options_allow_tiers_and_fast_math_does_not(monkeypatch):
    monkeypatch.setattr(config, "fast_math", False)
    assert "-fmad=false" in program.compile_options()
    assert tiers.enabled(program.compile_options())
    monkeypatch.setattr(config, "fast_math", True)
    assert not tiers.enabled(program.compile_options())
    monkeypatch.setattr(config, "fast_math", False)
    monkeypatch.setattr(config, "tiered_compile", False)
    assert not tiers.enabled(program.compile_options())


def test_new_kernel_starts_quick_and_swaps_to_the_cached_optimised_build(loads):
    gen = generated(3)
    prog = launch.Program(gen, 0)
    assert prog.quick and prog.function == ("function", 1)
    assert tiers.wait(120)
    assert not prog.quick and prog.function == ("function", 2)
    (quick_cubin, _), (full_cubin, name) = loads
    assert name == gen.name and quick_cubin != full_cubin
    cache = cache_mod.default_cache()
    stats = cache.stats
    assert (stats.quick_compiles, stats.compiles) == (1, 1)
    # only the optimised build is cached: a new process (a cache on the same directory) loads
    # it from disk and builds nothing
    again = cache_mod.KernelCache(cache.directory)
    options = program.compile_options()
    assert again.find(gen.source, gen.name, "sm_90", options) == full_cubin
    quick_options = (*options, *tiers.QUICK_OPTIONS)
    assert again.find(gen.source, gen.name, "sm_90", quick_options) is None
    assert len(list(cache.directory.glob("*.cubin"))) == 1


def test_cached_kernel_needs_no_quick_build(loads):
    gen = generated(4)
    launch.Program(gen, 0)
    assert tiers.wait(120)
    cache_mod._default = cache_mod.KernelCache(cache_mod.default_cache().directory)
    prog = launch.Program(gen, 0)
    assert not prog.quick and tiers.pending() == 0
    stats = cache_mod.default_cache().stats
    assert (stats.disk_hits, stats.compiles, stats.quick_compiles) == (1, 0, 0)
    assert loads[-1][0] == loads[1][0]  # the optimised CUBIN again


def test_tiers_off_compiles_the_optimised_build_at_once(loads, monkeypatch):
    monkeypatch.setattr(config, "tiered_compile", False)
    prog = launch.Program(generated(5), 0)
    assert not prog.quick and tiers.pending() == 0 and len(loads) == 1
    stats = cache_mod.default_cache().stats
    assert (stats.compiles, stats.quick_compiles) == (1, 0)


def test_failed_optimised_build_warns_once_and_keeps_the_quick_build(loads, monkeypatch):
    def refuse(*args, **kwargs):
        raise CompileError("ptxas ran out of something", "source", "k", ())

    monkeypatch.setattr(cache_mod.KernelCache, "get_cubin", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = launch.Program(generated(6), 0)
        second = launch.Program(generated(7), 0)
        assert tiers.wait(120)
    assert first.quick and second.quick
    assert first.function == ("function", 1) and second.function == ("function", 2)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "keeps running its quick build" in messages[0]


def test_failed_quick_build_falls_back_to_the_optimised_build(loads, monkeypatch):
    def refuse(*args, **kwargs):
        raise CompileError("the quick level refused", "source", "k", ())

    monkeypatch.setattr(cache_mod.KernelCache, "compile_quick", refuse)
    prog = launch.Program(generated(8), 0)
    assert not prog.quick and len(loads) == 1 and tiers.pending() == 0
    assert cache_mod.default_cache().stats.compiles == 1


def test_source_nvrtc_rejects_raises_its_compile_error(loads):
    gen = generated(9)
    bad = type(gen)(**{**gen.__dict__, "source": gen.source.replace("fr_point(", "fr_nope(", 1)})
    with pytest.raises(CompileError, match="fr_nope"):
        launch.Program(bad, 0)
    assert tiers.pending() == 0 and loads == []


def test_wait_times_out_while_a_build_runs(loads, monkeypatch):
    release = threading.Event()
    real = cache_mod.KernelCache.get_cubin

    def slow(self, *args, **kwargs):
        release.wait(60)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cache_mod.KernelCache, "get_cubin", slow)
    prog = launch.Program(generated(10), 0)
    assert tiers.pending() == 1
    assert not tiers.wait(0.05)
    assert prog.quick
    release.set()
    assert fr.cuda.wait_for_compiles(120)
    assert not prog.quick and tiers.pending() == 0

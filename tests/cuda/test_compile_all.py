"""The compile-all check (tests/cuda/compile_all.py) fails on the errors it exists to catch, at
the level CI runs it: a front-end error for both architectures, inline PTX only where ptxas runs."""

import compile_all
import pytest

from fuseray.backends.cuda import nvrtc
from fuseray.backends.cuda.program import compile_options

GOOD = 'extern "C" __global__ void k_good(float* o) { o[threadIdx.x] *= 2.0f; }'
FRONT_END = 'extern "C" __global__ void k_front(float* o) { o[0] = no_such_function(1.0f); }'
BAD_ASM = (
    'extern "C" __global__ void k_asm(float* o) { float d;'
    ' asm("max.Bogus.f32 %0, %1, %2;" : "=f"(d) : "f"(o[0]), "f"(o[1])); o[0] = d; }'
)


def _usable() -> bool:
    try:
        nvrtc.nvrtc_version()
        return True
    except Exception:  # noqa: BLE001 - no NVRTC library here
        return False


pytestmark = pytest.mark.skipif(not _usable(), reason="NVRTC is not installed")


def _failures(arch: str, level: str, kernels) -> list[int]:
    options = compile_all._arch_options(arch, compile_options(), level)
    failed, seconds = compile_all._compile_job((arch, options, kernels))
    assert seconds >= 0
    return [i for i, _ in failed]


@pytest.mark.parametrize("arch", ["sm_90", "compute_80"])
def test_front_end_errors_fail_every_arch(arch):
    kernels = [("k_good", GOOD), ("k_front", FRONT_END), ("k_good", GOOD.replace("2.0f", "3.0f"))]
    assert _failures(arch, "quick", kernels) == [1]


def test_inline_ptx_errors_fail_where_ptxas_runs():
    kernels = [("k_asm", BAD_ASM), ("k_good", GOOD)]
    assert _failures("sm_90", "quick", kernels) == [0]
    assert _failures("compute_80", "full", kernels) == []  # PTX is only text to NVVM
    assert _failures("sm_90", "full", kernels) == [0]


def test_levels_add_the_documented_options():
    base = ("-minimal",)
    assert compile_all._arch_options("sm_90", base, "full") == base
    assert compile_all._arch_options("compute_80", base, "quick") == (*base, "-fdevice-syntax-only")
    assert "-Ofc=max" in compile_all._arch_options("sm_90", base, "quick")

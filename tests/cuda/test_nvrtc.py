"""NVRTC wrapper: CUBIN output, diagnostics, include paths. Runs without a GPU or driver."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("cuda.bindings.nvrtc")

from fuseray.backends.cuda import nvrtc  # noqa: E402

EM_CUDA = 190  # ELF e_machine of NVIDIA CUDA objects

FP16_KERNEL = r"""
#include <cuda_fp16.h>

extern "C" __global__ void fr_test_half_axpy(__half* out, const __half* x, float a, long long n)
{
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = __float2half(a * __half2float(x[i]) + 1.0f);
    }
}
"""


def is_cuda_elf(blob: bytes) -> bool:
    return blob[:4] == b"\x7fELF" and int.from_bytes(blob[18:20], "little") == EM_CUDA


def test_version_is_a_pair_of_ints():
    major, minor = nvrtc.nvrtc_version()
    assert isinstance(major, int) and isinstance(minor, int)
    assert major >= 12


def test_include_dirs_hold_our_headers_and_cuda_fp16():
    dirs = nvrtc.include_dirs()
    assert dirs[0] == str(nvrtc.kernels_dir())
    assert any((Path(d) / "cuda_fp16.h").is_file() for d in dirs[1:])


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_fp16_kernel_compiles_to_cubin(arch):
    cubin = nvrtc.compile_cubin(FP16_KERNEL, "fr_test_half_axpy", arch)
    assert len(cubin) > 256
    assert is_cuda_elf(cubin)


def test_each_arch_gets_its_own_machine_code():
    sm80 = nvrtc.compile_cubin(FP16_KERNEL, "k", "sm_80")
    sm90 = nvrtc.compile_cubin(FP16_KERNEL, "k", "sm_90")
    assert sm80 != sm90


def test_extra_options_are_passed_through():
    plain = nvrtc.compile_cubin(FP16_KERNEL, "k", "sm_90")
    with_lineinfo = nvrtc.compile_cubin(FP16_KERNEL, "k", "sm_90", ("-lineinfo",))
    assert is_cuda_elf(with_lineinfo)
    assert plain != with_lineinfo


@pytest.mark.parametrize("arch", ["compute_90", "90", "sm9", "sm_90x", ""])
def test_non_cubin_targets_are_refused(arch):
    with pytest.raises(ValueError, match="real architecture"):
        nvrtc.compile_cubin(FP16_KERNEL, "k", arch)


def test_compile_error_carries_log_and_numbered_source():
    source = 'extern "C" __global__ void fr_bad(float* out)\n{\n    out[0] = undefined_name;\n}\n'
    with pytest.raises(nvrtc.CompileError) as info:
        nvrtc.compile_cubin(source, "fr_bad", "sm_90")
    err = info.value
    assert err.source == source
    assert "undefined_name" in err.log and "error" in err.log
    assert "fr_bad.cu(3)" in err.log  # NVRTC names the program and the line
    text = str(err)
    assert err.log.strip() in text
    assert "3 |     out[0] = undefined_name;" in text
    assert "1 | extern" in text
    assert "--gpu-architecture=sm_90" in text


def test_bad_option_is_a_compile_error_with_nvrtcs_message():
    with pytest.raises(nvrtc.CompileError) as info:
        nvrtc.compile_cubin(FP16_KERNEL, "k", "sm_90", ("--no-such-option",))
    assert "--no-such-option" in info.value.log


def test_program_name_gets_a_cu_suffix_once():
    with pytest.raises(nvrtc.CompileError) as info:
        nvrtc.compile_cubin("syntax error here", "fr_named.cu", "sm_90")
    assert "fr_named.cu(" in info.value.log
    assert "fr_named.cu.cu" not in info.value.log


@pytest.fixture
def fake_kernels_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(nvrtc, "kernels_dir", lambda: tmp_path)
    nvrtc.headers_digest.cache_clear()
    yield tmp_path
    nvrtc.headers_digest.cache_clear()


def test_our_headers_are_on_the_include_path(fake_kernels_dir):
    (fake_kernels_dir / "fuseray_test.cuh").write_text(
        "#pragma once\n__device__ inline float fr_twice(float x) { return 2.0f * x; }\n"
    )
    source = (
        '#include "fuseray_test.cuh"\n'
        'extern "C" __global__ void k(float* out) { out[0] = fr_twice(out[0]); }\n'
    )
    assert is_cuda_elf(nvrtc.compile_cubin(source, "k", "sm_90"))


def test_headers_digest_tracks_header_contents(fake_kernels_dir):
    empty = nvrtc.headers_digest()
    assert len(empty) == 64 and int(empty, 16) >= 0
    header = fake_kernels_dir / "fuseray_math.cuh"
    header.write_text("// v1\n")
    (fake_kernels_dir / "notes.txt").write_text("not a header")
    nvrtc.headers_digest.cache_clear()
    v1 = nvrtc.headers_digest()
    header.write_text("// v2\n")
    nvrtc.headers_digest.cache_clear()
    v2 = nvrtc.headers_digest()
    (fake_kernels_dir / "notes.txt").write_text("still not a header")
    nvrtc.headers_digest.cache_clear()
    assert len({empty, v1, v2}) == 3
    assert nvrtc.headers_digest() == v2


def test_concurrent_compiles_agree():
    results: list[bytes] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results.append(nvrtc.compile_cubin(FP16_KERNEL, f"k{i % 2}", "sm_90"))
        except BaseException as exc:  # surfaced below, in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 6 and all(is_cuda_elf(r) for r in results)


# Two programs as the code generator writes them: one preamble, then helpers, a typedef and a
# macro of the same names with different meanings, and distinct extern "C" kernels.
BATCH_A = """// kernel a
#define FR_HALF 0
#include "fuseray_index.cuh"
typedef int fr_idx;
#define FR_K 2
__device__ __forceinline__ float fr_point(float x) { return x * FR_K; }
extern "C" __global__ void fr_a(float* p, fr_idx n) { if (threadIdx.x < n) p[0] = fr_point(p[0]); }
"""
BATCH_B = BATCH_A.replace("typedef int", "typedef long long").replace("FR_K 2", "FR_K 3")
BATCH_B = BATCH_B.replace("float fr_point(float x)", "double fr_point(double x)")
BATCH_B = BATCH_B.replace("fr_a(float*", "fr_b(double*")


def test_batch_keeps_programs_apart():
    src = nvrtc.batch_source([BATCH_A, BATCH_B])
    assert src.count('#include "fuseray_index.cuh"') == 1
    assert "namespace fr_batch_0 {" in src and "namespace fr_batch_1 {" in src
    assert src.count("#undef FR_K") == 2
    assert is_cuda_elf(nvrtc.compile_batch([BATCH_A, BATCH_B], "batch", "sm_80"))


def test_batch_fails_when_one_program_does_and_needs_one_preamble():
    broken = BATCH_B.replace("return x * FR_K;", "return x * undeclared;")
    with pytest.raises(nvrtc.CompileError, match="undeclared"):
        nvrtc.compile_batch([BATCH_A, broken], "batch", "sm_80")
    with pytest.raises(ValueError, match="preamble"):
        nvrtc.batch_source([BATCH_A, BATCH_B.replace("FR_HALF 0", "FR_HALF 1")])
    assert nvrtc.preamble(BATCH_A) == ("#define FR_HALF 0", '#include "fuseray_index.cuh"')


def test_ptx_for_virtual_architectures_only():
    ptx = nvrtc.compile_ptx(FP16_KERNEL, "k", "compute_80")
    assert b".target sm_80" in ptx
    with pytest.raises(ValueError, match="virtual"):
        nvrtc.compile_ptx(FP16_KERNEL, "k", "sm_80")
    assert b".target sm_90" in nvrtc.compile_batch([BATCH_A], "batch", "compute_90")

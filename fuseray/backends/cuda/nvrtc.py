"""NVRTC front end: CUDA C++ source text to a CUBIN for one exact GPU architecture.

Stage: backend. The code generator hands over finished source; this module only compiles it.
``cache.py`` sits on top and decides whether a compile is needed at all.

Invariants:

* Output is always a CUBIN for a real ``sm_XY`` target, never PTX. A user's NVRTC may be newer than
  their driver, and a driver cannot JIT PTX written by a newer compiler, while a CUBIN for the
  device's own architecture loads on any driver of the same major version.
* Every NVRTC return code is checked, and a program is destroyed on every path out of
  ``compile_cubin``.
* Importing this module loads no CUDA library; NVRTC is first touched by the first call that needs
  it, so ``import fuseray`` works on machines without CUDA.
* Kernels meant to be launched must be declared ``extern "C"``: ``driver.load_function`` looks them
  up by their plain name, and name expressions for mangled templates are not used.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "CompileError",
    "NVRTCError",
    "batch_source",
    "compile_batch",
    "compile_cubin",
    "compile_ptx",
    "headers_digest",
    "include_dirs",
    "kernels_dir",
    "nvrtc_version",
    "preamble",
]

DEFAULT_OPTIONS = ("--std=c++17", "-default-device")

# Real architectures only: "sm_90", "sm_90a", "sm_100f". "compute_XY" would yield PTX (and an empty
# CUBIN), which is exactly what we must never hand to a possibly older driver.
_ARCH = re.compile(r"sm_\d{2,3}[af]?")
_VIRTUAL_ARCH = re.compile(r"compute_\d{2,3}[af]?")

# Serialises program creation. NVRTC documents its API as thread-safe for distinct programs, but
# creation is cheap and older releases were not reliable here, so one lock costs nothing measurable.
_create_lock = threading.Lock()


class NVRTCError(RuntimeError):
    """An NVRTC API call other than the compilation itself failed."""

    def __init__(self, call: str, result: object) -> None:
        self.call = call
        self.result = result
        super().__init__(f"{call} failed: {_result_name(result)}")


class CompileError(Exception):
    """NVRTC rejected a program.

    ``log`` is NVRTC's log and ``source`` the program text; ``str()`` shows both, the source with
    line numbers so that the log's ``name(line): error`` references can be followed.
    """

    def __init__(
        self, log: str, source: str, name: str = "", options: tuple[str, ...] = ()
    ) -> None:
        self.log = log
        self.source = source
        self.name = name
        self.options = tuple(options)
        super().__init__(log)

    def __str__(self) -> str:
        lines = self.source.splitlines()
        width = len(str(len(lines)))
        numbered = "\n".join(f"{i:>{width}} | {line}" for i, line in enumerate(lines, 1))
        return (
            f"NVRTC could not compile {self.name!r} with options {' '.join(self.options)}\n"
            f"{self.log.rstrip()}\n"
            f"--- source ---\n{numbered}"
        )


def _nvrtc():
    # Deferred so that importing fuseray never requires cuda-bindings or loads libnvrtc.
    from cuda.bindings import nvrtc

    return nvrtc


def _result_name(result: object) -> str:
    name = getattr(result, "name", None)
    return f"{name} ({int(result)})" if name else str(result)


def _check(result: tuple, call: str):
    """Return the payload of a cuda-bindings ``(status, *values)`` tuple, raising on failure."""
    status = result[0]
    if status != 0:
        raise NVRTCError(call, status)
    if len(result) == 1:
        return None
    return result[1] if len(result) == 2 else result[1:]


@functools.cache
def nvrtc_version() -> tuple[int, int]:
    """The loaded NVRTC's ``(major, minor)`` version."""
    major, minor = _check(_nvrtc().nvrtcVersion(), "nvrtcVersion")
    return int(major), int(minor)


def kernels_dir() -> Path:
    """Directory holding fuseray's ``fuseray_*.cuh`` device headers.

    An installed wheel ships them as the package-data directory ``fuseray/kernels``; a source
    checkout keeps them in ``kernels/`` at the repository top. The package directory is tried
    first so that an unrelated top-level ``kernels`` directory beside an installed fuseray (in
    site-packages, say) is never mistaken for ours.
    """
    package = Path(__file__).resolve().parents[2]  # .../fuseray
    installed = package / "kernels"
    return installed if installed.is_dir() else package.parent / "kernels"


@functools.cache
def _cudart_include_dir() -> str | None:
    # cuda_fp16.h and friends ship with the nvidia-cuda-runtime wheel (or a CUDA toolkit).
    # find_nvidia_header_directory (cuda-pathfinder >= 1.2.3) returns a path or None.
    try:
        from cuda.pathfinder import find_nvidia_header_directory
    except ImportError:
        return None
    return find_nvidia_header_directory("cudart")


def include_dirs() -> list[str]:
    """``-I`` directories for every compile: our headers, then the CUDA runtime's."""
    dirs = [str(kernels_dir())]
    cudart = _cudart_include_dir()
    if cudart is not None:
        dirs.append(cudart)
    return dirs


@functools.cache
def headers_digest() -> str:
    """sha256 over the names and contents of our ``*.cuh`` headers.

    Part of every kernel cache key: editing a header must invalidate CUBINs compiled against it.
    Computed once per process, since headers do not change under a running program.
    """
    digest = hashlib.sha256()
    for path in sorted(kernels_dir().glob("*.cuh")):
        content = path.read_bytes()
        digest.update(path.name.encode())
        digest.update(len(content).to_bytes(8, "little"))
        digest.update(content)
    return digest.hexdigest()


def build_options(arch: str, options: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The full NVRTC command line used by ``compile_cubin`` for ``arch`` and extra ``options``."""
    if not _ARCH.fullmatch(arch):
        raise ValueError(f"arch must be a real architecture like 'sm_90', got {arch!r}")
    return _command_line(arch, options)


def _command_line(arch: str, options: tuple[str, ...]) -> tuple[str, ...]:
    includes = tuple(f"-I{d}" for d in include_dirs())
    return (*DEFAULT_OPTIONS, f"--gpu-architecture={arch}", *includes, *options)


def compile_cubin(source: str, name: str, arch: str, options: tuple[str, ...] = ()) -> bytes:
    """Compile ``source`` to a CUBIN for ``arch`` (e.g. ``"sm_90"``).

    ``name`` names the program in NVRTC's diagnostics (``.cu`` is appended when missing).
    ``options`` are appended after the defaults (``--std=c++17``, ``-default-device``, include
    directories). Raises ``CompileError`` when NVRTC rejects the program or its options, and
    ``NVRTCError`` when any other NVRTC call fails.
    """
    return _run(source, name, build_options(arch, options), _cubin)


def compile_ptx(source: str, name: str, arch: str, options: tuple[str, ...] = ()) -> bytes:
    """Compile ``source`` to PTX for a virtual architecture (``"compute_80"``): NVRTC's front end
    and NVVM, without ptxas. For checking that a kernel compiles for an architecture, never for
    loading (see the module's invariants); same arguments and errors as ``compile_cubin``."""
    if not _VIRTUAL_ARCH.fullmatch(arch):
        raise ValueError(f"arch must be a virtual architecture like 'compute_90', got {arch!r}")
    return _run(source, name, _command_line(arch, options), _ptx)


def _run(source: str, name: str, argv: tuple[str, ...], output) -> bytes:
    nvrtc = _nvrtc()
    filename = name if name.endswith((".cu", ".cuh")) else f"{name}.cu"
    with _create_lock:
        program = _check(
            nvrtc.nvrtcCreateProgram(source.encode(), filename.encode(), 0, [], []),
            "nvrtcCreateProgram",
        )
    try:
        _compile(nvrtc, program, source, filename, argv)
        binary = output(nvrtc, program)
    except BaseException:
        # Destroy on the error path too, but report the original failure, not a secondary one.
        nvrtc.nvrtcDestroyProgram(program)
        raise
    _check(nvrtc.nvrtcDestroyProgram(program), "nvrtcDestroyProgram")
    return binary


def _compile(nvrtc, program, source: str, filename: str, argv: tuple[str, ...]) -> None:
    (status,) = nvrtc.nvrtcCompileProgram(program, len(argv), [a.encode() for a in argv])
    if status != 0:
        # The log names the problem (syntax error, unknown option); fall back to the status name.
        log = _program_log(nvrtc, program) or _result_name(status)
        raise CompileError(log, source, filename, argv)


def _ptx(nvrtc, program) -> bytes:
    size = _check(nvrtc.nvrtcGetPTXSize(program), "nvrtcGetPTXSize")
    ptx = bytearray(size)
    _check(nvrtc.nvrtcGetPTX(program, ptx), "nvrtcGetPTX")
    return bytes(ptx)


def _cubin(nvrtc, program) -> bytes:
    size = _check(nvrtc.nvrtcGetCUBINSize(program), "nvrtcGetCUBINSize")
    if size == 0:
        # Cannot happen for an sm_XY target; guarded so that PTX can never slip through.
        raise NVRTCError("nvrtcGetCUBINSize", "empty CUBIN")
    cubin = bytearray(size)
    _check(nvrtc.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN")
    return bytes(cubin)


def _program_log(nvrtc, program) -> str:
    size = _check(nvrtc.nvrtcGetProgramLogSize(program), "nvrtcGetProgramLogSize")
    if size <= 1:
        return ""
    log = bytearray(size)
    _check(nvrtc.nvrtcGetProgramLog(program, log), "nvrtcGetProgramLog")
    return log.rstrip(b"\0").decode(errors="replace")


# A line of a program's preamble: blank, a line comment, or a preprocessor directive.
_PREAMBLE_LINE = re.compile(r"\s*(?:$|//|#)")
_DEFINE = re.compile(r"\s*#\s*define\s+(\w+)")


def _split_preamble(source: str) -> tuple[tuple[str, ...], str]:
    """``(directives, body)``: the leading blank, comment and preprocessor lines of ``source``
    (only the directives are kept) and everything after them."""
    lines = source.splitlines()
    k = 0
    while k < len(lines) and _PREAMBLE_LINE.match(lines[k]) and not lines[k].endswith("\\"):
        k += 1
    directives = tuple(line.strip() for line in lines[:k] if line.lstrip().startswith("#"))
    return directives, "\n".join(lines[k:])


def preamble(source: str) -> tuple[str, ...]:
    """The preprocessor directives before the first line of code of ``source``: programs batched
    by ``compile_batch`` must agree on them."""
    return _split_preamble(source)[0]


def batch_source(sources: Sequence[str]) -> str:
    """One translation unit holding every program of ``sources``, for ``compile_batch``.

    Each source is a preamble (its leading blank, comment and ``#`` lines) and a body. The
    preambles' directives must be identical: they are emitted once, so the headers are parsed once
    for the whole batch. Each body goes into a namespace of its own, so that helpers, typedefs and
    templates of one name in two programs do not collide, and every macro a body defines is
    ``#undef``-ed after it. ``extern "C"`` names ignore namespaces: the caller keeps them distinct.
    A program that compiles inside the batch therefore compiles on its own.
    """
    if not sources:
        raise ValueError("batch_source needs at least one source")
    preamble = None
    parts: list[str] = []
    for i, source in enumerate(sources):
        directives, body = _split_preamble(source)
        if preamble is None:
            preamble = directives
            parts.extend(directives)
        elif directives != preamble:
            raise ValueError(
                f"source {i} of a batch starts with {directives!r}, the first with {preamble!r};"
                " a batch shares one preamble"
            )
        macros = sorted({m.group(1) for m in map(_DEFINE.match, body.splitlines()) if m})
        parts.append(f"namespace fr_batch_{i} {{")
        parts.append(body)
        parts.append("}")
        parts.extend(f"#undef {name}" for name in macros)
    return "\n".join(parts) + "\n"


def compile_batch(
    sources: Sequence[str], name: str, arch: str, options: tuple[str, ...] = ()
) -> bytes:
    """Compile several programs as one NVRTC program (``batch_source``): one CUBIN for a real
    ``arch`` (``"sm_90"``), PTX for a virtual one (``"compute_80"``, ``compile_ptx``).

    Parsing the headers and NVRTC's per-program setup are paid once for the batch, which is what
    makes compiling thousands of kernels affordable. Raises ``CompileError`` when any program
    fails; the log then names the batch's line numbers, so compile the programs one by one with
    ``compile_cubin`` to find and report the failing ones.
    """
    to_binary = compile_ptx if arch.startswith("compute_") else compile_cubin
    return to_binary(batch_source(sources), name, arch, options)

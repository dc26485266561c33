"""Evaluation: from lazy arrays to values, through the optimizer, the planner and a backend.

Stage: orchestration (it imports every stage; nothing below imports it except through the lazy
hooks in ``array.py``). ``evaluate(roots, env)`` is the one path every computation takes:
``.compute()``, ``fr.compute``, conversions, and ``@jit`` calls (which cache the plan).

Where data lives: on the GPU when the CUDA backend is usable, else on the CPU, unless
``FUSERAY_DEVICE`` / ``fr.config.device`` says otherwise. Forcing ``cuda`` without a usable GPU
raises; the automatic choice falls back to the CPU with one message.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import config, dtypes, fusion, passes
from .array import leaf_node, ndarray, node_of, tracing
from .backends import numpy as numpy_backend
from .graph import Node, rebuild, toposort
from .ops import Kind


class CPUDevice:
    """The host, as ``x.device`` reports it for arrays that live in main memory."""

    id = -1

    def __repr__(self) -> str:
        return "cpu"

    def __eq__(self, other) -> bool:
        return isinstance(other, CPUDevice) or other == "cpu"

    def __hash__(self) -> int:
        return hash("cpu")


CPU = CPUDevice()

# Callables that see every plan as it is made (tests use this to compile every kernel the suite
# produces with NVRTC, on machines without a GPU).
PLAN_HOOKS: list = []


# ---------------------------------------------------------------------------------------------
# where data lives
# ---------------------------------------------------------------------------------------------


_cuda_probe: list = []  # [module or None] once probed


def cuda_backend():
    """The CUDA backend module when it is usable here, else None (decided once).

    ``config.device == "cpu"`` never probes. Otherwise the first call probes the driver, a GPU
    and NVRTC; when one is missing, ``backends.cuda.available()`` warns once, naming the reason,
    and fuseray runs on the CPU.
    """
    if config.device == "cpu":
        return None
    if not _cuda_probe:
        from .backends import cuda

        _cuda_probe.append(cuda if cuda.available() else None)
    return _cuda_probe[0]


def cpu_backend():
    """The CPU executor ``config.cpu_backend`` names: numba loops, or the NumPy interpreter
    (also when numba is missing; ``backends.numba.available`` then warns once)."""
    if config.cpu_backend == "numba":
        from .backends import numba as numba_backend

        if numba_backend.available():
            return numba_backend
    return numpy_backend


def use_cuda() -> bool:
    want = config.device
    if want == "cpu":
        return False
    backend = cuda_backend()
    if want == "cuda" and backend is None:
        raise RuntimeError(
            "FUSERAY_DEVICE=cuda was asked for, but no usable NVIDIA GPU and driver were found"
        )
    return backend is not None


def place(obj, dtype: np.dtype | None):
    """A value for a new leaf: a copy of ``obj`` on the current device."""
    if use_cuda():
        return cuda_backend().place(obj, dtype)
    if hasattr(obj, "__cuda_array_interface__") or _is_cuda_dlpack(obj):
        raise RuntimeError("a GPU array was given, but fuseray is running on the CPU")
    value = np.array(obj, dtype=dtype, copy=True)
    dtypes.as_dtype(value.dtype)  # TypeError naming unsupported dtypes (object, str, complex)
    return value


def _is_cuda_dlpack(obj) -> bool:
    dev = getattr(obj, "__dlpack_device__", None)
    return dev is not None and not isinstance(obj, np.ndarray) and dev()[0] == 2


def device_of(node: Node):
    for n in toposort([node]):
        if n.op == "buffer" and n.value is not None:
            return CPU if isinstance(n.value, np.ndarray) else n.value.device
    return cuda_backend().current_device() if use_cuda() else CPU


def foreign_to_numpy(obj) -> np.ndarray:
    if hasattr(obj, "__cuda_array_interface__") and cuda_backend() is not None:
        return cuda_backend().foreign_to_numpy(obj)
    return np.asarray(obj)


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def known_values(roots: Sequence[Node]) -> dict[Node, Node]:
    """Computed nodes under ``roots`` mapped to the leaves that hold their values."""
    found = {}
    for n in toposort(roots, stop=lambda n: n._value is not None):
        if n._value is not None:
            found[n] = n._value
    return found


def prepare(roots: Sequence[Node]) -> tuple[list[Node], fusion.Plan]:
    """Optimise and plan the graph below ``roots`` (computed parts replaced by their data)."""
    known = known_values(roots)
    if known:
        roots = rebuild(roots, known)
    optimised = passes.optimize(roots)
    # fuseray arrays are values: an output that is a view or a constant gets its own buffer
    optimised = [Node.make("copy", (r,), None, r.dtype) if _needs_copy(r) else r
                 for r in optimised]
    plan = fusion.plan(optimised)
    for hook in PLAN_HOOKS:
        hook(plan)
    return optimised, plan


def execute(plan: fusion.Plan, roots: Sequence[Node], env: dict) -> list:
    """Run ``plan`` and return the value of every root (views of stored buffers where NumPy
    would return a view)."""
    backend = cuda_backend() if use_cuda() else cpu_backend()
    if tracing() is not None:
        raise RuntimeError(
            "cannot compute values inside a function being traced by @fr.jit; return the arrays"
            " instead"
        )
    backend.run(plan, env)
    return [value_of(r, env) for r in roots]


def direct_runner(plan: fusion.Plan, roots: Sequence[Node], placeholders: Sequence):
    """The backend's runner for repeated ``@jit`` calls of ``plan`` (``call(leaves)`` -> the
    roots' values, or None to take ``execute``), or None where the backend has none."""
    if not use_cuda():
        return None
    return cuda_backend().direct(plan, list(roots), list(placeholders))


def value_of(root: Node, env: dict):
    return env[root] if root in env else root.value


def _needs_copy(node: Node) -> bool:
    return node.kind is Kind.MOVEMENT or node.op in ("const", "param")


def evaluate(nodes: Sequence[Node]) -> list:
    """Values of ``nodes``, computing what is not computed yet, with one shared plan."""
    todo = [n for n in nodes if n.value is None]
    if todo:
        optimised, plan = prepare(todo)
        values = execute(plan, optimised, {})
        for n, v in zip(todo, values):
            n.memoize(leaf_node(v))
    return [n.value for n in nodes]


def compute_arrays(arrays: Sequence[ndarray]) -> None:
    """Compute ``arrays`` together and point each handle at its data."""
    nodes = [node_of(a) for a in arrays]
    evaluate(nodes)
    for a, n in zip(arrays, nodes):
        a._node = n._value if n.op != "buffer" else n


def to_numpy(a: ndarray) -> np.ndarray:
    """A NumPy copy of ``a``'s values: fuseray arrays are values, so the copy is the caller's."""
    (value,) = evaluate([node_of(a)])
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True)
    return cuda_backend().to_numpy(value)


def compute(*arrays: ndarray):
    """Evaluate several lazy arrays with one shared plan (``dask.compute``-style); returns them."""
    compute_arrays(arrays)
    return arrays[0] if len(arrays) == 1 else arrays


def get_array_module(*args):
    """``cupy.get_array_module``: fuseray if any argument is a fuseray array, else numpy."""
    import fuseray

    return fuseray if any(isinstance(a, ndarray) for a in args) else np


def synchronize() -> None:
    """Wait for all work queued on the current device's current stream (no-op on the CPU)."""
    backend = cuda_backend()
    if backend is not None and use_cuda():
        backend.synchronize()

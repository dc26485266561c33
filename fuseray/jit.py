"""``@fr.jit``: trace a function once, then run its cached plan on every call.

Stage: entry point (uses the front end to trace, the runtime to plan and execute).

A call binds its arguments, flattens nested tuples/lists/dicts into leaves, and builds a *trace
key* from what the graph's structure depends on: dtypes, ranks, layout class, Python scalar kinds
and static arguments, never sizes. A trace holds the graph the function recorded over placeholder
leaves. Calling with new sizes does not call the function again: the traced graph is rebuilt over
placeholders of the new shapes (``graph.rebuild`` re-infers every shape), planned, and cached per
exact shapes; kernels are shape-polymorphic, so nothing recompiles either. A function that reads
concrete sizes while tracing (``x.shape``, ``len(x)``, ``zeros_like``) gets traces specialised on
exact shapes instead, since its graph may depend on them.

Python scalars become run-time parameters with NEP 50's weak typing, so a new scalar value neither
retraces nor changes result dtypes. Thread-safe: traces and plans are built under a lock; calls
only read them.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import config, dtypes, runtime
from .array import _trace_state, leaf_node, ndarray, node_of, tracing
from .graph import Buffer, Node, rebuild

# ---------------------------------------------------------------------------------------------
# pytrees: nested tuples, lists and dicts
# ---------------------------------------------------------------------------------------------


def flatten(tree) -> tuple[list, object]:
    """Leaves in order and a hashable description of the containers around them."""
    leaves: list = []
    return leaves, _walk(tree, leaves)


def _walk(x, leaves: list):
    # module-level (not a closure over itself) so a call leaves no reference cycle behind
    if isinstance(x, (tuple, list)):
        return (type(x).__name__, tuple(_walk(v, leaves) for v in x))
    if isinstance(x, dict):
        keys = tuple(sorted(x, key=repr))
        return ("dict", keys, tuple(_walk(x[k], leaves) for k in keys))
    leaves.append(x)
    return None


def unflatten(treedef, leaves: Sequence):
    return _build(treedef, iter(leaves))


def _build(d, it):
    if d is None:
        return next(it)
    if d[0] == "dict":
        return {k: _build(v, it) for k, v in zip(d[1], d[2])}
    items = [_build(v, it) for v in d[1]]
    return tuple(items) if d[0] == "tuple" else items


# ---------------------------------------------------------------------------------------------
# leaves of a call
# ---------------------------------------------------------------------------------------------


def _is_scalar(x) -> bool:
    return isinstance(x, (bool, int, float, np.generic)) and not isinstance(x, np.ndarray)


def _array_value(x):
    """The data of an array argument: NumPy arrays are used in place (a call does not outlive
    its arguments); other inputs go through ``fr.asarray`` once."""
    if isinstance(x, ndarray):
        node = node_of(x)
        if node.op != "buffer":
            x.compute()
            node = node_of(x)
        return node.value
    if isinstance(x, np.ndarray) and not runtime.use_cuda():
        dtypes.as_dtype(x.dtype)
        return x
    from .api.creation import asarray

    return node_of(asarray(x)).value


def _layout(value) -> str:
    """'C' for C-contiguous data, 'S' for any other strides (NumPy or device arrays)."""
    if isinstance(value, np.ndarray):
        contiguous = value.flags.c_contiguous
    else:
        contiguous = value.is_c_contiguous  # a DeviceArray
    return "C" if contiguous else "S"


def _fast_args(args) -> tuple[tuple, list] | None:
    """For plain positional arguments (computed arrays, NumPy arrays, Python scalars): a cheap
    exact description of them and their leaf values, in one pass; None when the call needs the
    general path."""
    key, leaves = [], []
    for a in args:
        if type(a) is ndarray:
            # an array with storage may have been written through a view since: node_of
            # brings its node up to date
            node = a._node if a._storage is None else node_of(a)
            if node.op != "buffer":
                return None
            buf = node.arg[0]
            spec = buf.spec
            if spec is None:  # a buffer's value never changes: describe it once
                v = buf.value
                if v is None:  # a placeholder: an array of a function being traced
                    return None
                spec = buf.spec = (node.dtype, node.shape, _layout(v), type(v))
            key.append(spec)
            leaves.append(buf.value)
        elif isinstance(a, np.ndarray):
            key.append((a.dtype, a.shape, _layout(a), np.ndarray))
            leaves.append(_array_value(a))
        elif type(a) in (int, float, bool):
            key.append(type(a))
            leaves.append(a)
        else:
            return None
    return tuple(key), leaves


def _spec(x):
    """The part of a leaf's description that the trace depends on."""
    if _is_scalar(x):
        kind = dtypes.scalar_kind(x)
        return ("scalar", kind.__name__ if isinstance(kind, type) else kind.str)
    return ("array", x.dtype.str, len(x.shape), _layout(x))


# ---------------------------------------------------------------------------------------------
# traces
# ---------------------------------------------------------------------------------------------


@dataclass
class Trace:
    """What one tracing call recorded: a graph over placeholders, and how to rebuild outputs."""

    placeholders: list[Node | None]  # one per dynamic leaf: buffer placeholder or param node
    outputs: list  # Node for array outputs, the Python value otherwise
    out_tree: object
    shapes: tuple  # the shapes it was traced with
    shape_dependent: bool = False
    labels: dict[Node, str] = field(default_factory=dict)

    def note_shape_read(self) -> None:
        self.shape_dependent = True


@dataclass
class Instance:
    """A trace planned for exact shapes: everything a call needs, precomputed."""

    placeholders: list[Node | None]
    roots: list[Node]  # optimised roots, one per array output
    plan: object
    out_slots: list[int | None]  # output i -> index into roots, or None (a non-array output)
    # the backend's runner for repeated calls (runtime.direct_runner): None until the first
    # run asks, False where there is none
    direct: object = None


class Jitted:
    """A function compiled by ``fr.jit``; call it like the function."""

    def __init__(self, fn: Callable, static_argnames=(), static_argnums=()):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.signature = inspect.signature(fn)
        names = list(self.signature.parameters)
        static = set(static_argnames if not isinstance(static_argnames, str)
                     else (static_argnames,))
        for i in (static_argnums if not isinstance(static_argnums, int) else (static_argnums,)):
            static.add(names[i])
        self.static = frozenset(static)
        self._traces: dict = {}
        self._instances: dict = {}
        # the hot path: exact argument description -> [trace, instance, site], site being the
        # backend's compiled call site for such calls (None until the first repeat asks, False
        # where there is none); _site is the last one taken, which a call tries first
        self._fast: dict = {}
        self._site = None
        params = list(self.signature.parameters.values())
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)
        # the fast path's test: calls with exactly this many positional arguments, or with any
        # number for a function of ``*args`` alone (whose leaves are the arguments in order
        # too); never with static arguments or parameters that bind differently
        self._n_params = len(params) if plain and not static else -1
        self._any_count = (
            not static and len(params) == 1 and params[0].kind is params[0].VAR_POSITIONAL
        )
        self._lock = threading.RLock()
        self.trace_count = 0  # how often fn itself was called (tests: a new size must not retrace)

    # -- binding ------------------------------------------------------------------------------
    def _bind(self, args, kwargs):
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        names, values, static = [], [], []
        for name, value in bound.arguments.items():
            if name in self.static:
                try:
                    hash(value)
                except TypeError:
                    raise TypeError(f"static argument {name!r} must be hashable") from None
                static.append((name, value))
            else:
                names.append(name)
                values.append(value)
        leaves, tree = flatten(tuple(values))
        leaves = [x if _is_scalar(x) or x is None or isinstance(x, str) else _array_value(x)
                  for x in leaves]
        return (bound, names), leaves, tree, tuple(static)

    def _key(self, leaves, tree, static):
        specs = tuple(_spec(x) if x is not None and not isinstance(x, str) else ("const", x)
                      for x in leaves)
        return (tree, specs, static)

    # -- tracing ------------------------------------------------------------------------------
    def _trace(self, bound_names, leaves, tree) -> Trace:
        bound, names = bound_names
        placeholders: list[Node | None] = []
        traced_leaves = []
        labels = {}
        leaf_names = _leaf_names(names, tree)
        for i, x in enumerate(leaves):
            if x is None or isinstance(x, str):
                placeholders.append(None)
                traced_leaves.append(x)
                continue
            if _is_scalar(x):
                kind = dtypes.scalar_kind(x)
                weak = kind if isinstance(kind, type) else None
                dtype = np.dtype(np.asarray(x).dtype) if weak is None else (
                    np.dtype(np.int64) if kind is int else np.dtype(np.float64))
                node = Node.make("param", (), (i, weak), dtype=dtype)
            else:
                node = Node.buffer(Buffer(None), tuple(x.shape), x.dtype)
            placeholders.append(node)
            labels[node] = leaf_names[i]
            traced_leaves.append(ndarray(node))
        call = inspect.BoundArguments(self.signature, dict(bound.arguments))
        call.arguments.update(zip(names, unflatten(tree, traced_leaves)))
        trace = Trace(placeholders, [], None, tuple(getattr(x, "shape", None) for x in leaves),
                      labels=labels)
        prev = getattr(_trace_state, "trace", None)
        _trace_state.trace = trace
        try:
            self.trace_count += 1
            result = self.fn(*call.args, **call.kwargs)
        finally:
            _trace_state.trace = prev
        outs, trace.out_tree = flatten(result)
        trace.outputs = [node_of(o) if isinstance(o, ndarray) else o for o in outs]
        return trace

    # -- instances ----------------------------------------------------------------------------
    def _instance(self, trace: Trace, leaves) -> Instance:
        mapping = {}
        for p, x in zip(trace.placeholders, leaves):
            if p is not None and p.op == "buffer" and tuple(x.shape) != p.shape:
                mapping[p] = Node.buffer(Buffer(None), tuple(x.shape), p.dtype)
        placeholders = [mapping.get(p, p) for p in trace.placeholders]
        array_outs = [o for o in trace.outputs if isinstance(o, Node)]
        roots = rebuild(array_outs, mapping) if mapping else array_outs
        optimised, plan = runtime.prepare(roots)
        slots, k = [], 0
        for o in trace.outputs:
            slots.append(k if isinstance(o, Node) else None)
            k += isinstance(o, Node)
        return Instance(placeholders, optimised, plan, slots)

    def lower(self, *args, **kwargs) -> tuple[Trace, Instance, list]:
        """The trace and planned instance a call with these arguments runs (no execution)."""
        bound, leaves, tree, static = self._bind(args, kwargs)
        key = self._key(leaves, tree, static)
        shapes = tuple(getattr(x, "shape", None) for x in leaves)
        inst = self._instances.get((key, shapes))
        trace = self._traces.get(key) or self._traces.get((key, shapes))
        if inst is not None and trace is not None:
            return trace, inst, leaves
        with self._lock:
            trace = self._traces.get(key) or self._traces.get((key, shapes))
            if trace is None:
                trace = self._trace(bound, leaves, tree)
                self._traces[(key, shapes) if trace.shape_dependent else key] = trace
            try:
                inst = self._instance(trace, leaves)
            except (ValueError, IndexError):
                # the graph does not hold at these sizes: let the function itself decide
                trace = self._trace(bound, leaves, tree)
                trace.shape_dependent = True
                self._traces[(key, shapes)] = trace
                inst = self._instance(trace, leaves)
            self._instances[(key, shapes)] = inst
        return trace, inst, leaves

    def __call__(self, *args, **kwargs):
        site = self._site
        if site is not None and not kwargs:
            out = site(args)  # None: not a call like the site's last one
            if out is not None:
                return out
        fast = None
        if not kwargs and (len(args) == self._n_params or self._any_count):
            fast = _fast_args(args)
            if fast is not None:
                hit = self._fast.get(fast[0])
                if hit is not None:
                    out = self._run(hit[0], hit[1], fast[1])
                    self._site = self._site_for(hit, args, fast[1])
                    return out
        trace, inst, leaves = self.lower(*args, **kwargs)
        if fast is not None:
            self._fast[fast[0]] = [trace, inst, None]
        return self._run(trace, inst, leaves)

    def _site_for(self, hit: list, args: tuple, leaves: list):
        """The compiled call site of ``_fast`` entry ``hit`` (just run with ``args``), made on
        first use; None where the backend has none."""
        trace, inst, site = hit
        if site is None:
            if not config.compiled_calls or config.device == "cpu" or tracing() is not None:
                return None  # none now, perhaps later: nothing is recorded
            make = getattr(inst.direct, "site", None)
            slot = inst.out_slots[0]
            if make is not None and trace.out_tree is None and slot is not None:
                site = make(args, leaves, slot)
            site = hit[2] = site or False
        return site or None

    def _run(self, trace: Trace, inst: Instance, leaves: list):
        values = None
        direct = inst.direct
        if direct is None:  # first run: does the backend have a direct runner for this plan?
            direct = inst.direct = runtime.direct_runner(inst.plan, inst.roots,
                                                         inst.placeholders) or False
        if direct and config.device != "cpu" and tracing() is None:
            values = direct(leaves)
        if values is None:
            env = {}
            for p, x in zip(inst.placeholders, leaves):
                if p is not None:
                    env[p] = np.asarray(x, dtype=p.dtype) if p.op == "param" else x
            values = runtime.execute(inst.plan, inst.roots, env)
        # outputs are new buffer leaves (depth 0): wrapping them never flushes a graph
        if trace.out_tree is None:  # a single output: the common case needs no rebuilding
            slot = inst.out_slots[0]
            return trace.outputs[0] if slot is None else _wrap_value(values[slot])
        outs = [o if slot is None else _wrap_value(values[slot])
                for o, slot in zip(trace.outputs, inst.out_slots)]
        return unflatten(trace.out_tree, outs)

    def explain(self, *args, **kwargs) -> str:
        """Print and return the kernels a call with these arguments runs (``fr.explain``)."""
        from .explain import describe

        trace, inst, _ = self.lower(*args, **kwargs)
        text = describe(inst.plan, labels=trace.labels)
        print(text)
        return text


def _wrap_value(value) -> ndarray:
    """A call's output as a fuseray array (the compiled call site makes the same objects in C:
    ``_callsite.c``'s ``wrap_output``)."""
    return ndarray(leaf_node(value))


def _leaf_names(names: list[str], tree) -> list[str]:
    """A readable name for every leaf: the argument's name, with an index path when nested."""
    out: list[str] = []

    def walk(d, path):
        if d is None:
            out.append(path)
        elif d[0] == "dict":
            for k, v in zip(d[1], d[2]):
                walk(v, f"{path}[{k!r}]")
        else:
            for i, v in enumerate(d[1]):
                walk(v, f"{path}[{i}]")

    for name, d in zip(names, tree[1]):
        walk(d, name)
    return out


def jit(fn: Callable | None = None, *, static_argnames=(), static_argnums=()):
    """Compile ``fn``: trace it with lazy arrays once, then run its fused plan on each call.

    Like ``jax.jit``: arguments may be nested tuples, lists and dicts of arrays (fuseray, NumPy,
    or GPU arrays of other libraries) and Python scalars; ``static_argnames`` are passed through
    as Python values and become part of the cache key.
    """
    if fn is None:
        return functools.partial(jit, static_argnames=static_argnames,
                                 static_argnums=static_argnums)
    return Jitted(fn, static_argnames, static_argnums)

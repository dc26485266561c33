"""The one node type of the expression graph.

Stage: the graph. Every array operation records a :class:`Node`; nothing runs until a backend
executes a plan built from nodes.

Invariants:
- A node is immutable and *hash-consed*: ``Node.make`` returns the existing node when an equal one
  (same op, dtype, shape, sources and argument) is alive, so equal subexpressions are one object
  and common-subexpression elimination is free. Equality is therefore identity, and ``key`` (a
  structural digest computed once) is what caches use; nothing is keyed by ``id()``.
- Shapes and dtypes are inferred here from the op table's row and the node's sources, so a graph
  can be rebuilt over new leaves (``rebuild``), which is how ``@jit`` handles a new input size
  without calling the user's function again.
- Every walk is iterative: chains of 100,000 nodes never touch Python's recursion limit.

The only mutable slot is ``_value``: a write-once memo of the node's computed result, held as the
buffer leaf that stores it. It never takes part in identity.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
import weakref
from collections.abc import Iterable, Sequence

import numpy as np

from . import dtypes
from .ops import OPS, Kind, OpDef

_CACHE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


class Buffer:
    """A leaf's storage: a NumPy array or a device array, tagged with a stable serial number.

    Buffers compare by identity (two arrays with equal contents are still different leaves), and
    hash by their serial so that digests are deterministic within a process.
    """

    # spec: @jit's description of the value (dtype, shape, layout, type), filled in on first use
    __slots__ = ("value", "serial", "spec", "__weakref__")
    _serials = itertools.count()

    def __init__(self, value):
        self.value = value
        self.serial = next(Buffer._serials)
        self.spec = None

    def __hash__(self) -> int:
        return self.serial

    def __repr__(self) -> str:
        return f"Buffer#{self.serial}"


class Node:
    __slots__ = ("op", "dtype", "shape", "src", "arg", "_key", "depth", "_hash", "_value",
                 "__weakref__")

    op: str
    dtype: np.dtype
    shape: tuple[int, ...]
    src: tuple[Node, ...]
    arg: object

    def __init__(self, op, dtype, shape, src, arg, key, depth):
        self.op = op
        self.dtype = dtype
        self.shape = shape
        self.src = src
        self.arg = arg
        self._key = key
        self.depth = depth
        self._value = None
        # a buffer leaf's key is spelled on first use (see key); it hashes as its Buffer (the
        # serial, read directly: Buffer.__hash__ is a Python call on every @jit output)
        self._hash = hash(key) if key is not None else arg[0].serial

    @staticmethod
    def make(op: str, src: Sequence[Node] = (), arg=None, dtype=None) -> Node:
        """The unique node for ``op`` over ``src``; shape (and dtype unless given) are inferred."""
        row = OPS[op]
        src = tuple(src)
        shape = infer_shape(row, src, arg)
        if dtype is None:
            dtype = src[0].dtype
        dtype = np.dtype(dtype)
        ident = (op, dtype.str, shape, src, arg)
        with _LOCK:
            node = _CACHE.get(ident)
            if node is None:
                key = _digest(op, dtype, shape, src, arg)
                depth = 1 + max((s.depth for s in src), default=-1)
                node = Node(op, dtype, shape, src, arg, key, depth)
                _CACHE[ident] = node
        return node

    @staticmethod
    def buffer(buf: Buffer, shape: tuple[int, ...], dtype: np.dtype) -> Node:
        """The leaf for ``buf`` (``shape`` a tuple, ``dtype`` an ``np.dtype``). A Buffer is
        unique, so no equal node can exist: this skips the hash-consing table (it is on the hot
        path of every @jit call's outputs)."""
        return Node("buffer", dtype, shape, (), (buf, shape), None, 0)

    @property
    def key(self) -> str:
        """The structural digest that caches use. A buffer leaf's is spelled on first use: most
        @jit outputs never join a larger graph, and spelling it cost each call about 0.2 us."""
        key = self._key
        if key is None:
            key = self._key = f"buffer-{self.arg[0].serial:x}"
        return key

    # Identity semantics: hash-consing makes structural equality and identity the same thing.
    __eq__ = object.__eq__

    def __hash__(self) -> int:
        return self._hash

    @property
    def row(self) -> OpDef:
        return OPS[self.op]

    @property
    def kind(self) -> Kind:
        return OPS[self.op].kind

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def value(self):
        """The computed values (NumPy or device array), or None while unevaluated."""
        if self.op == "buffer":
            return self.arg[0].value
        return None if self._value is None else self._value.arg[0].value

    def memoize(self, leaf: Node) -> None:
        """Remember that ``leaf`` (a buffer node) holds this node's values."""
        if self._value is None and leaf is not self:
            self._value = leaf

    def __repr__(self) -> str:
        arg = "" if self.arg is None else f", {self.arg!r}"
        return f"<{self.op} {self.dtype.name}{list(self.shape)}{arg}>"


def _digest(op, dtype, shape, src, arg) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((op, dtype.str, shape, _stable(arg))).encode())
    for s in src:
        h.update(s.key.encode())
    return h.hexdigest()


def _stable(arg):
    """A process-independent spelling of an argument for digests."""
    if isinstance(arg, Buffer):
        return ("buffer", arg.serial)
    if isinstance(arg, float) and math.isnan(arg):
        return "nan"
    return arg


# ---------------------------------------------------------------------------------------------
# shape inference: one function per op kind, shared by construction and rebuild
# ---------------------------------------------------------------------------------------------


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy's broadcasting; the error names every shape as NumPy's does."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(-ndim, 0):
        sizes = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(sizes) > 1:
            listed = " ".join(_fmt(s).replace(" ", "") for s in shapes)
            raise ValueError(f"operands could not be broadcast together with shapes {listed}")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def broadcast_node(src: Node, shape: tuple[int, ...]) -> Node:
    """``src`` broadcast to ``shape`` with NumPy's right alignment, as movement nodes."""
    if src.shape == shape:
        return src
    if len(src.shape) < len(shape):
        src = Node.make("reshape", (src,), (1,) * (len(shape) - len(src.shape)) + src.shape)
    return src if src.shape == shape else Node.make("expand", (src,), shape)


def normalize_reshape(shape: tuple[int, ...], spec: tuple[int, ...]) -> tuple[int, ...]:
    size = math.prod(shape)
    unknown = [i for i, d in enumerate(spec) if d == -1]
    if len(unknown) > 1:
        raise ValueError("can only specify one unknown dimension")
    if any(d < -1 for d in spec):
        raise ValueError("negative dimensions not allowed")
    if unknown:
        known = math.prod(d for d in spec if d != -1)
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape array of size {size} into shape {_fmt(spec)}")
        spec = tuple(size // known if d == -1 else d for d in spec)
    if math.prod(spec) != size:
        raise ValueError(f"cannot reshape array of size {size} into shape {_fmt(spec)}")
    return tuple(spec)


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def index_entries(shape: tuple[int, ...], key: tuple) -> list[tuple]:
    """Resolve a normalised basic-indexing key against ``shape``.

    ``key`` holds one entry per consumed or inserted axis: ``("s", start, stop, step)`` as the
    user wrote them (None allowed), ``("i", k)`` for an integer, ``("n",)`` for ``None``. Returns
    ``("s", start, step, length)``, ``("i", k)`` (k made non-negative) or ``("n",)`` per entry.
    """
    out, axis = [], 0
    for entry in key:
        if entry[0] == "n":
            out.append(entry)
            continue
        n = shape[axis]
        if entry[0] == "i":
            k = entry[1]
            if not -n <= k < n:
                raise IndexError(
                    f"index {k} is out of bounds for axis {axis} with size {n}"
                )
            out.append(("i", k % n))
        else:
            start, stop, step = slice(*entry[1:]).indices(n)
            out.append(("s", start, step, len(range(start, stop, step))))
        axis += 1
    return out


def infer_shape(row: OpDef, src: tuple[Node, ...], arg) -> tuple[int, ...]:
    kind = row.kind
    if kind is Kind.LEAF:
        return tuple(arg[-1]) if row.name == "buffer" else ()
    if kind is Kind.ELEMENTWISE:
        return broadcast_shapes(*(s.shape for s in src))
    if kind is Kind.REDUCE:
        axes, keepdims = arg[0], arg[1]
        shape = src[0].shape
        if keepdims:
            return tuple(1 if i in axes else d for i, d in enumerate(shape))
        return tuple(d for i, d in enumerate(shape) if i not in axes)
    if kind is Kind.GATHER:
        return src[1].shape + src[0].shape[1:]
    if kind is Kind.SCATTER:
        return src[0].shape
    if kind is Kind.JOIN:
        axis = arg
        first = src[0].shape
        for s in src[1:]:
            if len(s.shape) != len(first):
                raise ValueError(
                    "all the input array dimensions except for the concatenation axis must match"
                    " exactly"
                )
            for i, (a, b) in enumerate(zip(first, s.shape)):
                if i != axis and a != b:
                    raise ValueError(
                        "all the input array dimensions except for the concatenation axis must"
                        f" match exactly, but along dimension {i}, the array at index 0 has size"
                        f" {a} and the array at index {src.index(s)} has size {b}"
                    )
        return first[:axis] + (sum(s.shape[axis] for s in src),) + first[axis + 1 :]
    shape = src[0].shape
    if row.name == "reshape":
        return normalize_reshape(shape, arg)
    if row.name == "permute":
        return tuple(shape[p] for p in arg)
    if row.name == "expand":
        target = tuple(arg)
        if broadcast_to_ok(shape, target):
            return target
        raise ValueError(
            f"operands could not be broadcast together with remapped shapes [original->remapped]:"
            f" {_fmt(shape)}  and requested shape {_fmt(target)}"
        )
    if row.name == "pad":
        return tuple(n + b + a for n, (b, a) in zip(shape, arg))
    if row.name == "index":
        return tuple(
            e[3] if e[0] == "s" else 1 for e in index_entries(shape, arg) if e[0] != "i"
        )
    raise AssertionError(f"no shape rule for {row.name}")


def broadcast_to_ok(shape, target) -> bool:
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(shape[::-1], target[::-1]))


# ---------------------------------------------------------------------------------------------
# walks
# ---------------------------------------------------------------------------------------------


def toposort(roots: Iterable[Node], stop=None, deps=None) -> list[Node]:
    """Nodes reachable from ``roots``, sources before users, iteratively.

    ``stop(node)`` true means: include the node but do not descend into its sources. ``deps(node)``,
    when given, is what the walk descends into instead of ``node.src`` (a backend's own view of
    what evaluating a node needs).
    """
    order, seen = [], set()
    stack = [(r, False) for r in reversed(list(roots))]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        if stop is None or not stop(node):
            srcs = node.src if deps is None else tuple(deps(node))
            stack.extend((s, False) for s in reversed(srcs) if s not in seen)
    return order


def consumers(order: Sequence[Node]) -> dict[Node, list[Node]]:
    users: dict[Node, list[Node]] = {n: [] for n in order}
    for n in order:
        for s in n.src:
            if s in users and n not in users[s]:
                users[s].append(n)
    return users


def rebuild(roots: Sequence[Node], mapping: dict[Node, Node]) -> list[Node]:
    """Recreate the graph above ``mapping``'s keys with their replacements, re-inferring shapes."""
    memo = dict(mapping)
    for node in toposort(roots, stop=lambda n: n in mapping):
        if node in memo:
            continue
        src = tuple(memo[s] for s in node.src)
        same = src == node.src
        memo[node] = node if same else Node.make(node.op, src, node.arg, node.dtype)
    return [memo[r] for r in roots]


def verify(roots: Sequence[Node]) -> None:
    """Check the graph's invariants; passes run it after every step in debug mode."""
    for node in toposort(roots):
        row = OPS[node.op]
        if row.arity >= 0 and len(node.src) != row.arity:
            raise AssertionError(f"{node!r} has {len(node.src)} sources, expected {row.arity}")
        if node.dtype not in dtypes.SUPPORTED:
            raise AssertionError(f"{node!r} has unsupported dtype")
        if infer_shape(row, node.src, node.arg) != node.shape:
            raise AssertionError(f"{node!r} shape disagrees with its sources")
        if row.kind is Kind.ELEMENTWISE and row.dtype_rule.value == "ufunc":
            # casts are explicit: every operand already has the loop dtype
            kinds = tuple(s.dtype for s in node.src)
            loop = dtypes.resolve_ufunc(row.ufunc, kinds)
            if loop[-1] != node.dtype:
                raise AssertionError(f"{node!r} dtype disagrees with NumPy's loop {loop}")

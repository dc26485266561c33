"""Launch choices for a fused kernel: a value next to the plan, never stored in the graph.

Stage: between the fusion plan and a backend's code generator. A :class:`Schedule` holds the
choices that are compiled into a kernel (index width, vector width, per-thread register cache,
loop unrolling, thread layout of a reduction); it is built from the kernel's *structure* only, so a
new array size never yields a new schedule (and never a new compile), except when the index width
must grow to 64 bits. The choices that do depend on sizes (grid, block shape, rows per block,
splitting a long reduction over several blocks) are made per launch by :func:`elementwise_launch`
and :func:`reduce_launch`, from the sizes and the device's properties; they are kernel launch
parameters, not source.

Invariants:
- ``Schedule`` is frozen and hashable; it is part of every compiled kernel's cache key (through the
  source it shapes).
- A launch never asks for more threads per block than ``Schedule.max_threads``, which the kernel
  declares in ``__launch_bounds__``.
"""

from __future__ import annotations

from dataclasses import dataclass

# 32-bit indexing is used while every index, offset and loop bound stays below this (2**31 - 1
# minus headroom for one grid-stride step past the end: 2**26 covers 2**20 threads x 64 elements).
INDEX32_LIMIT = 2**31 - 1 - 2**26

# Elementwise kernels: threads per block, and how many resident blocks' worth of work one launch
# spreads over the device before threads loop (grid-stride). Measured on an H200 (triad, 2**26
# float32, CUDA events): one vector per thread 0.287 ms, 4 waves 0.298 ms; so 64 waves, which is
# one vector per thread up to ~70M float32.
ELEMENTWISE_BLOCK = 256
ELEMENTWISE_WAVES = 64
# Vectors per thread per grid-stride step on the contiguous path, all loaded before any is used.
# Same measurement: 2 vectors 0.302 ms, 4 vectors 0.314 ms; so 1.
ELEMENTWISE_UNROLL = 1

# Reductions: the preferred block size, the elements each thread should reduce in a streaming
# pass before more threads are given to a row, and how many blocks per multiprocessor a split
# reduction aims for.
REDUCE_BLOCK = 256
# The block size of an inner-style kernel that keeps its rows in a register cache (layernorm,
# softmax): on an H200, 128 threads ran layernorm 3810 -> 3912 GB/s and softmax 3752 -> 3995 GB/s
# against 256 (benchmarks/NOTES.md G31); the two tied on an H100 (G23).
ROW_BLOCK = 128
# independent loads in flight per thread in a streaming pass (sumsq on an H200: 4, 8 and 16 all
# ran 0.123-0.125 ms)
REDUCE_UNROLL = 4
# The most threads a reduce/row kernel is launched with: a row's group (W) never exceeds it, and
# __launch_bounds__ leaves each thread up to 128 registers for the row cache.
REDUCE_MAX_THREADS = 512
REDUCE_ITEMS_PER_THREAD = 64
SPLIT_BLOCKS_PER_SM = 2
MAX_SPLIT = 65535  # gridDim.y
MAX_COUNTERS = 4096  # row blocks a split reduction may have (one completion counter each)

# Register budget of a row kernel's cache, in 4-byte registers per thread (softmax keeps x: 16
# elements, so a 1024-long row takes two warps), and the resident blocks of REDUCE_MAX_THREADS
# such a kernel declares in __launch_bounds__, which caps it at 64 registers per thread (softmax
# on an H200: 125 registers and 16 warps per SM ran at 40% of the copy bandwidth; a hand kernel
# with 48 registers at 96%). 16 rather than 32 (one warp a row): layernorm 2752 -> 2872 GB/s,
# softmax equal, on an H100 (benchmarks/NOTES.md G23); 8 (four warps) was slower for both.
ROW_CACHE_REGISTERS = 16
ROW_MIN_BLOCKS = 2


@dataclass(frozen=True, slots=True)
class Schedule:
    """What a kernel is compiled with.

    ``style``: ``"flat"`` (elementwise: one index over the space), ``"inner"`` (a reduction whose
    innermost axis is reduced: the threads of a row are consecutive lanes) or ``"outer"`` (the
    innermost axis is kept: neighbouring threads take neighbouring rows and a row's threads are
    spread over ``threadIdx.y``). ``vec``: elements per vector access on the contiguous elementwise
    path (1: none). ``items``: elements of each input a row kernel keeps in registers per thread
    between passes (0: no cache). ``unroll``: independent loads in flight per streaming step.
    """

    style: str
    index_bits: int = 32
    max_threads: int = 256
    vec: int = 1
    items: int = 0
    unroll: int = 4

    @property
    def index_type(self) -> str:
        return "int" if self.index_bits == 32 else "long long"


@dataclass(frozen=True, slots=True)
class Launch:
    """One launch's geometry: grid and block as (x, y), dynamic shared memory bytes, and for
    reductions the split of the reduced range over ``grid[1]`` blocks (``chunk`` elements each)."""

    grid: tuple[int, int]
    block: tuple[int, int]
    shared: int = 0
    chunk: int = 0
    row_blocks: int = 0

    @property
    def splits(self) -> int:
        return self.grid[1]


def _pow2_at_least(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _pow2_at_most(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def index_bits(extent: int) -> int:
    """32 when every index and offset of a launch stays below ``INDEX32_LIMIT``, else 64."""
    return 32 if extent <= INDEX32_LIMIT else 64


def elementwise_schedule(itemsizes: tuple[int, ...], vector_ok: bool, bits: int) -> Schedule:
    """Schedule of an elementwise kernel whose accesses have ``itemsizes`` (bytes).

    The vector width makes the widest access 16 bytes (at most 8 lanes: a byte-sized kernel moves
    8 bytes per access rather than unrolling its body 16 times); narrower types move fewer bytes
    per access but keep one element count per thread, so every lane of a vector is one element of
    the space.
    """
    vec = max(1, min(8, 16 // max(itemsizes, default=4))) if vector_ok else 1
    return Schedule(
        "flat", bits, ELEMENTWISE_BLOCK, vec=vec, unroll=ELEMENTWISE_UNROLL if vec > 1 else 1
    )


def reduce_schedule(
    inner: bool, cached_itemsizes: tuple[int, ...], passes: int, bits: int
) -> Schedule:
    """Schedule of a reduce or row kernel.

    ``cached_itemsizes``: the item sizes of the values a multi-pass kernel (``passes`` > 1) keeps
    in registers between passes; the cache gets ``ROW_CACHE_REGISTERS`` registers, split among
    them, in a power-of-two number of elements each.
    """
    items = 0
    if passes > 1 and cached_itemsizes:
        budget = ROW_CACHE_REGISTERS * 4 // sum(cached_itemsizes)
        items = max(2, min(32, _pow2_at_most(budget)))
    return Schedule(
        "inner" if inner else "outer", bits, REDUCE_MAX_THREADS, items=items, unroll=REDUCE_UNROLL
    )


def elementwise_launch(schedule: Schedule, n: int, sm_count: int, threads_per_sm: int) -> Launch:
    """Grid for ``n`` elements: one vector per thread until the device is full
    ``ELEMENTWISE_WAVES`` times over, then grid-stride loops."""
    block = schedule.max_threads
    per_block = block * schedule.vec * schedule.unroll
    wanted = max(1, -(-n // per_block))
    cap = max(1, sm_count * (threads_per_sm // block) * ELEMENTWISE_WAVES)
    # a grid-stride step (times the unroll) must fit the index headroom of 32-bit kernels
    cap = min(cap, 2**25 // (block * schedule.unroll))
    return Launch((min(wanted, cap), 1), (block, 1))


def reduce_launch(
    schedule: Schedule,
    rows: int,
    length: int,
    acc_bytes: int,
    splittable: bool,
    sm_count: int,
    threads_per_sm: int,
) -> Launch:
    """Geometry of a reduce/row kernel over ``rows`` rows of ``length`` reduced elements each.

    A row's threads (W, a power of two) get about ``REDUCE_ITEMS_PER_THREAD`` elements each in a
    streaming pass, or, for a multi-pass kernel with a register cache, enough threads for the row
    to fit the cache (up to ``max_threads``; longer rows stream every pass). When rows alone
    cannot fill the device and the kernel is ``splittable`` (one pass, row-level results only),
    the reduced range is split over ``grid[1]`` blocks whose partial results the last of them
    combines.
    """
    items = schedule.items or REDUCE_ITEMS_PER_THREAD
    want = _pow2_at_least(-(-max(length, 1) // items))
    limit = schedule.max_threads
    if schedule.style == "inner":
        w = min(want, limit)
        rpb = max(1, (ROW_BLOCK if schedule.items else REDUCE_BLOCK) // w)
        block = (w, rpb)
    else:
        tx = min(32, _pow2_at_least(rows))
        cap = max(1, (limit if schedule.items else REDUCE_BLOCK) // tx)
        w = min(want, cap)
        rpb = tx
        block = (tx, w)
    threads = block[0] * block[1]
    row_blocks = max(1, -(-rows // rpb))
    splits, chunk = 1, max(length, 1)
    if splittable and row_blocks <= MAX_COUNTERS:
        target = sm_count * max(1, threads_per_sm // threads) * SPLIT_BLOCKS_PER_SM
        if row_blocks < target:
            per_block_min = w * REDUCE_ITEMS_PER_THREAD * schedule.unroll
            splits = min(-(-target // row_blocks), -(-length // per_block_min), MAX_SPLIT)
            splits = max(splits, 1)
            if splits > 1:
                chunk = -(-length // splits)
                chunk = -(-chunk // w) * w  # whole warps per block: aligned, coalesced starts
                splits = -(-length // chunk)
    shared = threads * acc_bytes + 16
    return Launch(
        (row_blocks, splits), block, shared, chunk if splits > 1 else max(length, 1), row_blocks
    )

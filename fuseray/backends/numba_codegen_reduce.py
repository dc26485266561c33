"""Reduction code for the numba loop generator: accumulators, block helpers, combines.

Stage: backends (numba), a part of ``numba_codegen.Generator`` (a mixin, split out by concept).
A reduction accumulates into ``w<r>`` (and ``wi<r>`` for the index of argmax/argmin) over the
q positions of one task. Float sums, products and extrema write their operand values into a
scratch block and reduce it with the 16-lane helpers of ``numba_reduce`` (vectorised without
fast-math); when the values already sit in memory with unit stride (an input, or the row's value
cache) the helper reads them in place. Integer and boolean reductions accumulate directly.
Partial results of blocks and of tasks are combined in q order, so an argmax keeps the first
occurrence, and a NaN, once seen, stays the result of max, min, argmax and argmin.
"""

from __future__ import annotations

import numpy as np

from .numba_reduce import BLOCK

F16 = np.dtype(np.float16).str
SCRATCH_OPS = ("sum", "prod", "mean", "max", "min", "argmax", "argmin")
# reductions whose partial results fold like their elements: (initial value, step folding a
# value v into the accumulator w), shared by the accumulation of elements and the combination
# of block and task partials
FOLDS = {
    "sum": ("{ct}(0)", "{w} += {v}"),
    "mean": ("{ct}(0)", "{w} += {v}"),
    "prod": ("{ct}(1)", "{w} *= {v}"),
    "any": ("False", "{w} = {w} or {v}"),
    "all": ("True", "{w} = {w} and {v}"),
}


def np_name(dtype_str: str) -> str:
    """The NumPy constructor a value of this dtype is computed with (float16 in float32)."""
    dt = np.dtype(dtype_str)
    if dt == np.float16:
        return "np.float32"
    return "np.bool_" if dt == np.bool_ else f"np.{dt.name}"


def is_float(dtype_str: str) -> bool:
    return np.dtype(dtype_str).kind == "f"


class ReductionCode:
    """Emits the reduction parts of a kernel (``self`` is a ``numba_codegen.Generator``)."""

    def acc_type(self, r: int) -> str:
        return self.dtype_of(self.nodes[r][4][0])

    def scratch(self, r: int) -> bool:
        return self.nodes[r][0] in SCRATCH_OPS and is_float(self.acc_type(r))

    def init(self, r: int) -> list[str]:
        op = self.nodes[r][0]
        dt = self.acc_type(r)
        ct = np_name(dt)
        kind = np.dtype(dt).kind
        if op in FOLDS:
            return [f"w{r} = {FOLDS[op][0].format(ct=ct)}"]
        big = op in ("max", "argmax")
        if kind == "f":
            value = f"{ct}({'-' if big else ''}np.inf)"
        elif kind == "b":
            value = "False" if big else "True"
        else:
            info = np.iinfo(np.dtype(dt))
            value = f"{ct}({info.min if big else info.max})"
        lines = [f"w{r} = {value}"]
        if op in ("argmax", "argmin"):
            lines.append(f"wi{r} = 0")
        return lines

    def emit_accumulate(self, r: int, v: str) -> None:
        """Direct (non-scratch) accumulation of value ``v`` at flat q position ``qi``."""
        e = self.e
        op = self.nodes[r][0]
        if op in FOLDS:
            e(FOLDS[op][1].format(w=f"w{r}", v=v))
        elif op == "max":
            e(f"w{r} = {v} if {v} > w{r} else w{r}")
        elif op == "min":
            e(f"w{r} = {v} if {v} < w{r} else w{r}")
        else:
            cmp = ">" if op == "argmax" else "<"
            with e.block(f"if {v} {cmp} w{r}:"):
                e(f"w{r} = {v}")
                e(f"wi{r} = qi")

    def emit_combine(self, r: int, v: str, vi: str = "") -> None:
        """Fold a partial result (block or task) ``v`` (index ``vi``) into ``w{r}``."""
        e = self.e
        op = self.nodes[r][0]
        if op in FOLDS:
            e(FOLDS[op][1].format(w=f"w{r}", v=v))
        elif op in ("max", "min"):
            helper = "fr_maximum" if op == "max" else "fr_minimum"
            e(f"w{r} = {helper}(w{r}, {v})")
        else:
            cmp = ">" if op == "argmax" else "<"
            nan = f" or ({v} != {v})" if is_float(self.acc_type(r)) else ""
            with e.block(f"if (w{r} == w{r}) and ({v} {cmp} w{r}{nan}):"):
                e(f"w{r} = {v}")
                e(f"wi{r} = {vi}")

    def finalize(self, r: int) -> str:
        op, dt, _, extra, _ = self.nodes[r]
        if op in ("argmax", "argmin"):
            return f"np.intp(wi{r})"
        if op == "mean":
            ct = np_name(self.acc_type(r))
            value = f"w{r} / {ct}(max(NQ - {extra}, 0))"
        else:
            value = f"w{r}"
        if dt == F16:
            return f"fr_f16(np.float32({value}))"
        return f"{np_name(dt)}({value})"

    def emit_pass(self, p: int, qa: str, qb: str) -> None:
        """Accumulate the reductions of pass ``p`` over q positions [qa, qb) into ``w*``."""
        e = self.e
        reds = [r for r in self.reductions if self.passes[r] == p]
        for r in reds:
            for line in self.init(r):
                e(line)
        operands = [self.nodes[r][4][0] for r in reds]
        stop = {i for i in self.cached if self.cache_stage[i] < p}
        temps = self._full_cone(operands, stop)
        loads = [i for i in temps if i in stop]
        temps = [i for i in temps if i not in stop]
        keep = [i for i in temps if i in self.cached and self.cache_stage[i] == p]
        reads = self.stage_reads(temps, operands)
        scratch = [r for r in reds if self.scratch(r)]
        direct = [r for r in reds if not self.scratch(r)]
        need_qi = bool(keep or loads or any(self.nodes[r][0].startswith("arg") for r in reds))
        qi = f"qo * Q{self.kq - 1}"
        # a block helper reads a unit-stride input or this row's cache in place: no scratch copy
        sliced = {r: self.block_source(self.nodes[r][4][0], keep, qi) for r in scratch}
        sliced = {r: src for r, src in sliced.items() if src is not None}

        def inner(lo: str, hi: str) -> None:
            if not (temps or keep or direct or len(sliced) < len(scratch)):
                return
            with e.block(f"for i in range({lo}, {hi}):"):
                if need_qi:
                    e(f"qi = {qi} + i")
                self.emit_elements(temps, reads, loads)
                for i in keep:
                    e(f"k{i}[np.uint64(qi)] = t{i}")
                for r in scratch:
                    if r not in sliced:
                        e(f"sc{r}[np.uint64(i - {lo})] = {self.ref(self.nodes[r][4][0])}")
                for r in direct:
                    self.emit_accumulate(r, self.ref(self.nodes[r][4][0]))

        def body() -> None:
            if not scratch:
                inner("lo", "hi")
                return
            with e.block(f"for lo2 in range(lo, hi, {BLOCK}):"):
                e(f"hi2 = min(hi, lo2 + {BLOCK})")
                inner("lo2", "hi2")
                for r in scratch:
                    op = self.nodes[r][0]
                    helper = {"mean": "sum"}.get(op, op)
                    src = sliced.get(r, f"sc{r}")
                    if op in ("argmax", "argmin"):
                        e(f"bv, bi = fr_block_{helper}({src}, hi2 - lo2)")
                        self.emit_combine(r, "bv", f"{qi} + lo2 + bi")
                    else:
                        self.emit_combine(r, f"fr_block_{helper}({src}, hi2 - lo2)")

        self.emit_segments(qa, qb, reads, body)

    def block_source(self, ref, keep, qi: str) -> str | None:
        """An array slice holding the values of ``ref`` for positions [lo2, hi2), if one exists."""
        if ref[0] == "t" and ref[1] in keep:
            return f"k{ref[1]}[{qi} + lo2:{qi} + hi2]"
        if ref[0] == "r":
            k = ref[1]
            _, level, dtype, inner, lower, masked = self.reads[k]
            if level == "full" and inner == "u" and not lower and not masked and dtype != F16:
                return f"a{k}[b{k} + lo2:b{k} + hi2]"
        return None


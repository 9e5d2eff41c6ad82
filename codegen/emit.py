"""Small helpers shared by the kernel emitters: kernel signatures, element pointers, loops."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from llvmlite import ir

from graphc.codegen import scalar
from graphc.codegen.irutil import LoopHints, as_i64, for_range
from graphc.codegen.scalar import I32, I64, PTR
from graphc.dtypes import DType


@dataclass
class Spec:
    """What the lowering needs to call an emitted kernel."""

    name: str
    args: list[Hashable]  # storage keys (one pointer argument each), in order
    parallel_extent: int  # kernel(ptrs..., lo, hi) computes units [lo, hi)
    description: str
    status: bool = False  # returns i32: non-zero reports a data error (see lower.py)
    flops: int = 0
    extra: dict = field(default_factory=dict)


def new_kernel(module: ir.Module, name: str, n_ptrs: int, status: bool = False):
    """`void|i32 name(ptr noalias x n, i64 lo, i64 hi)`; returns (fn, builder, ptrs, lo, hi)."""
    ret = I32 if status else ir.VoidType()
    fn = ir.Function(module, ir.FunctionType(ret, [PTR] * n_ptrs + [I64, I64]), name)
    for a in fn.args[:n_ptrs]:
        a.add_attribute("noalias")
    lo, hi = fn.args[-2], fn.args[-1]
    lo.name, hi.name = "lo", "hi"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    return fn, b, list(fn.args[:n_ptrs]), lo, hi


def elem(b: ir.IRBuilder, base, index, dtype: DType):
    """Pointer to element `index` (an i64 value or int) of a `dtype` array at `base`."""
    return b.gep(base, [as_i64(index)], inbounds=True, source_etype=scalar.memory_type(dtype))


def nest(
    b: ir.IRBuilder,
    ranges: Sequence,
    body: Callable[[list], None],
    label: str,
    hints: LoopHints | None = None,
    outer: LoopHints | None = None,
) -> None:
    """Loops over `ranges` [(start, stop), ...] (outermost first) around body(indices);
    `hints` applies to the innermost loop, `outer` to the others."""
    idx: list = []

    def level(k: int) -> None:
        if k == len(ranges):
            body(idx)
            return
        start, stop = ranges[k]
        these = hints if k == len(ranges) - 1 else outer
        with for_range(b, start, stop, name=f"{label}{k}", hints=these) as i:
            idx.append(i)
            level(k + 1)
            idx.pop()

    level(0)


def local(b: ir.IRBuilder, t: ir.Type, name: str = ""):
    """A stack slot allocated in the entry block (so mem2reg can promote it to a register)."""
    saved = b.block
    entry = b.function.entry_basic_block
    if entry.instructions:
        b.position_before(entry.instructions[0])
    else:
        b.position_at_end(entry)
    slot = b.alloca(t, name=name)
    b.position_at_end(saved)
    return slot

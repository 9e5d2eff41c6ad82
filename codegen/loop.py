"""Loop kernels: one pass over an iteration domain evaluating a DAG of elementwise ops, with
at most one reduction at its root.

Operands are affine views of stored buffers (passes/views.py), so broadcasts, transposes and
slices cost index arithmetic, not copies. Axes that every operand walks contiguously are
merged first, so an elementwise update of a [120, 400] weight is one flat loop that LLVM
vectorises. Reductions accumulate into their output in row-major iteration order; the
parallel unit is the outermost axis that is not reduced, so each output element is produced
by one unit in a fixed order (bitwise the same whatever the split).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from llvmlite import ir

from graphc.codegen import scalar
from graphc.codegen.emit import nest
from graphc.codegen.irutil import LoopHints
from graphc.codegen.scalar import I64, PTR
from graphc.ir import Node
from graphc.passes.schedule import INLINE_OPS, Kernel
from graphc.passes.views import VIEW_OPS, affine_view, contiguous_strides, fill_of

# Outer loops are neither unrolled nor vectorised: with a short inner loop (a 4x4 plane),
# LLVM unrolls it fully and then vectorises the loop around it with gathers and scatters
# (measured 13x slower than one vector per row; llvmlite-facts.md saw the same for convs).
NO_OUTER_UNROLL = LoopHints(unroll="disable", vectorize=False)
REDUCTIONS = ("reduce_sum", "reduce_max")


@dataclass
class LoopSpec:
    name: str
    args: list[Hashable]  # storage keys, one pointer argument each, in order
    parallel_extent: int
    description: str


@dataclass
class _Access:
    key: Hashable  # which pointer argument
    strides: list[int]
    offset: int


def emit_loop(
    module: ir.Module,
    name: str,
    kernel: Kernel,
    stored: set[Node],
    storage: Callable[[Node], Hashable],
) -> LoopSpec:
    members = [n for n in kernel.nodes if n.op not in VIEW_OPS and n.op not in INLINE_OPS]
    sink = kernel.root
    # Every reduction of the kernel sums over the same axes (passes/fuse.py merges sibling
    # reductions only then): one pass over the domain feeds all their accumulators.
    reductions = [m for m in members if m.op in REDUCTIONS]
    reducing = bool(reductions)
    axes = set(reductions[0].attrs["axes"]) if reducing else set()
    if any(set(r.attrs["axes"]) != axes for r in reductions):
        raise AssertionError(f"loop kernel {name}: reductions over different axes")
    domain = list(kernel.params["domain"])
    reduced = [i in axes for i in range(len(domain))]

    # Accessors of every stored operand and output, as strides over the domain.
    reads: dict[Node, _Access] = {}
    copy = not members  # materialising a view or fill: the root is read, then stored
    operands = [sink] if copy else []
    operands += [i for m in members for i in m.inputs]
    for i in operands:
        if i in members or fill_of(i) is not None or i in reads:
            continue  # fills (and views of them) are constants
        v = affine_view(i, stored - {sink} if copy else stored)
        if v is None or list(v.shape) != domain:
            raise AssertionError(f"loop kernel {name}: operand {i!r} is not an affine view")
        reads[i] = _Access(storage(v.base), list(v.strides), v.offset)
    writes: dict[Node, _Access] = {}
    for o in kernel.outputs:
        if o in reductions:
            keep = [1 if r else d for d, r in zip(domain, reduced, strict=True)]
            strides = [
                0 if r else s for s, r in zip(contiguous_strides(tuple(keep)), reduced, strict=True)
            ]
        else:
            strides = list(contiguous_strides(tuple(domain)))
        writes[o] = _Access(storage(o), strides, 0)

    domain, reduced = _coalesce(domain, reduced, list(reads.values()) + list(writes.values()))
    keys: list[Hashable] = []
    for acc in list(writes.values()) + list(reads.values()):
        if acc.key not in keys:
            keys.append(acc.key)
    par = next((i for i, r in enumerate(reduced) if not r), None)
    extent = domain[par] if par is not None else 1

    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR] * len(keys) + [I64, I64]), name)
    for a in fn.args[: len(keys)]:
        a.add_attribute("noalias")
    lo, hi = fn.args[-2], fn.args[-1]
    lo.name, hi.name = "lo", "hi"
    ptr = {k: fn.args[i] for i, k in enumerate(keys)}
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def bounds(axis: int):
        if axis == par:
            return lo, hi
        return ir.Constant(I64, 0), ir.Constant(I64, domain[axis])

    def address(acc: _Access, idx: list, dtype):
        off = ir.Constant(I64, acc.offset)
        for i, s in zip(idx, acc.strides, strict=True):
            if s:
                off = b.add(off, b.mul(i, ir.Constant(I64, s)))
        return b.gep(ptr[acc.key], [off], inbounds=True, source_etype=scalar.memory_type(dtype))

    if reducing:  # outputs start at their reduction's identity, for this unit's elements
        keep_axes = [i for i, r in enumerate(reduced) if not r]

        def init_body(idx_keep):
            idx = [ir.Constant(I64, 0)] * len(domain)
            for a, i in zip(keep_axes, idx_keep, strict=True):
                idx[a] = i
            for r in reductions:
                init = scalar.reduce_identity(r.op, r.dtype)
                scalar.store(b, init, address(writes[r], idx, r.dtype), r.dtype)

        nest(b, [bounds(a) for a in keep_axes], init_body, "init", outer=NO_OUTER_UNROLL)

    def body(idx: list) -> None:
        values: dict[Node, ir.Value] = {}
        # Every operand is loaded before anything is stored: an output written in place over
        # an input (a state update) must not feed a later read of that input's old value.
        loaded = {
            n: scalar.load(b, address(acc, idx, n.dtype), n.dtype, name="x")
            for n, acc in reads.items()
        }

        def value_of(n: Node):
            if n in values:
                return values[n]
            fill = fill_of(n)
            if fill is not None:
                return scalar.constant(n.dtype, fill.attrs["value"])
            return loaded[n]

        if copy:
            scalar.store(b, value_of(sink), address(writes[sink], idx, sink.dtype), sink.dtype)
        for m in members:
            args = [value_of(i) for i in m.inputs]
            if m in reductions:
                out = address(writes[m], idx, m.dtype)
                acc = scalar.load(b, out, m.dtype, name="acc")
                scalar.store(b, scalar.reduce_combine(b, m.op, m.dtype, acc, args[0]), out, m.dtype)
                continue
            values[m] = scalar.ELEMENTWISE[m.op](b, m, args)
            if m in writes:
                scalar.store(b, values[m], address(writes[m], idx, m.dtype), m.dtype)

    # The inner loop is LLVM's to vectorise and unroll; unrolling the outer ones as well (a
    # constant trip count of 16 over a vectorised inner loop of 1024) only multiplies the
    # code, and cost 0.5 s of machine-code generation for one such kernel (measured).
    inner = _short_inner_loop(domain, par, [*reads, *writes], bool(reduced) and reduced[-1])
    nest(
        b, [bounds(a) for a in range(len(domain))], body, "loop", hints=inner, outer=NO_OUTER_UNROLL
    )
    b.ret_void()
    shape = "x".join(map(str, domain)) or "scalar"
    what = " + ".join(r.op for r in reductions) + " " if reducing else ""
    return LoopSpec(
        name, keys, extent, f"loop {what}over [{shape}] (axes merged), parallel over axis {par}"
    )


SHORT_INNER = 64  # below this trip count LLVM's default vector loop (4 x 16 lanes) never runs


def _short_inner_loop(
    domain: list[int], par, values: list[Node], reduced_inner: bool
) -> LoopHints | None:
    """Vector hints for an inner loop of a few known iterations (BatchNorm over a 4x4
    plane: 16): LLVM's default vectorises by 16 lanes interleaved 4 times, so fewer than 64
    iterations all take the scalar remainder (measured 5 GB/s instead of 60 on [64,512,16]).
    One vector iteration of the widest power of two that fits does them at once."""
    if not domain or len(domain) - 1 == par or reduced_inner:
        # the parallel loop's trip count is not known; a reduction along the inner axis
        # sums in order, which does not vectorise
        return None
    n = domain[-1]
    if n >= SHORT_INNER or n < 4:
        return None
    size = max((v.dtype.itemsize for v in values), default=4)
    width = min(64 // size, 1 << (n.bit_length() - 1))
    return LoopHints(width=width, interleave=1)


def _coalesce(domain: list[int], reduced: list[bool], accs: list[_Access]):
    """Drops size-1 axes and merges neighbours every accessor walks as one."""
    keep = [i for i, d in enumerate(domain) if d != 1]
    domain = [domain[i] for i in keep]
    reduced = [reduced[i] for i in keep]
    for a in accs:
        a.strides = [a.strides[i] for i in keep]
    i = len(domain) - 2
    while i >= 0:
        mergeable = reduced[i] == reduced[i + 1] and all(
            a.strides[i] == a.strides[i + 1] * domain[i + 1] for a in accs
        )
        if mergeable:
            domain[i] *= domain.pop(i + 1)
            reduced.pop(i + 1)
            for a in accs:
                a.strides[i] = a.strides.pop(i + 1)
        i -= 1
    return domain, reduced

"""softmax and log_softmax over the last axis with their elementwise producers fused in: the
scaling and masking of attention scores (scores * scale + mask, masked_fill) are computed
as each row is read, never stored (passes/fuse.py chooses the producers).

Each row (a parallel unit) takes three passes, as the plain kernel (codegen/rows.py): the
maximum, the sum of exp(v - max) (softmax stores each exp), then the normalisation; v, the
softmax's input, is evaluated from the producers' operands in each pass. The operands are
affine views (passes/views.py): a mask broadcast over heads and queries is read through
stride 0, never expanded.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from llvmlite import ir

from graphc.codegen import scalar
from graphc.codegen.emit import Spec, elem, local, nest, new_kernel
from graphc.codegen.irutil import i64
from graphc.codegen.scalar import FLAGS
from graphc.ir import Node
from graphc.passes.schedule import INLINE_OPS, VIEW_OPS, Kernel
from graphc.passes.views import affine_view, fill_of

Storage = Callable[[Node], Hashable]


def emit_softmax_fused(
    module: ir.Module, name: str, kernel: Kernel, stored: set[Node], storage: Storage
) -> Spec:
    node = kernel.root
    x = node.inputs[0]
    shape = x.shape
    n = shape[-1]
    rows = x.type.numel // max(n, 1)
    dt = x.dtype
    members = [m for m in kernel.nodes if m is not node and m.op not in VIEW_OPS + INLINE_OPS]
    operands = [i for m in members for i in m.inputs] + [x]
    reads: dict[Node, tuple[Hashable, tuple[int, ...], int]] = {}
    for i in operands:
        if i in members or fill_of(i) is not None or i in reads:
            continue
        v = affine_view(i, stored)
        if v is None or v.shape != shape:
            raise AssertionError(f"{name}: operand {i!r} is not an affine view of the rows")
        reads[i] = (storage(v.base), v.strides, v.offset)
    keys = [storage(node)] + list(dict.fromkeys(key for key, _, _ in reads.values()))
    fn, b, ptrs, lo, hi = new_kernel(module, name, len(keys))
    ptr = dict(zip(keys, ptrs, strict=True))
    out = ptr[storage(node)]
    t = scalar.register_type(dt)
    biggest, total = local(b, t, "max"), local(b, t, "sum")

    def unit(idx):
        (u,) = idx
        # each operand's offset of this row: the row index unravelled over the leading axes
        index, rest = [], u
        for d in reversed(shape[:-1]):
            index.append(b.srem(rest, i64(d)))
            rest = b.sdiv(rest, i64(d))
        index.reverse()
        starts = {}
        for i, (_, strides, offset) in reads.items():
            at = i64(offset)
            for j, s in zip(index, strides[:-1], strict=True):
                if s:
                    at = b.add(at, b.mul(j, i64(s)))
            starts[i] = at
        row = b.mul(u, i64(n))

        def value(k):
            values: dict[Node, ir.Value] = {}

            def of(i: Node):
                if i in values:
                    return values[i]
                fill = fill_of(i)
                if fill is not None:
                    return scalar.constant(i.dtype, fill.attrs["value"])
                key, strides, _ = reads[i]
                at = b.add(starts[i], b.mul(k, i64(strides[-1]))) if strides[-1] else starts[i]
                return scalar.load(b, elem(b, ptr[key], at, i.dtype), i.dtype)

            for m in members:
                values[m] = scalar.ELEMENTWISE[m.op](b, m, [of(i) for i in m.inputs])
            return of(x)

        def out_at(k):
            return elem(b, out, b.add(row, k), dt)

        b.store(scalar.constant(dt, float("-inf")), biggest)
        nest(
            b,
            [(0, n)],
            lambda k: b.store(
                scalar.reduce_combine(b, "reduce_max", dt, b.load(biggest), value(k[0])),
                biggest,
            ),
            "max",
        )
        m = b.load(biggest)
        b.store(scalar.constant(dt, 0.0), total)

        def add_exp(k):
            e = scalar.exp(b, b.fsub(value(k[0]), m, flags=FLAGS), dt)
            if node.op == "softmax":
                b.store(e, out_at(k[0]))
            b.store(b.fadd(b.load(total), e, flags=FLAGS), total)

        nest(b, [(0, n)], add_exp, "sum")
        s = b.load(total)
        if node.op == "softmax":
            nest(
                b,
                [(0, n)],
                lambda k: b.store(b.fdiv(scalar.load(b, out_at(k[0]), dt), s), out_at(k[0])),
                "div",
            )
        else:
            ls = b.call(b.module.declare_intrinsic("llvm.log", [t]), [s])
            nest(
                b,
                [(0, n)],
                lambda k: b.store(b.fsub(b.fsub(value(k[0]), m), ls), out_at(k[0])),
                "out",
            )

    nest(b, [(lo, hi)], unit, "row")
    b.ret_void()
    ops = " -> ".join(m.op for m in members)
    return Spec(
        name,
        keys,
        rows,
        f"{node.op} over rows of {n} with {ops} fused in, one row per unit",
    )

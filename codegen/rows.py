"""Kernels that work along one axis: softmax, log_softmax and argmax.

The tensor is viewed as [outer, n, inner] around the axis; each (outer, inner) row is a
parallel unit, processed in index order like the numpy reference.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from llvmlite import ir

from graphc.codegen import scalar
from graphc.codegen.emit import Spec, elem, local, nest, new_kernel
from graphc.codegen.irutil import i64
from graphc.codegen.scalar import FLAGS, I64
from graphc.ir import Node

Storage = Callable[[Node], Hashable]


def _split(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    outer = inner = 1
    for d in shape[:axis]:
        outer *= d
    for d in shape[axis + 1 :]:
        inner *= d
    return outer, shape[axis], inner


def _row(b, lo, hi, inner, n):
    """(base index, stride) of the unit's row: unit u = o * inner + i."""
    return lambda u: (
        b.add(b.mul(b.sdiv(u, i64(inner)), i64(n * inner)), b.srem(u, i64(inner))),
        i64(inner),
    )


def emit_softmax(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    x = node.inputs[0]
    outer, n, inner = _split(x.shape, node.attrs["axis"])
    dt = x.dtype
    t = scalar.register_type(dt)
    fn, b, (out, xp), lo, hi = new_kernel(module, name, 2)
    log = b.module.declare_intrinsic("llvm.log", [t])
    biggest = local(b, t, "max")
    total = local(b, t, "sum")

    def unit(idx):
        (u,) = idx
        base = b.add(b.mul(b.sdiv(u, i64(inner)), i64(n * inner)), b.srem(u, i64(inner)))

        def at(k):
            return b.add(base, b.mul(k, i64(inner)))

        b.store(scalar.constant(dt, float("-inf")), biggest)
        nest(
            b,
            [(0, n)],
            lambda k: b.store(
                scalar.reduce_combine(
                    b,
                    "reduce_max",
                    dt,
                    b.load(biggest),
                    scalar.load(b, elem(b, xp, at(k[0]), dt), dt),
                ),
                biggest,
            ),
            "max",
        )
        m = b.load(biggest)
        b.store(scalar.constant(dt, 0.0), total)

        def add_exp(k):
            e = scalar.exp(
                b, b.fsub(scalar.load(b, elem(b, xp, at(k[0]), dt), dt), m, flags=FLAGS), dt
            )
            if node.op == "softmax":
                b.store(e, elem(b, out, at(k[0]), dt))
            b.store(b.fadd(b.load(total), e, flags=FLAGS), total)

        nest(b, [(0, n)], add_exp, "sum")
        s = b.load(total)
        if node.op == "softmax":
            nest(
                b,
                [(0, n)],
                lambda k: b.store(
                    b.fdiv(scalar.load(b, elem(b, out, at(k[0]), dt), dt), s),
                    elem(b, out, at(k[0]), dt),
                ),
                "div",
            )
        else:
            ls = b.call(log, [s])
            nest(
                b,
                [(0, n)],
                lambda k: b.store(
                    b.fsub(b.fsub(scalar.load(b, elem(b, xp, at(k[0]), dt), dt), m), ls),
                    elem(b, out, at(k[0]), dt),
                ),
                "out",
            )

    nest(b, [(lo, hi)], unit, "row")
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(x)],
        outer * inner,
        f"{node.op} over rows of {n}, one row per unit",
    )


def emit_argmax(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    x = node.inputs[0]
    outer, n, inner = _split(x.shape, node.attrs["axis"])
    dt = x.dtype
    fn, b, (out, xp), lo, hi = new_kernel(module, name, 2)
    best = local(b, scalar.memory_type(dt), "best")
    where = local(b, I64, "where")

    def unit(idx):
        (u,) = idx
        base = b.add(b.mul(b.sdiv(u, i64(inner)), i64(n * inner)), b.srem(u, i64(inner)))
        scalar.store(b, scalar.load(b, elem(b, xp, base, dt), dt), best, dt)
        b.store(i64(0), where)

        def visit(k):
            v = scalar.load(b, elem(b, xp, b.add(base, b.mul(k[0], i64(inner))), dt), dt)
            cur = scalar.load(b, best, dt)
            if dt.is_floating_point:  # first maximum; the first NaN beats everything
                take = b.or_(
                    b.and_(b.fcmp_ordered(">", v, cur), b.fcmp_ordered("ord", cur, cur)),
                    b.and_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", cur, cur)),
                )
            else:
                take = (
                    b.icmp_signed(">", v, cur) if dt.itemsize > 1 else b.icmp_unsigned(">", v, cur)
                )
            with b.if_then(take):
                scalar.store(b, v, best, dt)
                b.store(k[0], where)

        nest(b, [(1, n)], visit, "scan")
        b.store(b.load(where), elem(b, out, u, node.dtype))

    nest(b, [(lo, hi)], unit, "row")
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(x)],
        outer * inner,
        "argmax: first maximum of each row, one row per unit",
    )


EMITTERS = {"softmax": emit_softmax, "log_softmax": emit_softmax, "argmax": emit_argmax}

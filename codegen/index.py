"""Integer indexing kernels: the gathers (index_select, gather), their scatter-add gradients
(index_add, scatter_add), and cumsum.

Every tensor is viewed as [outer, n, inner] around the indexed axis. The gathers check each
index against [0, n) and report the first bad one through their status (so they stay
serial; they only move data). The scatter-adds are split into units of (outer row, block of
BLOCK inner columns): a unit zeroes its columns and adds the values in index order, so each
result element is summed in one fixed order whatever the split, and bitwise the same for any
thread count; an index out of range is skipped, never written. cumsum's units are the same
column blocks, each running its sums down the axis.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from llvmlite import ir

from graphc import dtypes
from graphc.codegen import scalar
from graphc.codegen.emit import Spec, elem, nest, new_kernel
from graphc.codegen.irutil import i64
from graphc.codegen.scalar import I32, I64
from graphc.ir import Node

Storage = Callable[[Node], Hashable]
BLOCK = 16  # inner columns per scatter unit: a cache line of f32


def _split(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    outer = inner = 1
    for d in shape[:axis]:
        outer *= d
    for d in shape[axis + 1 :]:
        inner *= d
    return outer, shape[axis], inner


def _index_value(b: ir.IRBuilder, ptr, at, index: Node):
    v = scalar.load(b, elem(b, ptr, at, index.dtype), index.dtype)
    return v if index.dtype == dtypes.int64 else b.sext(v, I64)


def _outside(b: ir.IRBuilder, v, n: int):
    return b.or_(b.icmp_signed("<", v, i64(0)), b.icmp_signed(">=", v, i64(n)))


def _copy(b, src, src_at, dst, dst_at, count: int, dtype) -> None:
    nest(
        b,
        [(0, count)],
        lambda k: scalar.store(
            b,
            scalar.load(b, elem(b, src, b.add(src_at, k[0]), dtype), dtype),
            elem(b, dst, b.add(dst_at, k[0]), dtype),
            dtype,
        ),
        "copy",
    )


def emit_index_select(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    x, index = node.inputs
    outer, n, inner = _split(x.shape, node.attrs["axis"])
    m = index.type.numel
    fn, b, (out, xp, ip), lo, hi = new_kernel(module, name, 3, status=True)
    bad = fn.append_basic_block("bad")

    def row(idx):
        (j,) = idx
        v = _index_value(b, ip, j, index)
        ok = fn.append_basic_block("ok")
        b.cbranch(_outside(b, v, n), bad, ok)
        b.position_at_end(ok)
        for_outer = [(0, outer)]

        def piece(o):
            src = b.add(b.mul(o[0], i64(n * inner)), b.mul(v, i64(inner)))
            dst = b.add(b.mul(o[0], i64(m * inner)), b.mul(j, i64(inner)))
            _copy(b, xp, src, out, dst, inner, x.dtype)

        nest(b, for_outer, piece, "outer")

    nest(b, [(lo, hi)], row, "row")
    b.ret(ir.Constant(I32, 0))
    b.position_at_end(bad)
    b.ret(ir.Constant(I32, 1))
    return Spec(
        name,
        [storage(node), storage(x), storage(index)],
        m,
        f"index_select of {m} slices of {inner} along axis {node.attrs['axis']}, "
        "each index checked",
        status=True,
    )


def emit_gather(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    x, index = node.inputs
    axis = node.attrs["axis"]
    outer, n, inner = _split(x.shape, axis)
    m = index.shape[axis]
    fn, b, (out, xp, ip), lo, hi = new_kernel(module, name, 3, status=True)
    bad = fn.append_basic_block("bad")

    def element(idx):
        o, j, i = idx
        at = b.add(b.mul(b.add(b.mul(o, i64(m)), j), i64(inner)), i)
        v = _index_value(b, ip, at, index)
        ok = fn.append_basic_block("ok")
        b.cbranch(_outside(b, v, n), bad, ok)
        b.position_at_end(ok)
        src = b.add(b.mul(b.add(b.mul(o, i64(n)), v), i64(inner)), i)
        value = scalar.load(b, elem(b, xp, src, x.dtype), x.dtype)
        scalar.store(b, value, elem(b, out, at, x.dtype), x.dtype)

    nest(b, [(lo, hi), (0, m), (0, inner)], element, "g")
    b.ret(ir.Constant(I32, 0))
    b.position_at_end(bad)
    b.ret(ir.Constant(I32, 1))
    return Spec(
        name,
        [storage(node), storage(x), storage(index)],
        outer,
        f"gather along axis {axis}, each index checked",
        status=True,
    )


def _blocks(inner: int) -> int:
    return -(-inner // BLOCK)


def _unit(b, u, inner: int):
    """(outer row, first column, columns) of scatter unit u."""
    per = _blocks(inner)
    o = b.sdiv(u, i64(per))
    c0 = b.mul(b.srem(u, i64(per)), i64(BLOCK))
    width = b.select(
        b.icmp_signed("<", b.add(c0, i64(BLOCK)), i64(inner)), i64(BLOCK), b.sub(i64(inner), c0)
    )
    return o, c0, width


def _clear_unit(b, out, o, c0, width, n: int, inner: int, dtype):
    """Zeroes the unit's `width` columns from c0 in all n rows of outer row o of `out` (the
    scatter kernels add into it next); returns the unit's first element."""
    base = b.add(b.mul(o, i64(n * inner)), c0)
    zero = scalar.constant(dtype, 0)

    def clear(k):
        r, c = k
        at = b.add(base, b.add(b.mul(r, i64(inner)), c))
        scalar.store(b, zero, elem(b, out, at, dtype), dtype)

    nest(b, [(0, n), (0, width)], clear, "zero")
    return base


def _add_into(b, out, at, value, dtype) -> None:
    p = elem(b, out, at, dtype)
    acc = scalar.load(b, p, dtype)
    total = b.fadd(acc, value, flags=()) if dtype.is_floating_point else b.add(acc, value)
    scalar.store(b, total, p, dtype)


def emit_index_add(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    g, index = node.inputs
    axis, ignore = node.attrs["axis"], node.attrs["ignore_index"]
    outer, n, inner = _split(node.shape, axis)
    m = index.type.numel
    dt = node.dtype
    fn, b, (out, gp, ip), lo, hi = new_kernel(module, name, 3)

    def unit(idx):
        o, c0, width = _unit(b, idx[0], inner)
        base = _clear_unit(b, out, o, c0, width, n, inner, dt)

        def add(k):
            (j,) = k
            v = _index_value(b, ip, j, index)
            skip = _outside(b, v, n)
            if ignore is not None:
                skip = b.or_(skip, b.icmp_signed("==", v, i64(ignore)))
            with b.if_then(b.not_(skip)):
                dst = b.add(base, b.mul(v, i64(inner)))
                src = b.add(b.add(b.mul(o, i64(m * inner)), b.mul(j, i64(inner))), c0)

                def column(c):
                    value = scalar.load(b, elem(b, gp, b.add(src, c[0]), dt), dt)
                    _add_into(b, out, b.add(dst, c[0]), value, dt)

                nest(b, [(0, width)], column, "col")

        nest(b, [(0, m)], add, "idx")

    nest(b, [(lo, hi)], unit, "unit")
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(g), storage(index)],
        outer * _blocks(inner),
        f"index_add of {m} slices along axis {axis}, in index order, units of {BLOCK} columns",
    )


def emit_scatter_add(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    g, index = node.inputs
    axis = node.attrs["axis"]
    outer, n, inner = _split(node.shape, axis)
    m = index.shape[axis]
    dt = node.dtype
    fn, b, (out, gp, ip), lo, hi = new_kernel(module, name, 3)

    def unit(idx):
        o, c0, width = _unit(b, idx[0], inner)
        base = _clear_unit(b, out, o, c0, width, n, inner, dt)

        def add(k):
            j, c = k
            src = b.add(b.add(b.mul(o, i64(m * inner)), b.mul(j, i64(inner))), b.add(c0, c))
            v = _index_value(b, ip, src, index)
            with b.if_then(b.not_(_outside(b, v, n))):
                value = scalar.load(b, elem(b, gp, src, dt), dt)
                _add_into(b, out, b.add(base, b.add(b.mul(v, i64(inner)), c)), value, dt)

        nest(b, [(0, m), (0, width)], add, "idx")

    nest(b, [(lo, hi)], unit, "unit")
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(g), storage(index)],
        outer * _blocks(inner),
        f"scatter_add along axis {axis}, in index order, units of {BLOCK} columns",
    )


def emit_cumsum(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    (x,) = node.inputs
    axis, reverse = node.attrs["axis"], node.attrs["reverse"]
    outer, n, inner = _split(node.shape, axis)
    dt = node.dtype
    fn, b, (out, xp), lo, hi = new_kernel(module, name, 2)

    def unit(idx):
        o, c0, width = _unit(b, idx[0], inner)
        base = b.add(b.mul(o, i64(n * inner)), c0)

        def step(k):
            r, c = k
            row = b.sub(i64(n - 1), r) if reverse else r
            at = b.add(base, b.add(b.mul(row, i64(inner)), c))
            value = scalar.load(b, elem(b, xp, at, dt), dt)
            prev_row = b.add(row, i64(1)) if reverse else b.sub(row, i64(1))
            prev = elem(b, out, b.add(base, b.add(b.mul(prev_row, i64(inner)), c)), dt)
            first = b.icmp_signed("==", r, i64(0))
            # the first row is its own sum; later rows add the previous running sum
            with b.if_else(first) as (then, otherwise):
                with then:
                    scalar.store(b, value, elem(b, out, at, dt), dt)
                with otherwise:
                    acc = scalar.load(b, prev, dt)
                    total = b.fadd(acc, value) if dt.is_floating_point else b.add(acc, value)
                    scalar.store(b, total, elem(b, out, at, dt), dt)

        nest(b, [(0, n), (0, width)], step, "row")

    nest(b, [(lo, hi)], unit, "unit")
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(x)],
        outer * _blocks(inner),
        f"cumsum along axis {axis}{' from the end' if reverse else ''}, units of {BLOCK} columns",
    )


EMITTERS = {
    "index_select": emit_index_select,
    "gather": emit_gather,
    "index_add": emit_index_add,
    "scatter_add": emit_scatter_add,
    "cumsum": emit_cumsum,
}

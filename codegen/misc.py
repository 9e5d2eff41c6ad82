"""Small kernels: one_hot (with its range check), random draws, concat, pad_slice, literals."""

from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np
from llvmlite import ir

from graphc import dtypes
from graphc.codegen import scalar
from graphc.codegen.emit import Spec, elem, nest, new_kernel
from graphc.codegen.irutil import i64
from graphc.codegen.scalar import F64, I32, I64
from graphc.ir import Node

Storage = Callable[[Node], Hashable]


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


GOLDEN, M1, M2 = (_signed(v) for v in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def emit_one_hot(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    x = node.inputs[0]
    c = node.attrs["num_classes"]
    ignore = node.attrs["ignore_index"]
    fn, b, (out, xp), lo, hi = new_kernel(module, name, 2, status=True)
    bad = fn.append_basic_block("bad")
    one, zero = scalar.constant(node.dtype, 1), scalar.constant(node.dtype, 0)

    def row(idx):
        (m,) = idx
        v = (
            b.sext(scalar.load(b, elem(b, xp, m, x.dtype), x.dtype), I64)
            if x.dtype != dtypes.int64
            else scalar.load(b, elem(b, xp, m, x.dtype), x.dtype)
        )
        outside = b.or_(b.icmp_signed("<", v, i64(0)), b.icmp_signed(">=", v, i64(c)))
        if ignore is not None:
            outside = b.and_(outside, b.icmp_signed("!=", v, i64(ignore)))
        ok = fn.append_basic_block("ok")
        b.cbranch(outside, bad, ok)
        b.position_at_end(ok)
        # an ignored row is all zeros even when ignore_index is itself a class (e.g. 0)
        keep = b.icmp_signed("!=", v, i64(ignore)) if ignore is not None else None
        nest(
            b,
            [(0, c)],
            lambda k: scalar.store(
                b,
                b.select(_hot(b, k[0], v, keep), one, zero),
                elem(b, out, b.add(b.mul(m, i64(c)), k[0]), node.dtype),
                node.dtype,
            ),
            "cls",
        )

    nest(b, [(lo, hi)], row, "row")
    b.ret(ir.Constant(I32, 0))
    b.position_at_end(bad)
    b.ret(ir.Constant(I32, 1))
    return Spec(
        name,
        [storage(node), storage(x)],
        x.type.numel,
        "one_hot with a class-range check (reports, never writes out of bounds)",
        status=True,
    )


def _hot(b, k, v, keep):
    hit = b.icmp_signed("==", k, v)
    return hit if keep is None else b.and_(hit, keep)


def _mix(b, seed, counter):
    g = ir.Constant(I64, GOLDEN)
    z = b.add(b.add(b.mul(seed, g), counter), g)
    z = b.mul(b.xor(z, b.lshr(z, i64(30))), ir.Constant(I64, M1))
    z = b.mul(b.xor(z, b.lshr(z, i64(27))), ir.Constant(I64, M2))
    return b.xor(z, b.lshr(z, i64(31)))


def _uniform(b, seed, counter):
    """[0, 1) as f64 from the top 24 bits (exact, as graphc/random.py)."""
    bits = b.lshr(_mix(b, seed, counter), i64(40))
    return b.fmul(b.uitofp(bits, F64), ir.Constant(F64, 1.0 / (1 << 24)))


def emit_rng(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    seed_n, off_n = node.inputs
    fn, b, (out, sp, op), lo, hi = new_kernel(module, name, 3)
    seed = b.load(sp, typ=I64)
    offset = b.load(op, typ=I64)
    t = scalar.register_type(node.dtype)
    log = b.module.declare_intrinsic("llvm.log", [F64])
    cos = b.module.declare_intrinsic("llvm.cos", [F64])
    sqrt = b.module.declare_intrinsic("llvm.sqrt", [F64])

    def draw(idx):
        (i,) = idx
        if node.op == "rng_uniform":
            v = _uniform(b, seed, b.add(offset, i))
        else:  # Box-Muller over counters 2i, 2i+1
            c = b.add(offset, b.mul(i, i64(2)))
            u1 = b.fsub(ir.Constant(F64, 1.0), _uniform(b, seed, c))
            u2 = _uniform(b, seed, b.add(c, i64(1)))
            r = b.call(sqrt, [b.fmul(ir.Constant(F64, -2.0), b.call(log, [u1]))])
            v = b.fmul(r, b.call(cos, [b.fmul(ir.Constant(F64, 2.0 * np.pi), u2)]))
        v = v if t == F64 else b.fptrunc(v, t)
        b.store(v, elem(b, out, i, node.dtype))

    nest(b, [(lo, hi)], draw, "draw")
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(seed_n), storage(off_n)],
        node.type.numel,
        f"{node.op}: counter-based (splitmix64), one element per unit",
    )


def _outer_inner(shape, axis):
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    return outer, inner


def emit_concat(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    axis = node.attrs["axis"]
    outer, inner = _outer_inner(node.shape, axis)
    total = node.shape[axis]
    fn, b, ptrs, lo, hi = new_kernel(module, name, 1 + len(node.inputs))
    out = ptrs[0]

    def unit(idx):
        (o,) = idx
        start = 0
        for x, xp in zip(node.inputs, ptrs[1:], strict=True):
            n = x.shape[axis] * inner
            src0 = b.mul(o, i64(n))
            dst0 = b.add(b.mul(o, i64(total * inner)), i64(start * inner))
            nest(
                b,
                [(0, n)],
                lambda k, xp=xp, s=src0, d=dst0, x=x: b.store(
                    scalar.load(b, elem(b, xp, b.add(s, k[0]), x.dtype), x.dtype),
                    elem(b, out, b.add(d, k[0]), x.dtype),
                ),
                "copy",
            )
            start += x.shape[axis]

    nest(b, [(lo, hi)], unit, "outer")
    b.ret_void()
    return Spec(
        name,
        [storage(node)] + [storage(x) for x in node.inputs],
        outer,
        f"concat along axis {axis}",
    )


def emit_pad_slice(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    g = node.inputs[0]
    a = node.attrs
    axis = a["axis"]
    outer, inner = _outer_inner(node.shape, axis)
    fn, b, (out, gp), lo, hi = new_kernel(module, name, 2)
    zero = scalar.constant(node.dtype, 0)
    n_out, n_in = node.shape[axis], g.shape[axis]

    def unit(idx):
        (o,) = idx
        base = b.mul(o, i64(n_out * inner))
        nest(
            b,
            [(0, n_out * inner)],
            lambda k: scalar.store(
                b, zero, elem(b, out, b.add(base, k[0]), node.dtype), node.dtype
            ),
            "zero",
        )

        def put(k):
            j, i = k
            src = b.add(b.mul(o, i64(n_in * inner)), b.add(b.mul(j, i64(inner)), i))
            row = b.add(i64(a["start"]), b.mul(j, i64(a["step"])))
            dst = b.add(base, b.add(b.mul(row, i64(inner)), i))
            scalar.store(
                b,
                scalar.load(b, elem(b, gp, src, g.dtype), g.dtype),
                elem(b, out, dst, node.dtype),
                node.dtype,
            )

        nest(b, [(0, n_in), (0, inner)], put, "put")

    nest(b, [(lo, hi)], unit, "outer")
    b.ret_void()
    return Spec(name, [storage(node), storage(g)], outer, f"pad_slice along axis {axis}")


def emit_constant(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    arr = np.ascontiguousarray(node.attrs["value"].array).reshape(-1)
    t = scalar.memory_type(node.dtype)
    values = arr.astype(np.uint8) if node.dtype == dtypes.bool_ else arr
    data = ir.GlobalVariable(module, ir.ArrayType(t, max(len(values), 1)), f"{name}.data")
    data.global_constant = True
    data.linkage = "private"
    consts = [
        ir.Constant(t, int(v) if not node.dtype.is_floating_point else float(v)) for v in values
    ] or [ir.Constant(t, 0)]
    data.initializer = ir.Constant(ir.ArrayType(t, len(consts)), consts)
    fn, b, (out,), lo, hi = new_kernel(module, name, 1)
    nest(
        b,
        [(lo, hi)],
        lambda k: b.store(
            scalar.load(b, elem(b, data, k[0], node.dtype), node.dtype),
            elem(b, out, k[0], node.dtype),
        ),
        "copy",
    )
    b.ret_void()
    return Spec(name, [storage(node)], len(values), "copy a literal")


def emit_arange(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    a = node.attrs
    fn, b, (out,), lo, hi = new_kernel(module, name, 1)
    t = scalar.register_type(node.dtype)

    def put(k):
        (i,) = k
        if node.dtype.is_floating_point:
            v = b.fadd(
                ir.Constant(F64, float(a["start"])),
                b.fmul(ir.Constant(F64, float(a["step"])), b.sitofp(i, F64)),
            )
            v = v if t == F64 else b.fptrunc(v, t)
        else:
            v = b.add(i64(int(a["start"])), b.mul(i64(int(a["step"])), i))
            v = v if t == I64 else b.trunc(v, t)
        b.store(v, elem(b, out, i, node.dtype))

    nest(b, [(lo, hi)], put, "fill")
    b.ret_void()
    return Spec(name, [storage(node)], node.type.numel, "arange")


EMITTERS = {
    "one_hot": emit_one_hot,
    "rng_uniform": emit_rng,
    "rng_normal": emit_rng,
    "concat": emit_concat,
    "pad_slice": emit_pad_slice,
    "constant": emit_constant,
    "arange": emit_arange,
}

"""Pooling kernels (forward and gradient), one image plane per parallel unit.

Window arithmetic follows the references in graphc/ops/nn.py: positions outside the input
are skipped (as if padded with -inf for max, zero for average), max pooling's gradient goes
to the first maximum in window order, average pooling divides by PyTorch's divisor.
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


def _geometry(node: Node, x_shape):
    a = node.attrs
    n, c, h, w = x_shape
    out = node.shape if node.op in ("max_pool2d", "avg_pool2d") else node.inputs[0].shape
    return n * c, h, w, out[2], out[3], a


def _window(b, fn, oh, ow, h, w, a, visit, label):
    """Calls visit(ih, iw) for every in-bounds position of output (oh, ow)'s window."""
    kh, kw = a["kernel_size"]
    sh, sw = a["stride"]
    ph, pw = a["padding"]
    dh, dw = a.get("dilation", (1, 1))
    h0 = b.sub(b.mul(oh, i64(sh)), i64(ph))
    w0 = b.sub(b.mul(ow, i64(sw)), i64(pw))

    def body(idx):
        i, j = idx
        ih = b.add(h0, b.mul(i, i64(dh)))
        iw = b.add(w0, b.mul(j, i64(dw)))
        inside = b.and_(
            b.and_(b.icmp_signed(">=", ih, i64(0)), b.icmp_signed("<", ih, i64(h))),
            b.and_(b.icmp_signed(">=", iw, i64(0)), b.icmp_signed("<", iw, i64(w))),
        )
        with b.if_then(inside):
            visit(ih, iw)

    nest(b, [(0, kh), (0, kw)], body, label)


def _argmax_in_window(b, fn, x, plane_base, oh, ow, h, w, a, dtype):
    """(max value, its flat index in the plane) over a window; first maximum wins."""
    best = local(b, scalar.memory_type(dtype), "best")
    where = local(b, I64, "where")
    b.store(scalar.constant(dtype, float("-inf")), best)
    b.store(i64(-1), where)

    def visit(ih, iw):
        k = b.add(b.mul(ih, i64(w)), iw)
        v = scalar.load(b, elem(b, x, b.add(plane_base, k), dtype), dtype)
        cur = b.load(best)
        better = b.fcmp_ordered(">", v, cur)
        # NaN wins once (numpy's argmax returns the first NaN)
        nan_first = b.and_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", cur, cur))
        first = b.icmp_signed("<", b.load(where), i64(0))
        take = b.or_(b.or_(better, nan_first), first)
        with b.if_then(take):
            b.store(v, best)
            b.store(k, where)

    _window(b, fn, oh, ow, h, w, a, visit, "win")
    return b.load(best), b.load(where)


def emit_max_pool2d(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    x = node.inputs[0]
    planes, h, w, oh_n, ow_n, a = _geometry(node, x.shape)
    fn, b, (out, xp), lo, hi = new_kernel(module, name, 2)

    def body(idx):
        p, oh, ow = idx
        v, _ = _argmax_in_window(b, fn, xp, b.mul(p, i64(h * w)), oh, ow, h, w, a, x.dtype)
        o = b.add(b.mul(p, i64(oh_n * ow_n)), b.add(b.mul(oh, i64(ow_n)), ow))
        b.store(v, elem(b, out, o, x.dtype))

    nest(b, [(lo, hi), (0, oh_n), (0, ow_n)], body, "pool")
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(x)],
        planes,
        f"max_pool2d {a['kernel_size']} stride {a['stride']}, one plane per unit",
    )


def emit_max_pool2d_grad(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    g, x = node.inputs
    planes, h, w, oh_n, ow_n, a = _geometry(node, x.shape)
    fn, b, (dx, gp, xp), lo, hi = new_kernel(module, name, 3)
    zero = scalar.constant(x.dtype, 0.0)

    def clear(idx):
        (k,) = idx
        b.store(zero, elem(b, dx, k, x.dtype))

    nest(b, [(b.mul(lo, i64(h * w)), b.mul(hi, i64(h * w)))], clear, "zero")

    def body(idx):
        p, oh, ow = idx
        base = b.mul(p, i64(h * w))
        _, k = _argmax_in_window(b, fn, xp, base, oh, ow, h, w, a, x.dtype)
        o = b.add(b.mul(p, i64(oh_n * ow_n)), b.add(b.mul(oh, i64(ow_n)), ow))
        with b.if_then(b.icmp_signed(">=", k, i64(0))):
            target = elem(b, dx, b.add(base, k), x.dtype)
            b.store(
                b.fadd(
                    scalar.load(b, target, x.dtype),
                    scalar.load(b, elem(b, gp, o, x.dtype), x.dtype),
                    flags=FLAGS,
                ),
                target,
            )

    nest(b, [(lo, hi), (0, oh_n), (0, ow_n)], body, "pool")
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(g), storage(x)],
        planes,
        "max_pool2d_grad: route to the window's first maximum, one plane per unit",
    )


def _divisor(b, oh, ow, h, w, a, dtype):
    """PyTorch's avg_pool2d divisor for output (oh, ow), as a `dtype` value."""
    if a["divisor_override"]:
        return scalar.constant(dtype, float(a["divisor_override"]))
    kh, kw = a["kernel_size"]
    sh, sw = a["stride"]
    ph, pw = a["padding"]

    def extent(o, s, p, k, size):
        start = b.sub(b.mul(o, i64(s)), i64(p))
        end = b.add(start, i64(k))
        end = b.select(b.icmp_signed("<", end, i64(size + p)), end, i64(size + p))
        full = b.sub(end, start)
        cs = b.select(b.icmp_signed(">", start, i64(0)), start, i64(0))
        ce = b.select(b.icmp_signed("<", end, i64(size)), end, i64(size))
        return full, b.sub(ce, cs)

    fh, ch = extent(oh, sh, ph, kh, h)
    fw, cw = extent(ow, sw, pw, kw, w)
    count = b.mul(fh, fw) if a["count_include_pad"] else b.mul(ch, cw)
    return b.sitofp(count, scalar.register_type(dtype))


def emit_avg_pool2d(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    x = node.inputs[0]
    planes, h, w, oh_n, ow_n, a = _geometry(node, x.shape)
    fn, b, (out, xp), lo, hi = new_kernel(module, name, 2)
    t = scalar.memory_type(x.dtype)

    def body(idx):
        p, oh, ow = idx
        base = b.mul(p, i64(h * w))
        total = local(b, t, "total")
        b.store(scalar.constant(x.dtype, 0.0), total)

        def visit(ih, iw):
            v = scalar.load(
                b, elem(b, xp, b.add(base, b.add(b.mul(ih, i64(w)), iw)), x.dtype), x.dtype
            )
            b.store(b.fadd(b.load(total), v, flags=FLAGS), total)

        _window(b, fn, oh, ow, h, w, a, visit, "win")
        o = b.add(b.mul(p, i64(oh_n * ow_n)), b.add(b.mul(oh, i64(ow_n)), ow))
        b.store(
            b.fdiv(b.load(total), _divisor(b, oh, ow, h, w, a, x.dtype)), elem(b, out, o, x.dtype)
        )

    nest(b, [(lo, hi), (0, oh_n), (0, ow_n)], body, "pool")
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(x)],
        planes,
        f"avg_pool2d {a['kernel_size']} stride {a['stride']}, one plane per unit",
    )


def emit_avg_pool2d_grad(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    g = node.inputs[0]
    a = node.attrs
    n, c, h, w = a["input_shape"]
    oh_n, ow_n = g.shape[2:]
    fn, b, (dx, gp), lo, hi = new_kernel(module, name, 2)
    zero = scalar.constant(g.dtype, 0.0)

    def clear(idx):
        b.store(zero, elem(b, dx, idx[0], g.dtype))

    nest(b, [(b.mul(lo, i64(h * w)), b.mul(hi, i64(h * w)))], clear, "zero")

    def body(idx):
        p, oh, ow = idx
        base = b.mul(p, i64(h * w))
        o = b.add(b.mul(p, i64(oh_n * ow_n)), b.add(b.mul(oh, i64(ow_n)), ow))
        share = b.fdiv(
            scalar.load(b, elem(b, gp, o, g.dtype), g.dtype), _divisor(b, oh, ow, h, w, a, g.dtype)
        )

        def visit(ih, iw):
            target = elem(b, dx, b.add(base, b.add(b.mul(ih, i64(w)), iw)), g.dtype)
            b.store(b.fadd(scalar.load(b, target, g.dtype), share, flags=FLAGS), target)

        _window(b, fn, oh, ow, h, w, a, visit, "win")

    nest(b, [(lo, hi), (0, oh_n), (0, ow_n)], body, "pool")
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(g)],
        n * c,
        "avg_pool2d_grad: spread each cotangent over its window, one plane per unit",
    )


EMITTERS = {
    "max_pool2d": emit_max_pool2d,
    "max_pool2d_grad": emit_max_pool2d_grad,
    "avg_pool2d": emit_avg_pool2d,
    "avg_pool2d_grad": emit_avg_pool2d_grad,
}

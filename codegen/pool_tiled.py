"""Max pooling over windows that tile the input (stride == kernel, no padding, no dilation).

Every input position then belongs to at most one window, so the gradient is written directly —
no zero-fill pass, no scatter — and each window's first maximum is found with straight-line
selects the vectoriser can work with. The gradient kernel can also apply the ReLU mask of the
layer below (the pooled tensor is a ReLU output: the mask is `x > 0` at the window's maximum)
and reduce the result into that layer's bias gradient, so one pass over memory replaces three.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from llvmlite import ir

from graphc.codegen import scalar
from graphc.codegen.emit import Spec, elem, local, nest, new_kernel
from graphc.codegen.irutil import i64
from graphc.codegen.scalar import FLAGS
from graphc.ir import Node
from graphc.ops.nn import windows_tile as tiles

Storage = Callable[[Node], Hashable]


def _first_max(b: ir.IRBuilder, values: list, dtype):
    """(max, index of its first occurrence) over window values; the first NaN wins."""
    best, where = values[0], i64(0)
    for j, v in enumerate(values[1:], start=1):
        better = b.fcmp_ordered(">", v, best)
        nan_first = b.and_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", best, best))
        take = b.or_(better, nan_first)
        best = b.select(take, v, best)
        where = b.select(take, i64(j), where)
    return best, where


def _window_values(b, xp, base, oh, ow, w, kh, kw, dtype):
    row0 = b.mul(oh, i64(kh))
    col0 = b.mul(ow, i64(kw))
    offsets, values = [], []
    for i in range(kh):
        for j in range(kw):
            off = b.add(base, b.add(b.mul(b.add(row0, i64(i)), i64(w)), b.add(col0, i64(j))))
            offsets.append(off)
            values.append(scalar.load(b, elem(b, xp, off, dtype), dtype))
    return offsets, values


def emit_max_pool2d(module: ir.Module, name: str, node: Node, storage: Storage) -> Spec:
    x = node.inputs[0]
    n, c, h, w = x.shape
    oh_n, ow_n = node.shape[2:]
    kh, kw = node.attrs["kernel_size"]
    fn, b, (out, xp), lo, hi = new_kernel(module, name, 2)

    def body(idx):
        p, oh, ow = idx
        _, values = _window_values(b, xp, b.mul(p, i64(h * w)), oh, ow, w, kh, kw, x.dtype)
        m, _ = _first_max(b, values, x.dtype)
        o = b.add(b.mul(p, i64(oh_n * ow_n)), b.add(b.mul(oh, i64(ow_n)), ow))
        b.store(m, elem(b, out, o, x.dtype))

    nest(b, [(lo, hi), (0, oh_n), (0, ow_n)], body, "pool")
    b.ret_void()
    return Spec(
        name,
        [storage(node), storage(x)],
        n * c,
        f"max_pool2d {kh}x{kw} tiling windows, straight-line max, one plane per unit",
    )


def emit_max_pool2d_grad(
    module: ir.Module,
    name: str,
    node: Node,
    storage: Storage,
    out: Node | None = None,
    relu: bool = False,
    bias_grad: Node | None = None,
) -> Spec:
    """dx (or, with `relu`, dx masked by x > 0, stored as `out`); with `bias_grad`, also
    sum(dx over n, h, w) per channel — the units are then channels, so each channel's sum is
    produced by one unit in a fixed order."""
    g, x = node.inputs
    out = out if out is not None else node
    n, c, h, w = x.shape
    oh_n, ow_n = g.shape[2:]
    kh, kw = node.attrs["kernel_size"]
    dt = x.dtype
    ptrs = 4 if bias_grad is not None else 3
    fn, b, args, lo, hi = new_kernel(module, name, ptrs)
    dx, gp, xp = args[:3]
    zero = scalar.constant(dt, 0.0)
    acc = local(b, scalar.memory_type(dt), "bias_acc") if bias_grad is not None else None

    def plane(p):
        base = b.mul(p, i64(h * w))
        # Rows and columns no window covers get a zero gradient.
        if oh_n * kh < h:
            nest(
                b,
                [(oh_n * kh * w, h * w)],
                lambda k: b.store(zero, elem(b, dx, b.add(base, k[0]), dt)),
                "tailrows",
            )
        if ow_n * kw < w:
            nest(
                b,
                [(0, oh_n * kh), (ow_n * kw, w)],
                lambda k: b.store(
                    zero, elem(b, dx, b.add(base, b.add(b.mul(k[0], i64(w)), k[1])), dt)
                ),
                "tailcols",
            )

        def window(idx):
            oh, ow = idx
            offsets, values = _window_values(b, xp, base, oh, ow, w, kh, kw, dt)
            m, where = _first_max(b, values, dt)
            o = b.add(b.mul(p, i64(oh_n * ow_n)), b.add(b.mul(oh, i64(ow_n)), ow))
            gv = scalar.load(b, elem(b, gp, o, dt), dt)
            if relu:  # the ReLU below passes the gradient only where its output is positive
                gv = b.select(b.fcmp_ordered(">", m, zero), gv, zero)
            for j, off in enumerate(offsets):
                hit = b.icmp_signed("==", where, i64(j))
                b.store(b.select(hit, gv, zero), elem(b, dx, off, dt))
            if acc is not None:
                b.store(b.fadd(b.load(acc), gv, flags=FLAGS), acc)

        nest(b, [(0, oh_n), (0, ow_n)], window, "win")

    if bias_grad is None:
        nest(b, [(lo, hi)], lambda k: plane(k[0]), "plane")
        extent, unit = n * c, "plane"
    else:

        def channel(k):
            (ch,) = k
            b.store(zero, acc)
            nest(b, [(0, n)], lambda m: plane(b.add(b.mul(m[0], i64(c)), ch)), "image")
            b.store(b.load(acc), elem(b, args[3], ch, dt))

        nest(b, [(lo, hi)], channel, "channel")
        extent, unit = c, "channel"
    b.ret_void()
    fused = " + relu mask" if relu else ""
    fused += " + bias-gradient sum" if bias_grad is not None else ""
    keys = [storage(out), storage(g), storage(x)]
    if bias_grad is not None:
        keys.append(storage(bias_grad))
    return Spec(
        name, keys, extent, f"max_pool2d_grad {kh}x{kw} tiling windows{fused}, one {unit} per unit"
    )


__all__ = ["tiles", "emit_max_pool2d", "emit_max_pool2d_grad"]

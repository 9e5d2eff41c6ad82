"""Scalar convolution kernels for every geometry and float dtype (the generic path).

Loops are plain and the reduction is innermost with one accumulator, in the order the docs
of each function give; padding and strides are runtime bounds tests. Used for float64, for
geometries the vector schedules do not cover (conv2d_input_grad at stride > 1), and in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from graphc.codegen import irutil as U
from graphc.codegen.kernels.common import define_kernel
from graphc.codegen.kernels.epilogue import Epilogue
from graphc.codegen.target import Target


@dataclass(frozen=True)
class ConvGeometry:
    """conv2d(x[n, c, h, w], weight[o, cg, kh, kw]) -> out[n, o, oh, ow], PyTorch's attrs."""

    n: int
    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    oh: int
    ow: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    @property
    def cg(self) -> int:
        return self.c // self.groups

    @property
    def og(self) -> int:
        return self.o // self.groups

    @property
    def macs(self) -> int:
        return self.n * self.o * self.oh * self.ow * self.cg * self.kh * self.kw


def _in_range(b: ir.IRBuilder, v: ir.Value, n: int) -> ir.Value:
    """0 <= v < n, as one unsigned compare."""
    return b.icmp_unsigned("<", v, U.i64(n))


def _src(b, out_pos, tap, stride, dilation, pad):
    return U.index(b, (out_pos, stride), (tap, dilation), -pad)


class _Acc:
    def __init__(self, b: ir.IRBuilder, elem: ir.Type):
        self.b, self.elem = b, elem
        self.slot = U.entry_alloca(b, elem, "acc")

    def zero(self):
        self.b.store(ir.Constant(self.elem, 0.0), self.slot)

    def add(self, x, y):
        b = self.b
        b.store(U.fmuladd(b, x, y, b.load(self.slot, typ=self.elem)), self.slot)

    def value(self):
        return self.b.load(self.slot, typ=self.elem, name="sum")


def emit_forward(module, name, geo: ConvGeometry, *, roles, elem, epi: Epilogue, target: Target):
    """Unit: one image. out[n,o,y,x] = sum over c, i, j of x[...] * w[o, c, i, j]."""
    kf = define_kernel(module, name, roles, geo.n, target)
    b, ptr = kf.builder, kf.ptrs
    acc = _Acc(b, elem)
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    with U.for_range(b, kf.lo, kf.hi, name="conv.n", hints=U.NO_VECTORIZE) as n:
        with U.for_range(b, 0, geo.o, name="conv.o") as o:
            grp = b.udiv(o, U.i64(geo.og), name="group")
            with (
                U.for_range(b, 0, geo.oh, name="conv.y") as y,
                U.for_range(b, 0, geo.ow, name="conv.x") as x,
            ):
                acc.zero()
                with U.for_range(b, 0, geo.cg, name="conv.c") as c:
                    ch = U.index(b, (n, geo.c), (grp, geo.cg), (c, 1))
                    with U.for_range(b, 0, geo.kh, name="conv.i") as i:
                        iy = _src(b, y, i, sh, dh, ph)
                        with b.if_then(_in_range(b, iy, geo.h)):
                            with U.for_range(b, 0, geo.kw, name="conv.j") as j:
                                ix = _src(b, x, j, sw, dw, pw)
                                with b.if_then(_in_range(b, ix, geo.w)):
                                    xi = U.index(b, (ch, geo.h * geo.w), (iy, geo.w), (ix, 1))
                                    wi = U.index(
                                        b,
                                        (o, geo.cg * geo.kh * geo.kw),
                                        (c, geo.kh * geo.kw),
                                        (i, geo.kw),
                                        (j, 1),
                                    )
                                    acc.add(
                                        _load(b, ptr["x"], elem, xi), _load(b, ptr["w"], elem, wi)
                                    )
                bias = _load(b, ptr["bias"], elem, o) if epi.bias else None
                oi = U.index(
                    b, (n, geo.o * geo.oh * geo.ow), (o, geo.oh * geo.ow), (y, geo.ow), (x, 1)
                )
                b.store(epi.apply(b, acc.value(), bias, None), U.gep(b, ptr["out"], elem, oi))
    b.ret_void()
    return "generic scalar loops (n | o, y, x, c, i, j), bounds tested at runtime"


def emit_input_grad(module, name, geo: ConvGeometry, *, roles, elem, target: Target):
    """Unit: one image. dx[n,c,y,x] = sum over o (of c's group), i, j of
    g[n, o, (y+ph-i*dh)/sh, (x+pw-j*dw)/sw] * w[o, c', i, j] where the division is exact."""
    kf = define_kernel(module, name, roles, geo.n, target)
    b, ptr = kf.builder, kf.ptrs
    acc = _Acc(b, elem)
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    with U.for_range(b, kf.lo, kf.hi, name="dx.n", hints=U.NO_VECTORIZE) as n:
        with U.for_range(b, 0, geo.c, name="dx.c") as c:
            grp = b.udiv(c, U.i64(geo.cg), name="group")
            c_rel = b.urem(c, U.i64(geo.cg), name="c.rel")
            with (
                U.for_range(b, 0, geo.h, name="dx.y") as y,
                U.for_range(b, 0, geo.w, name="dx.x") as x,
            ):
                acc.zero()
                with U.for_range(b, 0, geo.og, name="dx.o") as o_rel:
                    o = U.index(b, (grp, geo.og), (o_rel, 1))
                    with U.for_range(b, 0, geo.kh, name="dx.i") as i:
                        ty = U.index(b, (y, 1), (i, -dh), ph)
                        oy = b.sdiv(ty, U.i64(sh))
                        ok_y = b.and_(_exact(b, ty, sh), _in_range(b, oy, geo.oh))
                        with b.if_then(ok_y):
                            with U.for_range(b, 0, geo.kw, name="dx.j") as j:
                                tx = U.index(b, (x, 1), (j, -dw), pw)
                                ox = b.sdiv(tx, U.i64(sw))
                                with b.if_then(b.and_(_exact(b, tx, sw), _in_range(b, ox, geo.ow))):
                                    gi = U.index(
                                        b,
                                        (n, geo.o * geo.oh * geo.ow),
                                        (o, geo.oh * geo.ow),
                                        (oy, geo.ow),
                                        (ox, 1),
                                    )
                                    wi = U.index(
                                        b,
                                        (o, geo.cg * geo.kh * geo.kw),
                                        (c_rel, geo.kh * geo.kw),
                                        (i, geo.kw),
                                        (j, 1),
                                    )
                                    acc.add(
                                        _load(b, ptr["g"], elem, gi), _load(b, ptr["w"], elem, wi)
                                    )
                di = U.index(b, (n, geo.c * geo.h * geo.w), (c, geo.h * geo.w), (y, geo.w), (x, 1))
                b.store(acc.value(), U.gep(b, ptr["out"], elem, di))
    b.ret_void()
    return "generic scalar loops (n | c, y, x, o, i, j), bounds and stride phase tested at runtime"


def emit_weight_grad(module, name, geo: ConvGeometry, *, roles, elem, target: Target):
    """Unit: one (o, c) pair of the weight. dw[o,c,i,j] = sum over n, y, x of
    g[n, o, y, x] * x[n, group*cg + c, y*sh + i*dh - ph, x*sw + j*dw - pw]."""
    extent = geo.o * geo.cg
    kf = define_kernel(module, name, roles, extent, target)
    b, ptr = kf.builder, kf.ptrs
    acc = _Acc(b, elem)
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    with U.for_range(b, kf.lo, kf.hi, name="dw.oc", hints=U.NO_VECTORIZE) as oc:
        o = b.udiv(oc, U.i64(geo.cg), name="o")
        c = b.urem(oc, U.i64(geo.cg), name="c")
        ch = U.index(b, (b.udiv(o, U.i64(geo.og)), geo.cg), (c, 1))
        with (
            U.for_range(b, 0, geo.kh, name="dw.i") as i,
            U.for_range(b, 0, geo.kw, name="dw.j") as j,
        ):
            acc.zero()
            with U.for_range(b, 0, geo.n, name="dw.n") as n:
                with U.for_range(b, 0, geo.oh, name="dw.y") as y:
                    iy = _src(b, y, i, sh, dh, ph)
                    with b.if_then(_in_range(b, iy, geo.h)):
                        with U.for_range(b, 0, geo.ow, name="dw.x") as x:
                            ix = _src(b, x, j, sw, dw, pw)
                            with b.if_then(_in_range(b, ix, geo.w)):
                                gi = U.index(
                                    b,
                                    (n, geo.o * geo.oh * geo.ow),
                                    (o, geo.oh * geo.ow),
                                    (y, geo.ow),
                                    (x, 1),
                                )
                                xi = U.index(
                                    b,
                                    (n, geo.c * geo.h * geo.w),
                                    (ch, geo.h * geo.w),
                                    (iy, geo.w),
                                    (ix, 1),
                                )
                                acc.add(_load(b, ptr["g"], elem, gi), _load(b, ptr["x"], elem, xi))
            wi = U.index(b, (oc, geo.kh * geo.kw), (i, geo.kw), (j, 1))
            b.store(acc.value(), U.gep(b, ptr["out"], elem, wi))
    b.ret_void()
    return "generic scalar loops (o, c | i, j, n, y, x), bounds tested at runtime"


def _exact(b: ir.IRBuilder, t: ir.Value, s: int) -> ir.Value:
    if s == 1:
        return ir.Constant(U.I1, 1)
    return b.icmp_signed("==", b.srem(t, U.i64(s)), U.i64(0))


def _load(b: ir.IRBuilder, ptr: ir.Value, elem: ir.Type, idx: ir.Value) -> ir.Value:
    return b.load(U.gep(b, ptr, elem, idx), typ=elem)

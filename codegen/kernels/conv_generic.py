"""Scalar convolution kernels for every geometry and float dtype (the generic path).

Loops are plain and the reduction is innermost with one accumulator, in the order the docs
of each function give; padding and strides are runtime bounds tests. Used for float64, for
geometries the vector schedules do not cover (conv2d_input_grad at stride > 1), and in tests.
Also home of the `exact` loops every conv kernel falls back to when an inf or NaN meets
the padding (see "non-finite operands" below).
"""

from __future__ import annotations

import contextlib

from llvmlite import ir

from graphc.codegen import irutil as U
from graphc.codegen.kernels.common import KernelFunction, define_kernel, out_of_line
from graphc.codegen.kernels.epilogue import Epilogue
from graphc.codegen.target import Target
from graphc.passes.conv_tiles import ConvGeometry, live_spans


def _in_range(b: ir.IRBuilder, v: ir.Value, n: int) -> ir.Value:
    """0 <= v < n, as one unsigned compare."""
    return b.icmp_unsigned("<", v, U.i64(n))


def _src(b, out_pos, tap, stride, dilation, pad):
    return U.index(b, (out_pos, stride), (tap, dilation), -pad)


def _g_at(b: ir.IRBuilder, geo: ConvGeometry, n, o, y, x) -> ir.Value:
    """Index of out[n, o, y, x] (or of the cotangent g, which has its shape)."""
    return U.index(b, (n, geo.o * geo.oh * geo.ow), (o, geo.oh * geo.ow), (y, geo.ow), (x, 1))


def _x_at(b: ir.IRBuilder, geo: ConvGeometry, n, c, y, x) -> ir.Value:
    """Index of x[n, c, y, x] (or of dx, which has its shape)."""
    return U.index(b, (n, geo.c * geo.h * geo.w), (c, geo.h * geo.w), (y, geo.w), (x, 1))


def _w_at(b: ir.IRBuilder, geo: ConvGeometry, o, c, i, j) -> ir.Value:
    """Index of weight[o, c, i, j] (c within the group)."""
    kk = geo.kh * geo.kw
    return U.index(b, (o, geo.cg * kk), (c, kk), (i, geo.kw), (j, 1))


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
    if geo.reads_padding:
        nonfinite_guard(
            kf,
            "w",
            geo.o * geo.cg * geo.kh * geo.kw,
            elem,
            lambda k: forward_loops(k, geo, elem, epi, exact=True),
        )
    forward_loops(kf, geo, elem, epi, exact=False)
    kf.builder.ret_void()
    return "generic scalar loops (n | o, y, x, c, i, j), bounds tested at runtime"


def forward_loops(kf: KernelFunction, geo: ConvGeometry, elem, epi: Epilogue, *, exact: bool):
    """The images [lo, hi) of conv2d. Taps in the padding are skipped, or with `exact`
    multiplied by zero as the reference does (0 * inf is NaN)."""
    b, ptr = kf.builder, kf.ptrs
    cold = _cold(exact)
    acc = _Acc(b, elem)
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    with U.for_range(b, kf.lo, kf.hi, name="conv.n", hints=cold or U.NO_VECTORIZE) as n:
        with U.for_range(b, 0, geo.o, name="conv.o", hints=cold) as o:
            grp = b.udiv(o, U.i64(geo.og), name="group")
            with (
                U.for_range(b, 0, geo.oh, name="conv.y", hints=cold) as y,
                U.for_range(b, 0, geo.ow, name="conv.x", hints=cold) as x,
            ):
                acc.zero()
                with U.for_range(b, 0, geo.cg, name="conv.c", hints=cold) as c:
                    ch = U.index(b, (n, geo.c), (grp, geo.cg), (c, 1))
                    with U.for_range(b, 0, geo.kh, name="conv.i", hints=cold) as i:
                        iy = _src(b, y, i, sh, dh, ph)
                        row_ok = _in_range(b, iy, geo.h)
                        with _unless_exact(b, row_ok, exact):
                            with U.for_range(b, 0, geo.kw, name="conv.j", hints=cold) as j:
                                ix = _src(b, x, j, sw, dw, pw)
                                ok = _in_range(b, ix, geo.w)
                                with _unless_exact(b, ok, exact):
                                    if exact:
                                        ok = b.and_(ok, row_ok)
                                    xi = U.index(b, (ch, geo.h * geo.w), (iy, geo.w), (ix, 1))
                                    wi = _w_at(b, geo, o, c, i, j)
                                    xv = _load_where(b, ptr["x"], elem, xi, ok if exact else None)
                                    acc.add(xv, _load(b, ptr["w"], elem, wi))
                bias = _load(b, ptr["bias"], elem, o) if epi.bias else None
                oi = _g_at(b, geo, n, o, y, x)
                b.store(epi.apply(b, acc.value(), bias, None), U.gep(b, ptr["out"], elem, oi))


def emit_input_grad(module, name, geo: ConvGeometry, *, roles, elem, target: Target):
    """Unit: one image. dx[n,c,y,x] = sum over o (of c's group), i, j of
    g[n, o, (y+ph-i*dh)/sh, (x+pw-j*dw)/sw] * w[o, c', i, j] where the division is exact."""
    kf = define_kernel(module, name, roles, geo.n, target)
    input_grad_loops(kf, geo, elem)
    kf.builder.ret_void()
    return "generic scalar loops (n | c, y, x, o, i, j), bounds and stride phase tested at runtime"


def input_grad_loops(kf: KernelFunction, geo: ConvGeometry, elem, *, exact: bool = False) -> None:
    """The images [lo, hi) of conv2d_input_grad. Only cotangents inside the output are
    multiplied, as in the reference: there is no padding to meet, and `exact` only marks
    the loops as a rarely taken path."""
    b, ptr = kf.builder, kf.ptrs
    cold = _cold(exact)
    acc = _Acc(b, elem)
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    with U.for_range(b, kf.lo, kf.hi, name="dx.n", hints=cold or U.NO_VECTORIZE) as n:
        with U.for_range(b, 0, geo.c, name="dx.c", hints=cold) as c:
            grp = b.udiv(c, U.i64(geo.cg), name="group")
            c_rel = b.urem(c, U.i64(geo.cg), name="c.rel")
            with (
                U.for_range(b, 0, geo.h, name="dx.y", hints=cold) as y,
                U.for_range(b, 0, geo.w, name="dx.x", hints=cold) as x,
            ):
                acc.zero()
                with U.for_range(b, 0, geo.og, name="dx.o", hints=cold) as o_rel:
                    o = U.index(b, (grp, geo.og), (o_rel, 1))
                    with U.for_range(b, 0, geo.kh, name="dx.i", hints=cold) as i:
                        ty = U.index(b, (y, 1), (i, -dh), ph)
                        oy = b.sdiv(ty, U.i64(sh))
                        ok_y = b.and_(_exact(b, ty, sh), _in_range(b, oy, geo.oh))
                        with b.if_then(ok_y):
                            with U.for_range(b, 0, geo.kw, name="dx.j", hints=cold) as j:
                                tx = U.index(b, (x, 1), (j, -dw), pw)
                                ox = b.sdiv(tx, U.i64(sw))
                                with b.if_then(b.and_(_exact(b, tx, sw), _in_range(b, ox, geo.ow))):
                                    gi = _g_at(b, geo, n, o, oy, ox)
                                    wi = _w_at(b, geo, o, c_rel, i, j)
                                    acc.add(
                                        _load(b, ptr["g"], elem, gi), _load(b, ptr["w"], elem, wi)
                                    )
                di = _x_at(b, geo, n, c, y, x)
                b.store(acc.value(), U.gep(b, ptr["out"], elem, di))


def emit_weight_grad(module, name, geo: ConvGeometry, *, roles, elem, target: Target):
    """Unit: one (o, c) pair of the weight. dw[o,c,i,j] = sum over n, y, x of
    g[n, o, y, x] * x[n, group*cg + c, y*sh + i*dh - ph, x*sw + j*dw - pw]."""
    extent = geo.o * geo.cg
    kf = define_kernel(module, name, roles, extent, target)
    b, ptr = kf.builder, kf.ptrs
    with U.for_range(b, kf.lo, kf.hi, name="dw.oc", hints=U.NO_VECTORIZE) as oc:
        o = b.udiv(oc, U.i64(geo.cg), name="o")
        c = b.urem(oc, U.i64(geo.cg), name="c")

        def outputs(exact: bool) -> None:
            with (
                U.for_range(b, 0, geo.kh, name="dw.i", hints=_cold(exact)) as i,
                U.for_range(b, 0, geo.kw, name="dw.j", hints=_cold(exact)) as j,
            ):
                weight_grad_output(b, ptr, geo, elem, o, c, i, j, exact=exact)

        outputs(exact=False)
        if geo.reads_padding:
            bad = weight_grad_nonfinite(b, ptr, geo, elem, o, c)
            with b.if_then(bad, likely=False):
                outputs(exact=True)
    b.ret_void()
    return "generic scalar loops (o, c | i, j, n, y, x), bounds tested at runtime"


def weight_grad_output(b, ptr, geo: ConvGeometry, elem, o, c, i, j, *, exact: bool) -> None:
    """dw[o, c, i, j] (c within o's group) summed over n, y, x in that order. Positions whose
    tap reads the padding are skipped, or with `exact` multiplied by zero as the reference
    does (0 * inf is NaN)."""
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    ch = U.index(b, (b.udiv(o, U.i64(geo.og)), geo.cg), (c, 1))
    cold = _cold(exact)
    acc = _Acc(b, elem)
    acc.zero()
    with U.for_range(b, 0, geo.n, name="dw.n", hints=cold) as n:
        with U.for_range(b, 0, geo.oh, name="dw.y", hints=cold) as y:
            iy = _src(b, y, i, sh, dh, ph)
            row_ok = _in_range(b, iy, geo.h)
            with _unless_exact(b, row_ok, exact):
                with U.for_range(b, 0, geo.ow, name="dw.x", hints=cold) as x:
                    ix = _src(b, x, j, sw, dw, pw)
                    ok = _in_range(b, ix, geo.w)
                    with _unless_exact(b, ok, exact):
                        if exact:
                            ok = b.and_(ok, row_ok)
                        gi = _g_at(b, geo, n, o, y, x)
                        xi = _x_at(b, geo, n, ch, iy, ix)
                        xv = _load_where(b, ptr["x"], elem, xi, ok if exact else None)
                        acc.add(_load(b, ptr["g"], elem, gi), xv)
    wi = _w_at(b, geo, o, c, i, j)
    b.store(acc.value(), U.gep(b, ptr["out"], elem, wi))


# ---- non-finite operands meeting the padding ------------------------------------------------
#
# The reference pads with explicit zeros and multiplies them: a padded tap contributes
# 0 * v, which is 0 for finite v (adding it changes no sum: an accumulator starting at +0
# is never -0) and NaN for v = inf or NaN. The fast loops skip such products, so they are
# exact only while the operand meeting the padding is finite. conv2d and conv2d_input_grad
# check their weights before the loops (`nonfinite_guard`: the weights are small), and
# conv2d_weight_grad checks its results after them (`weight_grad_nonfinite`: g is large).
# When the check fails, the `exact` loops compute the call's or the unit's outputs.


def nonfinite_guard(kf: KernelFunction, operand: str, count: int, elem, exact_loops) -> None:
    """If operand[0:count] holds an inf or NaN, run exact_loops(k) (over the call's units)
    and return; otherwise fall through to the fast loops emitted next.

    The exact loops go into a function of their own that LLVM does not optimise (optnone):
    they run only once training has diverged, and compiling them as the fast loops are cost
    a quarter of ResNet-20's machine-code time (scalar nests are large in machine code)."""
    b = kf.builder
    bad = any_nonfinite(b, kf.ptrs[operand], elem, U.i64(0), count)
    with b.if_then(bad, likely=False):
        b.call(out_of_line(kf, "exact", exact_loops), [*kf.ptrs.values(), kf.lo, kf.hi])
        b.ret_void()


def any_nonfinite(b: ir.IRBuilder, ptr, elem, start, count: int) -> ir.Value:
    """i1: some element of ptr[start : start+count] is inf or NaN (all exponent bits set),
    read as integers: a loop the vectorizer turns into wide compares and an or-reduction."""
    if count <= 0:
        return ir.Constant(U.I1, 0)
    ity, exp_bits = (U.I32, 0x7F800000) if elem == U.F32 else (U.I64, 0x7FF0000000000000)
    exp = ir.Constant(ity, exp_bits)
    hits = U.entry_alloca(b, ity, "nonfinite.hits")
    b.store(ir.Constant(ity, 0), hits)
    with U.for_range(b, 0, count, name="nonfinite.k") as k:
        v = b.load(U.gep(b, ptr, ity, b.add(start, k)), typ=ity)
        hit = b.zext(b.icmp_unsigned("==", b.and_(v, exp), exp), ity)
        b.store(b.or_(b.load(hits, typ=ity), hit), hits)
    return b.icmp_unsigned("!=", b.load(hits, typ=ity), ir.Constant(ity, 0), name="nonfinite")


def weight_grad_nonfinite(b: ir.IRBuilder, ptr, geo: ConvGeometry, elem, o, c) -> ir.Value:
    """i1: dw[o, c] just stored by the fast loops must be recomputed by the exact loops (for
    a geometry whose taps meet the padding).

    Fast loops skip products of g with x's padding; they differ from the reference only
    where such a g is inf or NaN. A g that also meets x at some tap (i, j) makes the fast
    dw[o, c, i, j] inf or NaN itself (no finite sum absorbs it), so checking the results (a
    few values, in cache) finds it without reading g again; `dead_nonfinite` covers the
    positions that meet no x. Either way the answer depends on the data, not on the split of
    the units; non-finite results not due to the padding merely take the exact loops too.
    """
    taps = geo.kh * geo.kw
    stored = any_nonfinite(b, ptr["out"], elem, U.index(b, (o, geo.cg * taps), (c, taps)), taps)
    return b.or_(stored, dead_nonfinite(b, ptr["g"], geo, elem, (o, b.add(o, U.i64(1)))))


def dead_nonfinite(b: ir.IRBuilder, g, geo: ConvGeometry, elem, o_span) -> ir.Value:
    """i1: g[n, o, y, x] is inf or NaN for some n, o in [first, end) and position whose every
    tap reads the padding (none unless the padding exceeds the kernel: then false at once)."""
    live = live_spans(geo)
    if live == ((0, geo.oh), (0, geo.ow)):
        return ir.Constant(U.I1, 0)
    bad = U.entry_alloca(b, U.I1, "dead.nonfinite")
    b.store(ir.Constant(U.I1, 0), bad)
    with (
        U.for_range(b, o_span[0], o_span[1], name="dead.o") as o,
        U.for_range(b, 0, geo.n, name="dead.n", hints=U.NO_VECTORIZE) as n,
    ):
        here = outside_nonfinite(b, g, elem, geo, n, o, live)
        b.store(b.or_(b.load(bad, typ=U.I1), here), bad)
    return b.load(bad, typ=U.I1)


def outside_nonfinite(b: ir.IRBuilder, g, elem, geo: ConvGeometry, n, o, spans) -> ir.Value:
    """i1: some g[n, o, y, x] with (y, x) outside spans = ([ra, rb), [ca, cb)) is inf or NaN."""
    (ra, rb), (ca, cb) = spans
    plane = U.gep(b, g, elem, U.index(b, (n, geo.o * geo.oh * geo.ow), (o, geo.oh * geo.ow)))
    ow = geo.ow
    bad = b.or_(
        any_nonfinite(b, plane, elem, U.i64(0), ra * ow),
        any_nonfinite(b, plane, elem, U.i64(rb * ow), (geo.oh - rb) * ow),
    )
    if ra < rb and (ca > 0 or cb < ow):
        slot = U.entry_alloca(b, U.I1, "nonfinite.cols")
        b.store(bad, slot)
        with U.for_range(b, ra, rb, name="nonfinite.y", hints=U.NO_VECTORIZE) as y:
            row = U.index(b, (y, ow))
            left = any_nonfinite(b, plane, elem, row, ca)
            right = any_nonfinite(b, plane, elem, b.add(row, U.i64(cb)), ow - cb)
            b.store(b.or_(b.load(slot, typ=U.I1), b.or_(left, right)), slot)
        bad = b.load(slot, typ=U.I1)
    return bad


def _exact(b: ir.IRBuilder, t: ir.Value, s: int) -> ir.Value:
    if s == 1:
        return ir.Constant(U.I1, 1)
    return b.icmp_signed("==", b.srem(t, U.i64(s)), U.i64(0))


def _load(b: ir.IRBuilder, ptr: ir.Value, elem: ir.Type, idx: ir.Value) -> ir.Value:
    return b.load(U.gep(b, ptr, elem, idx), typ=elem)


def _load_where(b: ir.IRBuilder, ptr: ir.Value, elem: ir.Type, idx: ir.Value, ok) -> ir.Value:
    """ptr[idx], or zero where the i1 `ok` is false (then reading ptr[0], never out of
    bounds); a plain load when `ok` is None."""
    if ok is None:
        return _load(b, ptr, elem, idx)
    v = _load(b, ptr, elem, b.select(ok, idx, U.i64(0)))
    return b.select(ok, v, ir.Constant(elem, 0.0))


def _unless_exact(b: ir.IRBuilder, cond: ir.Value, exact: bool):
    """`if cond:` around the body, or no test at all for the exact loops."""
    return contextlib.nullcontext() if exact else b.if_then(cond)


def _cold(exact: bool) -> U.LoopHints | None:
    """Loop hints for the exact loops: taken only with inf or NaN about, so kept plain
    (neither unrolled nor vectorized), which keeps their compile time small."""
    return U.NO_UNROLL if exact else None

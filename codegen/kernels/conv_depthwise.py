"""Depthwise convolutions (groups == channels, one filter per channel) with vectors along
the channels: conv2d, conv2d_input_grad and conv2d_weight_grad.

    out[n, c, y, x] = sum over i, j of xp[n, c, y*sh + i*dh, x*sw + j*dw] * w[c, 0, i, j]

(xp: x with its zero padding). The direct kernels put vectors along a row of one channel:
lanes go to waste on small planes and strided rows do not vectorise. Here a vector holds
`lanes` channels at one position. Per image and block of channels, the planes are
transposed (16x16 in registers) into a stack scratch laid out [row][col][lane], whose border
is the padding's zeros, so every tap of every position is one aligned vector load at any
stride, dilation or plane size, and no tap is tested against an edge. Input rows are
transposed in just before the first output row that reads them, so the rows in use stay in
the L1 cache however large the plane.

- conv2d (unit: one image): a tile of output positions sums its taps in registers (one
  chain per position), takes the bias and ReLU, and is transposed back into the planes;
- conv2d_input_grad (unit: one image): at stride 1, the same gather over g's planes with the
  flipped kernel; at stride > 1 (planes narrower than a vector; wider ones take the phase
  schedule), each cotangent vector adds its taps into the zeroed scratch, whose interior
  is then transposed out. No zero-stuffed g is built in either form;
- conv2d_weight_grad (unit: one block of channels): per image, each tile of g's positions
  feeds KH x KW accumulator vectors, which sum over the whole batch before they are stored.

The padding is zeros that the taps multiply, as the reference does, so an inf or NaN
spreads as it does there (0 * inf = NaN). Every output sums in a fixed order: taps i, j for
conv2d; positions then taps for the input gradient's scatter; images, positions for the
weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from graphc.codegen import irutil as U
from graphc.codegen.kernels.common import define_kernel, stack_array
from graphc.codegen.kernels.epilogue import Epilogue
from graphc.codegen.target import Target
from graphc.passes.conv_tiles import ConvGeometry, DepthwisePlan, depthwise_gather_geometry


@dataclass(frozen=True)
class _Planes:
    """A correlation over one plane per channel: output (y, x), tap (i, j) reads input
    (y*s + i*d - pad) (zero outside)."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int]
    k: tuple[int, int]


class _Depthwise:
    def __init__(self, kf, geo: ConvGeometry, planes: _Planes, plan: DepthwisePlan, lanes, elem):
        self.kf, self.b, self.geo, self.p, self.plan = kf, kf.builder, geo, planes, plan
        self.lanes, self.elem = lanes, elem
        self.vt = U.vec(elem, lanes)
        self.cols = plan.scratch_cols
        self.cells = plan.scratch_rows * plan.scratch_cols
        self.scratch = stack_array(self.b, self.vt, self.cells, "planes")
        self.stack_bytes = self.cells * lanes * 4

    def zero_scratch(self) -> None:
        U.memset_zero(self.b, self.scratch, self.cells * self.lanes * 4)

    # -- loops ------------------------------------------------------------------------------

    def blocks(self, body) -> None:
        """body(blk, cb) for each block of channels: a runtime loop over the full blocks,
        then the short last one, whose channel count cb is known when it is emitted (so no
        load or store of a full block is masked)."""
        b, lanes, c = self.b, self.lanes, self.geo.c
        if c // lanes:
            with U.for_range(b, 0, c // lanes, name="blk", hints=U.NO_UNROLL) as blk:
                body(blk, lanes)
        if c % lanes:
            body(U.i64(c // lanes), c % lanes)

    def row_tiles(self, y, width: int, body) -> None:
        """body(k0, size, yx) over row y of a plane `width` wide, in tiles of plan.tile."""
        b, t = self.b, self.plan.tile

        def tile(x0, size):
            k0 = U.index(b, (y, width), (x0, 1))
            if isinstance(x0, int):
                body(k0, size, lambda q: (y, x0 + q))
            else:
                body(k0, size, lambda q: (y, b.add(x0, U.i64(q))))

        full = width // t
        if full > 2:
            with U.for_range(b, 0, full, name="col", hints=U.NO_UNROLL) as c:
                tile(b.mul(c, U.i64(t)), t)
        else:
            for c in range(full):
                tile(c * t, t)
        if width % t:
            tile(full * t, width % t)

    def flat_tiles(self, height: int, width: int, body) -> None:
        """body(k0, size, yx) over a whole plane in tiles of consecutive positions."""
        b, t = self.b, self.plan.tile

        def tile(k0, size):
            def yx(q):
                k = b.add(k0, U.i64(q))
                return b.udiv(k, U.i64(width), name="y"), b.urem(k, U.i64(width), name="x")

            body(k0, size, yx)

        count = height * width
        if count // t:
            with U.for_range(b, 0, count // t, name="tile", hints=U.NO_UNROLL) as k:
                tile(b.mul(k, U.i64(t)), t)
        if count % t:
            tile(U.i64(count - count % t), count % t)

    def wide(self, width: int) -> bool:
        """Rows at least a tile wide are cut into tiles of one row (a tile's columns then
        differ by constants, so neighbouring positions share their loads); narrower planes
        into tiles of consecutive positions."""
        return width >= self.plan.tile

    def walk_outputs(self, fill, body) -> None:
        """body(k0, size, yx) over the output plane; fill(r0, r1) is called to transpose
        input rows [r0, r1) in before the first output row that reads them."""
        b, p = self.b, self.p
        ih, (oh, ow) = p.in_hw[0], p.out_hw
        if not self.wide(ow):
            fill(U.i64(0), U.i64(ih), whole=True)
            self.flat_tiles(oh, ow, body)
            return
        done = U.entry_alloca(b, U.I64, "rows.filled")
        b.store(U.i64(0), done)
        last_tap = (p.k[0] - 1) * p.dilation[0] - p.pad[0] + 1
        with U.for_range(b, 0, oh, name="out.row", hints=U.NO_UNROLL) as y:
            need = U.index(b, (y, p.stride[0]), last_tap)
            need = b.select(b.icmp_signed("<", need, U.i64(ih)), need, U.i64(ih))
            first = b.load(done, typ=U.I64)
            fill(first, need)
            b.store(b.select(b.icmp_signed("<", first, need), need, first), done)
            self.row_tiles(y, ow, body)

    # -- addressing ------------------------------------------------------------------------

    def cell(self, at) -> ir.Value:
        return U.gep(self.b, self.scratch, self.vt, at)

    def tap_cell(self, y, x, i: int, j: int) -> ir.Value:
        """The scratch cell tap (i, j) of output position (y, x) reads (or adds into)."""
        p = self.p
        at = U.index(
            self.b,
            (y, p.stride[0] * self.cols),
            (x, p.stride[1]),
            i * p.dilation[0] * self.cols + j * p.dilation[1],
        )
        return self.cell(at)

    def input_cell(self, y, x) -> ir.Value:
        """The scratch cell of input position (y, x) (the border is the padding)."""
        ph, pw = self.p.pad
        return self.cell(U.index(self.b, (y, self.cols), (x, 1), ph * self.cols + pw))

    # -- transposes between channel planes and channel vectors ------------------------------

    def plane_rows(self, base, blk, cb: int, k0, size: int, plane: int) -> list[ir.Value]:
        """Positions k0 .. k0+size-1 of the planes of block `blk` (its first cb channels;
        the other lanes zero) as `size` vectors of channels."""
        b, lanes = self.b, self.lanes
        rows = []
        for c in range(lanes):
            if c >= cb:
                rows.append(ir.Constant(self.vt, None))
                continue
            at = U.gep(b, base, self.elem, U.index(b, (blk, lanes * plane), (k0, 1), c * plane))
            rows.append(U.load_vec(b, at, self.vt, size, name="row"))
        return U.transpose_square(b, rows)[:size]

    def store_planes(self, base, blk, cb: int, k0, vectors: list, plane: int) -> None:
        """The reverse of plane_rows: channel vectors of positions k0.. into the planes."""
        b, lanes = self.b, self.lanes
        size = len(vectors)
        rows = U.transpose_square(b, vectors + [ir.Constant(self.vt, None)] * (lanes - size))
        for c in range(cb):
            at = U.gep(b, base, self.elem, U.index(b, (blk, lanes * plane), (k0, 1), c * plane))
            U.store_vec(b, rows[c], at, size)

    def filler(self, base, blk, cb: int):
        """fill(r0, r1[, whole]): input rows [r0, r1) of block `blk` (planes at `base`) into
        the scratch interior (whole: all of them, which a narrow plane does in one go)."""
        b = self.b
        ih, iw = self.p.in_hw

        def tile(k0, size, yx):
            for t, v in enumerate(self.plane_rows(base, blk, cb, k0, size, ih * iw)):
                b.store(v, self.input_cell(*yx(t)))

        def fill(r0, r1, whole: bool = False):
            if whole and not self.wide(iw):  # a narrow plane: transposed 16 positions at a time
                self.flat_tiles(ih, iw, tile)
                return
            with U.for_range(b, r0, r1, name="fill.row", hints=U.NO_UNROLL) as r:
                self.row_tiles(r, iw, tile)

        return fill

    # -- weights ----------------------------------------------------------------------------

    def pack_weights(self, role: str, flipped: bool = False) -> ir.Value:
        """wp[blk][i][j][lane] = w[blk*lanes + lane, 0, i, j] (of the flipped kernel:
        w[.., KH-1-i, KW-1-j]), zero past the channels."""
        b, geo, lanes = self.b, self.geo, self.lanes
        taps = geo.kh * geo.kw
        count = -(-geo.c // lanes) * taps * lanes
        packed = stack_array(b, self.elem, count, "wpack")
        self.stack_bytes += count * 4
        U.memset_zero(b, packed, count * 4)
        with (
            U.for_range(b, 0, geo.c, name="pack.c") as c,
            U.for_range(b, 0, taps, name="pack.t") as t,
        ):
            src_t = b.sub(U.i64(taps - 1), t) if flipped else t
            src = U.gep(b, self.kf.ptrs[role], self.elem, U.index(b, (c, taps), (src_t, 1)))
            blk, lane = b.udiv(c, U.i64(lanes)), b.urem(c, U.i64(lanes))
            at = U.index(b, (blk, taps * lanes), (t, lanes), (lane, 1))
            b.store(b.load(src, typ=self.elem), U.gep(b, packed, self.elem, at))
        return packed

    def weights(self, packed, blk) -> list[list[ir.Value]]:
        b, geo, lanes = self.b, self.geo, self.lanes
        base = U.gep(b, packed, self.elem, U.index(b, (blk, geo.kh * geo.kw * lanes)))
        return [
            [
                b.load(U.gep(b, base, self.elem, (i * geo.kw + j) * lanes), typ=self.vt)
                for j in range(geo.kw)
            ]
            for i in range(geo.kh)
        ]


def _planes(op: str, geo: ConvGeometry) -> _Planes:
    """The correlation a gather-form kernel computes (see depthwise_gather_geometry), or,
    for the scatter form, the forward one whose taps it adds into."""
    gather = depthwise_gather_geometry(op, geo)
    if gather is None:
        gather = ((geo.h, geo.w), (geo.oh, geo.ow), geo.stride, geo.padding)
    in_hw, out_hw, stride, pad = gather
    return _Planes(in_hw, out_hw, stride, geo.dilation, pad, (geo.kh, geo.kw))


def _check(geo: ConvGeometry, plan: DepthwisePlan, lanes: int, form: str) -> None:
    if not (geo.groups == geo.c and geo.cg == 1 and geo.og == 1) or plan.tile != lanes:
        raise ValueError("the depthwise schedule needs one filter per channel and full tiles")
    if plan.form != form:
        raise ValueError(f"a {plan.form} depthwise plan given to a {form} emitter")


def _gather_tile(b, e: _Depthwise, w, yx, size: int) -> list[ir.Value]:
    """The sums of taps of `size` output positions, one vector of channels each."""
    kh, kw = e.p.k
    sums = []
    for t in range(size):
        y, x = yx(t)
        acc = None
        for i in range(kh):
            for j in range(kw):
                xv = b.load(e.tap_cell(y, x, i, j), typ=e.vt, name="x")
                acc = (
                    b.fmul(xv, w[i][j], name="acc")
                    if acc is None
                    else U.fmuladd(b, xv, w[i][j], acc, name="acc")
                )
        sums.append(acc)
    return sums


def _emit_gather(
    module, name, geo, *, roles, elem, epi, target, plan, op, src, flipped, guard=None
):
    """conv2d (src "x") and conv2d_input_grad at stride 1 (src "g", flipped kernel).
    `guard(kf)`, if given, is emitted first and may take another path (conv.py's)."""
    lanes = target.f32_lanes
    _check(geo, plan, lanes, "gather")
    kf = define_kernel(module, name, roles, geo.n, target)
    if guard is not None:
        guard(kf)
    e = _Depthwise(kf, geo, _planes(op, geo), plan, lanes, elem)
    b = kf.builder
    packed = e.pack_weights("w", flipped)
    e.zero_scratch()  # the border stays zero from here on
    (ih, iw), (oh, ow) = e.p.in_hw, e.p.out_hw
    with U.for_range(b, kf.lo, kf.hi, name="n", hints=U.NO_UNROLL) as n:
        src_n = U.gep(b, kf.ptrs[src], elem, U.index(b, (n, geo.c * ih * iw)))
        out = U.gep(b, kf.ptrs["out"], elem, U.index(b, (n, geo.c * oh * ow)))

        def block(blk, cb, src_n=src_n, out=out):
            w = e.weights(packed, blk)
            bias = _bias(b, kf.ptrs["bias"], blk, cb, e) if epi.bias else None

            def tile(k0, size, yx):
                sums = _gather_tile(b, e, w, yx, size)
                results = [epi.apply(b, s, bias, None) for s in sums]
                e.store_planes(out, blk, cb, k0, results, oh * ow)

            e.walk_outputs(e.filler(src_n, blk, cb), tile)

        e.blocks(block)
    b.ret_void()
    return plan.describe(lanes), e.stack_bytes


def emit_forward(module, name, geo, *, roles, elem, epi: Epilogue, target: Target, plan):
    """conv2d; roles (out, x, w[, bias]). Returns (schedule, stack bytes)."""
    return _emit_gather(
        module, name, geo, roles=roles, elem=elem, epi=epi, target=target, plan=plan,
        op="conv2d", src="x", flipped=False,
    )  # fmt: skip


def _bias(b, bias_ptr, blk, cb: int, e: _Depthwise) -> ir.Value:
    """The block's bias vector (lanes past its channels: zero)."""
    at = U.gep(b, bias_ptr, e.elem, U.index(b, (blk, e.lanes)))
    return U.load_vec(b, at, e.vt, cb, name="bias")


def emit_input_grad(module, name, geo, *, roles, elem, target: Target, plan, guard=None):
    """conv2d_input_grad; roles (out, g, w). Returns (schedule, stack bytes). The gather
    form pads g with zeros the reference never multiplies: `guard` (conv.py: exact loops
    when w holds an inf or NaN) keeps 0 * inf out of it."""
    if plan.form == "gather":
        return _emit_gather(
            module, name, geo, roles=roles, elem=elem, epi=Epilogue(), target=target,
            plan=plan, op="conv2d_input_grad", src="g", flipped=True, guard=guard,
        )  # fmt: skip
    lanes = target.f32_lanes
    _check(geo, plan, lanes, "scatter")
    kf = define_kernel(module, name, roles, geo.n, target)
    e = _Depthwise(kf, geo, _planes("conv2d_input_grad", geo), plan, lanes, elem)
    b = kf.builder
    packed = e.pack_weights("w")
    g_plane, x_plane = geo.oh * geo.ow, geo.h * geo.w
    with U.for_range(b, kf.lo, kf.hi, name="n", hints=U.NO_UNROLL) as n:
        g = U.gep(b, kf.ptrs["g"], elem, U.index(b, (n, geo.c * g_plane)))
        dx = U.gep(b, kf.ptrs["out"], elem, U.index(b, (n, geo.c * x_plane)))

        def block(blk, cb, g=g, dx=dx):
            e.zero_scratch()
            w = e.weights(packed, blk)

            def scatter(k0, size, yx):
                gv = e.plane_rows(g, blk, cb, k0, size, g_plane)
                for t in range(size):
                    y, x = yx(t)
                    for i in range(geo.kh):
                        for j in range(geo.kw):
                            cell = e.tap_cell(y, x, i, j)
                            old = b.load(cell, typ=e.vt, name="dx")
                            b.store(U.fmuladd(b, gv[t], w[i][j], old, name="dx"), cell)

            e.flat_tiles(geo.oh, geo.ow, scatter)

            def crop(k0, size, yx):
                vectors = [b.load(e.input_cell(*yx(t)), typ=e.vt, name="dx") for t in range(size)]
                e.store_planes(dx, blk, cb, k0, vectors, x_plane)

            e.flat_tiles(geo.h, geo.w, crop)

        e.blocks(block)
    b.ret_void()
    return plan.describe(lanes), e.stack_bytes


def emit_weight_grad(module, name, geo, *, roles, elem, target: Target, plan):
    """conv2d_weight_grad; roles (out, x, g). Units are blocks of channels, each summing
    over the whole batch. Returns (extent, unit, schedule, stack bytes)."""
    lanes = target.f32_lanes
    _check(geo, plan, lanes, "gather")
    blocks = -(-geo.c // lanes)
    kf = define_kernel(module, name, roles, blocks, target)
    e = _Depthwise(kf, geo, _planes("conv2d_weight_grad", geo), plan, lanes, elem)
    b = kf.builder
    g_plane = geo.oh * geo.ow
    taps = [(i, j) for i in range(geo.kh) for j in range(geo.kw)]
    slots = [U.entry_alloca(b, e.vt, f"acc{i}.{j}") for i, j in taps]
    e.zero_scratch()
    per_channel = geo.kh * geo.kw
    offsets = [q * per_channel for q in range(lanes)]

    def block(blk, cb):
        for slot in slots:
            b.store(ir.Constant(e.vt, None), slot)
        with U.for_range(b, 0, geo.n, name="n", hints=U.NO_UNROLL) as n:
            x = U.gep(b, kf.ptrs["x"], elem, U.index(b, (n, geo.c * geo.h * geo.w)))
            g = U.gep(b, kf.ptrs["g"], elem, U.index(b, (n, geo.c * g_plane)))

            def tile(k0, size, yx, g=g):
                gv = e.plane_rows(g, blk, cb, k0, size, g_plane)
                accs = [b.load(slot, typ=e.vt) for slot in slots]
                for t in range(size):
                    y, xx = yx(t)
                    for a, (i, j) in enumerate(taps):
                        xv = b.load(e.tap_cell(y, xx, i, j), typ=e.vt, name="x")
                        accs[a] = U.fmuladd(b, gv[t], xv, accs[a], name="acc")
                for slot, acc in zip(slots, accs, strict=True):
                    b.store(acc, slot)

            e.walk_outputs(e.filler(x, blk, cb), tile)
        # dw[c, 0, i, j] of the block's channels: lane q of tap (i, j)'s vector
        for slot, (i, j) in zip(slots, taps, strict=True):
            at = U.index(b, (blk, lanes * per_channel), i * geo.kw + j)
            base = U.gep(b, kf.ptrs["out"], elem, at)
            U.scatter(b, b.load(slot, typ=e.vt), base, offsets, cb)

    # a unit is a block; the last one may be short
    full = geo.c // lanes
    with U.for_range(b, kf.lo, kf.hi, name="blk", hints=U.NO_UNROLL) as u:
        if geo.c % lanes and full:
            with b.if_else(b.icmp_signed("<", u, U.i64(full))) as (whole, short):
                with whole:
                    block(u, lanes)
                with short:
                    block(u, geo.c % lanes)
        else:
            block(u, geo.c % lanes or lanes)
    b.ret_void()
    unit = f"a block of {lanes} channels over the whole batch"
    return blocks, unit, plan.describe(lanes), e.stack_bytes

"""conv2d_weight_grad with explicit vectors.

    dw[o, c, i, j] = sum over n, y, x of g[n, o, y, x] * x[n, G*cg + c, y*sh + i*dh - ph,
                                                           x*sw + j*dw - pw]

A work unit owns a few whole rows of dw and sums them over the entire batch, so any split of
the units gives bitwise the same dw. Images are the outer loop: image n (its slice of x and
g, tens of KB) is read from cache by every unit of a chunk before moving on, and the units'
vector accumulators wait in a stack scratch between images (a few loads and stores per
unit and image). Two schedules, chosen by a cost model (passes/conv_tiles.py):

- "width" (stride 1 along x): vectors along the output row x, a unit is (channel tile of
  OT, c); per kernel row i, OT x KW accumulators take per vector of g OT loads of g and KW
  loads of shifted x rows (masked at tails and padded columns). Lanes are summed at the end
  with one transposing reduction per (o, i).
- "channels": vectors along o, a unit is (block of `lanes` output channels, c, group of
  kernel rows); g is transposed once per image into [y][x][o] with in-register 16x16
  transposes, then each x element is broadcast once per tile and feeds all the (column, j)
  pairs reading it. Wins when rows are narrow and there are many output channels.

Both skip the products of g with x's padding, which the reference computes as 0 * g: NaN
where g is inf or NaN. So where padding is met, each unit checks its accumulators before
storing them and, if one is inf or NaN, computes its outputs by conv_generic's exact loops
instead (conv_generic.weight_grad_nonfinite says why that check suffices).
"""

from __future__ import annotations

from llvmlite import ir

from graphc.codegen import irutil as U
from graphc.codegen.kernels import conv_generic
from graphc.codegen.kernels.common import define_kernel, out_of_line, stack_array
from graphc.codegen.target import Target
from graphc.passes.conv_tiles import (
    SCRATCH_BYTES,
    ChannelWPlan,
    ConvGeometry,
    WidthWPlan,
    conv_axes,
)
from graphc.passes.tiling import Loop, Tile, plan_axis


def emit_weight_grad(
    module, name, geo: ConvGeometry, *, roles, elem, target: Target, plan: WidthWPlan | ChannelWPlan
):
    """Emit the kernel with `plan` (passes/tiles.py chose it); returns (extent, unit
    description, schedule, stack bytes)."""
    lanes = target.f32_lanes
    em = _WidthW(geo, plan, lanes) if isinstance(plan, WidthWPlan) else _ChannelW(geo, plan, lanes)
    stack = em.emit(module, name, roles, elem, target)
    return em.extent, em.unit, plan.describe(geo, lanes), stack


class _Base:
    """The shared loop structure: chunks of units > images > units, then the reduction."""

    extent: int
    unit: str
    per_unit: int  # accumulator vectors per unit

    def __init__(self, geo: ConvGeometry, plan, lanes: int):
        self.geo, self.plan, self.lanes = geo, plan, lanes
        self.rows, self.cols = conv_axes(geo)

    def emit(self, module, name, roles, elem, target) -> int:
        geo, lanes = self.geo, self.lanes
        kf = self.kf = define_kernel(module, name, roles, self.extent, target)
        b = self.b = kf.builder
        self.exact_fn = None
        self.elem, self.vt, self.ptrs = elem, U.vec(elem, lanes), kf.ptrs
        chunk = max(1, min(self.extent, SCRATCH_BYTES // (self.per_unit * lanes * 4)))
        scratch_elems = chunk * self.per_unit * lanes
        self.scratch = stack_array(b, elem, scratch_elems, "acc.scratch")
        stack = scratch_elems * 4 + self.prologue()
        with U.for_range(b, kf.lo, kf.hi, step=chunk, name="dw.chunk", hints=U.NO_UNROLL) as u0:
            end = b.add(u0, U.i64(chunk))
            u1 = b.select(b.icmp_signed("<", end, kf.hi), end, kf.hi, name="chunk.end")
            U.memset_zero(b, self.scratch, scratch_elems * 4)
            with U.for_range(b, 0, geo.n, name="dw.n", hints=U.NO_UNROLL) as n:
                self.image(n)
                with U.for_range(b, u0, u1, name="dw.unit", hints=U.NO_UNROLL) as u:
                    self.unit_body(n, u, self.unit_scratch(u, u0))
            with U.for_range(b, u0, u1, name="dw.store", hints=U.NO_UNROLL) as u:
                if geo.reads_padding:
                    self.store_or_exact(u, self.unit_scratch(u, u0))
                else:
                    self.store(u, self.unit_scratch(u, u0))
        b.ret_void()
        return stack

    def store_or_exact(self, u, scr) -> None:
        """As conv_generic.weight_grad_nonfinite, on the unit's accumulators before they are
        stored: each lane is a term of one of its results, zero, or (channel schedule, lanes
        past the group) a product of x with a zero."""
        b, geo = self.b, self.geo
        bad = b.or_(
            self.scratch_nonfinite(scr),
            conv_generic.dead_nonfinite(b, self.ptrs["g"], geo, self.elem, self.o_range(u)),
        )
        with b.if_else(bad, likely=False) as (then, otherwise):
            with then:
                self.exact(u)
            with otherwise:
                self.store(u, scr)

    def scratch_nonfinite(self, scr) -> ir.Value:
        """i1: a lane of the unit's accumulators is inf or NaN (all exponent bits set), one
        vector compare per accumulator."""
        b, lanes = self.b, self.lanes
        ivt = U.vec(U.I32, lanes)
        exp = U.vconst(ivt.element, (0x7F800000,) * lanes)
        hits = None
        for k in range(self.per_unit):
            bits = b.bitcast(b.load(self.acc_ptr(scr, k), typ=self.vt), ivt)
            hit = b.icmp_unsigned("==", b.and_(bits, exp), exp)
            hits = hit if hits is None else b.or_(hits, hit)
        mask = b.bitcast(hits, ir.IntType(lanes))
        return b.icmp_unsigned("!=", mask, ir.Constant(ir.IntType(lanes), 0), name="acc.nonfinite")

    def exact(self, u) -> None:
        """Unit u's outputs by the scalar loops that multiply the padding (conv_generic), in
        a cold function of its own, as conv_generic.nonfinite_guard does it."""
        if self.exact_fn is None:
            self.exact_fn = out_of_line(self.kf, "exact", self._exact_units)
        self.b.call(self.exact_fn, [*self.ptrs.values(), u, self.b.add(u, U.i64(1))])

    def _exact_units(self, k) -> None:
        """The body of the out-of-line function: units [k.lo, k.hi), emitted through k's
        builder and pointers (this schedule's decode and ranges use self.b and self.ptrs)."""
        outer = self.b, self.ptrs
        self.b, self.ptrs = k.builder, k.ptrs
        try:
            with U.for_range(k.builder, k.lo, k.hi, name="dw.exact.u", hints=U.NO_UNROLL) as u:
                geo = self.geo
                o_first, o_end = self.o_range(u)
                i_first, i_end = self.i_range(u)
                c = self.in_channel(u)
                b = self.b
                with (
                    U.for_range(b, o_first, o_end, name="dw.exact.o", hints=U.NO_UNROLL) as o,
                    U.for_range(b, i_first, i_end, name="dw.exact.i", hints=U.NO_UNROLL) as i,
                    U.for_range(b, 0, geo.kw, name="dw.exact.j", hints=U.NO_UNROLL) as j,
                ):
                    conv_generic.weight_grad_output(
                        b, self.ptrs, geo, self.elem, o, c, i, j, exact=True
                    )
        finally:
            self.b, self.ptrs = outer

    def o_range(self, u) -> tuple[ir.Value, ir.Value]:
        """[first, end) of the output channels whose gradients unit u owns."""
        raise NotImplementedError

    def in_channel(self, u) -> ir.Value:
        """The input channel (within its group) of unit u."""
        raise NotImplementedError

    def i_range(self, u) -> tuple[ir.Value, ir.Value]:
        """[first, end) of the kernel rows whose gradients unit u owns."""
        return U.i64(0), U.i64(self.geo.kh)

    def _channels(self, grp, first, size: int) -> tuple[ir.Value, ir.Value]:
        """[grp*og + first, that + size) clipped to the group."""
        b, og = self.b, self.geo.og
        o_first = U.index(b, (grp, og), (first, 1))
        end, group_end = b.add(o_first, U.i64(size)), U.index(b, (grp, og), og)
        return o_first, b.select(b.icmp_signed("<", end, group_end), end, group_end)

    def prologue(self) -> int:
        return 0

    def image(self, n) -> None:
        pass

    def unit_scratch(self, u, u0) -> ir.Value:
        b = self.b
        rel = b.sub(u, u0)
        return U.gep(b, self.scratch, self.elem, U.index(b, (rel, self.per_unit * self.lanes)))

    def acc_ptr(self, base, k: int) -> ir.Value:
        return U.gep(self.b, base, self.elem, k * self.lanes)

    def load_accs(self, base, count: int) -> list:
        b = self.b
        slots = []
        for k in range(count):
            slot = self.slot(k)
            b.store(b.load(self.acc_ptr(base, k), typ=self.vt), slot)
            slots.append(slot)
        return slots

    def save_accs(self, base, slots) -> None:
        b = self.b
        for k, slot in enumerate(slots):
            b.store(b.load(slot, typ=self.vt), self.acc_ptr(base, k))

    def slot(self, k: int) -> ir.Value:
        cache = self.__dict__.setdefault("_slots", {})
        if k not in cache:
            cache[k] = U.entry_alloca(self.b, self.vt, f"acc.{k}")
        return cache[k]

    def fma(self, slot, a, x) -> None:
        b = self.b
        b.store(U.fmuladd(b, a, x, b.load(slot, typ=self.vt)), slot)

    def split_tail(self, index, count: int, size: int, total: int, body) -> None:
        """body(size) for tile `index` of `count`; the last one is short if total % size."""
        b, rem = self.b, total % size
        if not rem:
            body(size)
            return
        with b.if_else(b.icmp_signed("==", index, U.i64(count - 1))) as (short, full):
            with short:
                body(rem)
            with full:
                body(size)


class _WidthW(_Base):
    """Vectors along x; unit u = ((group * n_ot) + ot_tile) * cg + c."""

    def __init__(self, geo, plan: WidthWPlan, lanes):
        super().__init__(geo, plan, lanes)
        self.n_ot = -(-geo.og // plan.ot)
        self.extent = geo.groups * self.n_ot * geo.cg
        self.unit = f"{plan.ot} output channels x 1 input channel"
        self.per_unit = geo.kh * plan.ot * geo.kw

    def decode(self, u):
        b, geo = self.b, self.geo
        c = b.urem(u, U.i64(geo.cg), name="c")
        rest = b.udiv(u, U.i64(geo.cg))
        return (
            b.udiv(rest, U.i64(self.n_ot), name="grp"),
            b.urem(rest, U.i64(self.n_ot), name="ot"),
            c,
        )

    def in_channel(self, u):
        return self.decode(u)[2]

    def o_range(self, u):
        grp, ot, _ = self.decode(u)
        return self._channels(grp, self.b.mul(ot, U.i64(self.plan.ot)), self.plan.ot)

    def unit_body(self, n, u, scr) -> None:
        grp, ot, c = self.decode(u)
        self.split_tail(
            ot,
            self.n_ot,
            self.plan.ot,
            self.geo.og,
            lambda size: self._body(n, grp, ot, c, scr, size),
        )

    def _body(self, n, grp, ot, c, scr, osize) -> None:
        b, geo, lanes, cols = self.b, self.geo, self.lanes, self.cols
        plan = self.plan
        o0 = U.index(b, (grp, geo.og), (ot, plan.ot))
        g_img = U.gep(b, self.ptrs["g"], self.elem, U.index(b, (n, geo.o * geo.oh * geo.ow)))
        ch = U.index(b, (n, geo.c), (grp, geo.cg), (c, 1))
        x_chan = U.gep(b, self.ptrs["x"], self.elem, U.index(b, (ch, geo.h * geo.w)))
        col_plan = plan_axis(cols, lanes)
        for i in range(geo.kh):
            ys = [y for y in range(geo.oh) if i in self.rows.taps(y)]
            if not ys:
                continue
            base = U.gep(b, scr, self.elem, i * plan.ot * geo.kw * lanes)
            accs = self.load_accs(base, osize * geo.kw)
            with U.for_range(b, ys[0], ys[-1] + 1, name=f"dw.y{i}", hints=U.NO_UNROLL) as y:
                src = U.index(b, (y, geo.stride[0]), i * geo.dilation[0] - geo.padding[0])
                x_row = U.gep(b, x_chan, self.elem, U.index(b, (src, geo.w)))
                g_rows = [
                    U.gep(
                        b,
                        g_img,
                        self.elem,
                        U.index(b, (o0, geo.oh * geo.ow), (y, geo.ow), k * geo.oh * geo.ow),
                    )
                    for k in range(osize)
                ]

                def vec_tile(x0, size, const, x_row=x_row, g_rows=g_rows, accs=accs, osize=osize):
                    self._vector(x_row, g_rows, accs, osize, x0, size, const)

                for seg in col_plan:
                    if isinstance(seg, Tile):
                        vec_tile(seg.start, seg.size, True)
                    else:
                        assert isinstance(seg, Loop)
                        with U.for_range(b, 0, seg.count, name="dw.xv", hints=U.NO_UNROLL) as t:
                            vec_tile(U.index(b, (t, seg.size), seg.start), seg.size, False)
            self.save_accs(base, accs)

    def _vector(self, x_row, g_rows, accs, osize, x0, size, const) -> None:
        """One vector of output columns x0 .. x0+size-1 (size <= lanes)."""
        b, geo, lanes, cols = self.b, self.geo, self.lanes, self.cols
        gv = [
            U.load_vec(b, U.gep(b, g_rows[k], self.elem, x0), self.vt, size, name=f"g{k}")
            for k in range(osize)
        ]
        for j in range(geo.kw):
            act: tuple[int, int] | None = (0, lanes)
            if const:
                ok = [q for q in range(size) if 0 <= cols.source(x0 + q, j) < cols.n_in]
                act = (ok[0], ok[-1] + 1) if ok else None
            if act is None:
                continue
            off = U.index(b, (x0, 1), j * cols.dilation - cols.pad)
            xv = U.load_vec(b, U.gep(b, x_row, self.elem, off), self.vt, act, name=f"x{j}")
            for k in range(osize):
                self.fma(accs[k * geo.kw + j], gv[k], xv)

    def store(self, u, scr) -> None:
        grp, ot, c = self.decode(u)
        self.split_tail(
            ot,
            self.n_ot,
            self.plan.ot,
            self.geo.og,
            lambda size: self._store(grp, ot, c, scr, size),
        )

    def _store(self, grp, ot, c, scr, osize) -> None:
        b, geo = self.b, self.geo
        kw = geo.kw
        count = 1 << (kw - 1).bit_length()
        row_t = U.vec(self.elem, kw)
        for i in range(geo.kh):
            for k in range(osize):
                vals = [
                    b.load(self.acc_ptr(scr, (i * self.plan.ot + k) * kw + j), typ=self.vt)
                    for j in range(kw)
                ]
                if count > self.lanes:  # more taps than lanes: one reduction per tap
                    sums = [U.hsum(b, v) for v in vals]
                else:
                    red = U.lane_sums(b, vals + [ir.Constant(self.vt, None)] * (count - kw))
                    sums = [b.extract_element(red, ir.Constant(U.I32, j)) for j in range(kw)]
                row = ir.Constant(row_t, None)
                for j, s in enumerate(sums):
                    row = b.insert_element(row, s, ir.Constant(U.I32, j))
                o = U.index(b, (grp, geo.og), (ot, self.plan.ot), k)
                at = U.index(b, (o, geo.cg * geo.kh * kw), (c, geo.kh * kw), i * kw)
                b.store(row, U.gep(b, self.ptrs["out"], self.elem, at), align=4)


class _ChannelW(_Base):
    """Vectors along o; unit u = ((group * n_blocks + block) * cg + c) * n_ig + row group."""

    def __init__(self, geo, plan: ChannelWPlan, lanes):
        super().__init__(geo, plan, lanes)
        self.n_blocks = -(-geo.og // lanes)
        self.n_ig = -(-geo.kh // plan.rows)
        self.extent = geo.groups * self.n_blocks * geo.cg * self.n_ig
        self.unit = f"{lanes} output channels x 1 input channel x {plan.rows} kernel rows"
        self.per_unit = plan.rows * geo.kw
        self.plane = geo.oh * geo.ow

    def prologue(self) -> int:
        count = self.geo.groups * self.n_blocks * self.plane * self.lanes
        self.gt = stack_array(self.b, self.elem, count, "g.t")
        return count * 4

    def image(self, n) -> None:
        """gt[group][block][p][lane] = g[n, group*og + block*lanes + lane, p], zero past og."""
        b, geo, lanes = self.b, self.geo, self.lanes
        g_img = U.gep(b, self.ptrs["g"], self.elem, U.index(b, (n, geo.o * self.plane)))
        with U.for_range(b, 0, geo.groups * self.n_blocks, name="gt.blk", hints=U.NO_UNROLL) as gb:
            grp = b.udiv(gb, U.i64(self.n_blocks))
            blk = b.urem(gb, U.i64(self.n_blocks))
            o0 = U.index(b, (grp, geo.og), (blk, lanes))
            dst_blk = U.gep(b, self.gt, self.elem, U.index(b, (gb, self.plane * lanes)))
            live = b.sub(U.i64(geo.og), U.index(b, (blk, lanes)), name="live.o")

            def chunk(p0, npos):
                rows = []
                for q in range(lanes):
                    src = U.gep(
                        b, g_img, self.elem, U.index(b, (o0, self.plane), (p0, 1), q * self.plane)
                    )
                    ok = b.icmp_signed("<", U.i64(q), live)
                    rows.append(U.load_vec_where(b, src, self.vt, npos, ok, name=f"g{q}"))
                for t, col in enumerate(U.transpose_square(b, rows)[:npos]):
                    at = U.index(b, (p0, lanes), t * lanes)
                    U.store_vec(b, col, U.gep(b, dst_blk, self.elem, at))

            full = self.plane // lanes
            if full:
                with U.for_range(b, 0, full, name="gt.p", hints=U.NO_UNROLL) as pc:
                    chunk(b.mul(pc, U.i64(lanes)), lanes)
            if self.plane % lanes:
                chunk(U.i64(full * lanes), self.plane % lanes)

    def decode(self, u):
        b, geo = self.b, self.geo
        ig = b.urem(u, U.i64(self.n_ig), name="ig")
        rest = b.udiv(u, U.i64(self.n_ig))
        c = b.urem(rest, U.i64(geo.cg), name="c")
        gb = b.udiv(rest, U.i64(geo.cg), name="gblk")
        return gb, c, ig

    def in_channel(self, u):
        return self.decode(u)[1]

    def o_range(self, u):
        b = self.b
        gb = self.decode(u)[0]
        grp, blk = b.udiv(gb, U.i64(self.n_blocks)), b.urem(gb, U.i64(self.n_blocks))
        return self._channels(grp, b.mul(blk, U.i64(self.lanes)), self.lanes)

    def i_range(self, u):
        b, rows = self.b, self.plan.rows
        first = b.mul(self.decode(u)[2], U.i64(rows))
        end, kh = b.add(first, U.i64(rows)), U.i64(self.geo.kh)
        return first, b.select(b.icmp_signed("<", end, kh), end, kh)

    def unit_body(self, n, u, scr) -> None:
        b, geo, rows = self.b, self.geo, self.plan.rows
        gb, c, ig = self.decode(u)
        if self.n_ig == 1:
            self._body(n, gb, c, scr, 0, geo.kh)
            return
        # One code variant per kernel-row group: the groups' tap sets differ at borders.
        for q in range(self.n_ig):
            with b.if_then(b.icmp_signed("==", ig, U.i64(q))):
                self._body(n, gb, c, scr, q * rows, min(geo.kh, (q + 1) * rows))

    def _body(self, n, gb, c, scr, ia: int, ib: int) -> None:
        b, geo, lanes, cols = self.b, self.geo, self.lanes, self.cols
        grp = b.udiv(gb, U.i64(self.n_blocks))
        ch = U.index(b, (n, geo.c), (grp, geo.cg), (c, 1))
        x_chan = U.gep(b, self.ptrs["x"], self.elem, U.index(b, (ch, geo.h * geo.w)))
        g_blk = U.gep(b, self.gt, self.elem, U.index(b, (gb, self.plane * lanes)))
        accs = self.load_accs(scr, (ib - ia) * geo.kw)
        row_plan = plan_axis(self.rows, 1)
        col_plan = plan_axis(cols, self.plan.t)

        def tile(y, y_const, x0, size, x_const):
            taps_i = [i for i in range(ia, ib) if not y_const or i in self.rows.taps(y)]
            if not taps_i:
                return
            gv = []
            for t in range(size):
                at = U.index(b, (y, geo.ow * lanes), (x0, lanes), t * lanes)
                gv.append(U.load_vec(b, U.gep(b, g_blk, self.elem, at), self.vt, name=f"g{t}"))
            readers: dict[int, list[tuple[int, int]]] = {}
            for t in range(size):
                for j in cols.taps(x0 + t) if x_const else range(geo.kw):
                    readers.setdefault(t * cols.stride + j * cols.dilation, []).append((t, j))
            for i in taps_i:
                src = U.index(b, (y, geo.stride[0]), i * geo.dilation[0] - geo.padding[0])
                x_row = U.gep(b, x_chan, self.elem, U.index(b, (src, geo.w)))
                for col in sorted(readers):
                    off = U.index(b, (x0, cols.stride), col - cols.pad)
                    xs = b.load(U.gep(b, x_row, self.elem, off), typ=self.elem, name="x")
                    xb = U.splat(b, xs, lanes, name="x.bc")
                    for t, j in readers[col]:
                        self.fma(accs[(i - ia) * geo.kw + j], xb, gv[t])

        def row(y, y_const):
            for seg in col_plan:
                if isinstance(seg, Tile):
                    tile(y, y_const, seg.start, seg.size, True)
                else:
                    assert isinstance(seg, Loop)
                    with U.for_range(b, 0, seg.count, name="dw.xt", hints=U.NO_UNROLL) as t:
                        tile(y, y_const, U.index(b, (t, seg.size), seg.start), seg.size, False)

        for seg in row_plan:
            if isinstance(seg, Tile):
                row(seg.start, True)
            else:
                assert isinstance(seg, Loop)
                with U.for_range(
                    b, seg.start, seg.start + seg.count, name="dw.y", hints=U.NO_UNROLL
                ) as y:
                    row(y, False)
        self.save_accs(scr, accs)

    def store(self, u, scr) -> None:
        b, geo, lanes = self.b, self.geo, self.lanes
        gb, c, ig = self.decode(u)
        grp = b.udiv(gb, U.i64(self.n_blocks))
        blk = b.urem(gb, U.i64(self.n_blocks))
        live = U.lanes_below(b, b.sub(U.i64(geo.og), U.index(b, (blk, lanes))), lanes)
        i0 = b.mul(ig, U.i64(self.plan.rows))
        taps = geo.kh * geo.kw
        o0 = U.index(b, (grp, geo.og), (blk, lanes))
        for k in range(self.per_unit):
            i_rel, j = divmod(k, geo.kw)
            i = b.add(i0, U.i64(i_rel))
            val = b.load(self.acc_ptr(scr, k), typ=self.vt)
            with b.if_then(b.icmp_signed("<", i, U.i64(geo.kh))):
                at = U.index(b, (o0, geo.cg * taps), (c, taps), (i, geo.kw), j)
                dst = U.gep(b, self.ptrs["out"], self.elem, at)
                U.scatter(b, val, dst, [q * geo.cg * taps for q in range(lanes)], live)

"""Direct convolution kernels with explicit vectors: conv2d forward, and conv2d_input_grad
at stride 1 (a forward convolution of the padded cotangent with the flipped kernel).

    out[n, g*og + o, y, x] = sum over c, i, j (in that order) of
        inp[n, g*cg + c, y*sh + i*dh - ph, x*sw + j*dw - pw] * W(g, o, c, i, j)

Two schedules; a cost model picks one per shape (passes/conv_tiles.py, run by the
plan_tiles pass):
- "width" (stride 1 along x): vectors along the output row. A register tile holds OT
  output channels x R rows x V vectors; per tap, OT weight broadcasts and R*V row loads
  feed OT*R*V FMAs. Row tails and padded columns are masked loads, never copies.
- "channels": vectors along the output channels (weights packed once per call into
  [g][block][c][i][j][lane]); a tile holds R rows x T columns of such vectors. Per kernel
  row i the KW weight vectors stay in registers and each input element is broadcast once
  and used for every (column, j) pair that reads it; results are transposed in registers
  and stored one channel row at a time.
  Wins when a row is much narrower than a vector but there are many channels.

Loops: images (units) > groups > channel tiles > row tiles > column tiles > c > i, with
the taps j, rows, columns and channels of the tile unrolled. The kernel-row loop i stays a
runtime loop on purpose: unrolled, LLVM merges the loads that rows r and r+1 share across
i and keeps them live, which spills the register tile (measured). Padding costs neither a
copy nor a test in the inner loops: rows near a padded border get tiles of at most EDGE_ROWS
rows whose valid taps i are known when the tile is emitted (tiling.plan_axis and
tap_intervals), and columns' taps in the padding are
masked lanes (width) or skipped FMAs (channels), known when the tile is emitted. A work
unit is one image; every output sums over c, then i, then j.

Skipping the padding is exact only while the weights are finite (the reference multiplies
its zeros, and 0 * inf is NaN; for conv2d_input_grad the padding of g is not the
reference's at all, so no product may meet it). Kernels whose taps meet padding get a
`guard` from conv.py: it checks the weights once per call and, if one is inf or NaN, runs
conv_generic's exact loops over the call's images instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from llvmlite import ir

from graphc.codegen import irutil as U
from graphc.codegen.kernels.common import KernelFunction, define_kernel, stack_array
from graphc.codegen.kernels.epilogue import Epilogue
from graphc.codegen.target import Target
from graphc.passes.conv_tiles import EDGE_ROWS, ChannelPlan, DirectConv, WidthPlan, partial_sums
from graphc.passes.tiling import Loop, Tile, plan_axis, tap_intervals

# ---- emission -------------------------------------------------------------------------------


def emit_direct(
    module: ir.Module,
    name: str,
    p: DirectConv,
    *,
    roles: tuple[str, ...],
    elem: ir.Type,
    epi: Epilogue,
    target: Target,
    plan: WidthPlan | ChannelPlan,
    guard: Callable[[KernelFunction], None] | None = None,
) -> tuple[str, int]:
    """Emit the kernel with `plan` (passes/tiles.py chose it; roles[1] is the input, roles[2]
    the weight); returns (schedule description, stack bytes). `guard(kf)`, if given, is
    emitted before the loops: it may take another path and return (see
    conv_generic.nonfinite_guard)."""
    lanes = target.f32_lanes if elem == U.F32 else target.lanes("float64")
    if isinstance(plan, WidthPlan) and p.cols.stride != 1:
        raise ValueError("the width schedule needs stride 1 along the columns")
    kf = define_kernel(module, name, roles, p.batch, target)
    if guard is not None:
        guard(kf)
    e = _Emitter(kf.builder, p, elem, U.vec(elem, lanes), lanes, epi, kf.ptrs, roles)
    e.regs = target.vector_registers
    b = kf.builder

    def image(n) -> None:
        e.inp_n = U.gep(b, kf.ptrs[roles[1]], elem, U.index(b, (n, p.groups * p.cg * p.in_plane)))
        e.out_n = U.gep(b, kf.ptrs["out"], elem, U.index(b, (n, p.groups * p.og * p.out_plane)))

    def groups(body) -> None:
        if p.groups == 1:
            body(U.i64(0))
        else:
            with U.for_range(b, 0, p.groups, name="conv.g", hints=U.NO_UNROLL) as g:
                body(g)

    if isinstance(plan, ChannelPlan) and plan.pack == "tile":
        # weights too large to pack at once: one channel tile's at a time, images inside
        def tile_of_group(g) -> None:
            def o_tile(o0, osize):
                e.pack_tile(g, o0, osize, plan.nb)
                with U.for_range(b, kf.lo, kf.hi, name="conv.n", hints=U.NO_VECTORIZE) as n:
                    image(n)
                    e.spatial(g, plan, o0, osize)

            _tiles(b, p.og, plan.nb * e.lanes, "conv.ot", o_tile)

        groups(tile_of_group)
    else:
        if isinstance(plan, ChannelPlan):
            e.pack_weights()
        with U.for_range(b, kf.lo, kf.hi, name="conv.n", hints=U.NO_VECTORIZE) as n:
            image(n)
            groups(lambda g: e.group(g, plan))
    b.ret_void()
    return plan.describe(lanes), e.stack_bytes


def weight_index(b: ir.IRBuilder, p: DirectConv, g, o, c, i, j) -> ir.Value:
    """The index of W(g, o, c, i, j) in the weight array (see DirectConv)."""
    sg, so, sc, si, sj, k = p.weight_strides()
    return U.index(b, (g, sg), (o, so), (c, sc), (i, si), (j, sj), k)


def _tiles(b: ir.IRBuilder, n: int, size: int, name: str, body) -> None:
    """body(start, count) over tiles of `size`: a runtime loop over the full ones, then the
    short last one."""
    full = n // size
    if full == 1:
        body(U.i64(0), size)
    elif full > 1:
        with U.for_range(b, 0, full, name=name, hints=U.NO_UNROLL) as t:
            body(b.mul(t, U.i64(size)), size)
    if n % size:
        body(U.i64(full * size), n % size)


def _segments(b: ir.IRBuilder, plan, name: str, body) -> None:
    """body(start, size, const) for each segment of an axis plan: const tiles at a known
    position, or the interior tiles of a runtime loop."""
    for seg in plan:
        if isinstance(seg, Tile):
            body(seg.start, seg.size, True)
        else:
            assert isinstance(seg, Loop)
            with U.for_range(b, 0, seg.count, name=name, hints=U.NO_UNROLL) as t:
                body(U.index(b, (t, seg.size), seg.start), seg.size, False)


@dataclass
class _Emitter:
    b: ir.IRBuilder
    p: DirectConv
    elem: ir.Type
    vt: ir.VectorType
    lanes: int
    epi: Epilogue
    ptrs: dict
    roles: tuple
    inp_n: ir.Value | None = None
    out_n: ir.Value | None = None
    packed: ir.Value | None = None
    tile_packed: bool = False
    stack_bytes: int = 0
    regs: int = 32
    slot_cache: dict = field(default_factory=dict)
    scratch: ir.Value | None = None  # (channel schedule) see column_scratch
    rows: ir.Function | None = None  # (channel schedule) see rows_fn

    @property
    def w(self):
        return self.ptrs[self.roles[2]]

    @property
    def esize(self) -> int:
        return 4 if self.elem == U.F32 else 8

    def group(self, g, plan) -> None:
        width = isinstance(plan, WidthPlan)
        _tiles(
            self.b,
            self.p.og,
            plan.ot if width else plan.nb * self.lanes,
            "conv.ot",
            lambda o0, osize: self.spatial(g, plan, o0, osize),
        )

    def spatial(self, g, plan, o0, osize) -> None:
        """Every row and column tile of one channel tile of the current image."""
        b, p = self.b, self.p
        width = isinstance(plan, WidthPlan)
        rows = plan_axis(p.rows, plan.r, border=EDGE_ROWS)
        cols = plan_axis(p.cols, plan.v * self.lanes if width else plan.t)
        tile = self.width_tile if width else self.channel_tile

        def row_tile(y0, ry, cy):
            _segments(
                b,
                cols,
                "conv.ow",
                lambda x0, sx, cx: tile(g, o0, osize, y0, ry, cy, x0, sx, cx),
            )

        _segments(b, rows, "conv.oh", row_tile)

    # -- shared pieces -----------------------------------------------------------------------

    def _slots(self, shape: tuple[int, ...], tag: str) -> dict:
        """Zeroed accumulator slots for a tile (shared by all tiles of the kernel)."""
        slots = {}
        for key in itertools.product(*(range(s) for s in shape)):
            slot = self.slot_cache.get((tag, key))
            if slot is None:
                slot = U.entry_alloca(self.b, self.vt, f"acc.{tag}." + ".".join(map(str, key)))
                self.slot_cache[tag, key] = slot
            self.b.store(ir.Constant(self.vt, None), slot)
            slots[key] = slot
        return slots

    def _split(self, accs: int, others: int) -> int:
        split = partial_sums(accs, self.p.cols.k)
        return split if accs * split + others <= self.regs else 1

    def _total(self, slots) -> ir.Value:
        """The partial sums of one output added in order."""
        b = self.b
        total = b.load(slots[0], typ=self.vt)
        for slot in slots[1:]:
            total = b.fadd(total, b.load(slot, typ=self.vt), name="partials")
        return total

    def i_intervals(self, y0, ry: int, const: bool) -> list[tuple[int, int, tuple]]:
        """[(lo, hi, rows)]: loop i over [lo, hi) for these rows of the tile, in order. One
        interval with every row inside; near a padded edge, each row's exact taps."""
        if not const:
            return [(0, self.p.rows.k, tuple(range(ry)))]
        return tap_intervals(self.p.rows, y0, ry)

    def row_ptr(self, c_ptr, y0, r: int, i) -> ir.Value:
        """Input row (y0 + r)*sh + i*dh - ph of a channel."""
        b, rows = self.b, self.p.rows
        y = U.index(b, (y0, rows.stride), (i, rows.dilation), r * rows.stride - rows.pad)
        return U.gep(b, c_ptr, self.elem, U.index(b, (y, self.p.cols.n_in)), name=f"row{r}")

    def channel_ptr(self, g, c) -> ir.Value:
        b, p = self.b, self.p
        return U.gep(b, self.inp_n, self.elem, U.index(b, (g, p.cg * p.in_plane), (c, p.in_plane)))

    # -- width schedule: vectors along the output row ----------------------------------------

    def width_tile(self, g, o0, osize, y0, ry, cy, x0, sx, cx) -> None:
        b, p, lanes = self.b, self.p, self.lanes
        nv = -(-sx // lanes)
        split = self._split(osize * ry * nv, osize + 1)
        acc = self._slots((osize, ry, nv, split), "w")

        def lanes_of(v: int, j: int) -> tuple[int, int] | None:
            """Lanes of vector v whose tap j reads inside the row (all, inside the image)."""
            if not cx:
                return (0, lanes)
            ok = [
                q
                for q in range(min(lanes, sx - v * lanes))
                if 0 <= p.cols.source(x0 + v * lanes + q, j) < p.cols.n_in
            ]
            return (ok[0], ok[-1] + 1) if ok else None

        _, so, _, _, sj, _ = p.weight_strides()

        def taps(c, c_ptr, i, live) -> None:
            rows = {r: self.row_ptr(c_ptr, y0, r, i) for r in live}
            x_row = {r: U.gep(b, row, self.elem, x0) for r, row in rows.items()}
            w_base = U.gep(b, self.w, self.elem, weight_index(b, p, g, o0, c, i, 0), name="w.ci")
            # The accumulators as values for the body (one load and store per i, not per FMA)
            keys = [
                (ot, r, v, q)
                for ot in range(osize)
                for r in live
                for v in range(nv)
                for q in range(split)
            ]
            vals = {k: b.load(acc[k], typ=self.vt) for k in keys}
            for j in range(p.cols.k):
                wb = []
                for ot in range(osize):
                    wv = b.load(U.gep(b, w_base, self.elem, ot * so + j * sj), typ=self.elem)
                    wb.append(U.splat(b, wv, lanes, name=f"w{ot}"))
                for r in live:
                    for v in range(nv):
                        act = lanes_of(v, j)
                        if act is None:
                            continue
                        off = v * lanes + j * p.cols.dilation - p.cols.pad
                        xv = U.load_vec(
                            b, U.gep(b, x_row[r], self.elem, off), self.vt, act, name="x"
                        )
                        for ot in range(osize):
                            key = (ot, r, v, j % split)
                            vals[key] = U.fmuladd(b, wb[ot], xv, vals[key], name="acc")
            for k in keys:
                b.store(vals[k], acc[k])

        with U.for_range(b, 0, p.cg, name="conv.c", hints=U.NO_UNROLL) as c:
            c_ptr = self.channel_ptr(g, c)
            for ilo, ihi, live in self.i_intervals(y0, ry, cy):
                with U.for_range(b, ilo, ihi, name="conv.i", hints=U.NO_UNROLL) as i:
                    taps(c, c_ptr, i, live)
        for ot in range(osize):
            o = U.index(b, (g, p.og), (o0, 1), ot)
            bias = None
            if self.epi.bias:
                bs = b.load(U.gep(b, self.ptrs["bias"], self.elem, o), typ=self.elem)
                bias = U.splat(b, bs, lanes)
            for r in range(ry):
                for v in range(nv):
                    row_at = (o, p.out_plane), (y0, p.cols.n_out), (x0, 1)
                    at = U.index(b, *row_at, r * p.cols.n_out + v * lanes)
                    dst = U.gep(b, self.out_n, self.elem, at)
                    act = min(lanes, sx - v * lanes)
                    old = U.load_vec(b, dst, self.vt, act) if self.epi.accumulate else None
                    total = self._total([acc[ot, r, v, q] for q in range(split)])
                    U.store_vec(b, self.epi.apply(b, total, bias, old), dst, act)

    # -- channel schedule: vectors along the output channels ---------------------------------

    def _packed_index(self, g, blk, c, i, j: int) -> ir.Value:
        p, lanes = self.p, self.lanes
        taps = p.rows.k * p.cols.k
        n_blocks = -(-p.og // lanes)
        return U.index(
            self.b,
            (g, n_blocks * p.cg * taps * lanes),
            (blk, p.cg * taps * lanes),
            (c, taps * lanes),
            (i, p.cols.k * lanes),
            (j, lanes),
        )

    def pack_tile(self, g, o0, osize: int, nb: int) -> None:
        """The weights of channels o0 .. o0+osize-1 of group g alone, as pack_weights lays
        out one group's blocks (zero past the tile); the tile's blocks then index from 0."""
        b, p, lanes = self.b, self.p, self.lanes
        count = nb * p.cg * p.rows.k * p.cols.k * lanes
        if self.packed is None:
            self.packed = stack_array(b, self.elem, count, "wpack")
            self.stack_bytes += count * self.esize
        self.tile_packed = True
        U.memset_zero(b, self.packed, count * self.esize)
        with (
            U.for_range(b, 0, osize, name="pack.o") as o,
            U.for_range(b, 0, p.cg, name="pack.c") as c,
            U.for_range(b, 0, p.rows.k, name="pack.i") as i,
            U.for_range(b, 0, p.cols.k, name="pack.j") as j,
        ):
            src_o = b.add(o0, o)
            src = U.gep(b, self.w, self.elem, weight_index(b, p, g, src_o, c, i, j))
            blk, lane = b.udiv(o, U.i64(lanes)), b.urem(o, U.i64(lanes))
            at = U.index(b, (self._packed_index(U.i64(0), blk, c, i, j), 1), (lane, 1))
            b.store(b.load(src, typ=self.elem), U.gep(b, self.packed, self.elem, at))

    def pack_weights(self) -> None:
        """wp[g][block][c][i][j][lane] = W(g, block*lanes + lane, c, i, j), zero past og."""
        b, p, lanes = self.b, self.p, self.lanes
        n_blocks = -(-p.og // lanes)
        count = p.groups * n_blocks * p.cg * p.rows.k * p.cols.k * lanes
        self.packed = stack_array(b, self.elem, count, "wpack")
        self.stack_bytes += count * self.esize
        U.memset_zero(b, self.packed, count * self.esize)
        with (
            U.for_range(b, 0, p.groups, name="pack.g") as g,
            U.for_range(b, 0, p.og, name="pack.o") as o,
            U.for_range(b, 0, p.cg, name="pack.c") as c,
            U.for_range(b, 0, p.rows.k, name="pack.i") as i,
            U.for_range(b, 0, p.cols.k, name="pack.j") as j,
        ):
            src = U.gep(b, self.w, self.elem, weight_index(b, p, g, o, c, i, j))
            blk, lane = b.udiv(o, U.i64(lanes)), b.urem(o, U.i64(lanes))
            at = U.index(b, (self._packed_index(g, blk, c, i, j), 1), (lane, 1))
            b.store(b.load(src, typ=self.elem), U.gep(b, self.packed, self.elem, at))

    def channel_tile(self, g, o0, osize, y0, ry, cy, x0, sx, cx) -> None:
        b, p, lanes = self.b, self.p, self.lanes
        cols = p.cols
        nb = -(-osize // lanes)
        split = self._split(nb * ry * sx, nb * cols.k + 2)
        acc = self._slots((nb, ry, sx, split), "c")
        # input column (relative to x0*s - pad) -> the (t, j) pairs that read it
        readers: dict[int, list[tuple[int, int]]] = {}
        for t in range(sx):
            for j in cols.taps(x0 + t) if cx else range(cols.k):
                readers.setdefault(t * cols.stride + j * cols.dilation, []).append((t, j))
        used_j = sorted({j for pairs in readers.values() for _, j in pairs})
        blk0 = b.udiv(o0, U.i64(lanes), name="blk0")
        # where the tile's weights are packed: with the other groups' and blocks', or alone
        pg, pblk = (U.i64(0), U.i64(0)) if self.tile_packed else (g, blk0)

        blk_stride = p.cg * p.rows.k * cols.k * lanes

        def taps(c, c_ptr, i, live) -> None:
            w_base = U.gep(b, self.packed, self.elem, self._packed_index(pg, pblk, c, i, 0))
            wv = {
                (j, k): U.load_vec(
                    b, U.gep(b, w_base, self.elem, k * blk_stride + j * lanes), self.vt
                )
                for j in used_j
                for k in range(nb)
            }
            keys = [
                (k, r, t, q)
                for k in range(nb)
                for r in live
                for t in range(sx)
                for q in range(split)
            ]
            vals = {key: b.load(acc[key], typ=self.vt) for key in keys}
            for r in live:
                row = U.gep(
                    b, self.row_ptr(c_ptr, y0, r, i), self.elem, U.index(b, (x0, cols.stride))
                )
                for col in sorted(readers):
                    xs = b.load(U.gep(b, row, self.elem, col - cols.pad), typ=self.elem, name="x")
                    xb = U.splat(b, xs, lanes, name="x.bc")
                    for t, j in readers[col]:
                        for k in range(nb):
                            key = (k, r, t, j % split)
                            vals[key] = U.fmuladd(b, xb, wv[j, k], vals[key], name="acc")
            for key in keys:
                b.store(vals[key], acc[key])

        if readers:
            with U.for_range(b, 0, p.cg, name="conv.c", hints=U.NO_UNROLL) as c:
                c_ptr = self.channel_ptr(g, c)
                for ilo, ihi, live in self.i_intervals(y0, ry, cy):
                    with U.for_range(b, ilo, ihi, name="conv.i", hints=U.NO_UNROLL) as i:
                        taps(c, c_ptr, i, live)
        for k in range(nb):
            act = min(lanes, osize - k * lanes)
            o_first = U.index(b, (g, p.og), (o0, 1), k * lanes)
            bias = None
            if self.epi.bias:
                bias = U.load_vec(b, U.gep(b, self.ptrs["bias"], self.elem, o_first), self.vt, act)
            for r in range(ry):
                row = U.index(b, (o_first, p.out_plane), (y0, cols.n_out), (x0, 1), r * cols.n_out)
                for t0 in range(0, sx, lanes):
                    width = min(lanes, sx - t0)
                    scratch = self.column_scratch()
                    for t in range(t0, t0 + width):
                        total = self._total([acc[k, r, t, q] for q in range(split)])
                        value = self.epi.apply(b, total, bias, None)
                        b.store(value, U.gep(b, scratch, self.vt, t - t0))
                    dst = U.gep(b, self.out_n, self.elem, U.index(b, (row, 1), t0))
                    b.call(self.rows_fn(), [dst, scratch, U.i64(width), U.i64(act)])

    def column_scratch(self) -> ir.Value:
        """`lanes` vectors on the stack: a tile's columns on their way to rows_fn."""
        if self.scratch is None:
            self.scratch = stack_array(self.b, self.vt, self.lanes, "columns")
            self.stack_bytes += self.lanes * self.lanes * self.esize
        return self.scratch

    def rows_fn(self) -> ir.Function:
        """`void <kernel>.rows(ptr dst, ptr cols, i64 width, i64 act)`: cols holds `width`
        column vectors (lane q: channel q); channel q's run of columns is stored at
        dst + q * out_plane, for q < act. Transposed in registers, so each channel's row is
        one contiguous (masked) store: scattering lanes to 16 rows costs more and touches 16
        cache lines per store. One copy per kernel, called by every tile (emitted in each
        tile, the transposes made up most of a kernel's code)."""
        if self.rows is not None:
            return self.rows
        b0, lanes, vt = self.b, self.lanes, self.vt
        module = b0.module
        fnty = ir.FunctionType(U.VOID, [U.PTR, U.PTR, U.I64, U.I64])
        fn = ir.Function(module, fnty, f"{b0.function.name}.rows")
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        dst, cols, width, act = fn.args
        for a in (dst, cols):
            a.add_attribute("noalias")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        vectors = [b.load(U.gep(b, cols, vt, t), typ=vt) for t in range(lanes)]
        by_channel = U.transpose_square(b, vectors)
        mask = U.lanes_below(b, width, lanes)
        store = U.intrinsic(
            module, "llvm.masked.store", U.VOID, [vt, U.PTR, mask.type], [vt, U.PTR]
        )
        for q in range(lanes):
            with b.if_then(b.icmp_signed("<", U.i64(q), act)):
                at = U.gep(b, dst, self.elem, q * self.p.out_plane)
                U.with_align(b.call(store, [by_channel[q], at, mask]), 1, self.esize)
        b.ret_void()
        self.rows = fn
        return fn

"""The cache-blocked matmul schedule, for products whose operands outgrow the caches.

out[b] = op(A[b]) @ op(B[b]) for A @ B, A^T @ B and A @ B^T (not A^T @ B^T), float32.

A work unit is a block of MC result rows x NC result columns of one batch matrix. Per unit,
k is cut into blocks of KC in increasing order; per k block the unit packs its KC x NC slice
of op(B) into a stack buffer, in strips of NR = NV vectors ([strip][k][NR], contiguous, the
short last strip padded with zeros; B^T is transposed on the way, 16 x 16 lanes at a time),
then runs an MR x NV register tile (rank-1 updates: NV vector loads from the packed strip, MR
broadcasts from A read in place) for every row tile of the unit against every strip. A strip
(KC x NR) stays in L1 across the row tiles; the unit's rows of A for the k block stay in L2
across the strips. Between k blocks the partial sums wait in a stack buffer of the unit's
MC x NC results; the last k block applies the epilogue and writes `out`, once.

Each result element is a chain of fused multiply-adds over k in increasing order starting
from zero (a partial sum is stored and reloaded exactly), the same whatever the units, so
any split of [lo, hi) gives bitwise the same result. Scratch lives on the caller's stack
(entry allocas), so concurrent units share nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from graphc.codegen import irutil as U
from graphc.codegen.kernels.common import define_kernel, stack_array
from graphc.passes.gemm_tiles import BlockedPlan, ceil_div


def emit_blocked(*, module, name, geo, elem, roles, epi, target, lanes, plan: BlockedPlan):
    """Emit the blocked kernel with `plan` (gemm_tiles.plan_blocked); returns (extent, unit
    description, schedule, stack bytes)."""
    p = plan
    if p.lanes != lanes:
        raise ValueError(f"{name}: a blocked plan for {p.lanes}-lane vectors, emitted with {lanes}")
    ncb, nrb = ceil_div(geo.n, p.nc), ceil_div(geo.m, p.mc)
    nkb = ceil_div(geo.k, p.kc)
    extent = geo.batch * ncb * nrb
    kf = define_kernel(module, name, roles, extent, target)
    b = kf.builder
    vt = U.vec(elem, lanes)
    packed = stack_array(b, elem, p.kc * p.nc, "bpack")
    cbuf = stack_array(b, elem, p.mc * p.nc, "partial") if nkb > 1 else None
    slots = [[U.entry_alloca(b, vt, f"acc.{r}.{v}") for v in range(p.nv)] for r in range(p.mr)]
    e = _Blocked(geo, p, elem, vt, epi, kf.ptrs, packed, cbuf, slots, nkb)
    with U.for_range(b, kf.lo, kf.hi, name="mm.unit", hints=U.NO_VECTORIZE) as u:
        per_batch = ncb * nrb
        if geo.batch > 1:
            bidx = b.udiv(u, U.i64(per_batch), name="bidx")
            rest = b.urem(u, U.i64(per_batch), name="rest")
        else:
            bidx, rest = U.i64(0), u
        cb = b.udiv(rest, U.i64(nrb), name="cb")
        rb = b.urem(rest, U.i64(nrb), name="rb")
        e.unit(b, bidx, cb, rb)
    b.ret_void()
    unit = f"{p.mc} result rows x {p.nc} result columns"
    return extent, unit, p.describe(geo), p.stack_bytes(geo.k)


def _min(b: ir.IRBuilder, x: ir.Value, y: ir.Value, name: str) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y, name=name)


def _masked_load(b: ir.IRBuilder, ptr: ir.Value, vt: ir.VectorType, mask: ir.Value, name=""):
    fn = U.intrinsic(
        b.module, "llvm.masked.load", vt, [U.PTR, U.vec(U.I1, vt.count), vt], [vt, U.PTR]
    )
    call = b.call(fn, [ptr, mask, ir.Constant(vt, None)], name=name)
    call.arg_attributes.setdefault(0, ir.values.ArgumentAttributes()).align = 4
    return call


def _masked_store(b: ir.IRBuilder, value: ir.Value, ptr: ir.Value, mask: ir.Value) -> None:
    vt = value.type
    fn = U.intrinsic(
        b.module, "llvm.masked.store", U.VOID, [vt, U.PTR, U.vec(U.I1, vt.count)], [vt, U.PTR]
    )
    call = b.call(fn, [value, ptr, mask])
    call.arg_attributes.setdefault(1, ir.values.ArgumentAttributes()).align = 4


@dataclass
class _Blocked:
    geo: object
    p: BlockedPlan
    elem: ir.Type
    vt: ir.VectorType
    epi: object
    args: dict
    packed: ir.Value
    cbuf: ir.Value | None
    slots: list
    nkb: int

    def unit(self, b, bidx, cb, rb):
        g, p = self.geo, self.p
        sizes = {"out": g.m * g.n, "a": g.m * g.k, "b": g.k * g.n}
        ptrs = dict(self.args)
        if g.batch > 1:
            for role, size in sizes.items():
                ptrs[role] = U.gep(b, ptrs[role], self.elem, U.index(b, (bidx, size)))
        c0 = b.mul(cb, U.i64(p.nc), name="c0")
        r0 = b.mul(rb, U.i64(p.mc), name="r0")
        ncols = _min(b, b.sub(U.i64(g.n), c0), U.i64(p.nc), name="ncols")
        nrows = _min(b, b.sub(U.i64(g.m), r0), U.i64(p.mc), name="nrows")
        strips = b.udiv(b.add(ncols, U.i64(p.nr - 1)), U.i64(p.nr), name="strips")
        full_tiles = b.udiv(nrows, U.i64(p.mr), name="rtiles")
        rem = g.m % p.mr  # only the last row block can end in a short row tile
        with U.for_range(b, 0, self.nkb, name="mm.kb", hints=U.NO_VECTORIZE) as kb:
            k0 = b.mul(kb, U.i64(p.kc), name="k0")
            kc = _min(b, b.sub(U.i64(g.k), k0), U.i64(p.kc), name="kc")
            first = b.icmp_signed("==", kb, U.i64(0), name="first")
            last = b.icmp_signed("==", kb, U.i64(self.nkb - 1), name="last")
            self.pack(b, ptrs, c0, ncols, strips, k0, kc)
            blk = _KBlock(ptrs, c0, r0, ncols, k0, kc, first, last)
            with U.for_range(b, 0, strips, name="mm.strip", hints=U.NO_VECTORIZE) as s:
                with U.for_range(b, 0, full_tiles, name="mm.rtile", hints=U.NO_VECTORIZE) as t:
                    self.tile(b, blk, b.mul(t, U.i64(p.mr)), p.mr, s)
                if rem:
                    has_rem = b.icmp_signed("<", b.mul(full_tiles, U.i64(p.mr)), nrows)
                    with b.if_then(has_rem):
                        self.tile(b, blk, b.mul(full_tiles, U.i64(p.mr)), rem, s)

    # ---- packing op(B)[k0:k0+kc, c0:c0+ncols] into [strip][k][NR] ----------------------------

    def pack(self, b, ptrs, c0, ncols, strips, k0, kc):
        g, p, lanes = self.geo, self.p, self.vt.count
        nvec = b.udiv(b.add(ncols, U.i64(lanes - 1)), U.i64(lanes), name="pack.nvec")
        if not g.trans_b:
            # rows of B: vector copies, the columns past the end read as zeros
            with U.for_range(b, 0, nvec, name="pack.v", hints=U.NO_VECTORIZE) as v:
                col = b.mul(v, U.i64(lanes))
                mask = U.lanes_below(b, b.sub(ncols, col), lanes)
                s, vin = b.udiv(v, U.i64(p.nv)), b.urem(v, U.i64(p.nv))
                dst0 = U.index(b, (s, p.kc * p.nr), (vin, lanes))
                src0 = U.index(b, (k0, g.n), (c0, 1), (col, 1))
                with U.for_range(b, 0, kc, name="pack.k", hints=U.NO_UNROLL) as k:
                    src = U.gep(b, ptrs["b"], self.elem, U.index(b, (src0, 1), (k, g.n)))
                    x = _masked_load(b, src, self.vt, mask, name="brow")
                    dst = U.gep(b, self.packed, self.elem, U.index(b, (dst0, 1), (k, p.nr)))
                    b.store(x, dst, align=64)
            return
        # B^T stored (n, k): lanes x lanes blocks transposed; rows past n read as zeros
        full_k = b.udiv(kc, U.i64(lanes), name="pack.kv")
        tail = g.k % lanes  # only the last k block has a tail
        with U.for_range(b, 0, nvec, name="pack.v", hints=U.NO_VECTORIZE) as v:
            col = b.mul(v, U.i64(lanes))
            s, vin = b.udiv(v, U.i64(p.nv)), b.urem(v, U.i64(p.nv))
            dst0 = U.index(b, (s, p.kc * p.nr), (vin, lanes))
            live = [
                b.icmp_signed("<", b.add(col, U.i64(j)), ncols, name=f"live{j}")
                for j in range(lanes)
            ]
            with U.for_range(b, 0, full_k, name="pack.kt", hints=U.NO_UNROLL) as kt:
                self._pack_block(
                    b,
                    ptrs,
                    c0,
                    col,
                    live,
                    b.add(k0, b.mul(kt, U.i64(lanes))),
                    b.mul(kt, U.i64(lanes)),
                    dst0,
                    lanes,
                )
            if tail:
                kdone = b.mul(full_k, U.i64(lanes))
                with b.if_then(b.icmp_signed("<", kdone, kc)):
                    self._pack_block(b, ptrs, c0, col, live, b.add(k0, kdone), kdone, dst0, tail)

    def _pack_block(self, b, ptrs, c0, col, live, kabs, krel, dst0, active):
        g, p, lanes = self.geo, self.p, self.vt.count
        rows = []
        for j in range(lanes):
            src = U.gep(
                b, ptrs["b"], self.elem, U.index(b, (c0, g.k), (col, g.k), j * g.k, (kabs, 1))
            )
            rows.append(U.load_vec_where(b, src, self.vt, active, live[j], name=f"bt{j}"))
        cols = U.transpose_square(b, rows)
        for t in range(active):
            dst = U.gep(b, self.packed, self.elem, U.index(b, (dst0, 1), (krel, p.nr), t * p.nr))
            b.store(cols[t], dst, align=64)

    # ---- one register tile against one strip, over the k block --------------------------------

    def a_ptr(self, b, ptrs, r, k0):
        g = self.geo
        idx = U.index(b, (k0, g.m), (r, 1)) if g.trans_a else U.index(b, (r, g.k), (k0, 1))
        return U.gep(b, ptrs["a"], self.elem, idx)

    def tile(self, b, blk, rt0, nrows, s):
        """Rows blk.r0 + rt0 + [0, nrows) (rt0 relative to the unit) x strip s."""
        g, p, lanes = self.geo, self.p, self.vt.count
        acc = self.slots[:nrows]
        zero = ir.Constant(self.vt, None)
        cb0 = b.mul(s, U.i64(p.nr), name="scol")  # strip column, relative to the unit

        def cbuf_ptr(r, v):
            return U.gep(
                b, self.cbuf, self.elem, U.index(b, (rt0, p.nc), r * p.nc, (cb0, 1), v * lanes)
            )

        def init_zero():
            for row in acc:
                for slot in row:
                    b.store(zero, slot)

        if self.cbuf is None:
            init_zero()
        else:
            with b.if_else(blk.first) as (then, otherwise):
                with then:
                    init_zero()
                with otherwise:
                    for r, row in enumerate(acc):
                        for v, slot in enumerate(row):
                            b.store(b.load(cbuf_ptr(r, v), typ=self.vt, align=64), slot)
        r = b.add(blk.r0, rt0, name="row0")
        a_rows = [self.a_ptr(b, blk.ptrs, b.add(r, U.i64(i)), blk.k0) for i in range(nrows)]
        a_step = g.m if g.trans_a else 1
        strip = U.gep(b, self.packed, self.elem, b.mul(s, U.i64(p.kc * p.nr)), name="strip")
        with U.for_range(b, 0, blk.kc, name="mm.k", hints=U.NO_UNROLL) as k:
            qrow = U.index(b, (k, p.nr))
            q = [
                b.load(
                    U.gep(b, strip, self.elem, b.add(qrow, U.i64(v * lanes))),
                    typ=self.vt,
                    align=64,
                    name=f"q{v}",
                )
                for v in range(p.nv)
            ]
            ak = k if a_step == 1 else b.mul(k, U.i64(a_step))
            for i in range(nrows):
                x = b.load(U.gep(b, a_rows[i], self.elem, ak), typ=self.elem, name=f"a{i}")
                xb = U.splat(b, x, lanes, name=f"a{i}.bc")
                for v in range(p.nv):
                    slot = acc[i][v]
                    b.store(U.fmuladd(b, xb, q[v], b.load(slot, typ=self.vt)), slot)

        def to_out():
            for i in range(nrows):
                row = b.add(r, U.i64(i))
                for v in range(p.nv):
                    crel = b.add(cb0, U.i64(v * lanes))
                    mask = U.lanes_below(b, b.sub(blk.ncols, crel), lanes)
                    col = b.add(blk.c0, crel)
                    dst = U.gep(b, blk.ptrs["out"], self.elem, U.index(b, (row, g.n), (col, 1)))
                    bias = (
                        _masked_load(b, U.gep(b, blk.ptrs["bias"], self.elem, col), self.vt, mask)
                        if self.epi.bias
                        else None
                    )
                    old = _masked_load(b, dst, self.vt, mask) if self.epi.accumulate else None
                    val = b.load(acc[i][v], typ=self.vt)
                    _masked_store(b, self.epi.apply(b, val, bias, old), dst, mask)

        if self.cbuf is None:
            to_out()
            return
        with b.if_else(blk.last) as (then, otherwise):
            with then:
                to_out()
            with otherwise:
                for i, row in enumerate(acc):
                    for v, slot in enumerate(row):
                        b.store(b.load(slot, typ=self.vt), cbuf_ptr(i, v), align=64)


@dataclass
class _KBlock:
    """Runtime values of one (unit, k block)."""

    ptrs: dict
    c0: ir.Value
    r0: ir.Value
    ncols: ir.Value
    k0: ir.Value
    kc: ir.Value
    first: ir.Value
    last: ir.Value

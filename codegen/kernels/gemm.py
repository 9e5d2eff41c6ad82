"""Matrix multiplication kernels: out[b] = op(A[b]) @ op(B[b]) (+ bias) (relu) (+ out[b]).

Four schedules, chosen from the transpose flags, the size and the target by passes/tiles.py
(the tile models are in passes/gemm_tiles.py):
- "cache-blocked" (gemm_blocked.py; A @ B, A^T @ B, A @ B^T of at least BLOCKED_MIN_MACS
  multiply-adds): units of MC x NC results, k blocks, op(B) packed on the stack per k block,
  an outer-product register tile; for operands larger than the caches.
- "outer" (A @ B, A^T @ B): vectors along the columns of the result. A register tile of
  MR rows x NV vectors accumulates rank-1 updates: per k, NV vector loads of a row of B and
  MR broadcasts of A feed MR*NV FMAs. No packing; the tile is picked by a small cost model
  (gemm_tiles.choose_outer_tile).
- "outer, transposed output" (A^T @ B^T): the same tile computing out^T = B @ A, so vectors
  run along the rows of the result; stores are per element.
- "dot" (A @ B^T): both operands are contiguous along k, so vectors run along k: an MR x NR
  tile of dot products, reduced at the end by one transposing reduction (lane sums of up to
  `lanes` accumulators at once, in a fixed order). A unit holds up to 4 row tiles and loops
  over B's row tiles outside them, so each part of B (a weight, usually) is read from L2
  once per 4 row tiles.
The generic path (float64, or when asked) is a scalar loop nest, reduction innermost.

Work units are blocks of result rows (transposed-output schedule: of result columns;
blocked schedule: of rows x columns) per batch matrix; each result element is summed over k
in increasing order (vector schedules: per lane, then the fixed lane reduction), whatever
the split of the units.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from graphc.codegen import irutil as U
from graphc.codegen.kernels.common import (
    KernelFunction,
    KernelSpec,
    check_tiles,
    define_kernel,
    element_type,
)
from graphc.codegen.kernels.epilogue import Epilogue
from graphc.codegen.kernels.gemm_blocked import emit_blocked
from graphc.codegen.target import Target
from graphc.passes.gemm_tiles import (
    BlockedPlan,
    DotPlan,
    MatmulGeometry,
    OuterPlan,
    matmul_geometry,
)
from graphc.passes.tiles import Tiles, matmul_tiles


def emit_matmul(
    module: ir.Module,
    name: str,
    *,
    a_shape,
    b_shape,
    trans_a: bool,
    trans_b: bool,
    dtype,
    bias: bool = False,
    relu: bool = False,
    accumulate: bool = False,
    target: Target,
    generic: bool = False,
    blocked: bool | None = None,
    tiles: Tiles | None = None,
) -> KernelSpec:
    """Emit `void name(out, a, b[, bias], lo, hi)`; see the module docstring.

    Semantics: out = relu(op(a) @ op(b) + bias) (+ out if `accumulate`), bias per column.
    `tiles`: the plan passes/tiles.py recorded (None: plan here, as it would, with `blocked`
    forcing the cache-blocked schedule on or off). `generic=True` forces the scalar path
    (tests use it to cover that path in float32).
    """
    geo = matmul_geometry(a_shape, b_shape, trans_a, trans_b)
    dt, elem = element_type(dtype)
    roles = ("out", "a", "b") + (("bias",) if bias else ())
    epi = Epilogue(bias=bias, relu=relu, accumulate=accumulate)
    flops = 2 * geo.batch * geo.m * geo.n * geo.k
    lanes = target.lanes(dt)
    common = dict(module=module, name=name, geo=geo, elem=elem, roles=roles, epi=epi)
    stack = 0
    tiles = tiles or matmul_tiles(geo, dt.name, target.vector_unit(), blocked)
    check_tiles(tiles, "matmul", (BlockedPlan, DotPlan, OuterPlan), lanes)
    plan = None if generic else tiles.plan
    if plan is None:
        extent, unit, sched = _emit_generic(**common, target=target)
        lanes = 1
    elif isinstance(plan, BlockedPlan):
        extent, unit, sched, stack = emit_blocked(**common, target=target, lanes=lanes, plan=plan)
    elif isinstance(plan, DotPlan):
        extent, unit, sched = _emit_dot(**common, target=target, lanes=lanes, plan=plan)
    elif isinstance(plan, OuterPlan):
        extent, unit, sched = _emit_outer(**common, target=target, lanes=lanes, plan=plan)
    else:
        raise ValueError(f"{name}: {type(plan).__name__} is not a matmul plan")
    return KernelSpec(
        name=name,
        op="matmul",
        args=roles,
        parallel_extent=extent,
        unit=unit,
        flops=flops,
        dtype=dt.name,
        schedule=f"{sched}; epilogue: {epi.describe()}",
        vector_lanes=lanes,
        stack_bytes=stack,
    )


def _batch_ptrs(kf: KernelFunction, elem, geo: MatmulGeometry, bidx) -> dict:
    b = kf.builder
    sizes = {"out": geo.m * geo.n, "a": geo.m * geo.k, "b": geo.k * geo.n}
    ptrs = dict(kf.ptrs)
    if geo.batch > 1:
        for role, size in sizes.items():
            ptrs[role] = U.gep(b, kf.ptrs[role], elem, U.index(b, (bidx, size)), name=f"{role}.mat")
    return ptrs


def _split_unit(b: ir.IRBuilder, u, per_batch: int, batch: int):
    if batch == 1:
        return U.i64(0), u
    return b.udiv(u, U.i64(per_batch), name="bidx"), b.urem(u, U.i64(per_batch), name="tile")


# ---- generic scalar path ------------------------------------------------------------------


def _emit_generic(*, module, name, geo, elem, roles, epi, target):
    extent = geo.batch * geo.m
    kf = define_kernel(module, name, roles, extent, target)
    b = kf.builder
    acc = U.entry_alloca(b, elem, "acc")
    with U.for_range(b, kf.lo, kf.hi, name="mm.unit", hints=U.NO_VECTORIZE) as u:
        bidx, m = _split_unit(b, u, geo.m, geo.batch)
        p = _batch_ptrs(kf, elem, geo, bidx)
        with U.for_range(b, 0, geo.n, name="mm.n") as n:
            b.store(ir.Constant(elem, 0.0), acc)
            with U.for_range(b, 0, geo.k, name="mm.k") as kk:
                av = b.load(U.gep(b, p["a"], elem, U.index(b, *geo.a_index(m, kk))), typ=elem)
                bv = b.load(U.gep(b, p["b"], elem, U.index(b, *geo.b_index(kk, n))), typ=elem)
                b.store(U.fmuladd(b, av, bv, b.load(acc, typ=elem)), acc)
            dst = U.gep(b, p["out"], elem, U.index(b, (m, geo.n), (n, 1)))
            bias_v = b.load(U.gep(b, p["bias"], elem, n), typ=elem) if epi.bias else None
            old = b.load(dst, typ=elem) if epi.accumulate else None
            b.store(epi.apply(b, b.load(acc, typ=elem), bias_v, old), dst)
    b.ret_void()
    return extent, "one result row", "generic scalar loops (batch, m | n, k), k innermost"


def _row_blocks(b: ir.IRBuilder, tile, tiles: int, rows: int, mr: int, body) -> None:
    """body(r0, nrows) for row block `tile`: a full block, or the short last one."""
    r0 = b.mul(tile, U.i64(mr), name="r0")
    rem = rows % mr
    if not rem:
        body(r0, mr)
        return
    last = b.icmp_signed("==", tile, U.i64(tiles - 1), name="is.last")
    with b.if_else(last) as (short, full):
        with short:
            body(r0, rem)
        with full:
            body(r0, mr)


# ---- "outer": vectors along the result columns ---------------------------------------------


def _emit_outer(*, module, name, geo, elem, roles, epi, target, lanes, plan: OuterPlan):
    # A^T @ B^T: compute out^T = Bs @ As of the stored matrices: vectors along As's rows
    # (result rows m), broadcasts from Bs; the result is then stored element by element.
    transposed = geo.trans_a and geo.trans_b
    rows, cols = (geo.n, geo.m) if transposed else (geo.m, geo.n)
    mr, nv = plan.mr, plan.nv
    tiles = -(-rows // mr)
    extent = geo.batch * tiles
    kf = define_kernel(module, name, roles, extent, target)
    b = kf.builder
    vt = U.vec(elem, lanes)
    slots = [[U.entry_alloca(b, vt, f"acc.{r}.{v}") for v in range(nv)] for r in range(mr)]
    ctx = _Outer(geo, elem, vt, lanes, epi, transposed, rows, cols, mr, nv, slots)
    with U.for_range(b, kf.lo, kf.hi, name="mm.unit", hints=U.NO_VECTORIZE) as u:
        bidx, tile = _split_unit(b, u, tiles, geo.batch)
        ptrs = _batch_ptrs(kf, elem, geo, bidx)
        _row_blocks(b, tile, tiles, rows, mr, lambda r0, nr: ctx.row_block(b, ptrs, r0, nr))
    b.ret_void()
    unit = f"{mr} result {'columns' if transposed else 'rows'}"
    sched = (
        f"outer-product tile {mr} x {nv}x{lanes} (rows x vectors of f32 lanes), "
        f"{mr * nv} vector accumulators, k loop over {geo.k}"
    )
    if transposed:
        sched += ", computed as out^T = B A (A^T @ B^T), per-element stores"
    return extent, unit, sched


@dataclass
class _Outer:
    geo: MatmulGeometry
    elem: ir.Type
    vt: ir.VectorType
    lanes: int
    epi: object
    transposed: bool
    rows: int
    cols: int
    mr: int
    nv: int
    slots: list

    # operand addressing in the tile's orientation: P[r, k] is broadcast, Q[k, c] is a vector
    def p_ptr(self, b, ptrs, r, kk):
        g = self.geo
        if self.transposed:  # P = B stored (n, k): P[r=n, k]
            return U.gep(b, ptrs["b"], self.elem, U.index(b, (r, g.k), (kk, 1)))
        return U.gep(b, ptrs["a"], self.elem, U.index(b, *g.a_index(r, kk)))

    def q_ptr(self, b, ptrs, kk, c):
        g = self.geo
        if self.transposed:  # Q = A stored (k, m): Q[k, c=m]
            return U.gep(b, ptrs["a"], self.elem, U.index(b, (kk, g.m), (c, 1)))
        return U.gep(b, ptrs["b"], self.elem, U.index(b, (kk, g.n), (c, 1)))

    def row_block(self, b, ptrs, r0, nrows):
        full_vecs, tail = divmod(self.cols, self.lanes)
        n_full_tiles = full_vecs // self.nv
        step = self.nv * self.lanes
        if n_full_tiles:
            with U.for_range(b, 0, n_full_tiles, name="mm.ntile", hints=U.NO_VECTORIZE) as j:
                c0 = b.mul(j, U.i64(step), name="c0")
                self.tile(b, ptrs, r0, nrows, c0, [self.lanes] * self.nv)
        rest = [self.lanes] * (full_vecs - n_full_tiles * self.nv) + ([tail] if tail else [])
        if rest:
            self.tile(b, ptrs, r0, nrows, U.i64(n_full_tiles * step), rest)

    def tile(self, b, ptrs, r0, nrows, c0, actives):
        zero = ir.Constant(self.vt, None)
        acc = [row[: len(actives)] for row in self.slots[:nrows]]
        for row in acc:
            for slot in row:
                b.store(zero, slot)
        with U.for_range(b, 0, self.geo.k, name="mm.k", hints=U.NO_UNROLL) as kk:
            qv = []
            for v, act in enumerate(actives):
                c = b.add(c0, U.i64(v * self.lanes))
                qv.append(U.load_vec(b, self.q_ptr(b, ptrs, kk, c), self.vt, act, name=f"q{v}"))
            for r in range(nrows):
                rr = b.add(r0, U.i64(r))
                p = b.load(self.p_ptr(b, ptrs, rr, kk), typ=self.elem, name=f"p{r}")
                pb = U.splat(b, p, self.lanes, name=f"p{r}.bc")
                for v in range(len(actives)):
                    a = b.load(acc[r][v], typ=self.vt)
                    b.store(U.fmuladd(b, pb, qv[v], a, name=f"acc.{r}.{v}"), acc[r][v])
        for r in range(nrows):
            rr = b.add(r0, U.i64(r))
            for v, act in enumerate(actives):
                c = b.add(c0, U.i64(v * self.lanes))
                val = b.load(acc[r][v], typ=self.vt)
                if self.transposed:
                    self.store_transposed(b, ptrs, rr, c, val, act)
                else:
                    self.store_rows(b, ptrs, rr, c, val, act)

    def store_rows(self, b, ptrs, r, c, val, act):
        dst = U.gep(b, ptrs["out"], self.elem, U.index(b, (r, self.geo.n), (c, 1)))
        bias = (
            U.load_vec(b, U.gep(b, ptrs["bias"], self.elem, c), self.vt, act)
            if self.epi.bias
            else None
        )
        old = U.load_vec(b, dst, self.vt, act) if self.epi.accumulate else None
        U.store_vec(b, self.epi.apply(b, val, bias, old), dst, act)

    def store_transposed(self, b, ptrs, r, c, val, act):
        # tile row r is result column n = r; lane j is result row m = c + j
        bias = (
            b.load(U.gep(b, ptrs["bias"], self.elem, r), typ=self.elem) if self.epi.bias else None
        )
        for j in range(act):
            m = b.add(c, U.i64(j))
            dst = U.gep(b, ptrs["out"], self.elem, U.index(b, (m, self.geo.n), (r, 1)))
            x = b.extract_element(val, ir.Constant(U.I32, j))
            old = b.load(dst, typ=self.elem) if self.epi.accumulate else None
            b.store(self.epi.apply(b, x, bias, old), dst)


# ---- "dot": vectors along k, for A @ B^T ----------------------------------------------------


def _emit_dot(*, module, name, geo, elem, roles, epi, target, lanes, plan: DotPlan):
    # A unit is q row tiles, and the column tiles are its outer loop (gemm_tiles.dot_row_tiles).
    mr, nr, q = plan.mr, plan.nr, plan.q
    rows = mr * q
    tiles = -(-geo.m // rows)
    extent = geo.batch * tiles
    kf = define_kernel(module, name, roles, extent, target)
    b = kf.builder
    vt = U.vec(elem, lanes)
    slots = [[U.entry_alloca(b, vt, f"acc.{i}.{j}") for j in range(nr)] for i in range(mr)]
    ctx = _Dot(geo, elem, vt, lanes, epi, mr, nr, slots)
    with U.for_range(b, kf.lo, kf.hi, name="mm.unit", hints=U.NO_VECTORIZE) as u:
        bidx, tile = _split_unit(b, u, tiles, geo.batch)
        ptrs = _batch_ptrs(kf, elem, geo, bidx)
        _row_blocks(b, tile, tiles, geo.m, rows, lambda r0, n: ctx.row_block(b, ptrs, r0, n))
    b.ret_void()
    sched = (
        f"dot-product tile {mr} x {nr} (rows of A x rows of B), vectors of {lanes} along k "
        f"({geo.k // lanes} full + {'1 masked' if geo.k % lanes else '0'} steps), "
        f"{mr * nr} accumulators reduced together by a transposing lane sum; "
        f"units of {q} row tiles, column tiles outermost"
    )
    return extent, f"{rows} result rows", sched


@dataclass
class _Dot:
    geo: MatmulGeometry
    elem: ir.Type
    vt: ir.VectorType
    lanes: int
    epi: object
    mr: int
    nr: int
    slots: list

    def row_block(self, b, ptrs, r0, nrows):
        full, rem = divmod(self.geo.n, self.nr)
        if full:
            with U.for_range(b, 0, full, name="mm.ntile", hints=U.NO_VECTORIZE) as j:
                n0 = b.mul(j, U.i64(self.nr), name="n0")
                self.sub_tiles(b, ptrs, r0, nrows, n0, self.nr)
        if rem:
            self.sub_tiles(b, ptrs, r0, nrows, U.i64(full * self.nr), rem)

    def sub_tiles(self, b, ptrs, r0, nrows, n0, ncols):
        """The MR-row tiles of a unit's rows against one column tile."""
        full, rem = divmod(nrows, self.mr)
        if full == 1:
            self.tile(b, ptrs, r0, self.mr, n0, ncols)
        elif full > 1:
            with U.for_range(b, 0, full, name="mm.sub", hints=U.NO_UNROLL) as t:
                self.tile(b, ptrs, U.index(b, (r0, 1), (t, self.mr)), self.mr, n0, ncols)
        if rem:
            self.tile(b, ptrs, U.index(b, (r0, 1), full * self.mr), rem, n0, ncols)

    def _step(self, b, ptrs, r0, nrows, n0, ncols, off, active):
        k = self.geo.k
        av = [
            U.load_vec(
                b,
                U.gep(b, ptrs["a"], self.elem, U.index(b, (b.add(r0, U.i64(i)), k), (off, 1))),
                self.vt,
                active,
                name=f"a{i}",
            )
            for i in range(nrows)
        ]
        for j in range(ncols):
            row = b.add(n0, U.i64(j))
            bv = U.load_vec(
                b,
                U.gep(b, ptrs["b"], self.elem, U.index(b, (row, k), (off, 1))),
                self.vt,
                active,
                name=f"b{j}",
            )
            for i in range(nrows):
                slot = self.slots[i][j]
                b.store(
                    U.fmuladd(b, av[i], bv, b.load(slot, typ=self.vt), name=f"acc.{i}.{j}"), slot
                )

    def tile(self, b, ptrs, r0, nrows, n0, ncols):
        zero = ir.Constant(self.vt, None)
        for i in range(nrows):
            for j in range(ncols):
                b.store(zero, self.slots[i][j])
        full, tail = divmod(self.geo.k, self.lanes)
        if full:
            with U.for_range(b, 0, full, name="mm.kv", hints=U.NO_UNROLL) as kv:
                off = b.mul(kv, U.i64(self.lanes), name="koff")
                self._step(b, ptrs, r0, nrows, n0, ncols, off, None)
        if tail:
            self._step(b, ptrs, r0, nrows, n0, ncols, U.i64(full * self.lanes), tail)
        vals = [b.load(self.slots[i][j], typ=self.vt) for i in range(nrows) for j in range(ncols)]
        count = 1 << (len(vals) - 1).bit_length()
        sums = U.lane_sums(b, vals + [zero] * (count - len(vals)), name="dot")
        self.store(b, ptrs, r0, nrows, n0, ncols, sums)

    def store(self, b, ptrs, r0, nrows, n0, ncols, sums):
        row_t = U.vec(self.elem, ncols)
        for i in range(nrows):
            lanes = U.vconst(U.I32, tuple(i * ncols + j for j in range(ncols)))
            val = b.shuffle_vector(sums, sums, lanes, name=f"row{i}")
            r = b.add(r0, U.i64(i))
            dst = U.gep(b, ptrs["out"], self.elem, U.index(b, (r, self.geo.n), (n0, 1)))
            bias = (
                b.load(U.gep(b, ptrs["bias"], self.elem, n0), typ=row_t, align=4)
                if self.epi.bias
                else None
            )
            old = b.load(dst, typ=row_t, align=4) if self.epi.accumulate else None
            b.store(self.epi.apply(b, val, bias, old), dst, align=4)

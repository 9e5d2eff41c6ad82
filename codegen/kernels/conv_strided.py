"""conv2d_input_grad at stride > 1 with explicit vectors, by output phase.

    dx[n, g*cg + c, y, x] = sum over o (of the group), i, j (in that order) of
        g[n, g*og + o, oy, ox] * w[g*og + o, c, i, j],  y = oy*sh + i*dh - ph, x = ox*sw + j*dw - pw

A column x = sw*b + rx (phase rx) takes only the taps j with j*dw = rx + pw (mod sw), each
from cotangent column b + (rx + pw - j*dw)/sw (passes/conv_tiles.PhaseAxis): for L
consecutive b of one phase that is a contiguous run of g, so a vector of them is a few FMAs
of plain vector loads with broadcast weights: no zero-stuffed input and no gathers. Rows are
split the same way. A register tile holds CT channels x SW column phases x V vectors; when
its sums are done, the phase vectors are interleaved in registers into consecutive columns
and stored as rows.

Loops: images (units) > groups > channel tiles > row phases > rows > column tiles > o >
the row phase's taps i (unrolled) > taps j (unrolled). Rows whose taps all read inside g take
a body without tests; the few near an edge test each tap's row at run time. Lanes whose
column falls outside g are masked loads (zeros), known when the tile is emitted; a zero
times an inf or NaN weight would be NaN where the reference has no product at all, so a
guard checks the weights first and takes conv_generic's exact loops if one is not finite.
"""

from __future__ import annotations

from functools import partial

from llvmlite import ir

from graphc.codegen import irutil as U
from graphc.codegen.kernels import conv_generic
from graphc.codegen.kernels.common import define_kernel
from graphc.codegen.target import Target
from graphc.passes.conv_tiles import ConvGeometry, PhaseConv, PhasePlan


def emit_phases(
    module: ir.Module,
    name: str,
    geo: ConvGeometry,
    p: PhaseConv,
    *,
    roles: tuple[str, ...],
    elem: ir.Type,
    target: Target,
    plan: PhasePlan,
) -> str:
    """Emit the kernel (roles: out, g, w); returns the schedule's description."""
    lanes = target.f32_lanes if elem == U.F32 else target.lanes("float64")
    kf = define_kernel(module, name, roles, p.batch, target)
    exact = partial(conv_generic.input_grad_loops, geo=geo, elem=elem, exact=True)
    conv_generic.nonfinite_guard(kf, "w", geo.o * geo.cg * geo.kh * geo.kw, elem, exact)
    e = _Phases(kf.builder, p, plan, elem, lanes, kf.ptrs)
    b = kf.builder
    g_plane, dx_plane = p.rows.n_g * p.cols.n_g, p.rows.n_out * p.cols.n_out
    kk = geo.kh * geo.kw
    with U.for_range(b, kf.lo, kf.hi, name="dx.n", hints=U.NO_VECTORIZE) as n:
        with U.for_range(b, 0, p.groups, name="dx.g", hints=U.NO_UNROLL) as grp:
            at_g = U.index(b, (n, p.groups * p.og * g_plane), (grp, p.og * g_plane))
            at_out = U.index(b, (n, p.groups * p.cg * dx_plane), (grp, p.cg * dx_plane))
            e.g_base = U.gep(b, kf.ptrs["g"], elem, at_g)
            e.out_base = U.gep(b, kf.ptrs["out"], elem, at_out)
            e.w_base = U.gep(b, kf.ptrs["w"], elem, U.index(b, (grp, p.og * p.cg * kk)))
            e.group()
    b.ret_void()
    return plan.describe(p, lanes)


class _Phases:
    def __init__(self, b: ir.IRBuilder, p: PhaseConv, plan: PhasePlan, elem, lanes: int, ptrs):
        self.b, self.p, self.plan, self.elem, self.lanes = b, p, plan, elem, lanes
        self.vt = U.vec(elem, lanes)
        self.ptrs = ptrs
        self.slots: dict = {}
        self.g_base = self.out_base = self.w_base = None

    # -- loops -------------------------------------------------------------------------------

    def group(self) -> None:
        b, p, ct = self.b, self.p, self.plan.ct
        full, rest = divmod(p.cg, ct)
        if full == 1:
            self.channels(U.i64(0), ct)
        elif full > 1:
            with U.for_range(b, 0, full, name="dx.ct", hints=U.NO_UNROLL) as t:
                self.channels(b.mul(t, U.i64(ct)), ct)
        if rest:
            self.channels(U.i64(full * ct), rest)

    def channels(self, c0, count: int) -> None:
        b, rows = self.b, self.p.rows
        for ry in range(rows.stride):
            n_rows = rows.count(ry)
            if not n_rows:
                continue
            lo, hi = rows.inside(ry)
            runs = [(0, lo, True), (lo, hi, False), (hi, n_rows, True)]
            for start, stop, tested in runs:
                if stop <= start:
                    continue
                name = f"dx.r{ry}" + (".edge" if tested else "")
                with U.for_range(b, start, stop, name=name, hints=U.NO_UNROLL) as a:
                    self.row(c0, count, ry, a, tested)

    def row(self, c0, count: int, ry: int, a, tested: bool) -> None:
        """Output row y = sh*a + ry of channels c0 .. c0+count-1, every column tile."""
        p, lanes, v = self.p, self.lanes, self.plan.v
        n_vecs = p.column_vectors(lanes)
        for v0 in range(0, n_vecs, v):
            self.tile(c0, count, ry, a, tested, v0 * lanes, min(v, n_vecs - v0))

    # -- one register tile -------------------------------------------------------------------

    def tile(self, c0, count: int, ry: int, a, tested: bool, b0: int, nv: int) -> None:
        b, p, elem = self.b, self.p, self.elem
        cols, rows = p.cols, p.rows
        sw = cols.stride
        keys = [(c, rx, v) for c in range(count) for rx in range(sw) for v in range(nv)]
        acc = {}
        for key in keys:
            slot = self.slots.get(key)
            if slot is None:
                slot = self.slots[key] = U.entry_alloca(
                    b, self.vt, "acc." + ".".join(map(str, key))
                )
            b.store(ir.Constant(self.vt, None), slot)
            acc[key] = slot
        kk = rows.k * cols.k
        with U.for_range(b, 0, p.og, name="dx.o", hints=U.NO_UNROLL) as o:
            g_o = U.gep(b, self.g_base, elem, U.index(b, (o, rows.n_g * cols.n_g)))
            w_o = U.gep(b, self.w_base, elem, U.index(b, (o, p.cg * kk), (c0, kk)))
            for i, off_i in rows.phase_taps(ry):
                oy = U.index(b, (a, 1), off_i)
                if tested:
                    ok = b.icmp_unsigned("<", oy, U.i64(rows.n_g), name="tap.inside")
                    with b.if_then(ok):
                        self.taps(acc, keys, count, b0, nv, g_o, w_o, oy, i)
                else:
                    self.taps(acc, keys, count, b0, nv, g_o, w_o, oy, i)
        self.store(acc, count, c0, ry, a, b0, nv)

    def taps(self, acc, keys, count: int, b0: int, nv: int, g_o, w_o, oy, i: int) -> None:
        """The FMAs of kernel row i (cotangent row oy) for every tap j and phase of the tile."""
        b, p, lanes, elem, vt = self.b, self.p, self.lanes, self.elem, self.vt
        cols = p.cols
        vals = {key: b.load(acc[key], typ=vt) for key in keys}
        g_row = U.gep(b, g_o, elem, U.index(b, (oy, cols.n_g)))
        loaded: dict[tuple[int, int], ir.Value] = {}
        for rx in range(cols.stride):
            for j, off in cols.phase_taps(rx):
                weights = [
                    U.splat(
                        b,
                        b.load(
                            U.gep(b, w_o, elem, c * p.rows.k * cols.k + i * cols.k + j), typ=elem
                        ),
                        lanes,
                        name="w",
                    )
                    for c in range(count)
                ]
                for v in range(nv):
                    first = b0 + v * lanes  # the phase position of lane 0
                    live = [q for q in range(lanes) if 0 <= first + q + off < cols.n_g]
                    if not live:
                        continue
                    gv = loaded.get((off, v))
                    if gv is None:
                        at = U.gep(b, g_row, elem, first + off)
                        gv = U.load_vec(b, at, vt, (live[0], live[-1] + 1), name="g")
                        loaded[off, v] = gv
                    for c in range(count):
                        key = (c, rx, v)
                        vals[key] = U.fmuladd(b, gv, weights[c], vals[key], name="acc")
        for key in keys:
            b.store(vals[key], acc[key])

    def store(self, acc, count: int, c0, ry: int, a, b0: int, nv: int) -> None:
        """Interleave the phases of each channel's row and store them as consecutive columns."""
        b, p, lanes, elem, vt = self.b, self.p, self.lanes, self.elem, self.vt
        cols, rows = p.cols, p.rows
        sw = cols.stride
        y = U.index(b, (a, rows.stride), ry)
        x_first = sw * b0
        for c in range(count):
            chan = U.index(b, (c0, 1), c)
            row = U.gep(
                b, self.out_base, elem, U.index(b, (chan, rows.n_out * cols.n_out), (y, cols.n_out))
            )
            for v in range(nv):
                phases = [b.load(acc[c, rx, v], typ=vt) for rx in range(sw)]
                for q, vec in enumerate(_interleave(b, phases, lanes)):
                    x = x_first + (v * sw + q) * lanes
                    width = min(lanes, cols.n_out - x)
                    if width > 0:
                        U.store_vec(b, vec, U.gep(b, row, elem, x), width)


def _interleave(b: ir.IRBuilder, phases: list[ir.Value], lanes: int) -> list[ir.Value]:
    """Vectors of consecutive columns from one vector per phase: column s*k + r of the
    result is lane k of phases[r] (s = len(phases))."""
    s = len(phases)
    if s == 1:
        return phases
    wide = list(phases)
    while len(wide) & (len(wide) - 1):  # a power of two to concatenate pairwise
        wide.append(ir.Constant(phases[0].type, None))
    while len(wide) > 1:  # concatenate pairs: lanes of the left, then of the right
        n = wide[0].type.count
        mask = U.vconst(U.I32, tuple(range(2 * n)))
        wide = [b.shuffle_vector(wide[k], wide[k + 1], mask) for k in range(0, len(wide), 2)]
    whole = wide[0]  # phase r's lane k at r*lanes + k
    out = []
    for q in range(s):
        cols = range(q * lanes, (q + 1) * lanes)
        mask = U.vconst(U.I32, tuple((x % s) * lanes + x // s for x in cols))
        out.append(b.shuffle_vector(whole, whole, mask, name="cols"))
    return out

"""Tile plans for the convolution kernels: the problems, the plans and a cost model.

A plan is the shape of a register tile (and which axis the vectors run along); the cost
model estimates cycles from FMA and load throughput (2 FMAs, ~2.5 loads per cycle), the
FMA latency chain of each accumulator (4 cycles) and per-tile overheads, over all the tiles
the plan produces for the given shapes, and the cheapest plan that fits the vector
registers and the stack wins. Measured against the alternatives on the reference shapes
(see codegen/kernels/bench.py). The plan_tiles pass (passes/tiles.py) makes the choice and
records it on the graph; codegen/kernels/conv*.py emit what it chose.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphc.passes.tiling import STACK_LIMIT_BYTES, AxisGeometry, plan_axis, tile_sizes

SCRATCH_BYTES = STACK_LIMIT_BYTES // 2
# Rows per tile next to a padded edge (see tiling.plan_axis): 2 measured within a few % of
# larger edge tiles on conv2d_input_grad's 4-row borders, with a third of their code.
EDGE_ROWS = 2


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
    def reads_padding(self) -> bool:
        """Whether some tap of some output position reads the padding of the input."""
        (ra, rb), (ca, cb) = border_spans(self)
        return (ra, rb, ca, cb) != (0, self.oh, 0, self.ow)

    @property
    def macs(self) -> int:
        return self.n * self.o * self.oh * self.ow * self.cg * self.kh * self.kw


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_geometry(x_shape, w_shape, stride, padding, dilation, groups) -> ConvGeometry:
    """Shapes and attributes of a conv2d, checked; output size by PyTorch's rule."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, w = (int(d) for d in x_shape)
    o, cg, kh, kw = (int(d) for d in w_shape)
    if groups < 1 or c % groups or o % groups or cg * groups != c:
        raise ValueError(f"conv2d: {c} input / {o} output channels do not fit groups={groups}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"conv2d: bad stride {stride}, padding {padding} or dilation {dilation}")
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(f"conv2d: input {h}x{w} is smaller than the dilated kernel")
    return ConvGeometry(n, c, h, w, o, kh, kw, oh, ow, stride, padding, dilation, groups)


def _spans(geo: ConvGeometry, every: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation

    def span(n_out, n_in, k, s, d, p):
        inside = [[0 <= o * s + t * d - p < n_in for t in range(k)] for o in range(n_out)]
        keep = [o for o in range(n_out) if (all if every else any)(inside[o])]
        # a tap reads inside on an interval of positions, so `keep` is contiguous
        return (keep[0], keep[-1] + 1) if keep else (n_out, n_out)

    return span(geo.oh, geo.h, geo.kh, sh, dh, ph), span(geo.ow, geo.w, geo.kw, sw, dw, pw)


def border_spans(geo: ConvGeometry) -> tuple[tuple[int, int], tuple[int, int]]:
    """([ra, rb), [ca, cb)): the output rows and columns all of whose taps read inside the
    input; positions outside them meet the padding."""
    return _spans(geo, every=True)


def live_spans(geo: ConvGeometry) -> tuple[tuple[int, int], tuple[int, int]]:
    """([ra, rb), [ca, cb)): the output rows and columns some tap of which reads inside the
    input; positions outside them read only padding."""
    return _spans(geo, every=False)


# ---- direct convolutions (conv2d, conv2d_input_grad) ----------------------------------------


@dataclass(frozen=True)
class DirectConv:
    """out[n, g*og + o, y, x] = sum over c, i, j of W(g, o, c, i, j) *
    inp[n, g*cg + c, rows.source(y, i), cols.source(x, j)] (zero outside the input)."""

    batch: int
    groups: int
    cg: int  # input channels per group
    og: int  # output channels per group
    rows: AxisGeometry
    cols: AxisGeometry
    flipped: bool  # conv2d_input_grad: W(g, o, c, i, j) = w[g*cg + c, o, KH-1-i, KW-1-j]

    @property
    def in_plane(self) -> int:
        return self.rows.n_in * self.cols.n_in

    @property
    def out_plane(self) -> int:
        return self.rows.n_out * self.cols.n_out

    def weight_strides(self) -> tuple[int, int, int, int, int, int]:
        """W(g, o, c, i, j) is w[g*G + o*So + c*Sc + i*Si + j*Sj + K]: (G, So, Sc, Si, Sj, K)."""
        kh, kw = self.rows.k, self.cols.k
        group = self.og * self.cg * kh * kw
        if not self.flipped:
            return group, self.cg * kh * kw, kh * kw, kw, 1, 0
        return group, kh * kw, self.og * kh * kw, -kw, -1, (kh - 1) * kw + (kw - 1)

    def reads_padding(self) -> bool:
        """Whether some tap of the direct convolution reads outside its input."""
        axes = (self.rows, self.cols)
        return not all(a.interior(o) for a in axes for o in range(a.n_out))


def forward_problem(geo: ConvGeometry) -> DirectConv:
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    return DirectConv(
        batch=geo.n,
        groups=geo.groups,
        cg=geo.cg,
        og=geo.og,
        rows=AxisGeometry(geo.oh, geo.h, geo.kh, sh, dh, ph),
        cols=AxisGeometry(geo.ow, geo.w, geo.kw, sw, dw, pw),
        flipped=False,
    )


def input_grad_problem(geo: ConvGeometry) -> DirectConv | None:
    """At stride 1, dx is a convolution of g padded by d*(k-1)-p with the flipped kernel."""
    if geo.stride != (1, 1):
        return None
    (ph, pw), (dh, dw) = geo.padding, geo.dilation
    qh, qw = dh * (geo.kh - 1) - ph, dw * (geo.kw - 1) - pw
    if qh < 0 or qw < 0:
        return None
    return DirectConv(
        batch=geo.n,
        groups=geo.groups,
        cg=geo.og,
        og=geo.cg,
        rows=AxisGeometry(geo.h, geo.oh, geo.kh, 1, dh, qh),
        cols=AxisGeometry(geo.w, geo.ow, geo.kw, 1, dw, qw),
        flipped=True,
    )


# ---- conv2d_input_grad at stride > 1: by output phase ----------------------------------------


@dataclass(frozen=True)
class PhaseAxis:
    """One spatial axis of a strided input gradient: output position y = s*a + r (phase r)
    takes the taps t with t*d = r + p (mod s), from cotangent position a + (r + p - t*d)/s."""

    n_out: int  # dx's size along the axis
    n_g: int  # the cotangent's
    k: int
    stride: int
    dilation: int
    pad: int

    def phase_taps(self, r: int) -> tuple[tuple[int, int], ...]:
        """((tap, offset), ...) of phase r, in increasing tap order: a position a of the
        phase reads the cotangent at a + offset."""
        s, d, p = self.stride, self.dilation, self.pad
        return tuple((t, (r + p - t * d) // s) for t in range(self.k) if (r + p - t * d) % s == 0)

    def count(self, r: int) -> int:
        """Positions of phase r in [0, n_out)."""
        return len(range(r, self.n_out, self.stride))

    def inside(self, r: int) -> tuple[int, int]:
        """[a_lo, a_hi): the positions of phase r whose every tap reads inside the cotangent."""
        taps = self.phase_taps(r)
        if not taps:
            return 0, self.count(r)
        lo = max(0, max(-off for _, off in taps))
        hi = min(self.count(r), min(self.n_g - off for _, off in taps))
        return (lo, hi) if lo < hi else (0, 0)


@dataclass(frozen=True)
class PhaseConv:
    """conv2d_input_grad at stride > 1, as codegen/kernels/conv_strided.py computes it."""

    batch: int
    groups: int
    cg: int  # dx's channels per group (the forward input's)
    og: int  # the cotangent's channels per group
    rows: PhaseAxis
    cols: PhaseAxis

    def column_vectors(self, lanes: int) -> int:
        """Vectors of `lanes` consecutive positions covering the widest column phase."""
        return -(-self.cols.count(0) // lanes)


def phase_problem(geo: ConvGeometry) -> PhaseConv | None:
    """The phase form of conv2d_input_grad, for strides above 1."""
    if geo.stride == (1, 1):
        return None
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    return PhaseConv(
        batch=geo.n,
        groups=geo.groups,
        cg=geo.cg,
        og=geo.og,
        rows=PhaseAxis(geo.h, geo.oh, geo.kh, sh, dh, ph),
        cols=PhaseAxis(geo.w, geo.ow, geo.kw, sw, dw, pw),
    )


@dataclass(frozen=True)
class PhasePlan:
    ct: int  # dx channels per tile
    v: int  # vectors per column phase

    def describe(self, p: PhaseConv, lanes: int) -> str:
        s = p.cols.stride
        return (
            f"phase schedule: tile {self.ct} channels x {s} column phases x {self.v}x{lanes} "
            f"columns ({self.ct * s * self.v} vector accumulators); loops o, i over the row's "
            "phase taps; taps j unrolled; phases interleaved in registers for row stores"
        )


def phase_plan_options(p: PhaseConv, lanes: int, regs: int) -> list[tuple[float, PhasePlan]]:
    """[(estimated cycles, plan)] of every phase plan that fits the vector registers."""
    s = p.cols.stride
    taps_j = [p.cols.phase_taps(r) for r in range(s)]
    loads = len({off for taps in taps_j for _, off in taps})
    fmas_j = sum(len(t) for t in taps_j)
    rows = [len(p.rows.phase_taps(r)) * p.rows.count(r) for r in range(p.rows.stride)]
    n_vecs = p.column_vectors(lanes)
    options = []
    for v in range(1, min(n_vecs, 4) + 1):
        for ct in range(1, min(p.cg, 8) + 1):
            accs = ct * s * v
            if accs + loads * v + 1 > regs:
                continue
            cost = 0.0
            for cc, cs in _split(p.cg, ct):
                for vc, vs in _split(n_vecs, v):
                    step = _step(cs * fmas_j * vs, loads * 2 * vs + cs * p.cols.k, cs * s * vs)
                    per_row_tap = p.og * step
                    tile_end = cs * s * vs * 2 + 10
                    cost += cc * vc * (sum(rows) * per_row_tap + p.rows.n_out * tile_end)
            options.append((p.groups * p.batch * cost, PhasePlan(ct, v)))
    return options


@dataclass(frozen=True)
class WidthPlan:
    ot: int  # output channels per tile
    r: int  # rows per tile
    v: int  # vectors per column tile

    def describe(self, lanes: int) -> str:
        return (
            f"width schedule: tile {self.ot} channels x {self.r} rows x {self.v}x{lanes} columns "
            f"({self.ot * self.r * self.v} vector accumulators); loops c, i; taps j unrolled"
        )


@dataclass(frozen=True)
class ChannelPlan:
    nb: int  # blocks of `lanes` output channels per tile
    r: int
    t: int  # output columns per tile
    # "call": all weights packed once per call, images outermost; "tile": weights too large
    # for the stack are packed one channel tile at a time, with the images inside the tile
    pack: str = "call"

    def describe(self, lanes: int) -> str:
        packing = (
            "weights packed per call"
            if self.pack == "call"
            else "weights packed per channel tile, images inside it"
        )
        return (
            f"channel schedule: tile {self.nb}x{lanes} channels x {self.r} rows x {self.t} "
            f"columns ({self.nb * self.r * self.t} vector accumulators), {packing}; loops c, "
            "i; taps j unrolled; results transposed in registers for row stores"
        )


def _step(fmas: float, loads: float, accs: int) -> float:
    """Cycles for a burst of FMAs and loads spread over `accs` accumulators: 2 FMAs and 2
    loads per cycle, and each accumulator's FMAs wait for the previous one (4 cycles). Pass
    unaligned full-vector loads as 2 loads (most of them split across cache lines) and
    broadcasts as 1. Ties go to fewer loads: measured, they are not free even when the FMAs
    bound the estimate."""
    return max(fmas / 2, loads / 2, 4 * fmas / accs) + 0.1 * loads


def _split(n: int, size: int) -> list[tuple[int, int]]:
    """[(count, size)] of the full tiles and the short last one."""
    out = [(n // size, size)]
    if n % size:
        out.append((1, n % size))
    return out


def _distinct_cols(t: int, kw: int, stride: int, dilation: int) -> int:
    return len({q * stride + j * dilation for q in range(t) for j in range(kw)})


def partial_sums(accs: int, taps: int) -> int:
    """Accumulators per output of a tile: with fewer than 8 in the tile, the FMA latency
    (4 cycles, 2 per cycle) would bind, so taps j alternate between partial sums that are
    added at the end (a fixed order still)."""
    return max(1, min(taps, -(-8 // accs)))


def _width_cost(p: DirectConv, lanes: int, plan: WidthPlan, regs: int) -> float:
    n_vecs = -(-p.cols.n_out // lanes)
    steps = p.cg * p.rows.k * p.cols.k
    cost = 0.0
    for oc, os_ in _split(p.og, plan.ot):
        for rc, rs in tile_sizes(plan_axis(p.rows, plan.r, border=EDGE_ROWS)):
            for vc, vs in _split(n_vecs, plan.v):
                acc = os_ * rs * vs
                split = partial_sums(acc, p.cols.k)
                if acc * split + os_ + 1 > regs:
                    split = 1
                step = _step(acc, os_ + 2 * rs * vs, acc * split)
                cost += oc * rc * vc * (steps * step + acc * split + 10)
    return cost


def _channel_cost(p: DirectConv, lanes: int, plan: ChannelPlan, regs: int) -> float:
    n_blocks = -(-p.og // lanes)
    kw = p.cols.k
    per_c_i = p.cg * p.rows.k
    cost = 0.0
    for bc, bs in _split(n_blocks, plan.nb):
        for rc, rs in tile_sizes(plan_axis(p.rows, plan.r, border=EDGE_ROWS)):
            for tc, ts in _split(p.cols.n_out, plan.t):
                acc = bs * rs * ts
                split = partial_sums(acc, kw)
                if acc * split + bs * kw + 2 > regs:
                    split = 1
                loads = kw * bs + rs * _distinct_cols(ts, kw, p.cols.stride, p.cols.dilation)
                tile = per_c_i * _step(acc * kw, loads, acc * split) + acc * lanes + 10
                cost += bc * rc * tc * tile
    return cost


def direct_plan_options(
    p: DirectConv, lanes: int, regs: int
) -> list[tuple[float, WidthPlan | ChannelPlan]]:
    """[(estimated cycles, plan)] of every plan that fits the vector registers and the
    stack; empty when no vector schedule applies (strided columns and weights too large to
    pack: the generic path)."""
    options: list[tuple[float, WidthPlan | ChannelPlan]] = []
    if p.cols.stride == 1:
        v = min(-(-p.cols.n_out // lanes), 4)
        for ot in range(1, min(p.og, 16) + 1):
            for r in range(1, min(p.rows.n_out, 8) + 1):
                if ot * r * v + ot + 1 <= regs:  # + the broadcasts + one row vector
                    plan = WidthPlan(ot, r, v)
                    options.append((_width_cost(p, lanes, plan, regs), plan))
    n_blocks = -(-p.og // lanes)
    per_block = p.cg * p.rows.k * p.cols.k * lanes * 4
    whole = p.groups * n_blocks * per_block <= STACK_LIMIT_BYTES // 2
    for nb in range(1, min(n_blocks, 3) + 1):
        if not whole and nb * per_block > STACK_LIMIT_BYTES // 2:
            continue
        for r in range(1, min(p.rows.n_out, 4) + 1):
            for t in range(1, min(p.cols.n_out, 16) + 1):
                if nb * r * t + nb * p.cols.k + 2 <= regs:
                    plan = ChannelPlan(nb, r, t, "call" if whole else "tile")
                    cost = _channel_cost(p, lanes, plan, regs)
                    if not whole:  # repacking each tile's weights: a cycle per element
                        cost += p.groups * n_blocks * per_block / 4
                    options.append((cost, plan))
    return options


# ---- weight gradients ---------------------------------------------------------------------


@dataclass(frozen=True)
class WidthWPlan:
    ot: int

    def describe(self, geo: ConvGeometry, lanes: int) -> str:
        return (
            f"width schedule: unit = {self.ot} output channels x 1 input channel, "
            f"{self.ot}x{geo.kw} vector accumulators per kernel row, vectors of {lanes} "
            "along x; images outermost, accumulators in stack scratch between images"
        )


@dataclass(frozen=True)
class ChannelWPlan:
    rows: int  # kernel rows per unit
    t: int  # output columns per tile

    def describe(self, geo: ConvGeometry, lanes: int) -> str:
        return (
            f"channel schedule: unit = {lanes} output channels x 1 input channel x "
            f"{self.rows} kernel rows ({self.rows * geo.kw} vector accumulators), tiles of "
            f"{self.t} columns; g transposed per image; images outermost"
        )


def conv_axes(geo: ConvGeometry) -> tuple[AxisGeometry, AxisGeometry]:
    (sh, sw), (ph, pw), (dh, dw) = geo.stride, geo.padding, geo.dilation
    return (
        AxisGeometry(geo.oh, geo.h, geo.kh, sh, dh, ph),
        AxisGeometry(geo.ow, geo.w, geo.kw, sw, dw, pw),
    )


def wgrad_plan_options(
    geo: ConvGeometry, lanes: int, regs: int
) -> list[tuple[float, WidthWPlan | ChannelWPlan]]:
    """[(estimated cycles, plan)] of every weight-gradient plan that fits registers and
    scratch; empty when none does (the generic path)."""
    rows, cols = conv_axes(geo)
    options = []
    n_vecs = -(-geo.ow // lanes)
    valid_rows = sum(len([y for y in range(geo.oh) if i in rows.taps(y)]) for i in range(geo.kh))
    if geo.stride[1] == 1:
        for ot in range(1, min(geo.og, 8) + 1):
            per_unit = geo.kh * ot * geo.kw * lanes * 4
            if ot * geo.kw + ot + 2 > regs or per_unit > SCRATCH_BYTES:
                continue
            units = geo.groups * -(-geo.og // ot) * geo.cg
            per_image = units * (
                valid_rows * n_vecs * _step(ot * geo.kw, 2 * (ot + geo.kw), ot * geo.kw)
                + geo.kh * ot * geo.kw
            )
            options.append((geo.n * per_image, WidthWPlan(ot)))
    n_blocks = -(-geo.og // lanes)
    gt_bytes = geo.groups * n_blocks * geo.oh * geo.ow * lanes * 4
    if gt_bytes <= SCRATCH_BYTES:
        for r in range(1, geo.kh + 1):
            for t in range(1, min(geo.ow, 16) + 1):
                if r * geo.kw + t + 2 > regs or r * geo.kw * lanes * 4 > SCRATCH_BYTES:
                    continue
                cols_read = len(
                    {
                        q * geo.stride[1] + j * geo.dilation[1]
                        for q in range(t)
                        for j in range(geo.kw)
                    }
                )
                units = geo.groups * n_blocks * geo.cg * -(-geo.kh // r)
                tiles = geo.oh * -(-geo.ow // t)
                per_unit = (
                    tiles * _step(t * r * geo.kw, t + r * cols_read, r * geo.kw) + 2 * r * geo.kw
                )
                pack = geo.groups * n_blocks * geo.oh * geo.ow / 4  # ~ a quarter cycle per element
                options.append((geo.n * (units * per_unit + pack), ChannelWPlan(r, t)))
    return options


# ---- depthwise convolutions (groups = channels) ---------------------------------------------


@dataclass(frozen=True)
class DepthwisePlan:
    """One filter per channel (groups == channels, one output channel each): vectors run
    along a block of `lanes` channels, over a zero-bordered [rows][cols][lane] stack scratch
    holding each image's planes transposed (codegen/kernels/conv_depthwise.py). `form`:
    "gather" (each output sums its taps from the scratch: conv2d, its weight gradient, and
    conv2d_input_grad at stride 1 as a correlation of g with the flipped kernel) or
    "scatter" (conv2d_input_grad at stride > 1: each cotangent adds its taps into the
    scratch). `tile`: positions per register tile."""

    form: str
    tile: int
    scratch_rows: int
    scratch_cols: int

    def describe(self, lanes: int) -> str:
        how = "taps gathered" if self.form == "gather" else "taps scattered"
        return (
            f"depthwise schedule: vectors of {lanes} channels, tiles of {self.tile} positions, "
            f"{how} over a {self.scratch_rows}x{self.scratch_cols} zero-bordered "
            "channels-last scratch per image and channel block, filled a row at a time; "
            "planes transposed in registers on the way in and out"
        )


def _scratch(n_in: int, n_out: int, k: int, s: int, d: int, p: int) -> int:
    """Scratch extent along an axis: the padded input and every tap of every output."""
    return max(n_in + 2 * p, (n_out - 1) * s + d * (k - 1) + 1)


def depthwise_gather_geometry(op: str, geo: ConvGeometry):
    """(in_hw, out_hw, stride, pad) of the gather form of `op`: conv2d and its weight
    gradient read x; conv2d_input_grad at stride 1 reads g padded by d*(k-1) - p. None when
    the input gradient has no such form (stride > 1, or padding beyond the dilated kernel)."""
    if op != "conv2d_input_grad":
        return (geo.h, geo.w), (geo.oh, geo.ow), geo.stride, geo.padding
    (dh, dw), (ph, pw) = geo.dilation, geo.padding
    pad = (dh * (geo.kh - 1) - ph, dw * (geo.kw - 1) - pw)
    if geo.stride != (1, 1) or min(pad) < 0:
        return None
    return (geo.oh, geo.ow), (geo.h, geo.w), (1, 1), pad


def depthwise_plan(op: str, geo: ConvGeometry, lanes: int) -> DepthwisePlan | None:
    """The depthwise plan of `op`, when the convolution has one filter per channel, its
    scratch fits the stack budget, and the direct schedules are slower: where rows are
    narrower than a vector, or strided (conv2d and its weight gradient). Measured at batch
    64 (GFLOP/s, direct vs depthwise): 4x4 planes 13/61 forward, 13/66 input gradient,
    11/62 weights; 16x16 at stride 2 5/17 forward, 1.8/26 weights; but 32x32 at stride 1
    57/31 forward even in cache, and 55/18 streaming (the depthwise kernel reads and writes
    16 planes at once), and the phase schedule's strided input gradient beats the scatter
    form on planes a vector wide or more (30/8 at 32x32)."""
    if not (geo.groups == geo.c > 1 and geo.cg == 1 and geo.og == 1):
        return None
    narrow = geo.ow < lanes
    if not narrow and (op == "conv2d_input_grad" or geo.stride == (1, 1)):
        return None
    gather = depthwise_gather_geometry(op, geo)
    if gather is not None:
        (ih, iw), (oh, ow), (sh, sw), (ph, pw) = gather
        dh, dw = geo.dilation
        rows, cols = _scratch(ih, oh, geo.kh, sh, dh, ph), _scratch(iw, ow, geo.kw, sw, dw, pw)
        form = "gather"
    else:
        rows = _scratch(geo.h, geo.oh, geo.kh, geo.stride[0], geo.dilation[0], geo.padding[0])
        cols = _scratch(geo.w, geo.ow, geo.kw, geo.stride[1], geo.dilation[1], geo.padding[1])
        form = "scatter"
    if rows * cols * lanes * 4 > SCRATCH_BYTES:
        return None
    return DepthwisePlan(form, lanes, rows, cols)


def depthwise_cycles(geo: ConvGeometry, lanes: int) -> float:
    """Cycles estimated per call: a load and an FMA per tap and output vector (two of each
    per cycle), and the transposes in and out (about five instructions per element moved)."""
    blocks = -(-geo.c // lanes)
    taps = geo.oh * geo.ow * geo.kh * geo.kw
    moved = (geo.h * geo.w + geo.oh * geo.ow) * lanes
    return geo.n * blocks * (taps + moved * 5 / lanes)

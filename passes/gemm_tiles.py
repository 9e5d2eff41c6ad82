"""Tile plans for the matmul kernels: which schedule computes a product, and its tiles.

The schedules (codegen/kernels/gemm.py and gemm_blocked.py say what each one emits):
- "cache-blocked" for products of at least BLOCKED_MIN_MACS multiply-adds (not A^T @ B^T):
  an MR x NV register tile, k blocks of KC, units of MC x NC results (plan_blocked);
- "dot" for A @ B^T: an MR x NR tile of dot products along k (choose_dot_tile), units of
  a few row tiles (dot_row_tiles);
- "outer" otherwise (A^T @ B^T as out^T = B A): an MR x NV tile of rank-1 updates
  (choose_outer_tile);
- "generic" scalar loops for float64 and empty products.
The plan_tiles pass (passes/tiles.py) makes the choice and records it on the graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from graphc.passes.tiling import STACK_LIMIT_BYTES


@dataclass(frozen=True)
class MatmulGeometry:
    batch: int
    m: int
    k: int
    n: int
    trans_a: bool
    trans_b: bool

    @property
    def a_rows(self) -> int:  # stored shape of A is (a_rows, a_cols)
        return self.k if self.trans_a else self.m

    @property
    def a_cols(self) -> int:
        return self.m if self.trans_a else self.k

    @property
    def b_cols(self) -> int:
        return self.k if self.trans_b else self.n

    def a_index(self, r, kk) -> tuple:
        """Index terms of op(A)[r, kk] within one batch matrix."""
        return ((kk, self.m), (r, 1)) if self.trans_a else ((r, self.k), (kk, 1))

    def b_index(self, kk, c) -> tuple:
        return ((c, self.k), (kk, 1)) if self.trans_b else ((kk, self.n), (c, 1))


def matmul_geometry(a_shape, b_shape, trans_a: bool, trans_b: bool) -> MatmulGeometry:
    a_shape, b_shape = tuple(a_shape), tuple(b_shape)
    if len(a_shape) < 2 or a_shape[:-2] != b_shape[:-2]:
        raise ValueError(f"matmul: incompatible shapes {a_shape} and {b_shape}")
    m, k = (a_shape[-1], a_shape[-2]) if trans_a else (a_shape[-2], a_shape[-1])
    k2, n = (b_shape[-1], b_shape[-2]) if trans_b else (b_shape[-2], b_shape[-1])
    if k != k2:
        raise ValueError(f"matmul: inner dimensions differ in {a_shape} and {b_shape}")
    return MatmulGeometry(math.prod(a_shape[:-2]), m, k, n, trans_a, trans_b)


# Products with fewer multiply-adds than this keep the unblocked schedules: their operands
# fit in L2 and the blocked schedule's packing and unit overheads would not pay off.
BLOCKED_MIN_MACS = 1 << 24
# (A @ B with a 1 MB B, 256x512 @ 512x512, measured faster unblocked on one core in
# isolation, 186 vs 169 GFLOP/s, but slower inside a 2-thread training step, 199 vs 256,
# where the two cores share L3 with the other kernels' data: blocked it is.)


def wants_blocked(geo: MatmulGeometry) -> bool:
    """Whether the cache-blocked schedule (gemm_blocked) should compute `geo` (float32)."""
    return not (geo.trans_a and geo.trans_b) and geo.m * geo.n * geo.k >= BLOCKED_MIN_MACS


@dataclass(frozen=True)
class OuterPlan:
    """The "outer" schedule: an MR x NV register tile of rank-1 updates; `transposed` for
    A^T @ B^T, computed as out^T = B A."""

    mr: int
    nv: int
    transposed: bool

    def describe(self, lanes: int) -> str:
        t = ", as out^T = B A" if self.transposed else ""
        return f"outer-product tile {self.mr} x {self.nv}x{lanes}{t}"


@dataclass(frozen=True)
class DotPlan:
    """The "dot" schedule: an MR x NR tile of dot products along k, units of q row tiles."""

    mr: int
    nr: int
    q: int

    def describe(self, lanes: int) -> str:
        return f"dot-product tile {self.mr} x {self.nr} along k, units of {self.q} row tiles"


def _tile_cycles(r: int, v: int) -> float:
    """Rough cycles per k step of an r x v tile: 2 FMAs and ~2.5 loads per cycle, plus loop."""
    return max(r * v / 2, (r + v) / 2.5, 4) + 0.5  # 4: FMA latency, one FMA per acc and k


def choose_outer_tile(rows: int, cols: int, lanes: int, regs: int) -> tuple[int, int]:
    """(MR rows, NV vectors) minimising the estimated cycles over all tiles of the result."""
    n_vecs = -(-cols // lanes)
    best = None
    for nv in range(1, min(6, n_vecs) + 1):
        for mr in range(1, min(rows, 16) + 1):
            if mr * nv + nv + 2 > regs:
                continue
            cost = 0.0
            for rc, r in ((rows // mr, mr), (int(rows % mr > 0), rows % mr)):
                for vc, v in ((n_vecs // nv, nv), (int(n_vecs % nv > 0), n_vecs % nv)):
                    cost += rc * vc * _tile_cycles(r, v) if r and v else 0
            # Units are row blocks; on two threads an odd count leaves one core idle for a
            # block, so weigh the cost by the imbalance of an even split.
            tiles = -(-rows // mr)
            cost *= (2 * -(-tiles // 2)) / tiles
            key = (cost, -mr * nv, -mr)
            if best is None or key < best[0]:
                best = (key, (mr, nv))
    return best[1]


def choose_dot_tile(lanes: int, regs: int) -> tuple[int, int]:
    """(MR, NR) with MR*NR <= lanes dot products reduced together, fitting the registers."""
    best = None
    for mr in range(1, lanes + 1):
        for nr in range(mr, lanes + 1):
            p = mr * nr
            if p > lanes or p & (p - 1) or p + mr + 2 > regs:
                continue
            key = (-p, mr + nr)
            if best is None or key < best[0]:
                best = (key, (mr, nr))
    return best[1]


def dot_row_tiles(m: int, mr: int) -> int:
    """Row tiles per unit of the dot schedule: a unit loops over B's row tiles outside its
    q row tiles, so each NR rows of B (a weight, usually, larger than L1) are read once per
    q*MR rows of A; q stays small enough to leave >= 4 units for the threads."""
    return max(1, min(4, -(-m // mr) // 4))


L1_STRIP_BYTES = 48 * 1024  # a packed strip (KC x NR), read from L1 across the row tiles
CBUF_MAX_BYTES = 64 * 1024  # partial sums of one unit between k blocks


@dataclass(frozen=True)
class BlockedPlan:
    mr: int  # register tile rows
    nv: int  # register tile vectors (NR = nv * lanes columns)
    kc: int  # k block
    nc: int  # columns per unit (a multiple of NR)
    mc: int  # rows per unit (a multiple of MR)
    lanes: int

    @property
    def nr(self) -> int:
        return self.nv * self.lanes

    def stack_bytes(self, k: int) -> int:
        packed = self.kc * self.nc * 4
        return packed + (self.mc * self.nc * 4 if k > self.kc else 0)

    def describe(self, geo) -> str:
        return (
            f"cache-blocked outer-product tile {self.mr} x {self.nv}x{self.lanes}, "
            f"units of {self.mc} rows x {self.nc} columns, k blocks of {self.kc} "
            f"({-(-geo.k // self.kc)} per unit), op(B) packed per k block into strips of "
            f"{self.nr} columns{' (transposed)' if geo.trans_b else ''}"
        )


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def plan_blocked(
    geo, lanes: int, regs: int, threads: int = 2, *, tile=None, kc_max=None
) -> BlockedPlan:
    """Tile, k block and unit shape for `geo`: a strip in L1, partial sums within budget,
    and enough units of equal cost for `threads` threads. `tile` (MR, NV) and `kc_max`
    override the defaults (benchmarks use them)."""
    mr, nv = tile or ((8, 3) if regs >= 32 else (4, 2) if regs >= 16 else (3, 1))
    nr = nv * lanes
    kc_max = kc_max or max(lanes, L1_STRIP_BYTES // (4 * nr) // lanes * lanes)
    nkb = ceil_div(geo.k, kc_max)
    kc = ceil_div(ceil_div(geo.k, nkb), lanes) * lanes
    n_strips, row_tiles = ceil_div(geo.n, nr), ceil_div(geo.m, mr)
    best = None
    for spu in range(1, min(n_strips, 8) + 1):  # strips per unit
        nc = spu * nr
        if kc * nc * 4 > STACK_LIMIT_BYTES // 2:
            break
        cap = (STACK_LIMIT_BYTES - kc * nc * 4) // (4 * nc)
        if nkb > 1:
            cap = min(cap, CBUF_MAX_BYTES // (4 * nc))
        cap_tiles = max(1, cap // mr)
        nrb = ceil_div(row_tiles, cap_tiles)
        mc = ceil_div(row_tiles, nrb) * mr  # row tiles spread evenly over the row blocks
        nrb = ceil_div(geo.m, mc)
        units = geo.batch * ceil_div(n_strips, spu) * nrb
        # strip x row-tile passes of the busiest thread, plus per-unit overheads: packing
        # op(B) and reading the unit's rows of A again for every column block
        per_unit = spu * ceil_div(mc, mr)
        busiest = ceil_div(units, threads) * per_unit
        overhead = units * (0.15 * spu + 0.02 * mc / mr)
        key = (busiest + overhead / threads, -nc)
        if best is None or key < best[0]:
            best = (key, BlockedPlan(mr, nv, kc, nc, mc, lanes))
    if best is None:
        raise ValueError(f"no blocked plan for {geo} with k blocks of {kc}")
    return best[1]

"""Splitting one spatial axis of a convolution into register tiles, at compile time, and the
stack budget every tile plan shares.

Output position `o` with kernel tap `t` reads input position `o*stride + t*dilation - pad`;
taps that fall outside the input (padding) read zeros, so they are simply not emitted.
Tiles whose every position has every tap inside the input are *interior*: runs of them
become one runtime loop. The others (near a padded border, or the short last tile) are
emitted one by one with their valid taps known, so padding costs neither a copy nor a
runtime test.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

# Scratch arrays of a kernel live on the stack of the calling thread; this bounds a kernel's
# use of it (the caller's and the worker threads' stacks are the platform default of 8 MiB
# on Linux). At 256 KiB, ResNet's 64-channel 3x3 convolutions could not pack their weights
# (147 KiB) for the channel schedule, and the width schedule left half of each vector empty
# on their 8-wide rows: 2.3x slower (measured).
STACK_LIMIT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AxisGeometry:
    n_out: int
    n_in: int
    k: int
    stride: int
    dilation: int
    pad: int

    def source(self, o: int, t: int) -> int:
        return o * self.stride + t * self.dilation - self.pad

    def taps(self, o: int) -> tuple[int, ...]:
        """The taps of output position `o` that read inside the input."""
        return tuple(t for t in range(self.k) if 0 <= self.source(o, t) < self.n_in)

    def interior(self, o: int) -> bool:
        return len(self.taps(o)) == self.k


@dataclass(frozen=True)
class Tile:
    """One tile emitted on its own: positions start .. start+size-1 (compile-time)."""

    start: int
    size: int


@dataclass(frozen=True)
class Loop:
    """`count` interior tiles of `size` positions, the first at `start`: a runtime loop."""

    start: int
    count: int
    size: int


def plan_axis(axis: AxisGeometry, tile: int, border: int = 0) -> list:
    """Tiles of `tile` positions covering [0, n_out), runs of interior tiles merged.

    With `border` > 0, the interior range is tiled by `tile` from its start and the
    positions before and after it get tiles of at most `border` positions (whose taps
    `tap_intervals` splits exactly) instead of tiles straddling the edge of the interior.
    Small edge tiles keep the code short: a tile of e positions near an edge unrolls into
    up to e(e+1)/2 row bodies.
    """
    return list(_plan_axis(axis, tile, border))


# The tile plans' cost models ask for the same few axes hundreds of times per graph.
@functools.lru_cache(maxsize=4096)
def _plan_axis(axis: AxisGeometry, tile: int, border: int) -> tuple[Tile | Loop, ...]:
    if border:
        return tuple(_plan_with_border(axis, tile, border))
    plan: list[Tile | Loop] = []
    run_start, run = 0, 0

    def flush():
        nonlocal run
        if run == 1:
            plan.append(Tile(run_start, tile))
        elif run > 1:
            plan.append(Loop(run_start, run, tile))
        run = 0

    for start in range(0, axis.n_out, tile):
        size = min(tile, axis.n_out - start)
        if size == tile and all(axis.interior(o) for o in range(start, start + size)):
            if run == 0:
                run_start = start
            run += 1
        else:
            flush()
            plan.append(Tile(start, size))
    flush()
    return tuple(plan)


def _plan_with_border(axis: AxisGeometry, tile: int, edge: int) -> list[Tile | Loop]:
    inner = [o for o in range(axis.n_out) if axis.interior(o)]
    lo, hi = (inner[0], inner[-1] + 1) if inner else (axis.n_out, axis.n_out)
    # a tap is valid on an interval of positions, so the interior positions are contiguous
    assert len(inner) == hi - lo
    edge = min(edge, tile)
    plan: list[Tile | Loop] = [Tile(o, min(edge, lo - o)) for o in range(0, lo, edge)]
    full, rem = divmod(hi - lo, tile)
    if full == 1:
        plan.append(Tile(lo, tile))
    elif full > 1:
        plan.append(Loop(lo, full, tile))
    if rem:
        plan.append(Tile(lo + full * tile, rem))
    plan += [Tile(o, min(edge, axis.n_out - o)) for o in range(hi, axis.n_out, edge)]
    return plan


def tap_intervals(axis: AxisGeometry, start: int, size: int) -> list[tuple[int, int, tuple]]:
    """For the tile of positions start..start+size-1: [(lo, hi, positions)] in increasing
    order of taps, where exactly `positions` (offsets in the tile) read inside the input for
    every tap in [lo, hi). Looping over the intervals in order visits each position's valid
    taps in increasing order and never a tap in the padding."""
    ranges = []
    for r in range(size):
        taps = axis.taps(start + r)
        ranges.append((taps[0], taps[-1] + 1) if taps else (0, 0))
    cuts = sorted({v for rg in ranges for v in rg if rg[1] > rg[0]})
    out: list[tuple[int, int, tuple]] = []
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        rows = tuple(r for r, (a, b) in enumerate(ranges) if a <= lo and hi <= b)
        if not rows:
            continue
        if out and out[-1][2] == rows and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi, rows)
        else:
            out.append((lo, hi, rows))
    return out


def tile_sizes(plan: list[Tile | Loop]) -> list[tuple[int, int]]:
    """[(count, size)] of the tiles of a plan (for cost models)."""
    return [(1, s.size) if isinstance(s, Tile) else (s.count, getattr(s, "size", 1)) for s in plan]

"""plan_tiles: the register tile and loop schedule of every convolution and matmul kernel,
chosen by cost models for the target's vectors and recorded on the graph (meta["tiles"]).

A contraction kernel's speed is mostly its register tile: how many output channels, rows and
vectors of columns one tile accumulates, which axis the vectors run along, and for large
matmuls how the operands are blocked for the caches. Those choices depend on the shapes
(known here) and on the target's vector width and register count (meta["vectors"], put
there by the frontend from codegen's target). The models themselves live next to the plans
they rank (passes/conv_tiles.py, passes/gemm_tiles.py); codegen emits exactly the plan
recorded here, and `graphc inspect` prints it with the reason it won.

A graph planned for other vectors than the ones codegen targets, or whose plans no longer fit
its kernels, or not planned at all (the interpreter backend supplies no vectors; tests run
the pipeline on raw graphs) is planned again by codegen with this same pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from graphc import dtypes
from graphc.ir import Graph, Node
from graphc.passes.conv_tiles import (
    ConvGeometry,
    conv_geometry,
    depthwise_cycles,
    depthwise_plan,
    direct_plan_options,
    forward_problem,
    input_grad_problem,
    phase_plan_options,
    phase_problem,
    wgrad_plan_options,
)
from graphc.passes.gemm_tiles import (
    DotPlan,
    MatmulGeometry,
    OuterPlan,
    choose_dot_tile,
    choose_outer_tile,
    dot_row_tiles,
    matmul_geometry,
    plan_blocked,
    wants_blocked,
)
from graphc.passes.schedule import Schedule

TILED_KINDS = ("conv2d", "conv2d_input_grad", "conv2d_weight_grad", "matmul")


@dataclass(frozen=True)
class VectorUnit:
    """What the tile plans need to know about the target: vector width and register count."""

    bits: int
    registers: int

    def lanes(self, dtype: dtypes.DType | str) -> int:
        return self.bits // (8 * dtypes.get(dtype).itemsize)

    def describe(self) -> str:  # (not `summary`: the graph printer would print it per stage)
        return (
            f"{self.bits}-bit vectors ({self.lanes('float32')} x f32), {self.registers} registers"
        )


@dataclass(frozen=True)
class Tiles:
    """One kernel's tile plan. `plan` is what codegen emits (conv_tiles.WidthPlan, ChannelPlan,
    PhasePlan, WidthWPlan, ChannelWPlan, DepthwisePlan; gemm_tiles.OuterPlan, DotPlan,
    BlockedPlan), None for the generic scalar loops."""

    op: str
    plan: object | None
    lanes: int  # vector lanes of the kernel's dtype (1: scalar loops)
    text: str
    reason: str
    key: tuple = ()  # the kernel it was made for (kernel_key): op, dtype, shapes, attributes


@dataclass(frozen=True)
class TilePlan:
    vectors: VectorUnit
    kernels: dict[str, Tiles]  # kernel name -> its plan (contraction kernels only)

    def summary(self, graph: Graph | None = None) -> str:
        lines = [f"for {self.vectors.describe()}"]
        lines += [f"{name}: {t.text} [{t.reason}]" for name, t in self.kernels.items()]
        return "\n".join(lines)

    def cache_text(self) -> str:
        """Everything codegen emits from: the plans themselves, not their descriptions
        (frozen dataclasses of ints, so the text is the same in every process)."""
        rows = [repr(self.vectors)]
        rows += [f"{n}: {t.op} {t.lanes} {t.plan!r} {t.key!r}" for n, t in self.kernels.items()]
        return "\n".join(rows)

    def fits(self, graph: Graph, vectors: VectorUnit) -> bool:
        """Whether this plan was made for these vectors and exactly these kernels."""
        schedule: Schedule = graph.meta["schedule"]
        keys = {k.name: kernel_key(k.root) for k in schedule.kernels if k.kind in TILED_KINDS}
        return self.vectors == vectors and keys == {n: t.key for n, t in self.kernels.items()}


def plan_tiles(graph: Graph) -> Graph:
    vectors = graph.meta.get("vectors")
    if vectors is None:  # nobody said which vectors: codegen plans for its own target
        return graph
    return graph.with_meta(tiles=tile_plan(graph, vectors))


def tile_plan(graph: Graph, vectors: VectorUnit) -> TilePlan:
    schedule: Schedule = graph.meta["schedule"]
    kernels = {
        k.name: node_tiles(k.root, vectors) for k in schedule.kernels if k.kind in TILED_KINDS
    }
    return TilePlan(vectors, kernels)


def kernel_key(node: Node) -> tuple:
    """What a tile plan depends on: the op, dtype, operand shapes and attributes."""
    attrs = tuple(sorted((k, repr(v)) for k, v in node.attrs.items()))
    return (node.op, node.dtype.name, tuple(tuple(i.shape) for i in node.inputs), attrs)


_PLANNED: dict[tuple, Tiles] = {}  # (kernel_key, vectors) -> the plan: plans are pure


def node_tiles(node: Node, vectors: VectorUnit) -> Tiles:
    """The plan for a kernel built around `node` (a conv2d, its gradients or a matmul),
    ranked once per kernel signature: the repeated blocks of a deep model ask again."""
    key = kernel_key(node)
    tiles = _PLANNED.get((key, vectors))
    if tiles is None:
        if len(_PLANNED) >= 4096:  # many models in one process: start again
            _PLANNED.clear()
        tiles = _PLANNED[key, vectors] = dataclasses.replace(_node_tiles(node, vectors), key=key)
    return tiles


def _node_tiles(node: Node, vectors: VectorUnit) -> Tiles:
    a = node.attrs
    if node.op == "matmul":
        x, y = node.inputs
        geo = matmul_geometry(x.shape, y.shape, a["trans_a"], a["trans_b"])
        return matmul_tiles(geo, node.dtype.name, vectors)
    conv = (a["stride"], a["padding"], a["dilation"], a["groups"])
    first, second = node.inputs
    if node.op == "conv2d":
        return conv2d_tiles(
            conv_geometry(first.shape, second.shape, *conv), node.dtype.name, vectors
        )
    if node.op == "conv2d_input_grad":
        geo = conv_geometry(a["input_shape"], second.shape, *conv)
        return conv2d_input_grad_tiles(geo, node.dtype.name, vectors)
    if node.op == "conv2d_weight_grad":
        geo = conv_geometry(first.shape, a["weight_shape"], *conv)
        return conv2d_weight_grad_tiles(geo, node.dtype.name, vectors)
    raise ValueError(f"plan_tiles: no tile plans for {node.op}")


GENERIC = "generic scalar loops"


def _not_f32(op: str, dtype: str) -> Tiles | None:
    if dtype != "float32":
        return Tiles(op, None, 1, GENERIC, f"{dtype}: the vector schedules are float32")
    return None


def _ranked(op: str, options: list, lanes: int, regs: int, describe) -> Tiles:
    """The cheapest of `options` [(estimated cycles, plan)], with the estimate behind it."""
    ranked = sorted(range(len(options)), key=lambda i: (options[i][0], i))
    cost, plan = options[ranked[0]]
    why = f"lowest estimate of {len(options)} plans that fit {regs} vector registers: "
    why += f"{cost:,.0f} cycles"
    if len(ranked) > 1:
        why += f" (next: {options[ranked[1]][0]:,.0f})"
    return Tiles(op, plan, lanes, describe(plan), why)


def _depthwise(op: str, geo: ConvGeometry, lanes: int) -> Tiles | None:
    """A convolution with one filter per channel takes the depthwise schedule (when its
    scratch fits): the others would vectorise along a row of one channel, or not at all."""
    plan = depthwise_plan(op, geo, lanes)
    if plan is None:
        return None
    why = (
        f"one filter per channel: vectors along {lanes} channels; estimate "
        f"{depthwise_cycles(geo, lanes):,.0f} cycles"
    )
    return Tiles(op, plan, lanes, plan.describe(lanes), why)


def conv2d_tiles(geo: ConvGeometry, dtype: str, vectors: VectorUnit) -> Tiles:
    if (t := _not_f32("conv2d", dtype)) is not None:
        return t
    lanes = vectors.lanes(dtype)
    if (t := _depthwise("conv2d", geo, lanes)) is not None:
        return t
    options = direct_plan_options(forward_problem(geo), lanes, vectors.registers)
    if not options:
        why = "no vector plan: strided columns and weights too large to pack on the stack"
        return Tiles("conv2d", None, 1, GENERIC, why)
    return _ranked("conv2d", options, lanes, vectors.registers, lambda p: p.describe(lanes))


def conv2d_input_grad_tiles(geo: ConvGeometry, dtype: str, vectors: VectorUnit) -> Tiles:
    op = "conv2d_input_grad"
    if (t := _not_f32(op, dtype)) is not None:
        return t
    lanes = vectors.lanes(dtype)
    if (t := _depthwise(op, geo, lanes)) is not None:
        return t
    phases = phase_problem(geo)
    if phases is not None:
        options = phase_plan_options(phases, lanes, vectors.registers)
        if not options:
            return Tiles(op, None, 1, GENERIC, "no phase plan fits the vector registers")
        return _ranked(op, options, lanes, vectors.registers, lambda p: p.describe(phases, lanes))
    problem = input_grad_problem(geo)
    if problem is None:
        why = "padding beyond the dilated kernel: no stride-1 convolution form"
        return Tiles(op, None, 1, GENERIC, why)
    options = direct_plan_options(problem, lanes, vectors.registers)
    if not options:
        return Tiles(op, None, 1, GENERIC, "no vector plan fits the registers and the stack")
    return _ranked(op, options, lanes, vectors.registers, lambda p: p.describe(lanes))


def conv2d_weight_grad_tiles(geo: ConvGeometry, dtype: str, vectors: VectorUnit) -> Tiles:
    op = "conv2d_weight_grad"
    if (t := _not_f32(op, dtype)) is not None:
        return t
    lanes = vectors.lanes(dtype)
    if (t := _depthwise(op, geo, lanes)) is not None:
        return t
    options = wgrad_plan_options(geo, lanes, vectors.registers)
    if not options:
        return Tiles(op, None, 1, GENERIC, "no vector plan fits the registers and the scratch")
    return _ranked(op, options, lanes, vectors.registers, lambda p: p.describe(geo, lanes))


def matmul_tiles(
    geo: MatmulGeometry, dtype: str, vectors: VectorUnit, blocked: bool | None = None
) -> Tiles:
    """`blocked` forces the cache-blocked schedule on or off (None: by size, wants_blocked);
    A^T @ B^T has none, so `blocked=True` leaves it to "outer"."""
    if (t := _not_f32("matmul", dtype)) is not None:
        return t
    if geo.m * geo.n * geo.k == 0:
        return Tiles("matmul", None, 1, GENERIC, "an empty product")
    lanes, regs = vectors.lanes(dtype), vectors.registers
    macs = geo.batch * geo.m * geo.n * geo.k
    if not (geo.trans_a and geo.trans_b) and (wants_blocked(geo) if blocked is None else blocked):
        plan = plan_blocked(geo, lanes, regs)
        why = f"{macs / 1e6:.1f} M multiply-adds: operands outgrow the caches, blocked for them"
        return Tiles("matmul", plan, lanes, plan.describe(geo), why)
    if geo.trans_b and not geo.trans_a:
        mr, nr = choose_dot_tile(lanes, regs)
        plan = DotPlan(mr, nr, dot_row_tiles(geo.m, mr))
        why = "A @ B^T: both operands are contiguous along k, so vectors run along k"
        return Tiles("matmul", plan, lanes, plan.describe(lanes), why)
    transposed = geo.trans_a and geo.trans_b
    rows, cols = (geo.n, geo.m) if transposed else (geo.m, geo.n)
    plan = OuterPlan(*choose_outer_tile(rows, cols, lanes, regs), transposed)
    why = f"lowest estimated cycles over the {rows} x {cols} result with {regs} vector registers"
    return Tiles("matmul", plan, lanes, plan.describe(lanes), why)

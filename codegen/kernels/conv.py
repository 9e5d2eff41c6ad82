"""Convolution kernel emitters: conv2d, conv2d_input_grad, conv2d_weight_grad.

Each validates the geometry (PyTorch's output-size rule, as in graphc/ops/nn.py), takes the
tile plan passes/tiles.py chose (or asks it, when called on its own) and emits one kernel
function with the ABI of kernels/common.py:

    conv2d             (out, x, w[, bias], lo, hi)   units: images
    conv2d_input_grad  (out, g, w, lo, hi)           units: images
    conv2d_weight_grad (out, x, g, lo, hi)           units: see the schedule (conv_wgrad.py)

float32 takes the vector schedules (conv_direct.py, conv_wgrad.py) when a plan applies;
float64 and the rest take the scalar path (conv_generic.py). Whatever the path, inf and NaN come out
as in the reference, which multiplies the zeros of the padding (0 * inf = NaN): fast loops
skip the padding, so a kernel that meets it checks the weights (conv_generic.nonfinite_guard)
or, for conv2d_weight_grad, its results (conv_generic.weight_grad_nonfinite) and takes exact
scalar loops when they hold an inf or NaN. Finite data never does: its results are those
of the fast loops.
"""

from __future__ import annotations

import math
from functools import partial

from llvmlite import ir

from graphc.codegen.kernels import conv_depthwise, conv_generic, conv_strided, conv_wgrad
from graphc.codegen.kernels.common import KernelSpec, check_tiles, element_type
from graphc.codegen.kernels.conv_direct import emit_direct
from graphc.codegen.kernels.epilogue import Epilogue
from graphc.codegen.target import Target
from graphc.passes.conv_tiles import (
    ChannelPlan,
    ChannelWPlan,
    DepthwisePlan,
    PhasePlan,
    WidthPlan,
    WidthWPlan,
    conv_geometry,
    forward_problem,
    input_grad_problem,
    phase_problem,
)
from graphc.passes.tiles import (
    Tiles,
    conv2d_input_grad_tiles,
    conv2d_tiles,
    conv2d_weight_grad_tiles,
)

# How the guard of conv_generic.nonfinite_guard prints in a schedule.
_EXACT_NOTE = (
    "if {operand} holds inf or NaN: scalar loops that meet the padding as the reference does"
)


def _numel(shape) -> int:
    return math.prod(int(d) for d in shape)


def _check_same(what: str, got, want) -> None:
    if tuple(got) != tuple(want):
        raise ValueError(f"{what}: expected shape {tuple(want)}, got {tuple(got)}")


def emit_conv2d(
    module: ir.Module,
    name: str,
    *,
    x_shape,
    w_shape,
    stride,
    padding,
    dilation,
    groups: int,
    dtype,
    bias: bool = False,
    relu: bool = False,
    target: Target,
    generic: bool = False,
    tiles: Tiles | None = None,
) -> KernelSpec:
    """out = relu(conv2d(x, w) + bias[o]) — bias and relu optional. `tiles`: the plan
    passes/tiles.py recorded (None: plan here, as it would); `generic=True` forces the
    scalar path."""
    geo = conv_geometry(x_shape, w_shape, stride, padding, dilation, groups)
    dt, elem = element_type(dtype)
    roles = ("out", "x", "w") + (("bias",) if bias else ())
    epi = Epilogue(bias=bias, relu=relu)
    stack, lanes = 0, 1
    problem = forward_problem(geo)
    tiles = tiles or conv2d_tiles(geo, dt.name, target.vector_unit())
    check_tiles(tiles, "conv2d", (WidthPlan, ChannelPlan, DepthwisePlan), target.lanes(dt))
    if not generic and isinstance(tiles.plan, DepthwisePlan):
        lanes = target.f32_lanes
        sched, stack = conv_depthwise.emit_forward(
            module, name, geo, roles=roles, elem=elem, epi=epi, target=target, plan=tiles.plan
        )
    elif generic or tiles.plan is None:
        sched = conv_generic.emit_forward(
            module, name, geo, roles=roles, elem=elem, epi=epi, target=target
        )
        if geo.reads_padding:
            sched += "; " + _EXACT_NOTE.format(operand="w")
    else:
        lanes = target.f32_lanes
        guard = None
        if problem.reads_padding():

            def guard(kf):
                exact = partial(conv_generic.forward_loops, geo=geo, elem=elem, epi=epi, exact=True)
                conv_generic.nonfinite_guard(kf, "w", _numel(w_shape), elem, exact)

        sched, stack = emit_direct(
            module,
            name,
            problem,
            roles=roles,
            elem=elem,
            epi=epi,
            target=target,
            plan=tiles.plan,
            guard=guard,
        )
        if guard is not None:
            sched += "; " + _EXACT_NOTE.format(operand="w")
    return KernelSpec(
        name=name,
        op="conv2d",
        args=roles,
        parallel_extent=geo.n,
        unit="one image",
        flops=2 * geo.macs,
        dtype=dt.name,
        schedule=f"{sched}; epilogue: {epi.describe()}",
        vector_lanes=lanes,
        stack_bytes=stack,
    )


def emit_conv2d_input_grad(
    module: ir.Module,
    name: str,
    *,
    g_shape,
    w_shape,
    input_shape,
    stride,
    padding,
    dilation,
    groups: int,
    dtype,
    target: Target,
    generic: bool = False,
    tiles: Tiles | None = None,
) -> KernelSpec:
    """out (the input's shape) = the gradient of conv2d with respect to its input."""
    geo = conv_geometry(input_shape, w_shape, stride, padding, dilation, groups)
    _check_same("conv2d_input_grad cotangent", g_shape, (geo.n, geo.o, geo.oh, geo.ow))
    dt, elem = element_type(dtype)
    roles = ("out", "g", "w")
    tiles = tiles or conv2d_input_grad_tiles(geo, dt.name, target.vector_unit())
    kinds = (PhasePlan,) if geo.stride != (1, 1) else (WidthPlan, ChannelPlan)
    check_tiles(tiles, "conv2d_input_grad", kinds + (DepthwisePlan,), target.lanes(dt))
    problem = input_grad_problem(geo)
    stack, lanes = 0, 1
    if not generic and isinstance(tiles.plan, DepthwisePlan):
        lanes = target.f32_lanes
        guard = None
        if tiles.plan.form == "gather":

            def guard(kf):
                exact = partial(conv_generic.input_grad_loops, geo=geo, elem=elem, exact=True)
                conv_generic.nonfinite_guard(kf, "w", _numel(w_shape), elem, exact)

        sched, stack = conv_depthwise.emit_input_grad(
            module, name, geo, roles=roles, elem=elem, target=target, plan=tiles.plan,
            guard=guard,
        )  # fmt: skip
        if guard is not None:
            sched += "; " + _EXACT_NOTE.format(operand="w")
    elif not generic and isinstance(tiles.plan, PhasePlan):
        lanes = target.f32_lanes
        sched = conv_strided.emit_phases(
            module,
            name,
            geo,
            phase_problem(geo),
            roles=roles,
            elem=elem,
            target=target,
            plan=tiles.plan,
        )
        sched += "; " + _EXACT_NOTE.format(operand="w")
    elif problem is None and tiles.plan is not None and not generic:
        raise ValueError(f"{name}: this geometry has no stride-1 form for a vector plan")
    elif generic or tiles.plan is None:
        sched = conv_generic.emit_input_grad(
            module, name, geo, roles=roles, elem=elem, target=target
        )
    else:
        lanes = target.f32_lanes
        guard = None
        # The padding of g here is the schedule's, not the reference's: the reference never
        # multiplies a cotangent outside the output, so an inf in w must not meet it.
        if problem.reads_padding():

            def guard(kf):
                exact = partial(conv_generic.input_grad_loops, geo=geo, elem=elem, exact=True)
                conv_generic.nonfinite_guard(kf, "w", _numel(w_shape), elem, exact)

        sched, stack = emit_direct(
            module,
            name,
            problem,
            roles=roles,
            elem=elem,
            epi=Epilogue(),
            target=target,
            plan=tiles.plan,
            guard=guard,
        )
        sched = f"as a stride-1 convolution of g with the flipped kernel; {sched}"
        if guard is not None:
            sched += "; " + _EXACT_NOTE.format(operand="w")
    return KernelSpec(
        name=name,
        op="conv2d_input_grad",
        args=roles,
        parallel_extent=geo.n,
        unit="one image",
        flops=2 * geo.macs,
        dtype=dt.name,
        schedule=sched,
        vector_lanes=lanes,
        stack_bytes=stack,
    )


def emit_conv2d_weight_grad(
    module: ir.Module,
    name: str,
    *,
    x_shape,
    g_shape,
    weight_shape,
    stride,
    padding,
    dilation,
    groups: int,
    dtype,
    target: Target,
    generic: bool = False,
    tiles: Tiles | None = None,
) -> KernelSpec:
    """out (the weight's shape) = the gradient of conv2d with respect to its weight."""
    geo = conv_geometry(x_shape, weight_shape, stride, padding, dilation, groups)
    _check_same("conv2d_weight_grad cotangent", g_shape, (geo.n, geo.o, geo.oh, geo.ow))
    dt, elem = element_type(dtype)
    roles = ("out", "x", "g")
    tiles = tiles or conv2d_weight_grad_tiles(geo, dt.name, target.vector_unit())
    kinds = (WidthWPlan, ChannelWPlan, DepthwisePlan)
    check_tiles(tiles, "conv2d_weight_grad", kinds, target.lanes(dt))
    depthwise = not generic and isinstance(tiles.plan, DepthwisePlan)
    if depthwise:
        extent, unit, sched, stack = conv_depthwise.emit_weight_grad(
            module, name, geo, roles=roles, elem=elem, target=target, plan=tiles.plan
        )
        lanes = target.f32_lanes
    elif generic or tiles.plan is None:
        extent, unit = geo.o * geo.cg, "one (o, c) pair of the weight"
        sched = conv_generic.emit_weight_grad(
            module, name, geo, roles=roles, elem=elem, target=target
        )
        lanes, stack = 1, 0
    else:
        extent, unit, sched, stack = conv_wgrad.emit_weight_grad(
            module, name, geo, roles=roles, elem=elem, target=target, plan=tiles.plan
        )
        lanes = target.f32_lanes
    if geo.reads_padding and not depthwise:
        sched += "; units with an inf or NaN result recomputed by scalar loops that meet the "
        sched += "padding as the reference does"
    return KernelSpec(
        name=name,
        op="conv2d_weight_grad",
        args=roles,
        parallel_extent=extent,
        unit=unit,
        flops=2 * geo.macs,
        dtype=dt.name,
        schedule=sched,
        vector_lanes=lanes,
        stack_bytes=stack,
    )

"""The plan_tiles pass: every convolution and matmul kernel gets its register tile on the
graph, with the reason it won, and codegen emits exactly the recorded plan.

The proof that the decision lives on the graph: replace each recorded plan by another one the
cost model ranked lower, and the emitted kernels change to it while the numbers stay those of
the reference interpreter.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from steps import planned_graph

import graphc
import graphc.nn as nn
import graphc.nn.functional as F
from graphc.codegen.backend import native_executable
from graphc.codegen.lower import lower
from graphc.codegen.target import get_target, host_target
from graphc.frontend.compile import CompiledFunction, interpreter_executable
from graphc.interpreter import interpret
from graphc.ir import Graph
from graphc.passes.conv_tiles import (
    PhasePlan,
    conv_geometry,
    direct_plan_options,
    forward_problem,
    input_grad_problem,
    phase_plan_options,
    phase_problem,
    wgrad_plan_options,
)
from graphc.passes.gemm_tiles import BlockedPlan, DotPlan, OuterPlan, matmul_geometry
from graphc.passes.tiles import (
    TILED_KINDS,
    TilePlan,
    Tiles,
    VectorUnit,
    conv2d_input_grad_tiles,
    conv2d_tiles,
    matmul_tiles,
    tile_plan,
)


class Net(nn.Module):
    """Padded, strided and grouped convolutions, and linear layers: every tiled kernel kind."""

    def __init__(self, activation=F.relu):
        super().__init__()
        self.act = activation
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.c3 = nn.Conv2d(8, 16, 5)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = F.max_pool2d(self.act(self.c1(x)), 2)
        x = self.act(self.c2(x))
        return self.fc(self.act(self.c3(x)).flatten(1))


def planned_step(batch: int = 6, activation=F.relu) -> tuple[Graph, list[np.ndarray]]:
    """The optimised training graph of Net (planned for the host's vectors) and its inputs."""
    graphc.manual_seed(0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, batch).astype(np.int64)
    return planned_graph(Net(activation), x, y)


def test_every_convolution_and_matmul_kernel_has_its_plan_on_the_graph():
    graph, _ = planned_step()
    tiles: TilePlan = graph.meta["tiles"]
    assert tiles.vectors == host_target().vector_unit()
    kernels = graph.meta["schedule"].kernels
    tiled = {k.name for k in kernels if k.kind in TILED_KINDS}
    assert {k.kind for k in kernels if k.kind in TILED_KINDS} == set(TILED_KINDS)
    assert set(tiles.kernels) == tiled
    for name, t in tiles.kernels.items():
        assert t.plan is not None, f"{name} fell to scalar loops: {t.reason}"
        assert t.lanes == tiles.vectors.lanes("float32")
        assert name in tiles.summary(graph) and t.text in tiles.summary(graph)


def test_codegen_emits_the_recorded_plan():
    graph, _ = planned_step()
    tiles: TilePlan = graph.meta["tiles"]
    specs = _descriptions(lower(graph, host_target()))
    for name, t in tiles.kernels.items():
        # the emitted schedule starts with the plan's description (conv) or its tile (matmul)
        words = t.text.split(" along k")[0] if isinstance(t.plan, DotPlan) else t.text
        assert words.split(", as out^T")[0] in specs[name], (name, t.text, specs[name])


def _descriptions(lowered) -> dict[str, str]:
    """Kernel name -> the schedule its code was emitted with."""
    return {k.name: s.description for s, k in zip(lowered.specs, lowered.kernels, strict=True)}


def _with_plan(t: Tiles, plan) -> Tiles:
    return dataclasses.replace(t, plan=plan, text=f"forced by the test: {plan}")


def _runner_up(node, t: Tiles, vectors: VectorUnit) -> Tiles:
    """A plan the cost model ranked below the recorded one (a valid plan, not the best)."""
    a = node.attrs
    lanes, regs = t.lanes, vectors.registers
    if node.op == "matmul":
        if isinstance(t.plan, OuterPlan):
            mr = max(1, t.plan.mr - 1)
            return _with_plan(t, dataclasses.replace(t.plan, mr=mr, nv=1))
        if isinstance(t.plan, DotPlan):
            return _with_plan(t, DotPlan(2, 2, 1))
        assert isinstance(t.plan, BlockedPlan)
        return t
    conv = (a["stride"], a["padding"], a["dilation"], a["groups"])
    first, second = node.inputs
    if node.op == "conv2d":
        geo = conv_geometry(first.shape, second.shape, *conv)
        options = direct_plan_options(forward_problem(geo), lanes, regs)
    elif node.op == "conv2d_input_grad":
        geo = conv_geometry(a["input_shape"], second.shape, *conv)
        phases = phase_problem(geo)
        if phases is not None:
            options = phase_plan_options(phases, lanes, regs)
        else:
            options = direct_plan_options(input_grad_problem(geo), lanes, regs)
    else:
        geo = conv_geometry(first.shape, a["weight_shape"], *conv)
        options = wgrad_plan_options(geo, lanes, regs)
    others = sorted((o for o in options if o[1] != t.plan), key=lambda o: -o[0])
    return _with_plan(t, others[len(others) // 2][1])  # a middling one


def test_a_different_recorded_plan_changes_the_code_not_the_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))  # empty: each compile is a miss
    monkeypatch.delenv("GRAPHC_DISABLE_CACHE", raising=False)
    graph, arrays = planned_step()
    tiles: TilePlan = graph.meta["tiles"]
    roots = {k.name: k.root for k in graph.meta["schedule"].kernels}
    other = {n: _runner_up(roots[n], t, tiles.vectors) for n, t in tiles.kernels.items()}
    changed = [n for n in other if other[n].plan != tiles.kernels[n].plan]
    assert len(changed) >= 5
    replanned = graph.with_meta(tiles=TilePlan(tiles.vectors, other))
    lowered = _descriptions(lower(replanned, host_target()))
    best = _descriptions(lower(graph, host_target()))
    for name in changed:
        assert lowered[name] != best[name], f"{name} ignored the recorded plan"
    assert replanned.meta["tiles"].fits(replanned, host_target().vector_unit())
    want = interpret(graph, [a.copy() for a in arrays])
    executables = [native_executable(g) for g in (graph, replanned)]
    # other plans are other code: never the cached object of the best plans
    assert [e.timings["cache"] for e in executables] == ["miss", "miss"]
    for exe in executables:
        got = exe([a.copy() for a in arrays])
        for w, v in zip(want, got, strict=True):
            np.testing.assert_allclose(v, w, rtol=2e-5, atol=2e-6)


def test_a_graph_planned_for_other_vectors_is_planned_again_by_codegen():
    graph, _ = planned_step()
    narrow = VectorUnit(256, 16)
    as_avx2 = graph.with_meta(tiles=tile_plan(graph, narrow))
    host = get_target("host")
    if host.vector_unit() == narrow:
        pytest.skip("the host has 256-bit vectors: nothing to replan")
    a = lower(as_avx2, host)
    b = lower(graph, host)
    assert [str(m) for m in a.parts] == [str(m) for m in b.parts]


def test_reasons_for_scalar_loops():
    vectors = VectorUnit(256, 16)
    geo = conv_geometry((2, 3, 9, 9), (4, 3, 3, 3), 2, 1, 1, 1)
    t = conv2d_tiles(geo, "float64", vectors)
    assert t.plan is None and "float64" in t.reason
    t = conv2d_input_grad_tiles(geo, "float32", vectors)
    assert isinstance(t.plan, PhasePlan)  # stride 2: by output phase
    wide = conv_geometry((2, 3, 9, 9), (4, 3, 3, 3), 1, 3, 1, 1)
    t = conv2d_input_grad_tiles(wide, "float32", vectors)
    assert t.plan is None and "padding beyond the dilated kernel" in t.reason
    t = matmul_tiles(matmul_geometry((0, 5), (5, 3), False, False), "float32", vectors)
    assert t.plan is None and "empty" in t.reason


def test_matmul_schedules_follow_shape_and_transposes():
    v = VectorUnit(512, 32)
    big = matmul_tiles(matmul_geometry((256, 3072), (3072, 512), False, False), "float32", v)
    assert isinstance(big.plan, BlockedPlan) and "multiply-adds" in big.reason
    dot = matmul_tiles(matmul_geometry((64, 400), (120, 400), False, True), "float32", v)
    assert isinstance(dot.plan, DotPlan)
    tt = matmul_tiles(matmul_geometry((400, 64), (120, 400), True, True), "float32", v)
    assert isinstance(tt.plan, OuterPlan) and tt.plan.transposed
    forced = matmul_tiles(matmul_geometry((8, 8), (8, 8), False, False), "float32", v, True)
    assert isinstance(forced.plan, BlockedPlan)


def test_the_cache_key_covers_the_plans_not_just_their_descriptions():
    graph, _ = planned_step()
    tiles: TilePlan = graph.meta["tiles"]
    name, t = next((n, t) for n, t in tiles.kernels.items() if isinstance(t.plan, OuterPlan))
    other = dataclasses.replace(t, plan=dataclasses.replace(t.plan, nv=1))  # same text
    changed = TilePlan(tiles.vectors, {**tiles.kernels, name: other})
    assert changed.summary() == tiles.summary()
    assert changed.cache_text() != tiles.cache_text()


def test_a_plan_that_does_not_fit_its_kernel_is_replanned_or_refused():
    graph, _ = planned_step()
    tiles: TilePlan = graph.meta["tiles"]
    kernels = list(tiles.kernels.items())
    (n0, t0), (n1, t1) = kernels[0], kernels[-1]
    swapped = TilePlan(tiles.vectors, {**tiles.kernels, n0: t1, n1: t0})
    assert not swapped.fits(graph, tiles.vectors)
    replanned = lower(graph.with_meta(tiles=swapped), host_target())
    assert [str(m) for m in replanned.parts] == [str(m) for m in lower(graph, host_target()).parts]
    # an emitter called with a plan for another op, or for other vectors, refuses it
    from llvmlite import ir

    from graphc.codegen.kernels.gemm import emit_matmul

    host = host_target()
    geo = matmul_geometry((64, 84), (84, 10), False, False)
    good = matmul_tiles(geo, "float32", host.vector_unit())
    half = VectorUnit(host.vector_bits // 2, host.vector_registers)
    for bad in (
        conv2d_tiles(
            conv_geometry((1, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1, 1), "float32", host.vector_unit()
        ),
        dataclasses.replace(good, lanes=half.lanes("float32")),
    ):
        with pytest.raises(ValueError, match="cannot emit"):
            emit_matmul(
                ir.Module(),
                "k",
                a_shape=(64, 84),
                b_shape=(84, 10),
                trans_a=False,
                trans_b=False,
                dtype="float32",
                target=host,
                tiles=bad,
            )


def test_interpreter_traces_need_no_target(monkeypatch):
    """The interpreter backend supplies no vectors: no tile plans, and no LLVM target is
    asked for (a bad GRAPHC_TARGET is codegen's business, not the interpreter's)."""
    monkeypatch.setenv("GRAPHC_TARGET", "no-such-target")
    f = CompiledFunction(lambda x: F.relu(x @ x.t()).sum(), backend=interpreter_executable)
    x = graphc.from_numpy(np.ones((3, 4), np.float32))
    entry = f.trace(x)
    assert "tiles" not in entry.pipeline.graph.meta
    assert float(f(x).item()) == pytest.approx(36.0)

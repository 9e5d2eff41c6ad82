"""Compile work that stays flat as models grow: per node, tracing, the pass pipeline and the
lowering of a 64-layer MLP or a ResNet-56 cost no more than those of their 8-layer versions,
and the work done per distinct kernel (tile cost models, emitted functions) does not grow
with depth at all.

Structural, not timed: the cost is the number of Python function calls (sys.setprofile,
deterministic for a given graph), the number of tile cost-model evaluations and the number
of kernel codes emitted. A quadratic scan over nodes or kernels shows up as calls per node
that grow with the graph.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from steps import planned_for_host, sgd_step

import graphc
import graphc.nn as nn
import graphc.nn.functional as F
from graphc.codegen.backend import host_vectors
from graphc.codegen.lower import lower
from graphc.codegen.target import host_target
from graphc.frontend.compile import CompiledFunction
from graphc.models import ResNet
from graphc.passes import run_pipeline, tiles


class DeepMLP(nn.Module):
    def __init__(self, depth: int, width: int = 32, inputs: int = 48):
        super().__init__()
        self.inp = nn.Linear(inputs, width)
        self.hidden = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])
        self.out = nn.Linear(width, 10)

    def forward(self, x):
        x = F.relu(self.inp(x.flatten(1)))
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.out(x)


class Calls:
    """Python function calls (Python and C) while the block runs."""

    def __enter__(self):
        self.n = 0

        def count(frame, event, arg):
            if event in ("call", "c_call"):
                self.n += 1

        sys.setprofile(count)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)


def _costs(net: nn.Module, shape: tuple[int, ...]) -> dict:
    """Calls per node of tracing, of the pipeline and of lowering one training step, the
    tile cost-model evaluations and the kernel codes emitted."""
    graphc.manual_seed(0)
    x = graphc.from_numpy(np.zeros(shape, np.float32))
    y = graphc.from_numpy(np.zeros(shape[0], np.int64))
    compiled = CompiledFunction(sgd_step(net, lr=0.1), backend=planned_for_host)
    tiles._PLANNED.clear()
    evaluations = []
    real = tiles._node_tiles

    def counted(node, vectors):
        evaluations.append(node.op)
        return real(node, vectors)

    tiles._node_tiles = counted
    try:
        with Calls() as tracing:
            traced = compiled.trace(x, y).traced
        with Calls() as passes:
            planned = run_pipeline(traced.with_meta(vectors=host_vectors())).graph
        with Calls() as lowering:
            lowered = lower(planned, host_target())
    finally:
        tiles._node_tiles = real
    nodes = len(planned.nodes)
    return {
        "tracing": tracing.n / len(traced.nodes),
        "passes": passes.n / nodes,
        "lowering": lowering.n / nodes,
        # tiles are planned twice per step (the pipeline; lower() finds them fit): once per
        # kernel signature each time
        "tile evaluations": len(evaluations),
        "codes": len(lowered.codes),
        "kernels": len(lowered.kernels),
        "nodes": nodes,
    }


def _assert_flat(small: dict, big: dict) -> None:
    assert big["nodes"] > 5 * small["nodes"]  # the deep one really is deeper
    for stage in ("tracing", "passes", "lowering"):
        assert big[stage] <= 1.25 * small[stage], (stage, small[stage], big[stage])
    assert big["tile evaluations"] == small["tile evaluations"]


@pytest.mark.slow
def test_a_64_layer_mlp_costs_what_an_8_layer_one_does_per_node():
    small = _costs(DeepMLP(8), (4, 3, 4, 4))
    big = _costs(DeepMLP(64), (4, 3, 4, 4))
    _assert_flat(small, big)
    assert big["codes"] == small["codes"]  # every hidden layer runs the same code
    assert big["kernels"] > 5 * small["kernels"] // 2


@pytest.mark.slow
def test_a_resnet56_costs_what_a_resnet8_does_per_node():
    small = _costs(ResNet(1), (2, 3, 8, 8))
    big = _costs(ResNet(9), (2, 3, 8, 8))
    _assert_flat(small, big)
    # the blocks of a stage share code; a deeper stage adds at most a few codes where its
    # repeated blocks begin
    assert big["codes"] <= small["codes"] + 12

"""passes/pointwise.py: 1x1 convolutions (and their gradient ops) become matmuls over
transposed copies on planes smaller than a vector, and convolutions over [N, C, 1, H*W]
views otherwise (the weight gradient a matmul while the plane is small); the interpreter's
numbers do not change, and native code computes the same."""

from __future__ import annotations

import numpy as np
import pytest

from graphc import dtypes
from graphc.codegen.backend import native_executable
from graphc.interpreter import interpret
from graphc.ir import GraphBuilder, TensorType
from graphc.passes import canonicalize, derive_backward, run_pipeline

F32 = dtypes.float32


def pointwise_graph(n, c, o, h, w, groups=1, padding=(0, 0)):
    """sum(conv2d(x, w) * ct) and its gradients w.r.t. x and w."""
    b = GraphBuilder("pointwise")
    x = b.add_input("x", TensorType((n, c, h, w), F32))
    wt = b.add_input("w", TensorType((o, c // groups, 1, 1), F32))
    oh, ow = h + 2 * padding[0], w + 2 * padding[1]
    ct = b.add_input("ct", TensorType((n, o, oh, ow), F32))
    attrs = dict(stride=(1, 1), padding=padding, dilation=(1, 1), groups=groups)
    out = b.conv2d(x, wt, **attrs)
    loss = b.reduce_sum(b.mul(out, ct), axes=(0, 1, 2, 3))
    return derive_backward(b.build([out, b.grad(loss, x), b.grad(loss, wt)]))


CASES = {
    "2x2 plane: matmuls": ((3, 8, 5, 2, 2), {}, {"matmul": 3, "conv": 0}),
    "3x5 plane: matmuls": ((2, 4, 6, 3, 5), {}, {"matmul": 3, "conv": 0}),
    "4x4 plane: flat rows, weight gradient a matmul": (
        (2, 6, 4, 4, 4),
        {},
        {"matmul": 1, "conv": 2},
    ),
    "17x17 plane: flat rows": ((1, 3, 5, 17, 17), {}, {"matmul": 0, "conv": 3}),
    "grouped 2x2: flat rows": ((2, 8, 4, 2, 2), {"groups": 2}, {"matmul": 0, "conv": 3}),
    "padded: untouched": ((2, 3, 4, 4, 4), {"padding": (1, 1)}, {"matmul": 0, "conv": 3}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pointwise_forms_keep_the_numbers(name, rng):
    shape, kw, expect = CASES[name]
    graph = pointwise_graph(*shape, **kw)
    rewritten = canonicalize(graph)
    ops = [n.op for n in rewritten.nodes]
    assert ops.count("matmul") == expect["matmul"]
    assert sum(op.startswith("conv2d") for op in ops) == expect["conv"]
    flat = [n for n in rewritten.nodes if n.op.startswith("conv2d") and n.inputs[0].shape[2] == 1]
    if expect["conv"] and not kw.get("padding"):
        assert flat, "the convolutions run on [N, C, 1, H*W] views"
    inputs = [rng.standard_normal(i.shape).astype(np.float32) for i in graph.inputs]
    want = interpret(graph, inputs)
    got = interpret(rewritten, inputs)
    for a, e in zip(got, want, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)


def test_native_pointwise_forms_match_the_interpreter(rng):
    """One graph with each form (matmul, flat rows, weight-gradient matmul) run natively."""
    for shape in ((4, 16, 8, 2, 2), (2, 8, 12, 4, 4), (2, 5, 7, 9, 9)):
        graph = pointwise_graph(*shape)
        compiled = run_pipeline(graph, keep_snapshots=False).graph
        inputs = [rng.standard_normal(i.shape).astype(np.float32) for i in graph.inputs]
        want = interpret(graph, inputs)
        got = native_executable(compiled)([a.copy() for a in inputs])
        for a, e in zip(got, want, strict=True):
            np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * (1 + np.abs(e).max()))

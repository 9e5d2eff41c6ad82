"""The `scan` loop op: its rule and reference, its VJP (a reverse scan) against finite
differences, native loops against the interpreter, graphc.scan against the same steps
unrolled (values and gradients, eager and compiled), and what the loop looks like: printed
in place, hashed by its step, and the same graph whatever the number of steps."""

from __future__ import annotations

import numpy as np
import pytest
from op_cases import CASES, check_rule_and_ref, check_vjp, differentiable_cases, make_inputs, params

import graphc
import graphc.nn as nn
from graphc import dtypes
from graphc.codegen.backend import native_executable
from graphc.errors import ShapeError, TraceError
from graphc.frontend.compile import CompiledFunction
from graphc.interpreter import interpret
from graphc.ir import Body, GraphBuilder, TensorType
from graphc.loops import scan
from graphc.ops.scan import unpack
from graphc.passes import derive_backward, run_pipeline
from graphc.passes.cse import eliminate_common_subexpressions

F32, F64 = dtypes.float32, dtypes.float64


@pytest.mark.parametrize("c", params(CASES["scan"]))
def test_reference_keeps_the_rules_promise(c, rng):
    check_rule_and_ref(c, rng)


@pytest.mark.parametrize("c", params(differentiable_cases(CASES["scan"])))
def test_vjp_matches_finite_differences(c, rng):
    check_vjp(c, rng)


def test_native_loops_and_their_gradients_equal_the_interpreter(rng):
    """Every case's loop and its reverse loop (the gradient) in one native step: a loop with
    saved values and without, reversed, and with carries that swap (staged copies)."""
    b = GraphBuilder("loops")
    outputs, arrays = [], []
    for i, c in enumerate(CASES["scan"]):
        ins = [b.add_input(f"case{i}_x{j}", a.type()) for j, a in enumerate(c.args)]
        out = b.emit("scan", ins, c.full_attrs())
        outputs.append(out)
        loss = b.reduce_sum(b.mul(out, out), axes=(0,))
        outputs += [b.grad(loss, x) for x in ins]
        arrays += make_inputs(c, rng)
    graph = derive_backward(b.build(outputs))
    got = native_executable(run_pipeline(graph, keep_snapshots=False).graph)(arrays)
    want = interpret(graph, arrays)
    for node, g, w in zip(graph.outputs, got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=repr(node))


# ---- graphc.scan: one loop node against the same steps unrolled ------------------------------


def _rnn(w, u):
    def step(carry, x):
        h, c = carry
        h2 = graphc.tanh(h @ w + x[0] * x[1].sum(-1, keepdim=True))
        c2 = c * 0.5 + h2.relu() @ u
        return (h2, c2), (h2 * c, c2.sum(-1))

    return step


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("compiled", [False, True])
def test_scan_matches_the_unrolled_steps(reverse, compiled, rng):
    def make(shape, scale=1.0):
        return graphc.tensor(rng.standard_normal(shape) * scale, dtype=F32, requires_grad=True)

    w, u = make((4, 4), 0.5), make((4, 4), 0.5)
    h0, c0 = make((3, 4)), make((3, 4))
    xs = (make((6, 3, 4)), make((6, 3, 2)))
    leaves = [w, u, h0, c0, *xs]

    def run(unroll):
        def fn(*args):
            (h, c), (ys, zs) = scan(_rnn(w, u), (h0, c0), xs, reverse=reverse, unroll=unroll)
            loss = (h * h).sum() + c.sum() + (ys * ys).sum() + zs.mean()
            loss.backward()
            return (loss, h, ys, zs, *[t.grad for t in leaves])

        for t in leaves:
            t.grad = None
        f = CompiledFunction(fn, backend=native_executable) if compiled else fn
        return [v.detach().numpy() for v in f()]

    for got, want in zip(run(False), run(True), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_a_loop_graph_has_the_same_nodes_whatever_its_length(rng):
    lstm = nn.LSTM(5, 7)
    opt = graphc.optim.SGD(lstm.parameters(), lr=0.1)

    def step(x):
        opt.zero_grad()
        out, (h, c) = lstm(x)
        loss = out.sum() + h.sum()
        loss.backward()
        opt.step()
        return loss

    sizes = []
    for length in (50, 400):
        f = CompiledFunction(step, backend=lambda g: lambda arrays: [])  # passes only
        x = graphc.from_numpy(rng.standard_normal((length, 2, 5)).astype(np.float32))
        text = str(run_pipeline(f.trace(x).traced).graph)
        sizes.append((len(f.trace(x).traced.nodes), text.count(" = ")))
    assert sizes[0] == sizes[1]


# ---- what a loop looks like ---------------------------------------------------------------


def _body(scale: float):
    b = GraphBuilder("body")
    c = b.add_input("c0", TensorType((3,), F32), "carry")
    x = b.add_input("x0", TensorType((3,), F32), "x")
    new = b.add(c, b.mul(x, b.full(scale, (3,), F32)))
    return b.build([new, new], ["carry0", "y0"])


def test_bodies_hash_and_compare_by_their_structure():
    a, b, c = Body(_body(2.0)), Body(_body(2.0)), Body(_body(3.0))
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
    assert a != c and repr(a) != repr(c)
    assert repr(a).startswith("body#")


def test_identical_loops_are_one_loop_after_cse():
    g = GraphBuilder("two")
    c = g.add_input("c", TensorType((3,), F32))
    x = g.add_input("x", TensorType((4, 3), F32))
    attrs = dict(num_carry=1, num_xs=1, num_ys=1, length=4)
    one = g.scan(c, x, body=Body(_body(2.0)), **attrs)
    two = g.scan(c, x, body=Body(_body(2.0)), **attrs)
    graph = eliminate_common_subexpressions(g.build([one, two]))
    assert sum(n.op == "scan" for n in graph.nodes) == 1


def test_the_body_is_printed_in_place_indented():
    g = GraphBuilder("step")
    c = g.add_input("c", TensorType((3,), F32))
    x = g.add_input("x", TensorType((4, 3), F32))
    out = g.scan(c, x, body=Body(_body(2.0)), num_carry=1, num_xs=1, num_ys=1, length=4)
    final, ys = unpack(g, out)
    text = str(g.build([final, ys]))
    assert "= scan(%c, %x, body=body#" in text
    assert "\n    graph body(\n        %c0: f32[3] carry," in text
    assert "\n      return carry0=%2, y0=%2\n    }" in text


# ---- what graphc.scan refuses ---------------------------------------------------------------


def test_a_carry_that_changes_type_is_refused():
    h = graphc.zeros(3)
    with pytest.raises(ShapeError, match="keeps its shape and dtype"):
        scan(lambda c, x: (c.sum(), c), h, graphc.zeros(4, 3))


def test_reading_a_value_inside_the_step_is_refused():
    h = graphc.zeros(3)
    with pytest.raises(TraceError, match="loop body"):
        scan(lambda c, x: (c + float(x.sum()), c), h, graphc.zeros(4, 3))


def test_random_draws_inside_the_step_are_refused():
    h = graphc.zeros(3)
    with pytest.raises(TraceError, match="random numbers"):
        scan(lambda c, x: (c + graphc.rand(3), c), h, graphc.zeros(4, 3))


def test_operands_that_do_not_fit_the_body_are_refused():
    g = GraphBuilder("bad")
    c = g.add_input("c", TensorType((3,), F32))
    x = g.add_input("x", TensorType((4, 2), F32))
    with pytest.raises(ShapeError, match="needs f32\\[4,3\\]"):
        g.scan(c, x, body=Body(_body(2.0)), num_carry=1, num_xs=1, num_ys=1, length=4)

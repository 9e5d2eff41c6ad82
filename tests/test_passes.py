"""Every pass leaves the interpreter's numbers unchanged; golden text where it helps."""

import numpy as np
import pytest

import graphc
from graphc import dtypes
from graphc.interpreter import interpret
from graphc.ir import GraphBuilder, TensorType
from graphc.models import ConvNet
from graphc.passes import PIPELINE, derive_backward, run_pipeline

F32 = dtypes.float32


def traced_training_graph():
    graphc.manual_seed(0)
    net = ConvNet()
    opt = graphc.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    crit = graphc.nn.CrossEntropyLoss()

    @graphc.compile
    def step(x, y):
        opt.zero_grad()
        loss = crit(net(x), y)
        loss.backward()
        opt.step()
        return loss

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    entry = step.trace(x, y)
    host = {g: tuple(g.fn()) for g in entry.host_groups}
    inputs = [s.read([x, y], host) for s in entry.sources]
    return entry, inputs


def test_each_pass_preserves_values():
    entry, inputs = traced_training_graph()
    snapshots = entry.pipeline.snapshots
    reference = interpret(snapshots["autodiff"], inputs)
    for name, _ in PIPELINE[1:]:
        out = interpret(snapshots[name], inputs)
        for a, b, n in zip(reference, out, snapshots[name].output_names, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7, err_msg=f"{name}: {n}")


def test_pipeline_shrinks_the_graph_and_keeps_no_placeholders():
    entry, _ = traced_training_graph()
    snaps = entry.pipeline.snapshots
    assert any(n.op == "grad" for n in snaps["traced"].nodes)
    assert not any(n.op in ("grad", "stop_gradient") for n in entry.graph.nodes)
    assert len(snaps["dce"].nodes) < len(snaps["autodiff"].nodes)


def test_backward_prunes_gradients_nobody_needs():
    entry, _ = traced_training_graph()
    ops = [n.op for n in entry.graph.nodes]
    # conv2's input needs a gradient (conv1 is below it); the images do not.
    assert ops.count("conv2d_input_grad") == 1
    assert ops.count("conv2d_weight_grad") == 2


def test_fan_out_cotangents_are_summed():
    # b = a + a; c = b + b  =>  dc/da = 4
    g = GraphBuilder("fanout")
    a = g.add_input("a", TensorType((3,), F32))
    b = g.add(a, a)
    c = g.add(b, b)
    loss = g.reduce_sum(c, axes=(0,))
    grad = g.emit("grad", [loss, a])
    graph = derive_backward(g.build([grad]))
    (da,) = interpret(graph, [np.array([1.0, 2.0, 3.0], np.float32)])
    np.testing.assert_array_equal(da, [4.0, 4.0, 4.0])


def test_stop_gradient_blocks_and_is_stripped():
    g = GraphBuilder("sg")
    a = g.add_input("a", TensorType((2,), F32))
    y = g.mul(a, g.stop_gradient(a))  # d/da (a * const(a)) = a
    loss = g.reduce_sum(y, axes=(0,))
    graph = run_pipeline(g.build([g.emit("grad", [loss, a])])).graph
    (da,) = interpret(graph, [np.array([3.0, -2.0], np.float32)])
    np.testing.assert_array_equal(da, [3.0, -2.0])
    assert all(n.op != "stop_gradient" for n in graph.nodes)


def test_canonicalize_and_fold_golden_text():
    g = GraphBuilder("simplify")
    x = g.add_input("x", TensorType((2, 3), F32))
    one = g.full(1.0, (2, 3), F32)
    two = g.mul(g.full(2.0, (2, 3), F32), g.full(3.0, (2, 3), F32))
    y = g.mul(x, one)
    r = g.reshape(g.reshape(y, shape=(3, 2)), shape=(6,))
    out = g.add(r, g.reshape(two, shape=(6,)))
    graph = run_pipeline(g.build([out])).graph
    body = [line.strip() for line in str(graph).splitlines() if line.startswith("  %")]
    assert body == [
        "%0: f32[6] = reshape(%x, shape=(6,))",
        "%1: f32[6] = full(value=6.0, shape=(6,))",
        "%2: f32[6] = add(%0, %1)",
    ]


def test_cse_merges_identical_nodes():
    g = GraphBuilder("cse")
    x = g.add_input("x", TensorType((4,), F32))
    a, b = g.exp(x), g.exp(x)
    graph = run_pipeline(g.build([g.add(a, b)])).graph
    assert [n.op for n in graph.nodes if not n.is_input] == ["exp", "add"]
    (out,) = interpret(graph, [np.zeros(4, np.float32)])
    np.testing.assert_array_equal(out, np.full(4, 2.0, np.float32))


@pytest.mark.parametrize("name", [n for n, _ in PIPELINE])
def test_pipeline_names_are_listed(name):
    from graphc.passes import STAGES

    assert name in STAGES

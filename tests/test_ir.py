"""The IR: types print inline, the verifier catches broken graphs, hashing and networkx views."""

import numpy as np
import pytest

from graphc import dtypes
from graphc.interpreter import interpret
from graphc.ir import GraphBuilder, Node, TensorType
from graphc.printer import format_graph
from graphc.verify import VerifyError, verify

F32 = dtypes.float32


def small_graph(name="g"):
    b = GraphBuilder(name)
    x = b.add_input("x", TensorType((2, 3), F32))
    w = b.add_input("w", TensorType((4, 3), F32), "param")
    y = b.matmul(x, w, trans_b=True)
    z = b.relu(y)
    s = b.reduce_sum(z, axes=(0, 1))
    return b.build([s, z], ["loss", "act"])


def test_types_print_like_jaxpr():
    assert str(TensorType((64, 3, 32, 32), F32)) == "f32[64,3,32,32]"
    assert str(TensorType((), dtypes.int64)) == "i64[]"


def test_printer_is_deterministic_and_shows_types_ops_attrs():
    text = format_graph(small_graph())
    assert text == format_graph(small_graph())
    assert "%x: f32[2,3] input" in text
    assert "%w: f32[4,3] param" in text
    assert "%0: f32[2,4] = matmul(%x, %w, trans_b=True)" in text
    assert "%2: f32[] = reduce_sum(%1, axes=(0, 1))" in text
    assert "return loss=%2, act=%1" in text


def test_structural_hash_ignores_locations_but_not_structure():
    a, b = small_graph(), small_graph()
    assert a.structural_hash() == b.structural_hash()
    g = GraphBuilder("g")
    x = g.add_input("x", TensorType((2, 3), F32))
    w = g.add_input("w", TensorType((4, 3), F32), "param")
    y = g.matmul(x, w, trans_b=True)
    other = g.build([g.reduce_sum(g.sigmoid(y), axes=(0, 1)), y], ["loss", "act"])
    assert other.structural_hash() != a.structural_hash()


def test_nodes_are_immutable():
    g = small_graph()
    with pytest.raises(AttributeError):
        g.nodes[2].op = "add"


def test_verifier_rejects_use_before_definition_and_wrong_types():
    g = small_graph()
    mm = g.nodes[2]
    broken = g.replace(nodes=(g.nodes[0], g.nodes[1], g.nodes[3], mm) + g.nodes[4:])
    with pytest.raises(VerifyError, match="not defined before its use"):
        verify(broken)
    lying = Node("relu", [mm], {}, TensorType((9,), F32))
    with pytest.raises(VerifyError, match="rule gives"):
        verify(g.replace(nodes=g.nodes + (lying,)))


def test_networkx_view_matches_edges():
    g = small_graph()
    nxg = g.to_networkx()
    assert nxg.number_of_nodes() == len(g.nodes)
    import networkx as nx

    order = list(nx.topological_sort(nxg))
    assert order.index(0) < order.index(2) < order.index(3)
    assert nxg.has_edge(g.index(g.nodes[2]), g.index(g.nodes[3]))


def test_interpreter_runs_and_checks_inputs(rng):
    g = small_graph()
    x = rng.standard_normal((2, 3)).astype(np.float32)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    loss, act = interpret(g, [x, w])
    expect = np.maximum(x @ w.T, 0)
    np.testing.assert_allclose(act, expect, rtol=1e-6)
    np.testing.assert_allclose(loss, expect.sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="expects f32\\[2,3\\]"):
        interpret(g, [x.astype(np.float64), w])


def test_with_inputs_rewires_a_node_and_keeps_the_rest():
    g = small_graph()
    x, w, mm = g.nodes[0], g.nodes[1], g.nodes[2]
    assert mm.with_inputs([x, w]) is mm  # its own inputs: the node itself
    b = GraphBuilder("g2")
    x2 = b.add_input("x2", TensorType((2, 3), F32))
    w2 = b.add_input("w2", TensorType((4, 3), F32), "param")
    new = b.append(mm.with_inputs([x2, w2]))
    assert new is not mm and new.inputs == (x2, w2)
    assert (new.op, dict(new.attrs), new.type, new.loc) == (mm.op, dict(mm.attrs), mm.type, mm.loc)
    with pytest.raises(AttributeError, match="immutable"):
        new.op = "add"
    verify(b.build([new], ["y"]))

"""The IR verifier, run after every pass: a broken graph is caught where it was broken."""

from __future__ import annotations

import weakref

from graphc.errors import GraphcError
from graphc.ir import Graph, Node

# Nodes whose attributes and type were found to agree with their op's rule. Nodes are
# immutable, so that holds for good: a pass re-checks only the nodes it made, and verifying
# after every pass costs the graph's walk, not a type rule per node per pass.
_TYPED: weakref.WeakSet[Node] = weakref.WeakSet()


class VerifyError(GraphcError, AssertionError):
    """A pass produced an ill-formed graph (a graphc bug, not a user error)."""


def verify(graph: Graph, after: str | None = None) -> Graph:
    """Checks order, wiring, attributes and every node's type against its op's type rule."""
    from graphc.ops import OPS

    where = f" after pass {after!r}" if after else ""
    seen: set[Node] = set()
    names: set[str] = set()

    def fail(node: Node | None, msg: str) -> None:
        at = f" at {node!r} ({node.loc})" if node is not None else ""
        raise VerifyError(f"graph {graph.name!r} is invalid{where}: {msg}{at}")

    for node in graph.nodes:
        if node in seen:
            fail(node, "node appears twice")
        for i in node.inputs:
            if i not in seen:
                fail(node, f"input {i!r} is not defined before its use")
        if node.is_input:
            name, kind = node.attrs.get("name"), node.attrs.get("kind")
            if not name or not kind or node.inputs:
                fail(node, "an input node needs a name and a kind and takes no inputs")
            if name in names:
                fail(node, f"two inputs are named {name!r}")
            names.add(name)
        elif node not in _TYPED:
            op = OPS.get(node.op)
            if op is None:
                fail(node, f"unknown op {node.op!r}")
            try:
                full = op.full_attrs(node.attrs)
                expect = op.infer([i.type for i in node.inputs], full)
            except GraphcError as e:
                fail(node, f"{node.op} rejects its operands: {e}")
            if dict(node.attrs) != full:
                fail(node, f"attributes {dict(node.attrs)} are incomplete (expected {full})")
            if expect != node.type:
                fail(node, f"type is {node.type} but {node.op}'s rule gives {expect}")
            _TYPED.add(node)
        seen.add(node)
    for out in graph.outputs:
        if out not in seen:
            fail(out, "an output is not a node of the graph")
    if len(set(graph.output_names)) != len(graph.output_names):
        fail(None, f"duplicate output names {graph.output_names}")
    if len(graph.output_names) != len(graph.outputs):
        fail(None, "outputs and output names differ in number")
    return graph

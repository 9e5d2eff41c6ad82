"""The one way passes build a new graph from an old one, node by node.

A rule sees each node with its inputs already rewritten and returns its replacement (a node it
emitted into the builder, or any earlier node), or None to keep the node. Kept nodes whose
inputs did not change are reused as the same objects, so node identity survives passes that
do not touch them.
"""

from __future__ import annotations

from collections.abc import Callable

from graphc.ir import Graph, GraphBuilder, Node
from graphc.verify import VerifyError

Rule = Callable[[GraphBuilder, Node, tuple[Node, ...]], Node | None]


def rewrite(graph: Graph, rule: Rule) -> Graph:
    b = GraphBuilder.from_graph(graph)
    b.nodes = []
    env: dict[Node, Node] = {}
    for node in graph.nodes:
        ins = tuple(env[i] for i in node.inputs)
        b.loc = node.loc  # nodes a rule emits inherit the location of the node they replace
        new = rule(b, node, ins)
        if new is None:
            new = node.with_inputs(ins)
            b.append(new)
        elif new.type != node.type:
            raise VerifyError(f"rewrite replaced {node!r} by {new!r} of a different type")
        env[node] = new
    b.loc = None
    return Graph(
        b.nodes, [env[o] for o in graph.outputs], graph.output_names, graph.name, graph.meta
    )


def copy_node(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node:
    """Appends `node` (or a copy of it reading `ins`) and returns it."""
    new = node.with_inputs(ins)
    return b.append(new)

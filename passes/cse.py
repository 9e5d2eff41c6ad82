"""eliminate_common_subexpressions: one node per distinct (op, inputs, attrs).

Every op is a pure function of its inputs and attributes (random draws take their seed and
counter as inputs), so equal keys mean equal values.
"""

from __future__ import annotations

from graphc.ir import Graph, GraphBuilder, Node
from graphc.passes.rewrite import copy_node, rewrite


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    seen: dict[tuple, Node] = {}

    def rule(b: GraphBuilder, node: Node, ins: tuple[Node, ...]) -> Node | None:
        if node.is_input:
            return None
        key = (node.op, tuple(id(i) for i in ins), node.attrs_key(), node.type)
        hit = seen.get(key)
        if hit is not None:
            return hit
        seen[key] = new = copy_node(b, node, ins)
        return new

    return rewrite(graph, rule)
